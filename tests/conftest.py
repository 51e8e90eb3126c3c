"""Suite-wide structural check of everything we send.

Every payload our builders make (``mako_actors.gpke.payloads``: ``to_payload`` of UTILMD, APERAK
and CONTRL payloads, wherever a workflow, ingestion or the demo makes one) is rendered and every
interchange ``render_outbound`` produces from such a payload (they stamp ``format_version``) is
checked against the structure table (``mako_actors.edifact.structure``): no test can produce a
message a partner would reject without failing. Messages tests write as a partner's input are
not checked."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from mako_actors.edifact import parse_interchange, render_outbound
from mako_actors.edifact.outbound import set_render_check
from mako_actors.edifact.structure import UTILMD_SG4, check_message
from mako_actors.gpke import payloads
from mako_actors.gpke import workflow as gpke_workflow

# Deviations the runtime still produces, each with the reason; any other one fails the test.
KNOWN_GAPS: dict[str, str] = {}


def outbound_problems(raw: bytes) -> list[str]:
    """Deviations of a rendered interchange from the table, minus the known gaps.

    UTILMD with a PID outside the table (the inbound 55001/55004/55011 tests write as input)
    is not ours to send and is skipped.
    """
    problems: list[str] = []
    for message in parse_interchange(raw).messages:
        if message.message_type == "UTILMD" and not all(
            t.pid in UTILMD_SG4 for t in message.transactions
        ):
            continue
        problems.extend(
            p for p in check_message(message) if not any(gap in p for gap in KNOWN_GAPS)
        )
    return problems


def _check(message_type: str, payload: Mapping[str, Any], raw: bytes) -> None:
    if "format_version" not in payload:
        return  # not built by mako_actors.gpke.payloads: a test's input from a "partner"
    problems = outbound_problems(raw)
    if problems:
        raise AssertionError("rendered message deviates from the structure table: " + "; ".join(problems))


def _rendering(cls: type[Any], message_type: str) -> Any:
    original = cls.to_payload

    def to_payload(self: Any) -> dict[str, Any]:
        payload: dict[str, Any] = original(self)
        render_outbound(message_type, payload)  # checked by _check
        return payload

    return to_payload


def _rendering_plain(build: Any, message_type: str) -> Any:
    def plain(*args: Any, **kwargs: Any) -> dict[str, Any]:
        payload: dict[str, Any] = build(*args, **kwargs)
        render_outbound(message_type, payload)  # checked by _check
        return payload

    return plain


@pytest.fixture(autouse=True, scope="session")
def _structure_check_on_every_render() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        for cls, message_type in (
            (payloads.UtilmdPayload, "UTILMD"),
            (payloads.AperakPayload, "APERAK"),
            (payloads.ContrlPayload, "CONTRL"),
        ):
            patch.setattr(cls, "to_payload", _rendering(cls, message_type))
        # The workflow builds its payloads as plain data, without the models' ``to_payload``.
        for name, message_type in (("utilmd_payload", "UTILMD"), ("aperak_payload", "APERAK")):
            checked = _rendering_plain(getattr(payloads, name), message_type)
            for module in (payloads, gpke_workflow):
                patch.setattr(module, name, checked)
        set_render_check(_check)
        yield
        set_render_check(None)
