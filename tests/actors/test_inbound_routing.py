"""A trigger's process is placed by its MaLo: its claim key and supply journal are homed with it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from mako_actors import InboundPipeline, LocalActorSystem, StaticMasterData, Suppliers, TenantId, VirtualClock
from mako_actors.gpke import GpkeNbWorkflow, malo_key
from mako_actors.gpke.supply import supply_key
from mako_actors.gpke.synthetic import anmeldung
from mako_actors.partitions import journal_home, key_home, partition_of, routing_slot
from stores.lmdb import LmdbStore

NB, LFN, LFA = "9900000002009", "9900000001001", "9900000003005"
TENANT = TenantId.from_party_id(NB)
THU = datetime(2025, 11, 13, 13, 30, tzinfo=UTC)
START = datetime(2025, 11, 30, 23, 0, tzinfo=UTC)


def test_gpke_claim_key_and_supply_journal_live_in_the_malos_partition() -> None:
    for malo in ("51238696781", "51900000012", "50000000005"):
        for count in (1, 4, 64, 4096):
            home = routing_slot(TENANT, malo) % count
            assert key_home(TENANT, malo_key(malo, 3), count) == home
            assert journal_home(TENANT, supply_key(malo), count) == home


async def test_a_trigger_spawns_its_process_in_the_malos_partition(tmp_path: Path) -> None:
    malos = ["51238696781", "51900000012", "50000000005", "51111111111"]
    async with LmdbStore(tmp_path / "db") as store, LocalActorSystem(store, [GpkeNbWorkflow]) as actors:
        pipeline = InboundPipeline(
            store, actors, tenants=[NB], clock=VirtualClock(THU),
            master_data=StaticMasterData({m: Suppliers(current=LFA) for m in malos}),
        )  # fmt: skip
        for i, malo in enumerate(malos):
            raw = anmeldung(
                lfn=LFN, nb=NB, malo=malo, zuordnungsbeginn=START, ide_ref=f"TX{i}",
                control_ref=f"LFN{i}", sent_at=THU,
            )  # fmt: skip
            [started] = (await pipeline.ingest(raw, THU)).messages
            assert started.outcome == "started" and started.process_id is not None
            ref = await actors.lookup(TENANT, f"tx:{LFN}:TX{i}")
            assert ref is not None and ref.identity().process_id == started.process_id
            assert partition_of(ref.stream_id, 4096) == routing_slot(TENANT, malo)
