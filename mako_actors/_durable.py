"""Making a renamed file's new name durable: the one step an atomic write is easy to miss."""

from __future__ import annotations

import os


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """``fsync`` a directory: after ``os.replace`` into it, the new name survives a power loss.

    Without it a file written, fsynced and renamed may, after a crash, be missing under its
    new name (or be back under its temporary one) although its caller went on as if it were
    there. Raises ``OSError``.
    """
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
