"""The 55002's STS+7 #2 (ZW6 pauschale / ZW7 gemessene MaLo) per MaLo from master data."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from gpke_support import KUNDENANLAGE, LFA, MALO, NB, anmeldung

from mako_actors.edifact import parse_interchange, render_outbound
from mako_actors.errors import InvalidArgument
from mako_actors.gpke import GpkeConfig, GpkeNbWorkflow, GpkeState
from mako_actors.gpke.commands import LfaAnswerDeadlinePassed, ReceiveAnmeldung
from mako_actors.gpke.events import MaloMeasurementKnown
from mako_actors.gpke.family import GpkeFamily
from mako_actors.gpke.supply import StaticMasterData, Suppliers
from mako_actors.replay import load_master_data
from mako_actors.workflow import WorkflowOutput, event_payload

SAMPLES = Path(__file__).resolve().parents[3] / "shared/samples/edifact"
SAMPLE_55002 = SAMPLES / "edifact_mapper/fv2510_utilmd_55002.edi"


def _sts7_of_55002(out: WorkflowOutput) -> tuple[str, ...]:
    """STS+7 C556 codes of the 55002 in ``out``, read back from its rendered EDIFACT text."""
    (msg,) = [
        m for m in out.outbox
        if m.message_type == "UTILMD" and m.payload["transactions"][0]["pid"] == "55002"
    ]
    interchange = parse_interchange(render_outbound("UTILMD", msg.payload))
    (transaction,) = interchange.messages[0].transactions
    assert transaction.pid == "55002"
    return transaction.transaction_reasons


def _stored(wf: GpkeNbWorkflow, state: GpkeState, out: WorkflowOutput) -> GpkeState:
    """``state`` after ``out``'s events as they come back from storage (dumped, validated)."""
    for event in out.events:
        state = wf.apply(state, type(event).model_validate(event_payload(event)))
    return state


@pytest.mark.parametrize(
    ("default", "master", "expected"),
    [("ZW7", None, "ZW7"), ("ZW6", None, "ZW6"), ("ZW7", "ZW6", "ZW6"), ("ZW6", "ZW7", "ZW7")],
)
def test_the_masters_measurement_decides_the_55002_else_the_default(
    default: Any, master: str | None, expected: str
) -> None:
    wf = GpkeNbWorkflow(GpkeConfig(malo_measurement=default))
    out = wf.handle(wf.initial_state(), anmeldung(malo_measurement=master))  # no LFA: decided at once
    assert _sts7_of_55002(out)[:2] == ("E03", expected)


@pytest.mark.parametrize("master", ["ZW6", "ZW7"])
def test_the_measurement_survives_storage_until_the_lfa_consultation_is_decided(master: str) -> None:
    wf = GpkeNbWorkflow(GpkeConfig(malo_measurement="ZW7" if master == "ZW6" else "ZW6"))
    first = wf.handle(wf.initial_state(), anmeldung(current_supplier=LFA, malo_measurement=master))
    state = _stored(wf, wf.initial_state(), first)
    decided = GpkeNbWorkflow(wf.config).handle(  # a fresh workflow: nothing remembered in memory
        state, LfaAnswerDeadlinePassed(due_at=datetime(2025, 6, 10, 7, 0, tzinfo=UTC))
    )
    assert _sts7_of_55002(decided)[1] == master


def test_a_resting_malo_still_answers_zap_whatever_the_master_says() -> None:
    wf = GpkeNbWorkflow()
    zap = anmeldung(transaction_detail="ZAP", malo_measurement="ZW6", kundenanlage_malo=KUNDENANLAGE)
    out = wf.handle(wf.initial_state(), zap)
    assert _sts7_of_55002(out)[1] == "ZAP"


