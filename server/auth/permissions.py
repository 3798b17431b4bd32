"""Who may see what: every staff user is scoped to one area and everything below it.

The rule: **outside your area is "does not exist"**. An object in another area gets
exactly the answer of an object that was never there (same status, code, message and
details), and the area check comes before any other question about the object (its
state, its members, whether the actor's role may act on it). Every lookup by an id or
code that a caller sends goes through ``require_visible`` or ``require_in_area``, and
both build their error with ``not_found``, so the two answers cannot drift apart.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Any, ParamSpec, TypeVar

from flask import Flask
from flask_login import current_user, login_required
from sqlalchemy import Select

from server.areas.models import Area
from server.auth.models import Role, User
from server.errors import NotPermitted, OutOfArea

Q = TypeVar("Q", bound="Select[*tuple[Any, ...]]")
P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


def in_area(actor: User, area: Area) -> bool:
    return actor.area.contains(area)


def not_found(what: str, **details: Any) -> OutOfArea:
    """The one error for both "there is no such {what}" and "it lies outside your area"."""
    return OutOfArea(f"no such {what}", **details)


def require_in_area(actor: User, area: Area, what: str = "case", **details: Any) -> None:
    """Raise OutOfArea (shown as 'not found') unless ``area`` lies inside the actor's
    area: the same answer as for something that does not exist. Callers that also
    answer "missing" themselves must pass the same ``what`` and ``details``; prefer
    ``require_visible``, which does both.
    """
    if not actor.is_active or not in_area(actor, area):
        raise not_found(what, **details)


def require_visible(
    actor: User,
    found: T | None,
    area_of: Callable[[T], Area],
    what: str,
    **details: Any,
) -> T:
    """``found`` when it exists and lies inside the actor's area; otherwise the same
    OutOfArea for both cases. Call it before any other check on the object.
    """
    if found is None:
        raise not_found(what, **details)
    require_in_area(actor, area_of(found), what, **details)
    return found


def scope_to_actor(query: Q, actor: User) -> Q:
    """Restrict a query that joins ``Area`` to the areas inside the actor's area."""
    scoped: Q = query.where(Area.path.startswith(actor.area.path, autoescape=True))
    return scoped


def staff_required(view: Callable[P, R]) -> Callable[P, R]:
    """Flask-Login's ``login_required`` with its type kept."""
    wrapped: Callable[P, R] = login_required(view)
    return wrapped


# --------------------------------------------------------------------------- capabilities


class Capability(enum.StrEnum):
    """What a role may do, besides the case workflow's moves (whose roles are in
    server/cases/workflow.py's TRANSITIONS, read through ``available_actions``)."""

    REGISTER_APPLICATIONS = "register_applications"
    READ_PERSONAL_DATA = "read_personal_data"  # members' names, ID numbers, phones (audited)
    # Full ID numbers and phones, one member at a time on request (audited); without it
    # a page shows them masked (issue 15): the caseworker's, reviewer's, approver's work.
    REVEAL_PERSONAL_DATA = "reveal_personal_data"
    READ_VISIT_PHOTOS = "read_visit_photos"
    REVIEW_VISITS = "review_visits"  # clear a visit's flags
    DECIDE_PROOF_OF_LIFE = "decide_proof_of_life"  # exempt, pass or fail a month
    ASSIST_PROOF_OF_LIFE = "assist_proof_of_life"  # a caseworker's tablet at the home
    ENROLL_FACES = "enroll_faces"
    USE_TABLETS = "use_tablets"  # device tokens (the tablet API, ODK Collect)
    MANAGE_ACCOUNTS = "manage_accounts"  # users, their roles and areas, tablet logins
    # The class table's amounts from a month on (server/cases/standards.py).
    MANAGE_STANDARDS = "manage_standards"
    # The supervisor console (issue 15): progress, exceptions, maps and activity of
    # every caseworker in the area (a caseworker without it sees only their own work).
    READ_CONSOLE = "read_console"
    READ_AUDIT_LOG = "read_audit_log"  # the audit-log view and its export
    RECORD_BACK_CHECKS = "record_back_checks"  # re-visit a sampled visit, record the outcome
    # Changes to a case (members, phones, incomes: server/cases/changes.py), made by one
    # person and taking effect only when a second one with CHECK_CASE_CHANGES approves.
    PROPOSE_CASE_CHANGES = "propose_case_changes"
    CHECK_CASE_CHANGES = "check_case_changes"
    # Match the civil registry's death register and apply it (issue 17): it suspends
    # cases, a county decision, so the county approver's alone.
    IMPORT_DEATH_REGISTER = "import_death_register"
    # Read and decide objections raised during a case's public notice (issue 18).
    DECIDE_OBJECTIONS = "decide_objections"


