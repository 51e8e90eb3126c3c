"""Routing keys the GPKE workflow registers, and the caller looks up (DOMAIN §5).

All keys are tenant-scoped by the registry. A key is bound to one process forever, so the
MaLo key carries a *generation*: the caller probes ``malo_key(…, 0)``, ``…1`` … up to the first
unbound one; if the last bound one belongs to a live process, the new Anmeldung competes with
it (``competing_process=True``), otherwise the new process takes the first unbound generation.
"""

from __future__ import annotations

from datetime import datetime

from mako_actors.gpke.calendar import BERLIN

__all__ = ["ide_key", "interchange_key", "malo_key", "transaction_key"]


def malo_key(malo: str, zuordnungsbeginn: datetime, generation: int = 0) -> str:
    """``malo:<MaLo>:<Berlin date of Zuordnungsbeginn>#<generation>``: the competing-process key."""
    return f"malo:{malo}:{zuordnungsbeginn.astimezone(BERLIN).date().isoformat()}#{generation}"


def transaction_key(sender: str, ide_ref: str) -> str:
    """``tx:<sender MP-ID>:<IDE>``: an inbound transaction (IDE is unique per sender only)."""
    return f"tx:{sender}:{ide_ref}"


def ide_key(ide_ref: str) -> str:
    """``ide:<IDE>`` of one of *our* outbound UTILMD; answers find it by their ``RFF+TN``."""
    return f"ide:{ide_ref}"


def interchange_key(interchange_ref: str) -> str:
    """``ic:<0020>`` of one of our outbound interchanges; CONTRL/APERAK find it by UCI/RFF+ACE."""
    return f"ic:{interchange_ref}"
