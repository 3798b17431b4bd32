"""Human labels (zh_CN and English through Babel) for the domain's codes."""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask_babel import get_locale
from flask_babel import lazy_gettext as _l

from server.auth.models import Role
from server.cases.models import CaseState, Relation
from server.errors import DomainError, ReasonRequired

STATE_LABELS = {
    CaseState.APPLIED: _l("Applied"),
    CaseState.ACCEPTED: _l("Accepted"),
    CaseState.SURVEYED: _l("Surveyed"),
    CaseState.TOWNSHIP_REVIEWED: _l("Township reviewed"),
    CaseState.IN_PUBLIC_NOTICE: _l("In public notice"),
    CaseState.APPROVED: _l("Active"),
    CaseState.SUSPENDED: _l("Suspended"),
    CaseState.TERMINATED: _l("Terminated"),
    CaseState.REJECTED: _l("Rejected"),
}

ROLE_LABELS = {
    Role.CASEWORKER: _l("Caseworker"),
    Role.TOWNSHIP_REVIEWER: _l("Township reviewer"),
    Role.COUNTY_APPROVER: _l("County approver"),
    Role.SUPERVISOR: _l("Supervisor"),
    Role.ADMIN: _l("Administrator"),
}

RELATION_LABELS = {
    Relation.HEAD: _l("Head"),
    Relation.SPOUSE: _l("Spouse"),
    Relation.CHILD: _l("Child"),
    Relation.PARENT: _l("Parent"),
    Relation.GRANDCHILD: _l("Grandchild"),
    Relation.GRANDPARENT: _l("Grandparent"),
    Relation.SIBLING: _l("Sibling"),
    Relation.OTHER: _l("Other"),
}

ACTION_LABELS = {
    "apply": _l("Application registered"),
    "accept": _l("Accept"),
    "record_survey": _l("Record household survey"),
    "township_review": _l("Township review passed"),
    "start_public_notice": _l("Start public notice"),
    "return_for_resurvey": _l("Return for re-survey"),
    "approve": _l("Approve"),
    "reject": _l("Reject"),
    "suspend": _l("Suspend"),
    "reinstate": _l("Reinstate"),
    "terminate": _l("Terminate"),
    "seed": _l("Imported"),
}


def error_message(exc: DomainError) -> str:
    """The user's-language sentence for a domain error shown on a page."""
    details = exc.details
    if "notice_ends_on" in details:
        return str(_l("The public notice runs until %(date)s.", date=details["notice_ends_on"]))
    if "per_capita_income" in details:
        return str(
            _l(
                "Per-capita income (%(income)s) reaches the standard: reject instead.",
                income=details["per_capita_income"],
            )
        )
    if isinstance(exc, ReasonRequired) and details.get("action") == "approve":
        return str(_l("A flagged case needs the county's own visit recorded in the reason."))
    generic = {
        "illegal_transition": _l("This case cannot be moved that way from its current state."),
        "reason_required": _l("This decision needs a written reason."),
        "not_permitted": _l("Your role may not make this decision."),
        "not_found": _l("No such case."),
        "validation_failed": _l("Some of the data is not valid."),
    }
    return str(generic.get(exc.code, exc.message))


def _lookup(table: dict[Any, Any]) -> Any:
    def label(key: Any) -> str:
        return str(table.get(key, key))

    return label


def is_chinese() -> bool:
    locale = get_locale()
    return locale is not None and locale.language == "zh"


def register(app: Flask) -> None:
    app.jinja_env.globals.update(
        is_chinese=is_chinese,
        state_label=_lookup(STATE_LABELS),
        role_label=_lookup(ROLE_LABELS),
        relation_label=_lookup(RELATION_LABELS),
        action_label=_lookup(ACTION_LABELS),
    )
