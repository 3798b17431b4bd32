"""Human labels (zh_CN and English through Babel) for the domain's codes."""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask_babel import get_locale
from flask_babel import lazy_gettext as _l

from server.auth.models import Role
from server.cases.models import CaseState, Relation

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