def test_without_a_measurement_events_and_snapshots_store_the_bytes_they_stored_before() -> None:
    wf = GpkeNbWorkflow()
    plain = wf.handle(wf.initial_state(), anmeldung())
    said = wf.handle(wf.initial_state(), anmeldung(malo_measurement="ZW6"))
    plain_types, said_types = [type(e) for e in plain.events], [type(e) for e in said.events]
    assert MaloMeasurementKnown not in plain_types and said_types.count(MaloMeasurementKnown) == 1
    assert [t for t in said_types if t is not MaloMeasurementKnown] == plain_types
    assert [event_payload(e) for e in plain.events] == [
        event_payload(e) for e in said.events if type(e) is not MaloMeasurementKnown
    ]
    assert [event_payload(e) for e in said.events if isinstance(e, MaloMeasurementKnown)] == [
        {"measurement": "ZW6"}
    ]
    assert "malo_measurement" not in _stored(wf, wf.initial_state(), plain).model_dump(mode="json")
    state = _stored(wf, wf.initial_state(), said)
    assert GpkeState.model_validate(state.model_dump(mode="json")) == state
    assert state.malo_measurement == "ZW6"


@dataclass
class _Tx:
    tenant: str


class _NoJournal:
    async def lookup(self, tenant_id: Any, key: str) -> None:
        return None

    async def journal(self, tenant_id: Any, key: str) -> list[dict[str, Any]]:
        return []


async def test_the_family_hands_the_masters_measurement_to_the_anmeldung() -> None:
    values = anmeldung().model_dump(exclude={"kind"})
    family = GpkeFamily(master_data=StaticMasterData({MALO: Suppliers(current=LFA, measurement="ZW6")}))
    command = await family._trigger_command(_Tx(NB), dict(values), _NoJournal())  # type: ignore[arg-type]
    assert isinstance(command, ReceiveAnmeldung)
    assert (command.current_supplier, command.malo_measurement) == (LFA, "ZW6")
    other = GpkeFamily(master_data=StaticMasterData({MALO: Suppliers(current=LFA)}))
    unsaid = await other._trigger_command(_Tx(NB), dict(values), _NoJournal())  # type: ignore[arg-type]
    assert isinstance(unsaid, ReceiveAnmeldung) and unsaid.malo_measurement is None


def test_master_json_measurement_per_malo_and_old_files_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "master.json"
    entries = {MALO: {"current": LFA, "measurement": "ZW6"}, "51900000013": {"current": LFA}}
    path.write_text(json.dumps(entries))
    master = load_master_data(path)
    at = datetime(2025, 7, 1, tzinfo=UTC)
    assert master.suppliers(NB, MALO, at) == Suppliers(current=LFA, measurement="ZW6")
    assert master.suppliers(NB, "51900000013", at) == Suppliers(current=LFA)


@pytest.mark.parametrize("bad", ["ZW5", "zw6", 7, ""])
def test_a_bad_measurement_names_the_malo_and_the_field(tmp_path: Path, bad: Any) -> None:
    path = tmp_path / "master.json"
    path.write_text(json.dumps({MALO: {"current": LFA, "measurement": bad}}))
    with pytest.raises(InvalidArgument, match=rf"MaLo {MALO}: field 'measurement'"):
        load_master_data(path)


@pytest.mark.skipif(not SAMPLE_55002.is_file(), reason="shared EDIFACT samples not present")
def test_our_55002_carries_the_measurement_where_a_published_55002_does() -> None:
    # edifact_mapper's generated FV2510 55002 (S2): STS+7++E01+ZW6+E01; its UNH placeholders
    # (+X+X:C, refused with CONTRL 4) removed
    sample = parse_interchange(SAMPLE_55002.read_bytes().replace(b"+X+X:C'", b"'"))
    (theirs,) = sample.messages[0].transactions
    wf = GpkeNbWorkflow()
    out = wf.handle(wf.initial_state(), anmeldung(malo_measurement=theirs.transaction_reasons[1]))
    ours = _sts7_of_55002(out)
    assert theirs.transaction_reasons[1] == "ZW6" and ours[1] == theirs.transaction_reasons[1]
