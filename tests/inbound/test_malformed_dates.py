"""A date sent in a shape its format does not allow is answered APERAK Z35, not Z29.

Z29 says "erforderliche Angabe fehlt", Z35 "Format nicht eingehalten" (AHB-FACTS §5): the
sender of a DTM+92:2025113:102 did send the date, and needs to hear what is wrong with it.
Hand-written interchanges in through ``InboundPipeline`` on LMDB; rendered APERAK read back.
"""

from __future__ import annotations

from datetime import timedelta

from mako_actors import StreamId, TenantId
from mako_actors.edifact import parse_interchange, render_outbound
from mako_actors.scheduler import VirtualClock
from stores.lmdb import LmdbStore
from tests.inbound.edi import (
    LFN,
    MALO,
    NB,
    START,
    THU_1430,
    abmeldung,
    anmeldung,
    dtm,
    outbox,
    pipeline,
    store,
)

__all__ = ["store"]
TENANT = TenantId.from_party_id(NB)


async def _refusal(store: LmdbStore, raw: bytes) -> tuple[list[str], str]:
    """Ingest ``raw``; the ERC codes of the APERAK sent (as rendered, and as the stored
    rejection has them) and its texts."""
    p = pipeline(store, VirtualClock(THU_1430))
    [outcome] = (await p.ingest(raw, THU_1430)).messages
    assert outcome.outcome == "started"
    [aperak] = [m for m in await outbox(store) if m.message_type == "APERAK"]
    assert not aperak.payload["positive"]
    assert not [m for m in await outbox(store) if m.message_type == "UTILMD"]  # no step taken
    [message] = parse_interchange(render_outbound("APERAK", aperak.payload)).messages
    ercs = [s.value(0) for s in message.segments if s.tag == "ERC"]
    events = await store.load(StreamId.for_process(TENANT, outcome.process_id))  # type: ignore[arg-type]
    [rejected] = [e.payload for e in events if e.event_type == "gpke.inbound_rejected"]
    assert [e["code"] for e in rejected["errors"]] == ercs
    return ercs, " ".join(e["text"] for e in aperak.payload["errors"])


async def test_malformed_zuordnungsbeginn_gets_z35_naming_the_value(store: LmdbStore) -> None:
    raw = anmeldung().replace(dtm("92", START).encode(), b"DTM+92:2025113:102")
    ercs, text = await _refusal(store, raw)
    assert ercs == ["Z35"]
    assert "DTM+92:2025113:102" in text


async def test_a_zuordnungsbeginn_with_a_zone_other_than_utc_gets_z35(store: LmdbStore) -> None:
    """DOMAIN §4: format 303 in MaKo with ``?+00`` (UTC; AHB condition [931]). Before, a +01
    was read as the instant it names and the Anmeldung confirmed (APERAK 312, 55002 A51)."""
    sent = dtm("92", START)
    assert sent.endswith("?+00:303")
    berlin = START + timedelta(hours=1)  # the same instant, written with a +01 offset
    raw = anmeldung().replace(sent.encode(), f"DTM+92:{berlin:%Y%m%d%H%M}?+01:303".encode())
    ercs, text = await _refusal(store, raw)
    assert ercs == ["Z35"]
    assert "+01:303" in text  # names the value as sent


async def test_a_valid_date_in_another_format_than_303_gets_z35(store: LmdbStore) -> None:
    """UTILMD S2.1 takes DTM+92/93 in format 303 only (C507 2379 [303], machine-readable AHB of
    FV2504/FV2510). Before, a 102 date was read as 00:00 Berlin and the Anmeldung started (55036,
    55010) on a start the sender never named as an instant (found by an AHB review)."""
    berlin_midnight = START + timedelta(hours=1)  # START is 00:00 Berlin, in UTC
    raw = anmeldung().replace(dtm("92", START).encode(), f"DTM+92:{berlin_midnight:%Y%m%d}:102".encode())
    ercs, text = await _refusal(store, raw)
    assert ercs == ["Z35"]
    assert f"{berlin_midnight:%Y%m%d}:102" in text and "303" in text


async def test_anmeldung_with_an_impossible_date_gets_z35(store: LmdbStore) -> None:
    raw = anmeldung().replace(dtm("92", START).encode(), b"DTM+92:20251131:102")  # 31 November
    ercs, text = await _refusal(store, raw)
    assert ercs == ["Z35"]
    assert "20251131:102" in text


async def test_anmeldung_without_zuordnungsbeginn_still_gets_z29(store: LmdbStore) -> None:
    segment = dtm("92", START).encode() + b"'"
    raw = anmeldung().replace(segment, b"").replace(b"UNT+18+", b"UNT+17+")
    ercs, text = await _refusal(store, raw)
    assert ercs == ["Z29"]
    assert "DTM+92 missing" in text


async def test_abmeldung_with_a_malformed_zuordnungsende_gets_z35(store: LmdbStore) -> None:
    end = START + timedelta(days=31)
    raw = abmeldung(LFN, ref="LF0001", ide="LFTX9", end=end, sent_at=THU_1430, malo=MALO)
    raw = raw.replace(dtm("93", end).encode(), b"DTM+93:202601010000?+00:203")  # 203 has no zone
    ercs, text = await _refusal(store, raw)
    assert ercs == ["Z35"]
    assert "DTM+93:202601010000+00:203" in text


async def test_a_message_date_in_another_format_than_303_gets_z35(store: LmdbStore) -> None:
    """DTM+137 is format 303 only (UTILMD MIG; DOMAIN §6 names a sample corpus sending 102).
    Before, a 102 date was taken and the Anmeldung decided; one that did not parse was named
    in the parser's findings and answered nothing about (neither missing nor malformed)."""
    sent = dtm("137", THU_1430).encode()
    raw = anmeldung()
    assert sent in raw
    ercs, text = await _refusal(store, raw.replace(sent, b"DTM+137:20251113:102"))
    assert ercs == ["Z35"] and "DTM+137:20251113:102" in text


async def test_a_message_date_that_does_not_parse_gets_z35(store: LmdbStore) -> None:
    sent = dtm("137", THU_1430).encode()
    ercs, text = await _refusal(store, anmeldung().replace(sent, b"DTM+137:202513451230?+00:303"))
    assert ercs == ["Z35"] and "DTM+137:202513451230+00:303" in text


async def test_a_message_date_in_another_zone_than_utc_gets_z35(store: LmdbStore) -> None:
    """DOMAIN §4: a 303 in MaKo is UTC (``?+00``), as DTM+92/93 already were held to."""
    sent = dtm("137", THU_1430).encode()
    ercs, text = await _refusal(store, anmeldung().replace(sent, b"DTM+137:202511131430?+01:303"))
    assert ercs == ["Z35"] and "DTM+137:202511131430+01:303" in text
