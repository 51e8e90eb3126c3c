"""The README quick start as a script: define a workflow, spawn, execute, read state, resume."""

import asyncio
import tempfile

from pydantic import BaseModel

from mako_actors import Event, Process, TenantId, Workflow, WorkflowId
from stores.lmdb import LmdbStore


class Read(BaseModel):  # a command
    kwh: int


class MeterRead(Event, type="meter.read"):  # an event, stored under its type name
    kwh: int


class Meter(BaseModel):  # the state
    total: int = 0


class MeterWorkflow(Workflow[Read, Meter]):
    name = "meter"
    events = (MeterRead,)

    def initial_state(self) -> Meter:
        return Meter()

    def handle(self, state: Meter, command: Read) -> list[Event]:
        return [MeterRead(kwh=command.kwh)]

    def apply(self, state: Meter, event: Event) -> Meter:
        assert isinstance(event, MeterRead)
        return Meter(total=state.total + event.kwh)


async def main(path: str) -> None:
    tenant = TenantId.from_party_id("9900000002009")
    async with LmdbStore(path) as store:
        process = Process(MeterWorkflow(), store, tenant, WorkflowId.new("meter", "FV2510"))
        await process.execute(Read(kwh=42))
        identity = process.identity()  # persist this to route later messages here
    async with LmdbStore(path) as store:  # a restart later
        again = Process.from_identity(MeterWorkflow(), store, identity)
        await again.execute(Read(kwh=8))
        print(await again.state(), await again.event_count())  # total=50 2


if __name__ == "__main__":
    asyncio.run(main(tempfile.mkdtemp()))
