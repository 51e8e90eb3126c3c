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


async def test_a_key_whose_home_partition_is_being_moved_reaches_it_when_the_move_ends(
    tmp_path: Path,
) -> None:
    """The ``ide:`` key of our 55010 is homed in a partition whose move is under way (fenced, as
    ``hand_over`` leaves it) while the Anmeldung is ingested. The write at its home failed once,
    was logged and dropped: the ingest was acknowledged, and the LFA's answer naming our 55010
    was refused (APERAK Z10, "names no request of ours") until a host restarted. Now the key is
    written again, at the latest when the move ends."""
    from mako_actors import InboundPipeline
    from mako_actors.actors import LocalActorSystem
    from mako_actors.inbound import receipt_identity
    from mako_actors.partitions import key_home
    from stores.partitioned import partition_dir

    count, clock = 8, VirtualClock(THU)
    for i in range(50):  # a MaLo whose 55010's key is homed apart from its process and receipt
        malo = f"5123869{i:03d}{malo_check_digit(f'5123869{i:03d}')}"
        master = StaticMasterData({malo: Suppliers(current=LFA)})
        raw = anmeldung(lfn=LFN, nb=NB, malo=malo, zuordnungsbeginn=START, ide_ref="TX1", control_ref="LFN1",
                        sent_at=THU)  # fmt: skip
        async with LmdbStore(tmp_path / f"scratch{i}") as scratch, LocalActorSystem(
            scratch, [GpkeNbWorkflow()]
        ) as local:
            pipeline = InboundPipeline(scratch, local, tenants=[NB], master_data=master, clock=clock)
            await pipeline.ingest(raw, THU)
            [ide] = [
                m.payload["transactions"][0]["ide_ref"] for m in await scratch.outbox_messages(100)
                if m.message_type == "UTILMD" and m.payload["transactions"][0]["pid"] == "55010"
            ]  # fmt: skip
        home = key_home(TENANT, f"ide:{ide}", count)
        receipt = partition_of(receipt_identity(NB, LFN, "LFN1").stream_id, count)
        if home not in (routing_slot(TENANT, malo) % count, receipt):
            break
    layout, system = two_nodes(tmp_path, [malo], "mv", clock, count)
    async with system:
        await system.start()
        async with LmdbStore(partition_dir(layout.data_dirs[layout.node_of(home)], home)) as moving:
            moving.fence(True)  # its move is under way
        result = await system.ingest(raw, THU, source="anmeldung.edi")
        assert [m.outcome for m in result.messages] == ["started"]
        await system.rebalance(home, layout.node_of(home))  # the move ends: its fence is lifted
        later = THU + timedelta(hours=1)
        clock.set(later)
        answer = lfa_answer(lfa=LFA, nb=NB, malo=malo, request_ref=ide, ide_ref="LFA1", control_ref="LFA1",
                            sent_at=later)  # fmt: skip
        result = await system.ingest(answer, later, source="answer.edi")
        assert [(m.outcome, m.refused) for m in result.messages] == [("routed", None)]
        assert (await system.repair_keys()).written == 0  # nothing was left to repair


def two_nodes(
    tmp_path: Path, malos: list[str], prefix: str, clock: VirtualClock | None = None, count: int = 8
) -> tuple[PartitionMap, RayActorSystem]:
    """A system of ``count`` partitions spread over nodes "local" and "other", ingesting for NB
    with the ``malos`` supplied by LFA."""
    layout = PartitionMap.spread(count, {"local": tmp_path / "a", "other": tmp_path / "b"})
    inbound = {"tenants": [NB], "master_data": StaticMasterData({m: Suppliers(current=LFA) for m in malos})}
    system = RayActorSystem(
        tmp_path / "map", workflows=[GpkeNbWorkflow], partitions=layout, clock=clock or VirtualClock(THU),
        inbound=inbound, name_prefix=f"{prefix}-{uuid.uuid4().hex[:8]}",
    )  # fmt: skip
    return layout, system


async def kill_host_of(system: RayActorSystem, data_dir: Path) -> None:
    """Start the hosts, then kill the one serving ``data_dir`` (its Ray node stays up)."""
    import ray

    await system.start()
    [host] = [h for h in system.host_handles() if await h.serves.remote() == str(data_dir)]
    ray.kill(host, no_restart=True)


