"""The inbound pipeline on Ray host actors: EDIFACT in on the driver, GPKE processes on the hosts."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mako_actors import InboundPipeline, StaticMasterData, Suppliers, TenantId, VirtualClock
from mako_actors.actors import RayActorSystem
from mako_actors.gpke import GpkeNbWorkflow, Status
from mako_actors.gpke.synthetic import anmeldung, lfa_answer
from stores.lmdb import LmdbStore

pytestmark = pytest.mark.usefixtures("ray_cluster")

NB, LFN, LFA, MALO = "9900000002009", "9900000001001", "9900000003005", "51900000012"
THU = datetime(2025, 11, 13, 13, 30, tzinfo=UTC)
START = datetime(2025, 11, 30, 23, 0, tzinfo=UTC)


async def test_supplier_change_runs_on_hosted_ray_actors(tmp_path: Path) -> None:
    path = tmp_path / "db"
    clock = VirtualClock(THU)
    actors = RayActorSystem(
        path,
        workflows=[GpkeNbWorkflow],
        placement="hosted",
        hosts=2,
        name_prefix=f"in-{uuid.uuid4().hex[:8]}",
    )
    try:
        async with LmdbStore(path) as store:  # the driver's own handle on the shared environment
            pipeline = InboundPipeline(
                store, actors, tenants=[NB], clock=clock,
                master_data=StaticMasterData({MALO: Suppliers(current=LFA)}),
            )  # fmt: skip
            raw = anmeldung(
                lfn=LFN,
                nb=NB,
                malo=MALO,
                zuordnungsbeginn=START,
                ide_ref="TX1",
                control_ref="LFN1",
                sent_at=THU,
            )
            [started] = (await pipeline.ingest(raw, THU)).messages
            assert started.outcome == "started"
            request = next(
                m for m in await store.pending(100, datetime(2100, 1, 1, tzinfo=UTC))  # hosts stamp real time
                if m.message_type == "UTILMD" and m.payload["transactions"][0]["pid"] == "55010"
            )  # fmt: skip
            answer_at = THU + timedelta(hours=1)
            answer = lfa_answer(
                lfa=LFA, nb=NB, malo=MALO, request_ref=request.payload["transactions"][0]["ide_ref"],
                ide_ref="LFA1", control_ref="LFA1", sent_at=answer_at,
            )  # fmt: skip
            [routed] = (await pipeline.ingest(answer, answer_at)).messages
            assert (routed.outcome, routed.process_id) == ("routed", started.process_id)
            ref = await actors.lookup(TenantId.from_party_id(NB), f"tx:{LFN}:TX1")
            assert ref is not None
            state = await ref.state()  # crossed Ray as the workflow's own state model
            assert state.status is Status.CONFIRMED and state.lfa_confirmed is True
    finally:
        await actors.aclose()
