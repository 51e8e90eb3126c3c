"""`make demo`: a small workflow on the embedded LMDB store, surviving a close and reopen.

Data lives in ./data/demo (git-ignored) and is recreated on every run.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quickstart import MeterWorkflow, Read

from mako_actors import Process, TenantId, WorkflowId
from stores.lmdb import LmdbStore

DATA = Path(__file__).resolve().parent.parent / "data" / "demo"


async def main() -> None:
    shutil.rmtree(DATA, ignore_errors=True)
    tenant = TenantId.from_party_id("9900000002009")
    print(f"store: LMDB at {DATA}")
    async with LmdbStore(DATA) as store:
        process = Process(MeterWorkflow(), store, tenant, WorkflowId.new("meter", "FV2510"))
        print(f"spawned process {process.process_id} ({process.workflow_id})")
        for kwh in (120, 80, 45):
            [event] = await process.execute(Read(kwh=kwh))
            print(f"  execute Read(kwh={kwh}) -> event #{event.sequence} {event.event_type} {event.payload}")
        print(f"  state: {await process.state()}  events: {await process.event_count()}")
        identity = process.identity()
    print("store closed; reopening ...")
    async with LmdbStore(DATA) as store:
        again = Process.from_identity(MeterWorkflow(), store, identity)
        print(f"  resumed {again.process_id}: state {await again.state()}")
        await again.execute(Read(kwh=5))
        print(f"  after one more command: {await again.state()}  events: {await again.event_count()}")
        print(f"  state after event 1 (state_at): {await again.state_at(1)}")


if __name__ == "__main__":
    asyncio.run(main())
