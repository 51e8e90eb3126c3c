"""The written-out dump of GPKE events (``_models.plain_dump``) is pydantic's ``model_dump(mode="json")``.

Stored events must keep their bytes: for every event type, with values of every shape its
fields allow (None or not, instants in several zones, a repeated hour, microseconds, empty
and filled tuples), the dump has the same keys in the same order, the same values of the same
types, and packs to the same msgpack bytes as pydantic's.
"""

from __future__ import annotations

import types
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, Literal, Union, get_args, get_origin

import msgpack
import pytest
from gpke_support import LFA, abmeldung, anmeldung, lfa_answer, run
from pydantic import BaseModel

from mako_actors.gpke import GpkeNbWorkflow, GpkeState
from mako_actors.gpke._models import plain_dump
from mako_actors.gpke.calendar import BERLIN
from mako_actors.gpke.events import ALL_EVENTS, GpkeEvent
from mako_actors.workflow import event_payload

_INSTANTS = (
    datetime(2025, 6, 5, 14, 30, tzinfo=BERLIN),
    datetime(2025, 1, 2, 0, 0, 0, 120_000, tzinfo=BERLIN),
    datetime(2025, 10, 26, 2, 30, tzinfo=BERLIN, fold=1),  # the repeated hour, second time
    datetime(2025, 10, 26, 2, 30, tzinfo=BERLIN),  # the same wall time, first time
    datetime(2025, 6, 5, 12, 30, tzinfo=UTC),  # the first one's instant in UTC
    datetime(2025, 6, 5, 18, 0, 0, 5, tzinfo=timezone(timedelta(hours=5, minutes=30))),
)


def _samples(annotation: Any, name: str) -> list[Any]:
    """Values of every shape a field of type ``annotation`` can hold."""
    origin = get_origin(annotation)
    if origin is Union or origin is types.UnionType:
        (inner,) = [arg for arg in get_args(annotation) if arg is not type(None)]
        return [None, *_samples(inner, name)]
    if origin is Literal:
        return list(get_args(annotation))
    if origin is tuple and get_args(annotation)[-1] is not Ellipsis:  # fixed length: one per position
        columns = [_samples(arg, name) for arg in get_args(annotation)]
        return [tuple(c[k % len(c)] for c in columns) for k in range(max(map(len, columns)))]
    if origin is tuple:
        items = _samples(get_args(annotation)[0], name)
        return [(), tuple(items[:3]), items[:1] and (items[-1],)]
    if origin is dict:
        items = _samples(get_args(annotation)[1], name)
        return [{}, {f"{name}_{i}": item for i, item in enumerate(items)}]
    if annotation is str:
        return [f"{name}-1", "", "Zeichen äöü"]
    if annotation is bool:
        return [True, False]
    if annotation is int:
        return [0, 7]
    if annotation is datetime:
        return list(_INSTANTS)
    if annotation is date:
        return [date(2025, 6, 5), date(1999, 12, 31)]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _instances(annotation)
    raise AssertionError(f"no samples for {annotation!r} (field {name}): extend this test")


def _instances(cls: type[BaseModel]) -> list[Any]:
    """Validated instances of ``cls``: the i-th takes each field's i-th sample (cycling), so
    every sample of every field is in at least one of them."""
    samples = {name: _samples(info.annotation, name) for name, info in cls.model_fields.items()}
    count = max((len(values) for values in samples.values()), default=1)
    return [
        cls.model_validate({name: values[i % len(values)] for name, values in samples.items()})
        for i in range(count)
    ]


def _same(mine: Any, theirs: Any) -> None:
    """Equal values of the same types, dict keys in the same order."""
    assert type(mine) is type(theirs), (mine, theirs)
    if isinstance(mine, dict):
        assert list(mine) == list(theirs)
        for key in mine:
            _same(mine[key], theirs[key])
    elif isinstance(mine, list):
        assert len(mine) == len(theirs)
        for a, b in zip(mine, theirs, strict=True):
            _same(a, b)
    else:
        assert mine == theirs


def _check(event: BaseModel) -> None:
    theirs = type(event).__pydantic_serializer__.to_python(event, mode="json")
    for mine in (event.model_dump(mode="json"), plain_dump(event)):
        _same(mine, theirs)
        assert msgpack.packb(mine, use_bin_type=True) == msgpack.packb(theirs, use_bin_type=True)


@pytest.mark.parametrize("event_type", ALL_EVENTS, ids=lambda t: t.event_type)
def test_every_event_type_dumps_as_pydantic_does(event_type: type[GpkeEvent]) -> None:
    assert issubclass(event_type, GpkeEvent)  # stored through the written-out dump
    for event in _instances(event_type):
        _check(event)


def test_events_of_a_workflow_dump_as_pydantic_does() -> None:
    wf = GpkeNbWorkflow()
    state, out = run(wf, GpkeState(), anmeldung(current_supplier=LFA))
    events = list(out.events)
    assert state.lfa_request_ide is not None
    _, answered = run(wf, state, lfa_answer(state.lfa_request_ide))
    events += answered.events
    events += run(wf, GpkeState(), abmeldung())[1].events
    events += run(wf, GpkeState(), anmeldung(malo="12345678901"))[1].events  # rejected by APERAK
    assert len({type(event) for event in events}) >= 5
    for event in events:
        _check(event)
        assert event_payload(event) == event.model_dump(mode="json")


def test_other_options_are_pydantics_own() -> None:
    event = _instances(ALL_EVENTS[2])[1]
    serializer = type(event).__pydantic_serializer__
    assert event.model_dump() == serializer.to_python(event)
    assert event.model_dump(mode="json", exclude_none=True) == serializer.to_python(
        event, mode="json", exclude_none=True
    )
    assert event.model_dump(mode="json", include={"inbound"}) == serializer.to_python(
        event, mode="json", include={"inbound"}
    )


def test_a_model_with_its_own_serializer_is_dumped_by_pydantic() -> None:
    state = GpkeState(received_at=_INSTANTS[2], outbound=())  # its serializer drops a None field
    assert plain_dump(state) == state.model_dump(mode="json")
    assert "malo_measurement" not in plain_dump(state)


def test_storage_uses_the_written_out_dump_unless_a_subclass_dumps_its_own() -> None:
    event = _instances(ALL_EVENTS[2])[1]
    dump = type(event).payload_dumper()
    assert dump(event) == event.model_dump(mode="json") == event_payload(event)
    assert getattr(dump, "__name__", "") == "dump"  # the generated function itself

    class Own(type(event)):  # type: ignore[misc,valid-type]
        def model_dump(self, **options: Any) -> dict[str, Any]:
            return {"own": True}

    own = Own.model_validate(event.model_dump())
    assert event_payload(own) == {"own": True}


def test_plain_events_are_stored_through_pydantics_dump() -> None:
    from mako_actors.workflow import Event

    class Plain(Event, type="test.plain_payload"):
        at: datetime
        amount: int

    class Dumped(Event, type="test.own_payload"):
        amount: int

        def model_dump(self, **options: Any) -> dict[str, Any]:
            return {"amount": self.amount * 2}

    plain = Plain(at=datetime(2025, 1, 1, tzinfo=UTC), amount=3)
    assert (
        event_payload(plain) == plain.model_dump(mode="json") == {"at": "2025-01-01T00:00:00Z", "amount": 3}
    )
    assert event_payload(plain) == event_payload(plain)  # the second time from the kept dumper
    assert event_payload(Dumped(amount=2)) == {"amount": 4}
