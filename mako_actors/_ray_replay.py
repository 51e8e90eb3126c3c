"""``replay --workers N --ray``: the archive's partitions replayed by N Ray tasks, one store each.

The tasks run exactly what the local workers run (``mako_actors._workers``): the same two rounds
of calls (each worker's run of the files read for their facts, then each worker's walk over all
facts and replay of its pieces; round 2 starts once every round-1 task has ended), the same
partitioning, the same stores (``store_path/part-<k>-of-<n>``, the store
itself for one), and the driver merges their reports the same way, so the decision digest is
that of a local run with any number of workers, and a later local run or ``mako-actors store``
command reads what Ray wrote.

The archive and the stores are paths on the driver's machine (LMDB wants a local disk; the
replay's stores have no partition map that could place them elsewhere), so every task is pinned
to the driver's Ray node (``NodeAffinitySchedulingStrategy``, not soft): the driver must run on
a node of the cluster, never through a Ray client. More workers than that node has CPUs for
queue up and run in turn. Each task takes ``num_cpus`` (default 1: two workers fill a 2-core
machine) and runs in one of Ray's pooled worker processes: a fresh process per share would cost
seconds of start-up (more than a small replay), and a share leaves nothing open behind it (its
stores are closed, its LMDB paths released).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mako_actors._workers import Runner, part_path, replay_partitions
from mako_actors.errors import EngineError, InvalidArgument

if TYPE_CHECKING:
    from mako_actors.replay import ArchivedInterchange, ReplayReport, _Options, _Untaken

__all__ = ["replay_on_ray"]


async def replay_on_ray(
    items: list[ArchivedInterchange],
    store_path: Path,
    options: _Options,
    n: int,
    *,
    address: str | None = None,
    num_cpus: float = 1.0,
    untaken: _Untaken | None = None,
) -> ReplayReport:
    """Replay ``items`` on ``n`` Ray tasks into ``store_path`` (see the module doc); the merged report.

    Uses the Ray this process is connected to; else connects to ``address`` or starts a local
    instance, and shuts down only that. Raises ``InvalidArgument`` for a ``ray://`` address (a
    Ray client's driver has no node of its own to pin to) or a node without ``num_cpus``
    CPUs, ``EngineError`` when Ray cannot be reached, and, once every task has ended, the first
    failed task's error (its ``EngineError`` subclass when it had one) with a message naming
    every failed worker and its store. Nothing is reported then. ``untaken``: see
    ``replay_partitions``.
    """
    check_ray_settings(address, num_cpus)
    with _connected(address):
        strategy = _placement(num_cpus)
        runner = _runner(store_path, n, strategy, num_cpus)
        report = await replay_partitions(items, store_path, options, n, runner=runner, untaken=untaken)
    report.mode += " ray"
    return report


def check_ray_settings(address: str | None, num_cpus: float = 1.0) -> None:
    """``InvalidArgument`` for settings ``replay_on_ray`` cannot run with (before anything is
    made): ``num_cpus`` not > 0, a ``ray://`` address (a Ray client's driver has no node of its
    own to pin to, and cannot reach the archive and stores on this machine)."""
    if num_cpus <= 0:
        raise InvalidArgument(f"replay: num_cpus per Ray worker must be > 0, got {num_cpus}")
    if address is not None and address.startswith("ray://"):
        raise InvalidArgument(
            f"replay --ray-address {address}: a Ray client cannot reach the archive and stores on "
            "this machine; run the replay on a node of the cluster (address auto or HOST:PORT)"
        )


@contextlib.contextmanager
def _connected(address: str | None) -> Iterator[None]:
    import ray

    if ray.is_initialized():
        yield
        return
    try:
        ray.init(address=address or "local", include_dashboard=False, log_to_driver=False)
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError, ...
        raise EngineError(f"replay --ray: cannot start or reach Ray at {address or 'local'}: {exc}") from None
    try:
        yield
    finally:
        ray.shutdown()


def _placement(num_cpus: float) -> Any:
    """Every task on the driver's node; ``InvalidArgument`` when that node has too few CPUs for one."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node = str(ray.get_runtime_context().get_node_id())
    info = [n for n in ray.nodes() if n.get("NodeID") == node]  # type: ignore[no-untyped-call]
    cpus = float(info[0].get("Resources", {}).get("CPU", 0)) if info else 0.0
    if cpus < num_cpus:  # the tasks could never be placed: refuse instead of waiting forever
        raise InvalidArgument(
            f"replay --ray: this machine's Ray node offers {cpus:g} CPUs, a replay worker needs {num_cpus:g}"
        )
    return NodeAffinitySchedulingStrategy(node_id=node, soft=False)


def _run_share(worker: Callable[..., Any], *call: Any) -> Any:
    """The body of one Ray task: one worker's share, exactly as a local worker process runs it."""
    return worker(*call)


def _runner(store_path: Path, n: int, strategy: Any, num_cpus: float) -> Runner:
    async def run(worker: Callable[..., Any], calls: list[tuple[Any, ...]]) -> list[Any]:
        import ray

        task = ray.remote(_run_share)
        refs = [
            task.options(
                num_cpus=num_cpus,
                scheduling_strategy=strategy,
                max_retries=0,  # a failure is reported, not hidden; re-running the replay is safe
                name=f"mako-replay {part_path(store_path, k, n).name}",
            ).remote(worker, *call)
            for k, call in enumerate(calls)
        ]
        results: list[Any] = []
        failed: list[tuple[int, BaseException]] = []
        try:
            for k, ref in enumerate(refs):  # every task ends before anything is reported or raised
                try:
                    results.append(await ref)
                except Exception as exc:
                    failed.append((k, exc))
        except BaseException:  # interrupted (Ctrl-C, cancelled): the workers stop too, not only us
            for ref in refs:
                ray.cancel(ref, force=True)
            raise
        if failed:
            raise _failure(store_path, n, failed)
        return results

    return run


def _failure(store_path: Path, n: int, failed: list[tuple[int, BaseException]]) -> EngineError:
    """One error for the failed tasks: the first one's class, a message naming each worker's store."""
    import ray

    causes: list[BaseException] = []
    lines: list[str] = []
    for k, exc in failed:
        cause = exc.cause if isinstance(exc, ray.exceptions.RayTaskError) and exc.cause is not None else exc
        causes.append(cause)
        if isinstance(cause, EngineError):
            text = cause.message
        else:  # a Ray error's text ends with the line that says what happened
            text = ([line for line in str(cause).splitlines() if line.strip()] or [""])[-1].strip()
        lines.append(f"Ray worker {k} of {n} ({part_path(store_path, k, n)}): {type(cause).__name__}: {text}")
    message = "replay --ray failed; " + "; ".join(lines)
    first = causes[0]
    error = EngineError.from_plain(first.to_plain()) if isinstance(first, EngineError) else None
    error = error or EngineError(message)
    error.message, error.args = message, (message,)
    return error
