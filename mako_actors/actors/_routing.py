"""Stable routing of streams to hosts: the same stream id lands on the same host everywhere.

Python's ``hash()`` of a string is salted per process (``PYTHONHASHSEED``), so two drivers
would route one stream to two hosts; blake2b of the UTF-8 id is the same on every machine.
"""

from __future__ import annotations

from hashlib import blake2b


def stable_hash(key: str) -> int:
    """A 64-bit hash of ``key`` that is identical in every process and on every machine."""
    return int.from_bytes(blake2b(key.encode(), digest_size=8).digest(), "big")


def host_index(stream_id: str, hosts: int) -> int:
    """The host (0 .. hosts-1) that owns ``stream_id``; raises ``ValueError`` if ``hosts < 1``."""
    if hosts < 1:
        raise ValueError(f"need at least one host, got {hosts}")
    return stable_hash(stream_id) % hosts
