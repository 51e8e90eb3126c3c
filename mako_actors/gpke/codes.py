"""Answer codes: EBD codes keyed by (FV, EBD, code) and APERAK ERC codes per FV.

A code means something only within its EBD (A02 in E_0622 ≠ A02 in E_0594), so lookups always
name the EBD. The workflow asks by *reason* (a stable internal name such as
``vorlauffrist_missed``) and gets the code of the process's format version. Entries marked
``unconfirmed`` (†) are not yet checked against the official EBD/code list of that FV (the E_0607
codes were checked against the machine-readable E_0607 4.1 tree; A02's reading is still †).
Pass another ``CodeTable`` to the workflow to correct them.
"""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, ConfigDict, Field

from mako_actors.gpke.errors import UnknownAnswerCode, UnsupportedFormatVersion
from mako_actors.gpke.fristen import canonical_fv
from mako_actors.version import FormatVersion

__all__ = ["DEFAULT_CODES", "CodeInfo", "CodeTable", "Ebd", "Reason"]

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class Ebd:
    """EBD names used by the NB side of LFW24."""

    REJECT_AT_ONCE = "E_0622"
    DECIDE_ANMELDUNG = "E_0623"
    LFA_ANSWER = "E_0624"
    ABMELDUNG = "E_0607"
    APERAK = "APERAK"  # pseudo-EBD: the ERC code list of the APERAK


class Reason:
    """Stable internal reasons the workflow asks codes for."""

    VORLAUFFRIST_MISSED = "vorlauffrist_missed"
    VORLAUFFRIST_MISSED_GV1 = "vorlauffrist_missed_generating_gv1"
    VORLAUFFRIST_MISSED_GV2 = "vorlauffrist_missed_generating_gv2"
    VORLAUFFRIST_MISSED_GV3 = "vorlauffrist_missed_generating_gv3"
    MONTH_VORLAUFFRIST_MISSED_GV3 = "month_vorlauffrist_missed_generating_gv3"
    EEG_NOT_MONTH_START_GV1 = "eeg_not_month_start_generating_gv1"
    EEG_VORLAUFFRIST_MISSED_GV1 = "eeg_vorlauffrist_missed_generating_gv1"
    EEG_SHORT_VORLAUFFRIST_MISSED_GV1 = "eeg_short_vorlauffrist_missed_generating_gv1"
    EEG_NOT_MONTH_START_GV2 = "eeg_not_month_start_generating_gv2"
    EEG_VORLAUFFRIST_MISSED_GV2 = "eeg_vorlauffrist_missed_generating_gv2"
    COMPETING_PROCESS = "competing_process"
    REQUIREMENTS_UNMET = "requirements_unmet"
    NOT_IN_MARKET_COMMUNICATION = "not_in_market_communication"
    NEW_INSTALLATION = "new_installation"
    NEW_INSTALLATION_GENERATING = "new_installation_generating"
    REQUIREMENTS_UNMET_GENERATING = "requirements_unmet_generating"
    NO_QUARTER_HOUR_METERING = "no_quarter_hour_metering"
    RESTING_NOT_IMS = "resting_malo_not_ims"
    RESTING_NOT_CONSUMING = "resting_malo_not_consuming"
    NOT_A_KUNDENANLAGE = "not_a_kundenanlage"
    NOT_BEHIND_THE_SAME_NETZLOKATION = "not_behind_the_same_netzlokation"
    RESTING_NOT_IMS_NEW_KUNDENANLAGE = "resting_malo_not_ims_new_kundenanlage"
    RESTING_NOT_IMS_EXISTING_KUNDENANLAGE = "resting_malo_not_ims_existing_kundenanlage"
    COMPETING_PROCESS_GENERATING = "competing_process_generating"
    APPROVED_CONSUMING = "approved_consuming"
    APPROVED_GENERATING = "approved_generating"
    LFA_OBJECTED_CONSUMING = "lfa_objected_consuming"
    LFA_OBJECTED_GENERATING = "lfa_objected_generating"
    OTHER_REJECTION = "other_rejection"
    GV3_NO_AGREEMENT = "gv3_no_agreement"
    GV3_SHARE_NOT_FREE = "gv3_share_not_free"
    GV3_TRANCHE_FORMED_SHARES_MISSING = "gv3_tranche_formed_shares_missing"
    GV3_TRANCHE_FORMED = "gv3_tranche_formed"
    ABMELDUNG_APPROVED = "abmeldung_approved"
    ABMELDUNG_NOT_FORWARD = "abmeldung_not_forward"
    ABMELDUNG_NO_RECENT_ESV = "abmeldung_no_recent_esv"
    ABMELDUNG_NOT_RESTING = "abmeldung_not_resting"
    ABMELDUNG_ALREADY_ENDED = "abmeldung_already_ended"
    ABMELDUNG_APPROVED_GENERATING = "abmeldung_approved_generating"
    ABMELDUNG_NOT_MONTH_START = "abmeldung_not_month_start"
    ABMELDUNG_MONTH_VORLAUFFRIST = "abmeldung_month_vorlauffrist_missed"
    ABMELDUNG_ALREADY_ENDED_GENERATING = "abmeldung_already_ended_generating"
    AUFHEBUNG_NOT_CONFIRMED_START = "aufhebung_not_confirmed_start"
    ABMELDUNG_ENDED_SAME_REASON = "abmeldung_ended_for_the_same_reason"
    ABMELDUNG_ENDED_SAME_REASON_GENERATING = "abmeldung_ended_for_the_same_reason_generating"
    AUFHEBUNG_NOT_CONFIRMED_START_GENERATING = "aufhebung_not_confirmed_start_generating"
    # APERAK (ERC)
    MISSING_DATA = "missing_data"
    ID_UNKNOWN = "id_unknown"
    MALO_INVALID = "malo_invalid"
    SENDER_NOT_ASSIGNED = "sender_not_assigned"
    RECIPIENT_NOT_ASSIGNED = "recipient_not_assigned"
    FORMAT_NOT_KEPT = "format_not_kept"
    CODE_NOT_ALLOWED = "code_not_allowed"
    DATE_IMPLAUSIBLE = "date_implausible"
    REPETITION_EXCEEDED = "repetition_exceeded"


