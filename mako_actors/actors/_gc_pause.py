"""The cyclic garbage collector held off while a runner decides a turn's commands.

A turn decides every ready actor's commands synchronously, and each decided command leaves a
handful of tracked objects (commit, events, envelope, ids, new state) alive until its commit
is durable and answered. A collection in the middle of a turn finds them all alive, so every
young collection of the turn promotes them, and the promoted objects drive full collections
that walk every live actor: measured ~20 µs of collector time per command at 10,000 live
actors. Deferred to the end of the turn, one young collection sees them instead.

Nothing is changed for good: the collector is disabled only between ``pause()`` and
``resume()`` around one synchronous stretch of code, and only if it was enabled. Several
runners (threads, event loops) share one count, so the collector comes back when the last of
them resumes, and a collector the application disabled itself stays disabled.
"""

from __future__ import annotations

import gc
import threading

__all__ = ["pause", "resume"]

_lock = threading.Lock()
_depth = 0
_disabled_by_us = False


def pause() -> None:
    """Hold off cyclic collections until the matching ``resume()``; cheap (a lock, a counter)."""
    global _depth, _disabled_by_us
    with _lock:
        if _depth == 0 and gc.isenabled():
            gc.disable()
            _disabled_by_us = True
        _depth += 1


def resume() -> None:
    """End one ``pause()``; the last one re-enables the collector if ``pause`` disabled it.

    Call it in a ``finally``: a missing ``resume`` leaves the collector off for the process.
    """
    global _depth, _disabled_by_us
    with _lock:
        _depth -= 1
        if _depth == 0 and _disabled_by_us:
            _disabled_by_us = False
            gc.enable()
