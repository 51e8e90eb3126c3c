"""Play the AS4 gateway: put a synthetic UTILMD Anmeldung (55001) into a node's inbox.

``python examples/gateway_drop.py INBOX [--nb MP-ID] [--ref 0020]`` writes the interchange
under a dot name first and renames it into place, as a gateway must, so ``mako-actors serve``
never reads a half-written file. The Anmeldung is for a MaLo the grid operator has no old
supplier for, starting in 40 days, so the node accepts it and answers at once.
"""

from __future__ import annotations

import argparse
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mako_actors.gpke.synthetic import anmeldung


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("inbox", type=Path, help="the node's inbox directory")
    parser.add_argument("--nb", default="9900000002009", help="the grid operator's MP-ID (the node's tenant)")
    parser.add_argument("--lfn", default="9900000001001", help="the new supplier's MP-ID (the sender)")
    parser.add_argument("--malo", default="51900000012", help="the MaLo-ID")
    parser.add_argument("--ref", default=datetime.now(UTC).strftime("G%H%M%S%f")[:14], help="the 0020")
    args = parser.parse_args()
    now = datetime.now(UTC)
    start = (now + timedelta(days=40)).replace(hour=23, minute=0, second=0, microsecond=0)
    raw = anmeldung(
        lfn=args.lfn, nb=args.nb, malo=args.malo, zuordnungsbeginn=start,
        ide_ref=f"TX{args.ref}", control_ref=args.ref, sent_at=now,
    )  # fmt: skip
    args.inbox.mkdir(parents=True, exist_ok=True)
    temporary = args.inbox / f".{args.ref}.part"
    temporary.write_bytes(raw)
    os.replace(temporary, args.inbox / f"{args.ref}.edi")
    print(args.inbox / f"{args.ref}.edi")


if __name__ == "__main__":
    main()
