"""PID routing, command building, CONTRL helper, and outbox payloads the renderer accepts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from gpke_support import LFA, LFN, LFZ, NB, anmeldung, lfa_answer, run, utilmd

from mako_actors.edifact import render_outbound
from mako_actors.errors import EngineError, InvalidArgument
from mako_actors.gpke import (
    DEFAULT_ACK_WINDOWS,
    GasNotSupported,
    GpkeNbWorkflow,
    LfaAnswerDeadlinePassed,
    PidRouter,
    ReceiveAnmeldung,
    ReceiveLfaAnswer,
    UnknownPid,
    build_contrl_payload,
    ide_key,
    parse_command,
    transaction_key,
)

ROUTER = PidRouter()
WF = GpkeNbWorkflow()


@pytest.mark.parametrize(("pid", "mode"), [("55001", "trigger"), ("55077", "trigger"),
                                           ("55004", "trigger"), ("55011", "answer"), ("55012", "answer")])
def test_routed_pids(pid: str, mode: str) -> None:
    route = ROUTER.route(pid)
    assert route.workflow_name == "gpke-nb" and route.mode == mode


@pytest.mark.parametrize("pid", ["55099", "13002", "abc", ""])
def test_unknown_pid_is_a_typed_engine_error(pid: str) -> None:
    with pytest.raises(UnknownPid) as info:
        ROUTER.route(pid)
    assert isinstance(info.value, EngineError)
    rebuilt = EngineError.from_plain(info.value.to_plain())
    assert type(rebuilt) is UnknownPid and rebuilt.message == info.value.message


def test_gas_pid_is_rejected_clearly() -> None:
    with pytest.raises(GasNotSupported, match="gas"):
        ROUTER.build_command({"pid": "44001"})
    assert type(EngineError.from_plain(GasNotSupported("x").to_plain())) is GasNotSupported


def test_build_command_from_plain_values_selects_the_model_by_pid() -> None:
    command = anmeldung()
    assert isinstance(command, ReceiveAnmeldung) and command.zuordnungsbeginn.tzinfo is not None
    answer = lfa_answer("T1")
    assert isinstance(answer, ReceiveLfaAnswer)
    assert ROUTER.routing_key(answer) == ide_key("T1")
    assert ROUTER.routing_key(command) == transaction_key(LFN, "LFNTX000001")


def test_structurally_broken_values_are_invalid_argument() -> None:
    with pytest.raises(InvalidArgument, match="received_at"):
        anmeldung(received_at="2025-06-05T14:30:00")  # naive: the ÜT would be ambiguous
    with pytest.raises(InvalidArgument):
        anmeldung(zuordnungsbeginn="first of July")


def test_parse_command_round_trips_plain_data() -> None:
    command = LfaAnswerDeadlinePassed(due_at=datetime(2025, 6, 10, 7, 0, tzinfo=UTC))
    assert parse_command(command.model_dump(mode="json")) == command
    anm = anmeldung()
    assert parse_command(anm.model_dump(mode="json")) == anm


def _render_all(out: Any) -> list[bytes]:
    return [render_outbound(m.message_type, m.payload) for m in out.outbox]


def test_every_outbound_payload_renders_as_edifact() -> None:
    state, out = run(WF, WF.initial_state(), anmeldung(current_supplier=LFA, future_supplier=LFZ,
                                                      future_supplier_start="2025-08-01T00:00:00+02:00"))
    rendered = _render_all(out)
    info = rendered[1].decode("latin-1")
    assert "RFF+Z13:55036'" in info and f"NAD+VY+{LFA}::293'" in info
    assert "RFF+TN:LFNTX000001'" in info
    _, decided = run(WF, state, LfaAnswerDeadlinePassed(due_at=datetime(2025, 6, 10, 7, 0, tzinfo=UTC)))
    texts = [b.decode("latin-1") for b in _render_all(decided)]
    assert "STS+E01++A51:E_0623'" in texts[0] and f"UNB+UNOC:3+{NB}:500+{LFN}:500" in texts[0]
    assert "RFF+Z13:55037'" in texts[1] and "RFF+Z13:55038'" in texts[2]


def test_objection_and_negative_aperak_render() -> None:
    state, out = run(WF, WF.initial_state(), anmeldung(current_supplier=LFA))
    request_ide = utilmd(out, "55010")["ide_ref"]
    _, objected = run(WF, state, lfa_answer(request_ide, pid="55012", answer_code="A35"))
    texts = [b.decode("latin-1") for b in _render_all(objected)]
    assert "STS+Z35++A35:E_0624'" in texts[1]
    _, rejected = run(WF, WF.initial_state(), anmeldung(malo="51900000013"))
    (aperak,) = [b.decode("latin-1") for b in _render_all(rejected)]
    assert "BGM+313+" in aperak and "ERC+Z14'" in aperak and "RFF+ACE:LFN0605143001'" in aperak


@pytest.mark.parametrize(("accepted", "action"), [(True, "7"), (False, "4")])
def test_contrl_helper(accepted: bool, action: str) -> None:
    received = datetime(2025, 6, 5, 12, 30, tzinfo=UTC)
    payload = build_contrl_payload(
        interchange_ref="LFN0605143001", interchange_sender=LFN, interchange_recipient=NB,
        accepted=accepted, prepared_at=received, error_code=None if accepted else "29",
    )
    again = build_contrl_payload(
        interchange_ref="LFN0605143001", interchange_sender=LFN, interchange_recipient=NB,
        accepted=accepted, prepared_at=received, error_code=None if accepted else "29",
    )
    assert payload == again and len(payload.envelope.control_ref) <= 14
    text = render_outbound("CONTRL", payload.to_payload()).decode("latin-1")
    assert f"UCI+LFN0605143001+{LFN}:500+{NB}:500+{action}" in text
    assert DEFAULT_ACK_WINDOWS.contrl_due(received) == datetime(2025, 6, 5, 18, 30, tzinfo=UTC)


def test_a_contrl_variant_gets_its_own_references_and_answers_the_same_interchange() -> None:
    received = datetime(2025, 6, 5, 12, 30, tzinfo=UTC)
    common: dict[str, Any] = dict(
        interchange_ref="LFN0605143001", interchange_sender=LFN, interchange_recipient=NB,
        prepared_at=received,
    )
    first = build_contrl_payload(accepted=True, **common)
    conflict = build_contrl_payload(accepted=False, error_code="26", variant="other-sha", **common)
    assert conflict.envelope.control_ref != first.envelope.control_ref
    assert conflict.reference != first.reference
    assert conflict == build_contrl_payload(accepted=False, error_code="26", variant="other-sha", **common)
    text = render_outbound("CONTRL", conflict.to_payload()).decode("latin-1")
    assert f"UCI+LFN0605143001+{LFN}:500+{NB}:500+4+26'" in text
