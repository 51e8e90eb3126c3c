"""The plug-in protocol: a second market process family runs beside GPKE without any change to
``inbound.py`` (it only implements ``family.ProcessFamily``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from pydantic import BaseModel

from mako_actors import StreamId, TenantId
from mako_actors.errors import InvalidArgument
from mako_actors.family import Decision, InboundTransaction, Reads, Refuse, Start
from mako_actors.gpke import GpkeNbWorkflow
from mako_actors.gpke.family import GpkeFamily
from mako_actors.inbound import DirectHost, InboundPipeline, StaticMasterData, Suppliers
from mako_actors.scheduler import VirtualClock
from mako_actors.version import WorkflowId
from mako_actors.workflow import Event, Workflow, WorkflowOutput
from stores.lmdb import LmdbStore
from tests.inbound.edi import LFA, LFN, MALO, NB, THU_1430, anmeldung, interchange, kind, outbox, store

__all__ = ["store"]
TENANT = TenantId.from_party_id(NB)


class Note(BaseModel):
    ide: str
    malo: str | None


class Noted(Event, type="notes.noted"):
    ide: str
    malo: str | None


class NotesState(BaseModel):
    notes: tuple[str, ...] = ()


class NotesWorkflow(Workflow[Note, NotesState]):
    """A stand-in for another market process: it records what it was told."""

    name = "notes"
    events = (Noted,)

    def initial_state(self) -> NotesState:
        return NotesState()

    def handle(self, state: NotesState, command: Note) -> WorkflowOutput:
        return WorkflowOutput.of(Noted(ide=command.ide, malo=command.malo))

    def apply(self, state: NotesState, event: Event) -> NotesState:
        assert isinstance(event, Noted)
        return NotesState(notes=(*state.notes, event.ide))


class NotesFamily:
    """Handles PID 99901 (start a notes process) and refuses 99902 with APERAK Z37."""

    name = "notes"

    def handles(self, pid: str) -> bool:
        return pid in ("99901", "99902")

    async def route(self, tx: InboundTransaction, reads: Reads) -> Decision:
        if tx.pid == "99902":
            return Refuse("Z37", "99902 may not be sent to us")
        command = Note(ide=tx.transaction.ide_ref, malo=tx.transaction.malo)
        return Start("notes", WorkflowId.new("notes", tx.format_version), command)

    def acknowledgement(self, values: Mapping[str, Any]) -> tuple[str, BaseModel] | None:
        return None


async def test_a_second_family_routes_beside_gpke(store: LmdbStore) -> None:
    clock = VirtualClock(THU_1430)
    host = DirectHost(store, [GpkeNbWorkflow(), NotesWorkflow()], clock)
    gpke = GpkeFamily(master_data=StaticMasterData({MALO: Suppliers(current=LFA)}))
    p = InboundPipeline(store, host, tenants=[NB], families=[gpke, NotesFamily()], clock=clock)
    note = interchange(LFN, NB, "NOTE1", THU_1430, ["IDE+24+N1", f"LOC+Z16+{MALO}", "RFF+Z13:99901"])
    [started] = (await p.ingest(note, THU_1430)).messages
    assert started.outcome == "started" and started.process_id is not None
    events = await store.load(StreamId.for_process(TENANT, started.process_id))
    assert [(e.event_type, e.payload) for e in events] == [("notes.noted", {"ide": "N1", "malo": MALO})]
    refused = interchange(LFN, NB, "NOTE2", THU_1430, ["IDE+24+N2", "RFF+Z13:99902"])
    [outcome] = (await p.ingest(refused, THU_1430)).messages
    assert outcome.refused == "Z37"
    # GPKE still routes its own PIDs in the same pipeline.
    [gpke_started] = (await p.ingest(anmeldung(), THU_1430)).messages
    assert gpke_started.outcome == "started"
    assert "55010" in [kind(m) for m in await outbox(store)]


def test_router_and_master_data_go_to_the_family_not_beside_it() -> None:
    with pytest.raises(InvalidArgument, match="family"):
        InboundPipeline(
            object(),  # type: ignore[arg-type]
            object(),  # type: ignore[arg-type]
            tenants=[NB],
            families=[NotesFamily()],
            master_data=StaticMasterData(),
        )
