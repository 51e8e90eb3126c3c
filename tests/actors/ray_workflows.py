"""A workflow for the Ray suites whose handler raises engine errors on demand (importable by workers)."""

from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from mako_actors import Event, VersionConflict, Workflow, WorkflowError, WorkflowOutput


class Fail(BaseModel):
    model_config = ConfigDict(frozen=True)
    kind: Literal["conflict", "workflow", "ok", "unpicklable", "crash_once"]
    label: str = ""
    # crash_once: the host process exits while deciding, the first time (no file at ``marker``),
    # once a file ``<marker>.go`` exists (the test has queued what should wait behind it).
    marker: str = ""
    idempotency_key: str | None = None


class Unpicklable(Exception):
    """Pickles, but does not unpickle: its constructor takes other arguments than it stores."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"{code}: {text}")


class Passed(Event, type="faulty.passed"):
    label: str = ""


class FaultyState(BaseModel):
    model_config = ConfigDict(frozen=True)
    passed: int = 0
    labels: tuple[str, ...] = ()


class Faulty(Workflow[Fail, FaultyState]):
    name = "faulty"
    events = (Passed,)

    def initial_state(self) -> FaultyState:
        return FaultyState()

    def handle(self, state: FaultyState, command: Fail) -> WorkflowOutput:
        if command.kind == "conflict":
            raise VersionConflict("process/x/y", 3, 7)
        if command.kind == "workflow":
            raise WorkflowError.rejected("asked to fail")
        if command.kind == "unpicklable":
            raise Unpicklable(7, "bad input")
        if command.kind == "crash_once" and not Path(command.marker).exists():
            Path(command.marker).write_text("deciding")
            deadline = time.monotonic() + 60
            while not Path(command.marker + ".go").exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            os._exit(1)
        return WorkflowOutput.of(Passed(label=command.label))

    def apply(self, state: FaultyState, event: Any) -> FaultyState:
        return state.model_copy(update={"passed": state.passed + 1, "labels": (*state.labels, event.label)})


class FixedClock:
    """A picklable clock that always reads one instant (it runs on the Ray hosts)."""

    def __init__(self, instant: datetime) -> None:
        self.instant = instant

    def __call__(self) -> datetime:
        return self.instant


class FileSender:
    """A picklable ``Sender`` that runs on the hosts and drops one file per delivered message."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    async def send(self, message: Any) -> None:
        Path(self.directory).mkdir(parents=True, exist_ok=True)
        Path(self.directory, f"{message.message_id}.txt").write_text(f"{message.recipient}\n")


class MasterDataFailingOnce:
    """Master data whose read of one MaLo fails once, transiently (a share gone for a moment):
    an interchange's routing is cut short after its earlier transactions started their
    processes, and its ingest raises; the next ingest of it routes it again. Each host holds
    its own copy (and fails once)."""

    def __init__(self, current: str, failing: str) -> None:
        self.current = current
        self.failing: str | None = failing

    def suppliers(self, tenant: str, malo: str, at: datetime) -> Any:
        from mako_actors import StoreError, Suppliers

        if malo == self.failing:
            self.failing = None
            raise StoreError("master data unreadable for a moment", transient=True)
        return Suppliers(current=self.current)

    def bilanzkreise(self, tenant: str, supplier: str) -> frozenset[str] | None:
        return None
