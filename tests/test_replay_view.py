"""The replay's view of its store answers activations exactly as the store would.

``_RunView`` answers ``load_activation`` (and the actors' ``load_activation_now``) from its
caches where it can: a receipt stream begun in the run, a stream a fresh store never saw.
Whatever it answers must equal what the LMDB store underneath reads, or a replay would
decide on another state than a plain run.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest

from mako_actors import Process, ProcessId, TenantId, WorkflowId
from mako_actors.ids import StreamId
from mako_actors.inbound import RECEIPT_WORKFLOW
from mako_actors.replay import _RunView
from mako_actors.store import Store
from stores.lmdb import LmdbStore
from tests.workflows import Ledger, Record

TENANT = TenantId.from_party_id("9900000002009")
LEDGER = Ledger()


class _Receipts(Ledger):
    """The ledger under the receipt workflow's name: the view caches such streams whole."""

    name = RECEIPT_WORKFLOW


RECEIPTS = _Receipts()


async def _same_activations(view: _RunView, store: LmdbStore, stream: StreamId, workflow: Ledger) -> None:
    name, version = workflow.name, workflow.state_schema_version
    for upto in (None, 0, 1, 2, 3, 9):
        assert await view.load_activation(stream, name, version, upto) == await store.load_activation(
            stream, name, version, upto
        )
    assert view.load_activation_now(stream, name, version) == store.load_activation_now(stream, name, version)
    request = [(stream, name, version)]
    assert view.load_activations_now(request) == store.load_activations_now(request)


async def test_activations_from_the_view_equal_the_stores(tmp_path: Path) -> None:
    async with LmdbStore(tmp_path / "store") as store:
        view = _RunView(store, lambda _: None)
        view.fresh = view.cache_receipts = True
        # Processes on the view, as the replay runs them; the receipt stream is cached by its
        # workflow id's name (``_RunView._observe``).
        on_view = cast(Store, view)
        receipt = Process(RECEIPTS, on_view, TENANT, WorkflowId.new(RECEIPT_WORKFLOW, "FV2510"))
        ledger = Process(LEDGER, on_view, TENANT, WorkflowId.new("ledger", "FV2510"))
        for amount in (1, 2, 3):
            await receipt.execute_snapshot(Record(amount=amount))
            await ledger.execute_and_enqueue_with_snapshot(
                Record(amount=amount), on_view, snapshot_interval=2
            )
        assert receipt.stream_id in view.receipts  # answered from the cache ...
        untouched = StreamId.for_process(TENANT, ProcessId.new())  # ... and known empty
        read_before = store.stats.events_read
        name, version = RECEIPTS.name, RECEIPTS.state_schema_version
        cached = [await view.load_activation(s, name, version) for s in (receipt.stream_id, untouched)]
        assert [view.load_activation_now(s, name, version) for s in (receipt.stream_id, untouched)] == cached
        both = [(receipt.stream_id, name, version), (untouched, name, version)]
        assert view.load_activations_now(both) == cached  # the actors' batch of a loop turn
        assert store.stats.events_read == read_before  # without a store read
        assert [len(a.events) for a in cached] == [3, 0] and cached[0].snapshot is None
        streams = ((receipt.stream_id, RECEIPTS), (ledger.stream_id, LEDGER), (untouched, LEDGER))
        for stream, workflow in streams:
            await _same_activations(view, store, stream, workflow)
        # A batch mixing what the view knows with what only the store does, in request order.
        batch = [(stream, workflow.name, workflow.state_schema_version) for stream, workflow in streams * 2]
        assert view.load_activations_now(batch) == store.load_activations_now(batch)
        assert await store.load_snapshot(ledger.stream_id) is not None  # the tail after it counts
        # The state a process rebuilds through the view (snapshot and tail) is the store's.
        for process, workflow in ((receipt, RECEIPTS), (ledger, LEDGER)):
            plain = Process.from_identity(workflow, store, process.identity())
            via_view = await process.state_with_snapshot()
            assert via_view == await plain.state_with_snapshot() == await plain.state()
            assert via_view.total == 6 and via_view.entries == 3


def test_the_view_offers_activation_on_its_class() -> None:
    # ``load_state`` and the actors look on the class, not the (forwarding) instance: a method
    # only forwarded by ``__getattr__`` would not count, and the slow path would read.
    assert {"load_activation", "load_activation_now", "load_activations_now"} <= set(vars(_RunView))


async def test_the_view_forwards_what_it_does_not_define_to_the_store(tmp_path: Path) -> None:
    async with LmdbStore(tmp_path / "store") as store:
        view = _RunView(store, lambda _: None)
        # No ``__getattr__``: it would send every read of the view's own fields through
        # CPython's slow lookup hook.
        assert "__getattr__" not in vars(_RunView)
        assert view.stats is store.stats and view.durability is store.durability
        assert await view.outbox_count() == await store.outbox_count() == 0
        assert view.pending == {}  # the view's own field (deadlines) wins over the store's method
        assert callable(store.pending)
        with pytest.raises(AttributeError):
            _ = view.no_such_attribute  # type: ignore[attr-defined]


