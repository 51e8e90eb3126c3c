"""The event loop an actor system's ``Runner`` hands its futures to.

The runner remembers the running loop instead of asking ``asyncio`` for it per command: a
remembered loop must never outlive its run (each ``asyncio.run`` makes a new one), or callers
would get futures of a closed loop.
"""

from __future__ import annotations

import asyncio

from mako_actors.actors._actor import Runner
from stores.memory import InMemoryStore


def test_runner_gives_the_loop_running_now_across_successive_loops() -> None:
    runner = Runner(InMemoryStore())

    async def current() -> tuple[asyncio.AbstractEventLoop, asyncio.AbstractEventLoop]:
        return runner.loop(), asyncio.get_running_loop()

    first, running_first = asyncio.run(current())
    assert first is running_first
    second, running_second = asyncio.run(current())
    assert second is running_second
    assert second is not first


def test_runner_gives_each_thread_its_own_running_loop() -> None:
    runner = Runner(InMemoryStore())
    seen: list[bool] = []

    async def check() -> None:
        seen.append(runner.loop() is asyncio.get_running_loop())

    async def main() -> None:
        await check()
        # Another loop, running on another thread meanwhile: not the one remembered here.
        await asyncio.to_thread(asyncio.run, check())
        await check()

    asyncio.run(main())
    assert seen == [True, True, True]