class CodeInfo(BaseModel):
    """One code: its reason, meaning and whether it is confirmed."""

    model_config = _FROZEN

    reason: str
    meaning: str
    unconfirmed: bool = True


class CodeTable(BaseModel):
    """Codes per FV short name → EBD → code; ``aliases`` maps a newer FV to an older one."""

    model_config = _FROZEN

    version: str
    source: str
    codes: dict[str, dict[str, dict[str, CodeInfo]]]
    aliases: dict[str, str] = Field(default_factory=dict)
    #: Per FV (not aliased): ``"EBD:code"`` → the Berlin day from which the code may no longer
    #: be sent (the EBD's "Nutzungsmöglichkeit Ende").
    usable_until: dict[str, dict[str, date]] = Field(default_factory=dict)

    def _ebd(self, format_version: FormatVersion | str, ebd: str) -> dict[str, CodeInfo]:
        short = canonical_fv(format_version)
        table = self.codes.get(self.aliases.get(short, short))
        if table is None:
            raise UnsupportedFormatVersion(f"code table {self.version}: no codes for {short}")
        return table.get(ebd, {})

    def supports(self, format_version: FormatVersion | str) -> bool:
        short = canonical_fv(format_version)
        return self.aliases.get(short, short) in self.codes

    def code_for(self, format_version: FormatVersion | str, ebd: str, reason: str) -> str:
        """The code for ``reason`` in ``ebd`` under ``format_version``; ``UnknownAnswerCode`` if none."""
        for code, info in self._ebd(format_version, ebd).items():
            if info.reason == reason:
                return code
        raise UnknownAnswerCode(f"code table {self.version}: no {ebd} code for {reason!r}")

    def usable_until_day(self, format_version: FormatVersion | str, ebd: str, code: str) -> date | None:
        """The first Berlin day on which ``code`` of ``ebd`` may no longer be sent under
        ``format_version``; ``None`` if the table names no end."""
        return self.usable_until.get(canonical_fv(format_version), {}).get(f"{ebd}:{code}")

    def meaning(self, format_version: FormatVersion | str, ebd: str, code: str) -> CodeInfo | None:
        """What ``code`` means in ``ebd`` under ``format_version`` (``None`` if unknown)."""
        return self._ebd(format_version, ebd).get(code)


