"""Host-side ingest on a partitioned Ray system: each interchange runs on the host of its MaLo's partition."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mako_actors import InvalidArgument, PartitionMap, StaticMasterData, Suppliers, TenantId, VirtualClock
from mako_actors.actors import RayActorSystem
from mako_actors.actors.ray_system import ingest_partition
from mako_actors.gpke import GpkeNbWorkflow, Status
from mako_actors.gpke.synthetic import anmeldung, lfa_answer
from mako_actors.gpke.validation import malo_check_digit
from mako_actors.partitions import partition_of, routing_slot
from stores.lmdb import LmdbStore

pytestmark = pytest.mark.usefixtures("ray_cluster")

NB, LFN, LFA = "9900000002009", "9900000001001", "9900000003005"
TENANT = TenantId.from_party_id(NB)
THU = datetime(2025, 11, 13, 13, 30, tzinfo=UTC)
START = datetime(2025, 11, 30, 23, 0, tzinfo=UTC)
PARTITIONS = 4
MALOS = [f"{body}{malo_check_digit(body)}" for body in (f"51238696{i}" for i in range(10, 16))]


def partition_store(tmp_path: Path, p: int) -> LmdbStore:
    return LmdbStore(tmp_path / "data" / f"p{p:04d}")


async def test_interchanges_ingested_on_the_hosts_start_and_reach_processes_in_their_malos_partition(
    tmp_path: Path,
) -> None:
    clock = VirtualClock(THU)
    layout = PartitionMap.spread(PARTITIONS, {"local": tmp_path / "data"})
    inbound = {"tenants": [NB], "master_data": StaticMasterData({m: Suppliers(current=LFA) for m in MALOS})}
    async with RayActorSystem(
        tmp_path / "map", workflows=[GpkeNbWorkflow], partitions=layout, clock=clock, inbound=inbound,
        name_prefix=f"ing-{uuid.uuid4().hex[:8]}",
    ) as actors:  # fmt: skip
        homes = {m: routing_slot(TENANT, m) % PARTITIONS for m in MALOS}
        assert len(set(homes.values())) > 1  # the MaLos spread over partitions
        started = {}
        for i, malo in enumerate(MALOS):
            raw = anmeldung(
                lfn=LFN, nb=NB, malo=malo, zuordnungsbeginn=START, ide_ref=f"TX{i}",
                control_ref=f"LFN{i}", sent_at=THU,
            )  # fmt: skip
            result = await actors.ingest(raw, THU, source=f"lfn-{i}.edi")
            [outcome] = result.messages
            assert (result.status, outcome.outcome) == ("accepted", "started"), result
            assert (await actors.ingest(raw, THU)).status == "duplicate"  # the receipt stream dedups
            ref = await actors.lookup(TENANT, f"tx:{LFN}:TX{i}")  # the driver finds the same process
            assert ref is not None and ref.identity().process_id == outcome.process_id
            assert partition_of(ref.stream_id, PARTITIONS) == homes[malo]
            started[malo] = ref

        # Each process's events, its 55010 and its MaLo's supply journal are in its MaLo's partition only.
        requests = {}
        for malo, ref in started.items():
            for p in range(PARTITIONS):
                async with partition_store(tmp_path, p) as store:
                    version = await store.stream_version(ref.stream_id)
                    assert (version > 0) == (p == homes[malo])
                    if p == homes[malo]:
                        pending = await store.pending(1000, datetime(2100, 1, 1, tzinfo=UTC))
                        [request] = [
                            m for m in pending
                            if m.stream_id == ref.stream_id and m.message_type == "UTILMD"
                            and m.payload["transactions"][0]["pid"] == "55010"
                        ]  # fmt: skip
                        requests[malo] = request.payload["transactions"][0]["ide_ref"]

        answer_at = THU + timedelta(hours=1)
        clock.advance(timedelta(hours=1))
        for i, malo in enumerate(MALOS[:3]):
            answer = lfa_answer(
                lfa=LFA, nb=NB, malo=malo, request_ref=requests[malo], ide_ref=f"LFA{i}",
                control_ref=f"LFA{i}", sent_at=answer_at,
            )  # fmt: skip
            [routed] = (await actors.ingest(answer, answer_at)).messages
            assert (routed.outcome, routed.process_id) == ("routed", started[malo].identity().process_id)
            state = await started[malo].state()  # read by the driver, through the same host
            assert state.status is Status.CONFIRMED and state.lfa_confirmed is True

        # An answer to no request of ours: refused (APERAK Z10) and dead-lettered on the host.
        stray = lfa_answer(
            lfa=LFA, nb=NB, malo=MALOS[0], request_ref="NOSUCHREF", ide_ref="LFA9", control_ref="LFA9",
            sent_at=answer_at,
        )  # fmt: skip
        [refused] = (await actors.ingest(stray, answer_at)).messages
        assert (refused.outcome, refused.refused) == ("dead_letter", "Z10")
        async with partition_store(tmp_path, ingest_partition(stray, PARTITIONS)) as store:
            [letter] = await store.dead_letters()  # kept in the partition the interchange ran in
            assert letter.payload["interchange_ref"] == "LFA9" and letter.payload["ide_ref"] == "LFA9"
        for malo in MALOS[3:]:  # not answered yet
            assert (await started[malo].state()).status is not Status.CONFIRMED


async def test_ingest_needs_a_partitioned_hosted_system_with_inbound(tmp_path: Path) -> None:
    layout = PartitionMap.spread(2, {"local": tmp_path / "data"})
    with pytest.raises(InvalidArgument, match="partitioned"):
        RayActorSystem(tmp_path / "db", workflows=[GpkeNbWorkflow], inbound={"tenants": [NB]})
    with pytest.raises(InvalidArgument, match="tenant"):
        RayActorSystem(tmp_path / "map1", workflows=[GpkeNbWorkflow], partitions=layout, inbound={})
    prefix = f"x-{uuid.uuid4().hex[:8]}"
    async with RayActorSystem(
        tmp_path / "map2", workflows=[GpkeNbWorkflow], partitions=layout, name_prefix=prefix
    ) as actors:
        with pytest.raises(InvalidArgument, match="inbound"):
            await actors.ingest(b"UNA:+.? 'UNB+UNOC:3'", THU)