async def test_journals_from_the_view_equal_the_stores(tmp_path: Path) -> None:
    from mako_actors.errors import InvalidArgument, VersionConflict
    from mako_actors.store import Commit, JournalEntry
    from mako_actors.version import ExpectedVersion

    async with LmdbStore(tmp_path / "store") as store:
        view = _RunView(store, lambda _: None)
        view.fresh = view.fresh_journals = True
        stream = StreamId.for_process(TENANT, ProcessId.new())
        key = "supply:51238696788"
        # A tuple reads back as a list (msgpack): the view answers what the store reads.
        entry = JournalEntry(TENANT, key, {"kind": "assigned", "supplier": "9900000010010", "at": ("x", 1)})
        stale = Commit(stream_id=stream, expected=ExpectedVersion.exact(7), journal=[entry])
        results = await view.commit_many(
            [stale, Commit(stream_id=stream, expected=ExpectedVersion.exact(0), journal=[entry])]
        )
        assert isinstance(results[0], VersionConflict)  # a failed commit appends nothing
        await view.append_journal(TENANT, key, [{"kind": "released", "process": "p"}])
        places = ((TENANT, key), (TENANT, "supply:other"), (TenantId.from_party_id("9900000010010"), key))
        stored = [await store.journal(tenant, name) for tenant, name in places]

        async def no_read(*_: object) -> None:
            raise AssertionError("the view read the store")

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(store, "journal", no_read)
            assert [await view.journal(tenant, name) for tenant, name in places] == stored
            assert [e["kind"] for e in await view.journal(TENANT, key)] == ["assigned", "released"]
            (await view.journal(TENANT, key)).clear()  # the caller's own list
            assert len(await view.journal(TENANT, key)) == 2
        for bad in ("", "a\x00b"):  # the store's refusal stands
            with pytest.raises(InvalidArgument):
                await view.journal(TENANT, bad)


async def test_a_deadline_given_up_on_in_a_sequential_replay_leaves_a_keyed_letter(tmp_path: Path) -> None:
    """As a pipelined run's (``_fire``): keyed, so a re-run over the store adds no second one."""
    from datetime import UTC, datetime

    from mako_actors import Deadline
    from mako_actors.dead_letters import DeadLetter
    from mako_actors.errors import WorkflowError
    from mako_actors.scheduler import DeadlineScheduler, VirtualClock

    due = datetime(2025, 11, 14, 8, 0, tzinfo=UTC)

    async def refuse(deadline: Deadline) -> object:
        raise WorkflowError.rejected("cannot compensate")

    async with LmdbStore(tmp_path / "store") as store:
        view = _RunView(store, lambda _: None)
        on_view = cast(Store, view)
        ledger = Process(LEDGER, on_view, TENANT, WorkflowId.new("ledger", "FV2510"))
        await ledger.execute_and_enqueue(Record(amount=1, remind_at=due))
        [deadline] = await store.due_deadlines(due, 10)
        await DeadlineScheduler(on_view, refuse, VirtualClock(due)).run_due()
        [letter] = await store.dead_letters()
        plain = DeadLetter(
            kind="deadline", reason=letter.reason, payload=deadline.to_plain(), recorded_at=due
        )
        assert letter.key is not None and letter.key == plain.keyed().key
        assert await store.due_deadlines(due, 10) == [] and not view.is_pending(deadline.deadline_id)


@pytest.mark.parametrize(("gather", "transactions"), [(0, 2), (6, 1)])
async def test_commits_a_few_loop_turns_apart_share_one_write_transaction(
    tmp_path: Path, gather: int, transactions: int
) -> None:
    """A pipelined run's commits asked for within ``gather`` loop turns of the first are written
    in one LMDB transaction (fewer B-tree pages rewritten); each caller gets its own result."""
    import asyncio

    from mako_actors.store import Commit, JournalEntry
    from mako_actors.version import ExpectedVersion

    async with LmdbStore(tmp_path / "store") as store:
        view = _RunView(store, lambda _: None, gather)
        streams = [StreamId.for_process(TENANT, ProcessId.new()) for _ in range(2)]

        async def commit(stream: StreamId, turns_later: int) -> int:
            for _ in range(turns_later):
                await asyncio.sleep(0)  # one loop turn each
            entry = JournalEntry(TENANT, f"k:{stream}", {"n": turns_later})
            first = ExpectedVersion.exact(0)
            return (await view.commit(Commit(stream_id=stream, expected=first, journal=[entry]))).version

        before = store.stats.transactions
        assert await asyncio.gather(commit(streams[0], 0), commit(streams[1], 3)) == [0, 0]
        assert store.stats.transactions - before == transactions
        assert [await store.journal(TENANT, f"k:{s}") for s in streams] == [[{"n": 0}], [{"n": 3}]]
        # A lone commit is written after at most ``gather`` turns, not left waiting for company.
        lone = StreamId.for_process(TENANT, ProcessId.new())
        assert await asyncio.wait_for(commit(lone, 0), 5.0) == 0


def test_the_process_binding_a_shared_ide_is_keyed_by_its_own_malo() -> None:
    """Two transactions of one message share an IDE (and so a trigger seed): the first binds the
    ``tx:`` key, the second is refused (Z15). The pipelined schedule kept one MaLo key per seed,
    the last one read: the first transaction's process was ordered in the other MaLo's queue.
    The binding commit's ``malo:`` key now tells which trigger it was."""
    from mako_actors.replay import _binder
    from mako_actors.store import Commit
    from mako_actors.testing import identity
    from mako_actors.version import ExpectedVersion

    ident = identity()
    pending = {"S:C:M1:IDEX": [("malo", "NB", "51238696788"), ("malo", "NB", "51238696781")]}
    for malo in ("51238696788", "51238696781"):
        commit = Commit(
            stream_id=ident.stream_id,
            expected=ExpectedVersion.exact(0),
            registry=[("tx:S:IDEX", ident), (f"malo:{malo}#0", ident)],
        )
        assert _binder(pending, commit, []) == ("malo", "NB", malo)
    # One registrant: it, whatever the commit binds besides.
    alone = Commit(stream_id=ident.stream_id, expected=ExpectedVersion.exact(0), registry=[("tx:S:X", ident)])
    assert _binder({"S:C:M1:IDEX": [("malo", "NB", "X")]}, alone, []) == ("malo", "NB", "X")