async def test_ingests_running_while_a_partition_they_need_moves_wait_for_it(tmp_path: Path) -> None:
    """``rebalance``: "operations for the partition wait meanwhile (nothing is refused)". An
    ingest on one host needing the moving partition (its receipt stream's, its MaLo's) through
    another host was refused there unrun (PartitionNotOpen) and failed: about one in four."""
    import asyncio
    import random

    from mako_actors.inbound import receipt_identity

    count, rounds, rng = 8, 16, random.Random(5)
    malos = [f"5123869{i:03d}{malo_check_digit(f'5123869{i:03d}')}" for i in range(rounds)]
    _, system = two_nodes(tmp_path, malos, "rb", count=count)
    async with system:
        await system.start()
        for k, malo in enumerate(malos):
            raw = anmeldung(lfn=LFN, nb=NB, malo=malo, zuordnungsbeginn=START, ide_ref=f"TX{k}",
                            control_ref=f"LFN{k}", sent_at=THU)  # fmt: skip
            receipt = partition_of(receipt_identity(NB, LFN, f"LFN{k}").stream_id, count)
            moving = rng.choice([routing_slot(TENANT, malo) % count, receipt])
            assert system.partition_map is not None
            target = next(n for n in ("local", "other") if n != system.partition_map.node_of(moving))

            async def move(partition: int = moving, node: str = target) -> None:
                await asyncio.sleep(rng.random() * 0.02)
                await system.rebalance(partition, node)

            result, _ = await asyncio.gather(system.ingest(raw, THU), move())
            assert [m.outcome for m in result.messages] == ["started"], result


async def test_an_ingest_needing_a_killed_hosts_partition_makes_that_host_again(tmp_path: Path) -> None:
    """The host of node "other" died (killed) while its node is up. An ingest running on node
    "local" whose receipt stream lives on "other" failed with PartitionUnavailable ("no host on
    node 'other'") at every retry: hosts only look each other up, and the driver made the host
    again only when one of its own calls reached the dead one."""

    from mako_actors.inbound import receipt_identity

    count = 8
    layout, system = two_nodes(tmp_path, MALOS, "dp", count=count)
    malo = next(m for m in MALOS if layout.node_of(routing_slot(TENANT, m) % count) == "local")
    receipts = {f"LFN{k}": partition_of(receipt_identity(NB, LFN, f"LFN{k}").stream_id, count)
                for k in range(99)}  # fmt: skip
    ref = next(r for r, p in receipts.items() if layout.node_of(p) == "other")  # its receipt stream there
    raw = anmeldung(lfn=LFN, nb=NB, malo=malo, zuordnungsbeginn=START, ide_ref="TX1", control_ref=ref,
                    sent_at=THU)  # fmt: skip
    async with system:
        await kill_host_of(system, tmp_path / "b")
        result = await system.ingest(raw, THU)
        assert [m.outcome for m in result.messages] == ["started"]
        assert (await system.ingest(raw, THU)).status == "duplicate"


async def test_one_transaction_sent_twice_at_once_starts_one_process_and_refuses_the_other_z15(
    tmp_path: Path,
) -> None:
    """One LFN sends the same transaction (IDE, MaLo) in two interchanges ingested at once. On the
    hosts the loser's commit conflicted in the MaLo's partition, but its lookup asked the key's
    home, which the winner's key reaches only after its commit: it raced three times and got
    APERAK Z35 ("competing triggers kept racing") instead of Z15 in about every third round."""
    import asyncio

    _, system = two_nodes(tmp_path, MALOS, "twice")
    async with system:
        await system.start()
        for k, malo in enumerate(MALOS):
            pair = [
                anmeldung(
                    lfn=LFN, nb=NB, malo=malo, zuordnungsbeginn=START, ide_ref=f"B{k}",
                    control_ref=f"B{k}{copy}", sent_at=THU,
                )
                for copy in "xy"
            ]  # fmt: skip
            results = await asyncio.gather(*(system.ingest(raw, THU) for raw in pair))
            outcomes = sorted((m.outcome, m.refused) for r in results for m in r.messages)
            assert outcomes == [("dead_letter", "Z15"), ("started", None)], (k, outcomes)