C = Capability

# The one role-to-capability table (docs/domain-model.md, "Users and roles"): the
# administrator manages accounts and makes no case decisions, reads no personal data.
CAPABILITIES: Mapping[Role, frozenset[Capability]] = {
    Role.CASEWORKER: frozenset(
        {
            C.REGISTER_APPLICATIONS,
            C.READ_PERSONAL_DATA,
            C.REVEAL_PERSONAL_DATA,
            C.READ_VISIT_PHOTOS,
            C.ASSIST_PROOF_OF_LIFE,
            C.ENROLL_FACES,
            C.USE_TABLETS,
            C.PROPOSE_CASE_CHANGES,
        }
    ),
    Role.TOWNSHIP_REVIEWER: frozenset(
        {
            C.REGISTER_APPLICATIONS,
            C.READ_PERSONAL_DATA,
            C.REVEAL_PERSONAL_DATA,
            C.READ_VISIT_PHOTOS,
            C.REVIEW_VISITS,
            C.DECIDE_PROOF_OF_LIFE,
            C.READ_CONSOLE,
            C.PROPOSE_CASE_CHANGES,
            C.CHECK_CASE_CHANGES,
            C.DECIDE_OBJECTIONS,
        }
    ),
    Role.COUNTY_APPROVER: frozenset(
        {
            C.READ_PERSONAL_DATA,
            C.REVEAL_PERSONAL_DATA,
            C.READ_VISIT_PHOTOS,
            C.REVIEW_VISITS,
            C.DECIDE_PROOF_OF_LIFE,
            C.READ_CONSOLE,
            C.RECORD_BACK_CHECKS,
            C.CHECK_CASE_CHANGES,
            C.IMPORT_DEATH_REGISTER,
            C.DECIDE_OBJECTIONS,
        }
    ),
    Role.SUPERVISOR: frozenset(
        {
            C.READ_PERSONAL_DATA,
            C.READ_VISIT_PHOTOS,
            C.READ_CONSOLE,
            C.READ_AUDIT_LOG,
            C.RECORD_BACK_CHECKS,
        }
    ),
    Role.ADMIN: frozenset({C.MANAGE_ACCOUNTS, C.MANAGE_STANDARDS, C.READ_AUDIT_LOG}),
}


def roles_with(capability: Capability) -> frozenset[Role]:
    return frozenset(role for role, caps in CAPABILITIES.items() if capability in caps)


def can(actor: User | None, capability: Capability | str) -> bool:
    """Whether ``actor``'s role has ``capability`` (templates: ``can("review_visits")``
    for the signed-in user). An unknown capability name is an error, not a "no"."""
    wanted = Capability(capability)
    role = getattr(actor, "role", None)
    return role is not None and wanted in CAPABILITIES.get(role, frozenset())


def require(actor: User, capability: Capability, message: str, **details: Any) -> None:
    """Raise NotPermitted with ``message`` unless ``actor`` may; call it after the
    area check (outside the area is "does not exist", whatever the role)."""
    if not can(actor, capability):
        raise NotPermitted(message, **details)


def register(app: Flask) -> None:
    """``can("capability")`` in templates, for the signed-in user."""

    def can_current(capability: str) -> bool:
        return current_user.is_authenticated and can(current_user, capability)

    app.jinja_env.globals["can"] = can_current
