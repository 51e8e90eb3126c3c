"""``_models.positional`` builds what validation builds, from every field in declaration order."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from mako_actors.errors import InvalidArgument
from mako_actors.gpke._models import positional
from mako_actors.gpke.payloads import OutboundRef, derive_ref


def test_a_positional_model_equals_the_validated_one() -> None:
    values = {
        "message_type": "UTILMD",
        "pid": "55002",
        "recipient": "9900000000010",
        "interchange_ref": "NABC",
        "message_ref": "MABC",
        "document_number": "DABC",
        "ide_ref": None,
    }
    made = positional(OutboundRef)(*values.values())
    validated = OutboundRef.model_validate(values)
    assert type(made) is OutboundRef and made == validated
    assert list(made.__dict__) == list(validated.__dict__)  # declaration order: dumps alike
    assert made.model_dump(mode="json") == validated.model_dump(mode="json")
    assert made.model_fields_set == validated.model_fields_set
    assert made.__pydantic_extra__ is None and made.__pydantic_private__ is None


def test_derived_references_are_the_documented_hashes() -> None:
    seed = "9900000000003:AB001:AB001:T1"
    ref = OutboundRef.derive(seed, 2, "UTILMD", "9900000000010", "55002")
    assert ref == OutboundRef(
        message_type="UTILMD",
        pid="55002",
        recipient="9900000000010",
        interchange_ref=derive_ref(seed, 2, "0020"),
        message_ref=derive_ref(seed, 2, "0062"),
        document_number=derive_ref(seed, 2, "1004"),
        ide_ref=derive_ref(seed, 2, "IDE"),
    )
    aperak = OutboundRef.derive(seed, 3, "APERAK", "9900000000010")
    assert aperak.ide_ref is None and aperak.pid is None
    assert aperak.interchange_ref == derive_ref(seed, 3, "0020")


def test_only_frozen_models_get_a_positional_maker() -> None:
    class Loose(BaseModel):
        a: int

    with pytest.raises(InvalidArgument, match="frozen"):
        positional(Loose)


def test_inbound_info_of_a_command_equals_the_validated_one() -> None:
    from gpke_support import anmeldung

    from mako_actors.gpke.events import InboundInfo
    from mako_actors.gpke.fristen import canonical_fv

    command = anmeldung()
    info = InboundInfo.of(command)
    expected = InboundInfo.model_validate(
        {name: getattr(command, name) for name in InboundInfo.model_fields}
        | {"format_version": canonical_fv(command.format_version)}
    )
    assert info == expected and list(info.__dict__) == list(InboundInfo.model_fields)
    assert positional(InboundInfo) is positional(InboundInfo)  # generated once


def test_the_workflow_output_maker_takes_every_field_in_order() -> None:
    from mako_actors.gpke.workflow import _output
    from mako_actors.workflow import WorkflowOutput

    made = _output((), (), (), ("lfa_answer",), ("malo:1", "ide:T1"), (("supply:1", {"kind": "claimed"}),))
    validated = WorkflowOutput(
        cancel_deadlines=("lfa_answer",),
        register_keys=("malo:1", "ide:T1"),
        journal=(("supply:1", {"kind": "claimed"}),),
    )
    assert made == validated and list(made.__dict__) == list(WorkflowOutput.model_fields)
