"""Routing keys the GPKE workflow registers, and the caller looks up (DOMAIN §5).

All keys are tenant-scoped by the registry. A key is bound to one process forever, so the
MaLo key carries a *generation*: the n-th Anmeldung of a MaLo that passes E_0622 binds
``malo_key(MaLo, n)``, n being the number of claims in the MaLo's supply journal
(``gpke.supply``). Two concurrent Anmeldungen for one MaLo compute the same generation; the
store lets only one bind it (``RegistryConflict``), and the other one is decided again and
then sees the first one's claim (E_0622 A06). The key is per MaLo, not per date: E_0622 asks
for any unanswered Anmeldung of the MaLo (AHB-FACTS §4, step 70).
"""

from __future__ import annotations

__all__ = ["ide_key", "interchange_key", "malo_key", "transaction_key"]


def malo_key(malo: str, generation: int = 0) -> str:
    """``malo:<MaLo>#<generation>``: the claim of the ``generation``-th Anmeldung of a MaLo."""
    return f"malo:{malo}#{generation}"


def transaction_key(sender: str, ide_ref: str) -> str:
    """``tx:<sender MP-ID>:<IDE>``: an inbound transaction (IDE is unique per sender only)."""
    return f"tx:{sender}:{ide_ref}"


def ide_key(ide_ref: str) -> str:
    """``ide:<IDE>`` of one of *our* outbound UTILMD; answers find it by their ``RFF+TN``."""
    return f"ide:{ide_ref}"


def interchange_key(interchange_ref: str) -> str:
    """``ic:<0020>`` of one of our outbound interchanges; CONTRL/APERAK find it by UCI/RFF+ACE."""
    return f"ic:{interchange_ref}"
