"""GPKE supplier change (LFW24), grid operator (NB) side.

Modules: ``validation`` (MaLo/MP-ID/GLN checks), ``calendar`` (BDEW Werktage, ÜT),
``fristen`` (versioned deadline table, CONTRL/APERAK windows), ``codes`` (EBD and ERC codes),
``commands``, ``events``, ``state``, ``payloads`` (outbound plain-dict payloads and derived
references), ``keys`` (routing keys), ``workflow`` (``GpkeNbWorkflow``), ``router`` (``PidRouter``).
"""

from mako_actors.gpke.calendar import (
    BERLIN,
    calendar_version,
    end_of_werktag,
    is_werktag,
    latest_uet_for,
    next_werktag_at,
    uet,
    vorlauffrist_met,
)
from mako_actors.gpke.codes import DEFAULT_CODES, CodeTable
from mako_actors.gpke.commands import (
    DecisionDeadlinePassed,
    DeemLfaAgreement,
    FormTranche,
    LfaAnswerDeadlinePassed,
    ReceiveAbmeldung,
    ReceiveAcknowledgement,
    ReceiveAnmeldung,
    ReceiveLfaAnswer,
    RejectAnmeldung,
    RejectTrancheRequest,
    parse_command,
)
from mako_actors.gpke.errors import GasNotSupported, UnknownAnswerCode, UnknownPid, UnsupportedFormatVersion
from mako_actors.gpke.fristen import DEFAULT_ACK_WINDOWS, DEFAULT_FRISTEN, AckWindows, FristenTable
from mako_actors.gpke.keys import ide_key, interchange_key, malo_key, transaction_key
from mako_actors.gpke.payloads import OutboundRef, build_contrl_payload
from mako_actors.gpke.router import PidRouter, Route, build_command
from mako_actors.gpke.state import GpkeState, Status
from mako_actors.gpke.validation import MpIdCheck, check_mp_id, is_valid_malo_id
from mako_actors.gpke.workflow import DECISION_DEADLINE, LFA_ANSWER_DEADLINE, GpkeConfig, GpkeNbWorkflow

__all__ = [
    "BERLIN",
    "DECISION_DEADLINE",
    "DEFAULT_ACK_WINDOWS",
    "DEFAULT_CODES",
    "DEFAULT_FRISTEN",
    "LFA_ANSWER_DEADLINE",
    "AckWindows",
    "CodeTable",
    "DecisionDeadlinePassed",
    "DeemLfaAgreement",
    "FormTranche",
    "FristenTable",
    "GasNotSupported",
    "GpkeConfig",
    "GpkeNbWorkflow",
    "GpkeState",
    "LfaAnswerDeadlinePassed",
    "MpIdCheck",
    "OutboundRef",
    "PidRouter",
    "ReceiveAbmeldung",
    "ReceiveAcknowledgement",
    "ReceiveAnmeldung",
    "ReceiveLfaAnswer",
    "RejectAnmeldung",
    "RejectTrancheRequest",
    "Route",
    "Status",
    "UnknownAnswerCode",
    "UnknownPid",
    "UnsupportedFormatVersion",
    "build_command",
    "build_contrl_payload",
    "calendar_version",
    "check_mp_id",
    "end_of_werktag",
    "ide_key",
    "interchange_key",
    "is_valid_malo_id",
    "is_werktag",
    "latest_uet_for",
    "malo_key",
    "next_werktag_at",
    "parse_command",
    "transaction_key",
    "uet",
    "vorlauffrist_met",
]
