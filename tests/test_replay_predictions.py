"""The lazy prediction of which trigger an answer belongs to (the replay's queue, the partitioner's walk)."""

from __future__ import annotations

import random

from mako_actors._partition import Predictions, our_references, trigger_seed


def _eager(triggers: list[tuple[str, tuple[str, str, str, str], tuple[str, ...]]]) -> tuple[dict, dict]:
    """Every reference of every trigger, derived at once; the last trigger deriving one wins."""
    requests: dict[tuple[str, str], tuple[str, ...]] = {}
    interchanges: dict[tuple[str, str], tuple[str, ...]] = {}
    for us, refs, key in triggers:
        for ide, control in our_references(*refs):
            requests[(us, ide)] = key
            interchanges[(us, control)] = key
    return requests, interchanges


def test_seed_is_the_one_our_references_derives_from() -> None:
    refs = ("9900000000001", "ABC123", "M7", "IDE42")
    predicted = Predictions[tuple[str, ...]]()
    predicted.add("9900000002009", trigger_seed(*refs), ("malo", "x"))
    for ide, control in our_references(*refs):
        assert predicted.get("IDE", ("9900000002009", ide)) == ("malo", "x")
        assert predicted.get("0020", ("9900000002009", control)) == ("malo", "x")
        assert predicted.get("IDE", ("9900000000002", ide)) is None  # another tenant's


def test_lazy_lookups_agree_with_deriving_everything_up_front() -> None:
    rng = random.Random(7)
    tenants = ["9900000002009", "9900000002010"]
    triggers: list[tuple[str, tuple[str, str, str, str], tuple[str, ...]]] = []
    predicted = Predictions[tuple[str, ...]]()
    for step in range(300):
        if rng.random() < 0.6 or not triggers:
            # Now and then the same references again (a resend) under another key: the later wins.
            refs = (
                triggers[rng.randrange(len(triggers))][1]
                if triggers and rng.random() < 0.1
                else (f"99{rng.randrange(10**11):011d}", f"C{step}", f"M{rng.randrange(3)}", f"T{step}")
            )
            trigger = (rng.choice(tenants), refs, ("malo", str(step)))
            triggers.append(trigger)
            predicted.add(trigger[0], trigger_seed(*refs), trigger[2])
            continue
        requests, interchanges = _eager(triggers)
        us, refs, _ = rng.choice(triggers)
        ide, control = our_references(*refs)[rng.randrange(8)]
        asked_us = us if rng.random() < 0.9 else rng.choice(tenants)
        assert predicted.get("IDE", (asked_us, ide)) == requests.get((asked_us, ide))
        assert predicted.get("0020", (asked_us, control)) == interchanges.get((asked_us, control))
        assert predicted.get("IDE", (us, "T" + "0" * 19)) is None  # no trigger sends it
