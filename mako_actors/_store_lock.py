"""The exclusive lock a command that writes a store (or takes an inbox) holds while it runs.

``serve``, ``replay`` and ``masterdata import`` each check what a store holds and then write on
that basis in separate transactions (an import: is the MaLo decided on? then append; a replay:
which Fristen fired? then run), so two of them on one store at once could each act on what the
other is about to change. They take turns on ``STORE_LOCK`` in the store's directory instead:
the second is refused at once, naming the holder.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from time import sleep

from mako_actors.errors import InvalidArgument, StoreError

__all__ = ["INBOX_LOCK", "STORE_LOCK", "check_directory_path", "held", "holder"]

#: In the store's directory while a command writes it (``flock``ed).
STORE_LOCK = "serve.lock"

#: In the inbox while a node serves it (``flock``ed), so a second node is refused also when it
#: has a store of its own. A dot name: the inbox scan takes it for no interchange.
INBOX_LOCK = ".serve.lock"

_TRIES, _PAUSE = 20, 0.005  # ~0.1 s: what a lock held for an instant (a probe, a start) takes


@contextlib.contextmanager
def held(path: Path, what: str, by: str, refusal: str) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` while the block runs, naming ``by`` (the command) as its
    holder; ``InvalidArgument`` naming ``what`` (``path``'s directory), the process holding it and
    ``refusal`` (why one at a time) when another holds it.

    The file is removed when the block ends (a drained node leaves its inbox empty). Not
    re-entrant: a second ``held`` of the same path in one process is refused too.
    """
    tries = 0
    while True:
        handle = path.open("a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip()
            handle.close()
            tries += 1
            if tries < _TRIES:  # a ``holder`` probe holds it for an instant, a command for long
                sleep(_PAUSE)
                continue
            raise InvalidArgument(
                f"the {what} {path.parent} is in use already ({holder or 'another process'}); {refusal}"
            ) from None
        except BaseException:
            handle.close()
            raise
        # A holder leaving removes the file before it unlocks it: the one locked here may be
        # gone from ``path`` already, and a third process may hold a new one there. Lock what
        # is there.
        if _same_file(handle.fileno(), path):
            break
        handle.close()
    try:
        handle.truncate(0)
        # The host too: an inbox may be a share that nodes on several machines see.
        handle.write(f"{by}, process {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        handle.close()  # (releases the lock)


def holder(path: Path) -> str | None:
    """Who holds the lock ``path`` (the text ``held`` wrote there), or ``None`` when nobody does.

    Takes no lock itself (a shared one for an instant, to ask): for commands that may write
    beside one holder (an operator's decision beside a serving node) but not beside another.
    ``StoreError`` when the file cannot be read.
    """
    try:
        handle = path.open("r")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StoreError(f"cannot read {path} (who writes the store): {exc.strerror or exc}") from None
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            for _ in range(_TRIES):  # (a holder writes its name right after it locked)
                text = handle.read().strip()
                if text:
                    return text
                sleep(_PAUSE)
                handle.seek(0)
            return "another process"
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return None


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` names the open file ``fd`` (False if there is none)."""
    try:
        there = path.stat()
    except FileNotFoundError:
        return False
    here = os.fstat(fd)
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def check_directory_path(command: str, name: str, path: Path) -> None:
    """``InvalidArgument`` if ``path`` cannot become a directory: it is a file, a symlink to
    nowhere, or lies under a file (``mkdir`` said only "File exists" / "Not a directory");
    ``command`` and ``name`` (the setting or option) start the message."""
    if os.path.lexists(path) and not path.is_dir():
        what = "a symlink to nothing" if path.is_symlink() and not path.exists() else "a file"
        raise InvalidArgument(f"{command}: {name} {path} is {what}, not a directory")
    for parent in path.parents:
        if os.path.lexists(parent):
            if not parent.is_dir():
                raise InvalidArgument(
                    f"{command}: {name} {path} lies under {parent}, which is not a directory"
                )
            return
