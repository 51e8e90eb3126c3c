"""``updated``: a copy like ``model_copy(update=...)``, for frozen and other models."""

from __future__ import annotations

from pydantic import BaseModel

from mako_actors.gpke._models import updated
from mako_actors.gpke.state import GpkeState, Status


class _Loose(BaseModel):
    a: int = 0
    b: int = 0


def test_updated_frozen_state_equals_model_copy_and_shares_an_unchanged_fields_set() -> None:
    state = GpkeState()
    first = updated(state, {"status": Status.CONFIRMED, "sent": 2})
    assert first == state.model_copy(update={"status": Status.CONFIRMED, "sent": 2})
    assert first.model_fields_set == {"status", "sent"} and state.model_fields_set == set()
    second = updated(first, {"sent": 3})
    assert second.sent == 3 and first.sent == 2
    assert second.__pydantic_fields_set__ is first.__pydantic_fields_set__  # nothing new set
    assert second.__pydantic_extra__ is None and second.__pydantic_private__ is None
    assert second.model_dump(mode="json") == first.model_copy(update={"sent": 3}).model_dump(mode="json")


def test_updated_model_that_is_not_frozen_gets_a_fields_set_of_its_own() -> None:
    loose = _Loose(a=1)
    copy = updated(loose, {"a": 2})
    assert copy.a == 2 and loose.a == 1
    assert copy.__pydantic_fields_set__ is not loose.__pydantic_fields_set__