def _c(reason: str, meaning: str, unconfirmed: bool = True) -> CodeInfo:
    return CodeInfo(reason=reason, meaning=meaning, unconfirmed=unconfirmed)


_LFW24_CODES: dict[str, dict[str, CodeInfo]] = {
    Ebd.REJECT_AT_ONCE: {
        # AHB-FACTS §4 (EBD 4.1, S3): A06 verbr. / A45 erz. "andere Anmeldung in Bearbeitung"
        "A06": _c(Reason.COMPETING_PROCESS, "andere Anmeldung in Bearbeitung", unconfirmed=False),
        "A45": _c(
            Reason.COMPETING_PROCESS_GENERATING, "erz.: andere Anmeldung in Bearbeitung", unconfirmed=False
        ),
        "A07": _c(Reason.VORLAUFFRIST_MISSED, "Vorlauffrist nicht eingehalten", unconfirmed=False),
        # Steps 60 / 260 (EBD 4.1-4.3, machine-readable trees FV2504-FV2610): not every
        # requirement of the LF can be met, "insbesondere die notwendige Zuordnungsermächtigung
        # (Bilanzkreis/Bilanzierungsverfahren)"; the deviation is named in FTX+ACB (55003 [23],
        # 55080 [24]). Checked: the Bilanzkreis of each Produktpaket against the NB's register.
        # Steps 30, 50 and 220 (same trees), from the MaLo's master data: not in market
        # communication at the Anmeldedatum (stillgelegt, "Modell 2"); a Neuanlage whose
        # Inbetriebnahme lies ahead ("Falscher Prozess"; for a generating MaLo "Einzug in
        # Neuanlage").
        "A02": _c(
            Reason.NOT_IN_MARKET_COMMUNICATION,
            "MaLo nimmt zum Anmeldedatum nicht an der Marktkommunikation teil",
            unconfirmed=False,
        ),
        "A04": _c(
            Reason.NEW_INSTALLATION, "Anmeldung für eine Neuanlage: falscher Prozess", unconfirmed=False
        ),
        "A21": _c(
            Reason.NEW_INSTALLATION_GENERATING,
            "erz.: Einzug in Neuanlage: falscher Prozess",
            unconfirmed=False,
        ),
        "A05": _c(Reason.REQUIREMENTS_UNMET, "Anforderungen können nicht erfüllt werden", unconfirmed=False),
        # Steps 16-28 (a ruhende MaLo, STS+7 #2 ZAP; trees FV2504-FV2610), from master data: A36
        # only under FV2504 (step 17, iMS), later A47 (steps 20/22, a Kundenanlage to be formed)
        # and A46 (steps 27/28, an existing one) where its quantities are computed by a
        # virtueller Summenzähler.
        "A36": _c(
            Reason.RESTING_NOT_IMS, "ruhende MaLo nicht mittels iMS erfasst (FV2504)", unconfirmed=False
        ),
        "A09": _c(
            Reason.RESTING_NOT_CONSUMING, "ruhende MaLo ist keine verbrauchende MaLo", unconfirmed=False
        ),
        "A08": _c(
            Reason.NOT_A_KUNDENANLAGE, "MaLo im LOC+Z16 ist keine MaLo \"Kundenanlage\"", unconfirmed=False
        ),
        "A37": _c(
            Reason.NOT_BEHIND_THE_SAME_NETZLOKATION,
            "ruhende MaLo nicht hinter der/den gleichen Netzlokation(en) wie die Kundenanlage",
            unconfirmed=False,
        ),
        "A47": _c(
            Reason.RESTING_NOT_IMS_NEW_KUNDENANLAGE,
            "ruhende MaLo zu bildender Kundenanlage nicht mittels iMS erfasst",
            unconfirmed=False,
        ),
        "A46": _c(
            Reason.RESTING_NOT_IMS_EXISTING_KUNDENANLAGE,
            "zu integrierende ruhende MaLo nicht mittels iMS erfasst",
            unconfirmed=False,
        ),
        # Step 250 (erz., after 220): FV2504 "Bilanzierung nicht auf Basis von (¼-h-)Werten", from
        # FV2510 on "nicht an allen Messeinrichtungen ¼-h-Messtechnik"; from master data.
        "A24": _c(
            Reason.NO_QUARTER_HOUR_METERING,
            "erz.: nicht an allen Messeinrichtungen der MaLo Messtechnik für viertelstündliche Messung",
            unconfirmed=False,
        ),
        "A25": _c(
            Reason.REQUIREMENTS_UNMET_GENERATING,
            "erz.: Anforderungen können nicht erfüllt werden",
            unconfirmed=False,
        ),
        # erz. MaLo, "Nicht-EEG-/KWKG" branch (steps 406/610/806; machine-readable trees
        # FV2504-FV2610): the Übertragungstag at the latest the day before the last WT
        "A34": _c(
            Reason.VORLAUFFRIST_MISSED_GV1, "erz. GV1: Vorlauffrist (Nicht-EEG/KWKG) nicht eingehalten",
            unconfirmed=False,
        ),
        "A30": _c(
            Reason.VORLAUFFRIST_MISSED_GV2, "erz. GV2: Vorlauffrist (Nicht-EEG/KWKG) nicht eingehalten",
            unconfirmed=False,
        ),
        "A35": _c(
            Reason.VORLAUFFRIST_MISSED_GV3, "erz. GV3: Vorlauffrist (Nicht-EEG/KWKG) nicht eingehalten",
            unconfirmed=False,
        ),
        # An EEG/KWKG MaLo (the same trees, master data ``eeg_kwkg``): GV1 starts on the 1st of a
        # month (step 410) with one month of lead time (430), or 5 WT for a verkürzter Wechsel
        # (420/440); GV2 likewise without the verkürzte one (620/630)
        "A27": _c(Reason.EEG_NOT_MONTH_START_GV1, "erz. GV1, EEG/KWKG: Beginn nicht am Monatsersten",
                  unconfirmed=False),
        "A28": _c(Reason.EEG_VORLAUFFRIST_MISSED_GV1, "erz. GV1, EEG/KWKG: Vorlauffrist von einem Monat "
                  "nicht eingehalten", unconfirmed=False),
        "A29": _c(Reason.EEG_SHORT_VORLAUFFRIST_MISSED_GV1, "erz. GV1, EEG/KWKG: verkürzte Vorlauffrist "
                  "(5 WT) nicht eingehalten", unconfirmed=False),
        "A31": _c(Reason.EEG_NOT_MONTH_START_GV2, "erz. GV2, EEG/KWKG: Beginn nicht am Monatsersten",
                  unconfirmed=False),
        "A32": _c(Reason.EEG_VORLAUFFRIST_MISSED_GV2, "erz. GV2, EEG/KWKG: Vorlauffrist von einem Monat "
                  "nicht eingehalten", unconfirmed=False),
        # E_0622 step 800 -> 810 (EBD 4.1, S3 tree): a GV3 start on the 1st of a month, 00:00,
        # needs one month of lead time, EEG/KWKG or not; other starts too for an EEG/KWKG MaLo
        # (805 -> 810), the others take step 806
        "A44": _c(
            Reason.MONTH_VORLAUFFRIST_MISSED_GV3,
            "erz. GV3, Beginn am Monatsersten: Vorlauffrist von einem Monat nicht eingehalten",
            unconfirmed=False,
        ),
    },
    Ebd.DECIDE_ANMELDUNG: {
        # AHB-FACTS §4 (EBD 4.1, S3)
        "A50": _c(Reason.LFA_OBJECTED_CONSUMING, "LFA hat widersprochen (verbr. MaLo)", unconfirmed=False),
        "A51": _c(Reason.APPROVED_CONSUMING, "Zustimmung (verbr. MaLo)", unconfirmed=False),
        "A57": _c(Reason.LFA_OBJECTED_GENERATING, "LFA hat widersprochen (erz. MaLo)", unconfirmed=False),
        "A58": _c(Reason.APPROVED_GENERATING, "Zustimmung (erz. MaLo)", unconfirmed=False),
        # An operator's rejection (``RejectAnmeldung``), FTX+ACB Muss; only before the day in
        # ``CodeTable.usable_until`` (step 60/450/600: "ein zuvor nicht spezifizierter Fehler")
        "A99": _c(Reason.OTHER_REJECTION, "Sonstiges (Ablehnung, Begründung in FTX+ACB)", unconfirmed=False),
        # Geschäftsvorfall 3, steps 500-600 (EBD 4.1-4.3, machine-readable trees): the supplier
        # asked did not agree (510, A53) or the share is not free (520, A54); else the NB forms
        # a new Tranche (A56; A55 with info on shares missing for a direktvermarktungspflichtige
        # MaLo, 530/540), an operator's decision (``FormTranche``).
        "A53": _c(
            Reason.GV3_NO_AGREEMENT,
            "GV3: der gewünschte Prozentsatz ist nicht frei (keiner Anfrage zugestimmt)",
            unconfirmed=False,
        ),
        "A54": _c(
            Reason.GV3_SHARE_NOT_FREE, "GV3: der gewünschte Prozentsatz ist nicht frei", unconfirmed=False
        ),
        "A55": _c(
            Reason.GV3_TRANCHE_FORMED_SHARES_MISSING,
            "GV3: Zustimmung unter Bildung einer neuen Tranche, Info über fehlende Anteile",
            unconfirmed=False,
        ),
        "A56": _c(
            Reason.GV3_TRANCHE_FORMED, "GV3: Zustimmung unter Bildung einer neuen Tranche", unconfirmed=False
        ),
    },
    # E_0607 (EBD 4.1, S3): A11 Zustimmung (verbr.), A02 Vorlauffrist nicht eingehalten. An
    # Abmeldung by a supplier not assigned to the MaLo is not an E_0607 case: APERAK Z17.
    # Neither a consuming nor a ruhende MaLo (step 10: STS+7 #2 ZW3 or the Tranche ZW5): steps
    # 500 (A21), 520 (A22), 580-610 (A25 for an end already confirmed, as A09 above) and 620 (A27).
    Ebd.ABMELDUNG: {
        "A11": _c(Reason.ABMELDUNG_APPROVED, "Bestätigung der Abmeldung", unconfirmed=False),
        "A02": _c(Reason.ABMELDUNG_NOT_FORWARD, "Vorlauffrist nicht eingehalten (Ende nicht nach dem ÜT) †"),
        # Steps 20/30 (the same trees): an Abmeldung with STS+7 ZAP ("ruhende MaLo") of a MaLo
        # that is no ruhende MaLo of a Kundenanlage (its supply was not started by a ZAP Anmeldung)
        "A01": _c(
            Reason.ABMELDUNG_NOT_RESTING,
            "die MaLo der Abmeldung ist keine ruhende MaLo einer Kundenanlage",
            unconfirmed=False,
        ),
        # Step 80 (machine-readable trees FV2504-FV2610): "Ende der ESV ohne Folgelieferung"
        # (Z41) without an Ersatz-/Grundversorgung begun within the 3 months before the end
        "A05": _c(
            Reason.ABMELDUNG_NO_RECENT_ESV,
            "keine Anmeldung zur Ersatz-/Grundversorgung in den 3 Monaten vor dem Lieferende",
            unconfirmed=False,
        ),
        "A09": _c(
            Reason.ABMELDUNG_ALREADY_ENDED,
            "Lieferende zum Abmeldedatum wurde bereits bestätigt",
            unconfirmed=False,
        ),
        "A27": _c(
            Reason.ABMELDUNG_APPROVED_GENERATING, "Zustimmung (erz. MaLo / Tranche)", unconfirmed=False
        ),
        "A21": _c(
            Reason.ABMELDUNG_NOT_MONTH_START,
            "erz.: Lieferende nicht am 1. eines Kalendermonats 00:00 Uhr",
            unconfirmed=False,
        ),
        "A22": _c(
            Reason.ABMELDUNG_MONTH_VORLAUFFRIST,
            "erz.: Abmeldung nicht mindestens einen Monat vor Zuordnungsende",
            unconfirmed=False,
        ),
        # Steps 130 / 610: ended at that date before, by an Abmeldung whose reason does not say
        # the customer moved out; the new one says so (consuming) → A11 / A27, else these.
        "A10": _c(
            Reason.ABMELDUNG_ENDED_SAME_REASON,
            "Lieferende zum Abmeldedatum wurde aus gleichem Grund bereits bestätigt",
            unconfirmed=False,
        ),
        "A26": _c(
            Reason.ABMELDUNG_ENDED_SAME_REASON_GENERATING,
            "erz.: Lieferende zum Abmeldedatum wurde aus gleichem Grund bereits bestätigt",
            unconfirmed=False,
        ),
        # Steps 90 / 570 (ZH2, Aufhebung wegen aufgehobenem Vertragsverhältnis): the date must be
        # the start confirmed to the LF (EBD 4.1 E_0607, machine-readable tree of FV2510).
        "A06": _c(
            Reason.AUFHEBUNG_NOT_CONFIRMED_START,
            "Aufhebung einer zukünftigen Zuordnung nicht zum bestätigten Beginn",
            unconfirmed=False,
        ),
        "A23": _c(
            Reason.AUFHEBUNG_NOT_CONFIRMED_START_GENERATING,
            "erz.: Aufhebung einer zukünftigen Zuordnung nicht zum bestätigten Beginn",
            unconfirmed=False,
        ),
        "A25": _c(
            Reason.ABMELDUNG_ALREADY_ENDED_GENERATING,
            "erz.: Lieferende zum Abmeldedatum aus gleichem Grund bereits bestätigt",
            unconfirmed=False,
        ),
    },
    Ebd.APERAK: {
        "Z29": _c(Reason.MISSING_DATA, "erforderliche Angabe für diesen Anwendungsfall fehlt †"),
        "Z10": _c(Reason.ID_UNKNOWN, "ID unbekannt †"),
        "Z14": _c(Reason.MALO_INVALID, "Marktlokation nicht gefunden / nicht identifizierbar †"),
        "Z17": _c(Reason.SENDER_NOT_ASSIGNED, "Absender im Zeitraum nicht zugeordnet †"),
        "Z18": _c(Reason.RECIPIENT_NOT_ASSIGNED, "Empfänger im Zeitraum nicht zugeordnet †"),
        "Z35": _c(Reason.FORMAT_NOT_KEPT, "Format nicht eingehalten †"),
        "Z39": _c(Reason.CODE_NOT_ALLOWED, "Code nicht zulässig †"),
        "Z41": _c(Reason.DATE_IMPLAUSIBLE, "Zeitangabe unplausibel"),
        "Z40": _c(Reason.REPETITION_EXCEEDED, "Wiederholbarkeit überschritten"),
    },
}

DEFAULT_CODES = CodeTable(
    version="gpke-codes-2025.1†",
    source="DOMAIN.md §1 (EBD examples) and §4 (APERAK ERC codes); unconfirmed",
    codes={"FV2504": _LFW24_CODES, "FV2510": _LFW24_CODES},
    # FV2610 (in force since 2026-10-01, EBD 4.3): same E_0622/E_0623/E_0624 code sets as
    # FV2510 (AHB-FACTS §4, S3).
    aliases={"FV2604": "FV2510", "FV2610": "FV2510"},
    # E_0623 A99 "Sonstiges": Nutzungsmöglichkeit Ende per EBD version (AHB-FACTS §4, S3).
    usable_until={
        "FV2510": {"E_0623:A99": date(2026, 4, 1)},
        "FV2604": {"E_0623:A99": date(2026, 10, 1)},
        "FV2610": {"E_0623:A99": date(2027, 4, 1)},
    },
)
