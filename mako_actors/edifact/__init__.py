"""EDIFACT for MaKo: parse inbound interchanges from bytes, render outbound ones.

Parse: ``parse_interchange(raw, source=...) -> Interchange`` (raises ``EdifactError``),
``try_parse_interchange`` (returns the error), ``parse_file(path)``.
Render: ``render_interchange(envelope, messages) -> bytes`` (generic writer) and
``render_outbound(message_type, payload) -> bytes`` (UTILMD answers, APERAK, CONTRL).
Check: ``check_structure(raw)`` (segment order/presence per message type and PID) and
``expected_unh_version(message_type, format_version)`` (UNH S009 per release, AHB-FACTS §7).
"""

from mako_actors.edifact._tokenizer import (
    DEFAULT_DELIMITERS,
    Delimiters,
    Element,
    Segment,
    tokenize,
)
from mako_actors.edifact.errors import (
    ControlCountMismatch,
    DanglingRelease,
    DuplicateReference,
    EdifactError,
    EdifactSyntaxError,
    ElementTooLong,
    InterchangeTooLarge,
    InvalidCharacter,
    InvalidValue,
    MissingSegment,
    ReferenceMismatch,
    UnexpectedSegment,
    UnsupportedCharset,
)
from mako_actors.edifact.interchange import (
    CHARSETS,
    MAX_INTERCHANGE_BYTES,
    Decoded,
    Interchange,
    Message,
    Party,
    Transaction,
    decode,
    parse_dtm,
    parse_file,
    parse_interchange,
    read_interchange,
    try_parse_interchange,
)
from mako_actors.edifact.outbound import (
    Aperak,
    AperakError,
    Contrl,
    ContrlMessage,
    UtilmdMessage,
    UtilmdTransaction,
    build_aperak,
    build_contrl,
    build_utilmd,
    render_outbound,
)
from mako_actors.edifact.render import (
    OutboundEnvelope,
    OutboundMessage,
    format_dtm,
    render_interchange,
    render_segment,
    seg,
)
from mako_actors.edifact.structure import check_structure
from mako_actors.edifact.synthetic import synthetic_utilmd
from mako_actors.edifact.versions import (
    UnsupportedMessageVersion,
    expected_unh_version,
    unh_mismatch,
    unh_version,
)

__all__ = [
    "CHARSETS",
    "DEFAULT_DELIMITERS",
    "MAX_INTERCHANGE_BYTES",
    "Aperak",
    "AperakError",
    "Contrl",
    "ContrlMessage",
    "ControlCountMismatch",
    "DanglingRelease",
    "Decoded",
    "Delimiters",
    "DuplicateReference",
    "EdifactError",
    "EdifactSyntaxError",
    "Element",
    "ElementTooLong",
    "Interchange",
    "InterchangeTooLarge",
    "InvalidCharacter",
    "InvalidValue",
    "Message",
    "MissingSegment",
    "OutboundEnvelope",
    "OutboundMessage",
    "Party",
    "ReferenceMismatch",
    "Segment",
    "Transaction",
    "UnexpectedSegment",
    "UnsupportedCharset",
    "UnsupportedMessageVersion",
    "UtilmdMessage",
    "UtilmdTransaction",
    "build_aperak",
    "build_contrl",
    "build_utilmd",
    "check_structure",
    "decode",
    "expected_unh_version",
    "format_dtm",
    "parse_dtm",
    "parse_file",
    "parse_interchange",
    "read_interchange",
    "render_interchange",
    "render_outbound",
    "render_segment",
    "seg",
    "synthetic_utilmd",
    "tokenize",
    "try_parse_interchange",
    "unh_mismatch",
    "unh_version",
]