async def test_a_contrl_right_after_a_dead_host_was_made_again_finds_its_process(tmp_path: Path) -> None:
    """The host of node "other" (home of our 55010's ``ic:`` key) died. The Anmeldung's commit
    tried to write that key there for ~5 s before leaving it to the background retries (every
    command of the commit waited as long); the LFA's CONTRL right after made the host again, but
    the key was still waiting in node "local"'s host: "CONTRL refers to unknown interchange", a
    dead letter. Now a dead home is not waited for, and the driver has the waiting keys written
    before it runs the ingest again on the host it made."""

    from mako_actors import InboundPipeline
    from mako_actors.actors import LocalActorSystem
    from mako_actors.edifact import render_outbound
    from mako_actors.gpke.keys import interchange_key, transaction_key
    from mako_actors.inbound import receipt_identity
    from mako_actors.partitions import key_home

    count, clock = 8, VirtualClock(THU)
    layout = PartitionMap.spread(count, {"local": tmp_path / "a", "other": tmp_path / "b"})
    on = layout.node_of
    homes = {f"TX{k}": key_home(TENANT, transaction_key(LFN, f"TX{k}"), count) for k in range(99)}
    ide = next(t for t, p in homes.items() if on(p) == "local")
    receipts = {f"LFN{k}": partition_of(receipt_identity(NB, LFN, f"LFN{k}").stream_id, count)
                for k in range(99)}  # fmt: skip
    ref = next(r for r, p in receipts.items() if on(p) == "local")

    def contrl(control_ref: str, ours: str) -> bytes:
        payload = {"reference": "C1", "interchange_ref": ours, "interchange_sender_id": NB,
                   "interchange_recipient_id": LFA, "action": "7"}  # fmt: skip
        envelope = {"sender_id": LFA, "recipient_id": NB, "prepared_at": THU, "control_ref": control_ref}
        return render_outbound("CONTRL", payload, envelope=envelope)

    for i in range(200):  # an Anmeldung all on "local" whose 55010's ic: key is homed on "other"
        malo = f"5123869{i:03d}{malo_check_digit(f'5123869{i:03d}')}"
        master = StaticMasterData({malo: Suppliers(current=LFA)})
        raw = anmeldung(lfn=LFN, nb=NB, malo=malo, zuordnungsbeginn=START, ide_ref=ide, control_ref=ref,
                        sent_at=THU)  # fmt: skip
        if on(ingest_partition(raw, count)) != "local":
            continue
        async with LmdbStore(tmp_path / f"scratch{i}") as scratch, LocalActorSystem(
            scratch, [GpkeNbWorkflow()]
        ) as local:
            pipeline = InboundPipeline(scratch, local, tenants=[NB], master_data=master, clock=clock)
            await pipeline.ingest(raw, THU)
            sent = await scratch.outbox_messages(100)
            [ours] = [m.payload["envelope"]["control_ref"] for m in sent if m.message_type == "UTILMD"
                      and m.payload["transactions"][0]["pid"] == "55010"]  # fmt: skip
        if on(key_home(TENANT, interchange_key(ours), count)) == "other":
            break
    ack = next(contrl(f"LFAC{k}", ours) for k in range(1000)
               if ingest_partition(contrl(f"LFAC{k}", ours), count) not in (ingest_partition(raw, count),)
               and on(ingest_partition(contrl(f"LFAC{k}", ours), count)) == "local")  # fmt: skip
    _, system = two_nodes(tmp_path, [malo], "ack", clock, count)
    async with system:
        await kill_host_of(system, tmp_path / "b")
        result = await system.ingest(raw, THU)
        assert [m.outcome for m in result.messages] == ["started"]
        result = await system.ingest(ack, THU)
        assert [m.outcome for m in result.messages] == ["routed"], result


def with_transaction_of(raw: bytes, other: bytes) -> bytes:
    """``raw`` with ``other``'s transaction (IDE up to UNT) after its own, in its one message."""
    segments, others = raw.split(b"'"), other.split(b"'")
    ide = next(n for n, segment in enumerate(others) if segment.startswith(b"IDE+"))
    block = others[ide : next(n for n, segment in enumerate(others) if segment.startswith(b"UNT+"))]
    unt = next(n for n, segment in enumerate(segments) if segment.startswith(b"UNT+"))
    tag, count, reference = segments[unt].split(b"+")
    counted = b"+".join([tag, str(int(count) + len(block)).encode(), reference])
    return b"'".join([*segments[:unt], *block, counted, *segments[unt + 1 :]])


async def test_an_interchange_routed_again_on_a_host_skips_its_own_started_transactions(
    tmp_path: Path,
) -> None:
    """An interchange whose ingest failed after its first transaction started a process is routed
    again: who started that process is read from its first event in its partition (one of two
    nodes). It was this interchange: skipped, not refused as a reused IDE (Z15)."""
    from mako_actors import StoreError
    from tests.actors.ray_workflows import MasterDataFailingOnce

    first, second = MALOS[0], MALOS[1]
    raws = [
        anmeldung(
            lfn=LFN, nb=NB, malo=malo, zuordnungsbeginn=START, ide_ref=f"R{k}", control_ref="R1", sent_at=THU
        )
        for k, malo in enumerate((first, second))
    ]  # fmt: skip
    raw = with_transaction_of(*raws)
    layout = PartitionMap.spread(8, {"local": tmp_path / "a", "other": tmp_path / "b"})
    system = RayActorSystem(
        tmp_path / "map", workflows=[GpkeNbWorkflow], partitions=layout, clock=VirtualClock(THU),
        inbound={"tenants": [NB], "master_data": MasterDataFailingOnce(LFA, second)},
        name_prefix=f"again-{uuid.uuid4().hex[:8]}",
    )  # fmt: skip
    async with system:
        with pytest.raises(StoreError, match="unreadable for a moment"):
            await system.ingest(raw, THU, source="r.edi")
        again = await system.ingest(raw, THU, source="r.edi")
        # (as a run without the failure records it: both started, the first before the failure)
        assert [(m.outcome, m.refused) for m in again.messages] == [("started", None), ("started", None)]
        assert again.status == "accepted"
        for k, malo in enumerate((first, second)):
            ref = await system.lookup(TENANT, f"tx:{LFN}:R{k}")
            assert ref is not None and (await ref.state()).malo == malo
            assert ref.identity().process_id == again.messages[k].process_id
