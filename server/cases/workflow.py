"""The case workflow: which move is legal from which state, for which role, with
or without a reason, and what each move records. Every state change goes
through ``transition``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from server import clock
from server.audit import service as audit
from server.audit.models import AuditEntry
from server.auth.models import Role, User
from server.auth.permissions import require_in_area
from server.cases.allowance import AllowanceResult, compute_allowance
from server.cases.models import CaseEvent, CaseState, Household
from server.cases.objection_models import Objection, ObjectionStatus
from server.cases.standards import standard_for
from server.errors import IllegalTransition, NotPermitted, ReasonRequired
from server.extensions import db
from server.months import add_months, first_of_next_month, local_date
from server.region import RegionRules, region
from server.validation import written_reason

S = CaseState
PRE_APPROVAL = frozenset(
    {S.APPLIED, S.ACCEPTED, S.SURVEYED, S.TOWNSHIP_REVIEWED, S.IN_PUBLIC_NOTICE}
)
TOWNSHIP_STAFF = frozenset({Role.CASEWORKER, Role.TOWNSHIP_REVIEWER})


@dataclass(frozen=True)
class Transition:
    action: str
    sources: frozenset[CaseState]
    target: CaseState
    roles: frozenset[Role]
    reason_required: bool


TRANSITIONS: dict[str, Transition] = {
    t.action: t
    for t in (
        Transition("accept", frozenset({S.APPLIED}), S.ACCEPTED, TOWNSHIP_STAFF, False),
        Transition(
            "record_survey",
            frozenset({S.ACCEPTED}),
            S.SURVEYED,
            frozenset({Role.CASEWORKER}),
            False,
        ),
        Transition(
            "township_review",
            frozenset({S.SURVEYED}),
            S.TOWNSHIP_REVIEWED,
            frozenset({Role.TOWNSHIP_REVIEWER}),
            False,
        ),
        Transition(
            "start_public_notice",
            frozenset({S.TOWNSHIP_REVIEWED}),
            S.IN_PUBLIC_NOTICE,
            frozenset({Role.TOWNSHIP_REVIEWER}),
            False,
        ),
        # An objection during the notice, or a reviewer's doubt, sends the case back
        # to the survey.
        Transition(
            "return_for_resurvey",
            frozenset({S.SURVEYED, S.TOWNSHIP_REVIEWED, S.IN_PUBLIC_NOTICE}),
            S.ACCEPTED,
            frozenset({Role.TOWNSHIP_REVIEWER, Role.COUNTY_APPROVER}),
            True,
        ),
        Transition(
            "approve",
            frozenset({S.IN_PUBLIC_NOTICE}),
            S.APPROVED,
            frozenset({Role.COUNTY_APPROVER}),
            False,
        ),
        Transition(
            "reject",
            PRE_APPROVAL,
            S.REJECTED,
            frozenset({Role.TOWNSHIP_REVIEWER, Role.COUNTY_APPROVER}),
            True,
        ),
        Transition(
            "suspend", frozenset({S.APPROVED}), S.SUSPENDED, frozenset({Role.COUNTY_APPROVER}), True
        ),
        Transition(
            "reinstate",
            frozenset({S.SUSPENDED}),
            S.APPROVED,
            frozenset({Role.COUNTY_APPROVER}),
            True,
        ),
        Transition(
            "terminate",
            frozenset({S.APPROVED, S.SUSPENDED}),
            S.TERMINATED,
            frozenset({Role.COUNTY_APPROVER}),
            True,
        ),
    )
}


def local_today() -> date:
    """Today in the region's time zone, by the service's clock."""
    return local_date(clock.utcnow(), region().timezone)


def next_steps(role: Role) -> dict[CaseState, str]:
    """The states in which a case waits on ``role``: the workflow's forward moves that
    role makes (state -> action). A move that needs a reason (return, reject, suspend,
    reinstate, terminate) is an exception, not a step a case waits for."""
    return {
        source: t.action
        for t in TRANSITIONS.values()
        if role in t.roles and not t.reason_required
        for source in t.sources
    }


def available_actions(household: Household, actor: User) -> list[str]:
    """The moves this actor could make on this case now (for buttons)."""
    return [
        t.action
        for t in TRANSITIONS.values()
        if household.state in t.sources and actor.role in t.roles
    ]


def transition(
    household: Household,
    action: str,
    *,
    actor: User,
    reason: str | None = None,
    today: date | None = None,
) -> CaseEvent:
    """Move a case by ``action`` on behalf of ``actor``; flushes, never commits.

    Raises IllegalTransition, NotPermitted, OutOfArea or ReasonRequired, in which
    case nothing has changed.
    """
    require_in_area(actor, household.village)
    spec = TRANSITIONS.get(action)
    if spec is None:
        raise IllegalTransition(f"unknown action {action!r}", action=action)
    if actor.role not in spec.roles:
        raise NotPermitted(
            f"a {actor.role.value} may not {action} a case",
            action=action,
            role=actor.role.value,
        )
    if household.state not in spec.sources:
        raise IllegalTransition(
            f"cannot {action} a case that is {household.state.value}",
            action=action,
            state=household.state.value,
        )
    reason = written_reason(reason, action)
    if spec.reason_required and reason is None:
        raise ReasonRequired(f"{action} needs a written reason", action=action)

    rules = region()
    today = today or local_today()
    _apply_effects(household, spec, rules, today, reason)

    previous = household.state
    household.state = spec.target
    household.state_changed_at = clock.utcnow()
    event = _record(
        household,
        action,
        actor=actor,
        before=previous,
        reason=reason,
        from_state=previous.value,
        to_state=spec.target.value,
    )
    db.session.flush()
    return event


def _record(
    household: Household,
    action: str,
    *,
    actor: User | None,
    before: CaseState,
    reason: str | None,
    at: datetime | None = None,
    **details: Any,
) -> CaseEvent:
    """The ``case_events`` row of a move (from ``before`` to the case's state now)
    and its audit row ``case.<action>`` with ``details``."""
    event = CaseEvent(
        household=household,
        actor_id=actor.id if actor is not None else None,
        action=action,
        from_state=before.value,
        to_state=household.state.value,
        reason=reason,
    )
    if at is not None:
        event.at = at
    db.session.add(event)
    audit.record(
        f"case.{action}",
        actor=actor,
        object_type="household",
        object_id=household.id,
        **details,
    )
    return event


def _apply_effects(
    household: Household, spec: Transition, rules: RegionRules, today: date, reason: str | None
) -> None:
    if spec.action == "start_public_notice":
        household.notice_ends_on = today + timedelta(days=rules.deadlines.public_notice_days)
        household.decision_due_on = rules.calendar.add_working_days(
            household.notice_ends_on, rules.deadlines.county_decision_working_days
        )
    elif spec.action == "return_for_resurvey":
        household.notice_ends_on = None
        household.decision_due_on = None
    elif spec.action == "approve":
        _no_open_objection(household)
        if household.notice_ends_on is not None and today < household.notice_ends_on:
            raise IllegalTransition(
                f"the public notice runs until {household.notice_ends_on.isoformat()}",
                action="approve",
                notice_ends_on=household.notice_ends_on.isoformat(),
            )
        if household.conflict_of_interest and reason is None:
            raise ReasonRequired(
                "a flagged (conflict of interest) case needs the county's own visit "
                "recorded in the reason",
                action="approve",
            )
        # The standard of the first month paid.
        result = allowance_for(household, rules, month=first_of_next_month(today))
        if not result.eligible:
            raise IllegalTransition(
                "the household's per-capita income reaches the standard; reject instead",
                action="approve",
                per_capita_income=str(result.per_capita_income),
            )
        household.monthly_allowance = result.monthly_amount
        household.approved_on = today
        household.payment_starts_on = first_of_next_month(today)
        _set_review(household, next_review_after(household, today), reviewed_on=today)


def _no_open_objection(household: Household) -> None:
    """An objection raised during the notice is decided before the case is approved."""
    waiting = db.session.scalar(
        select(Objection.id)
        .where(Objection.household_id == household.id, Objection.status == ObjectionStatus.OPEN)
        .limit(1)
    )
    if waiting is not None:
        raise IllegalTransition(
            "an objection to this case is not decided yet",
            action="approve",
            objection_id=waiting,
        )


def next_review_after(household: Household, reviewed_on: date) -> date:
    """The periodic review after one done on ``reviewed_on``: the class's interval
    later, clamped to month ends."""
    return add_months(reviewed_on, household.household_class.review_interval_months)


def _set_review(household: Household, due: date, *, reviewed_on: date | None) -> None:
    if reviewed_on is not None:
        household.last_reviewed_on = reviewed_on
    household.next_review_on = due


def schedule_review(
    household: Household,
    due: date,
    *,
    actor: User | None,
    action: str,
    reason: str,
    reviewed_on: date | None = None,
    at: datetime | None = None,
    **details: Any,
) -> CaseEvent:
    """Set the case's next review date (and, after a review, the day it was done),
    with its ``case_events`` row (``action``, the state unchanged, ``reason``) and its
    audit row ``case.<action>`` (``details`` added to it). The one way the date changes
    outside a transition (approval sets it as one of its effects). Flushes nothing:
    the caller commits."""
    rows = review_rows(
        household,
        due,
        actor=actor,
        action=action,
        reason=reason,
        reviewed_on=reviewed_on,
        at=at,
        **details,
    )
    for key, value in rows.household.items():
        setattr(household, key, value)
    rows.event.household = household
    db.session.add_all(rows.new)
    return rows.event


@dataclass(frozen=True)
class ReviewRows:
    """What a review's scheduling writes, for a caller that writes it itself: its
    ``case_events`` row, its audit row and the household's columns to set."""

    event: CaseEvent
    audit: AuditEntry
    household: dict[str, Any]

    @property
    def new(self) -> list[Any]:
        return [self.event, self.audit]


def review_rows(
    household: Household,
    due: date,
    *,
    actor: User | None,
    action: str,
    reason: str,
    reviewed_on: date | None = None,
    at: datetime | None = None,
    **details: Any,
) -> ReviewRows:
    """The rows :func:`schedule_review` writes, as objects not yet in the session, and
    the household's columns it sets, the household left unchanged: for a hot path that
    writes them with its own (server.extensions.write_as_loaded; a visit's review)."""
    columns: dict[str, Any] = {"next_review_on": due}
    if reviewed_on is not None:
        columns["last_reviewed_on"] = reviewed_on
    event = CaseEvent(
        household_id=household.id,
        actor_id=actor.id if actor is not None else None,
        action=action,
        from_state=household.state.value,
        to_state=household.state.value,
        reason=reason,
    )
    if at is not None:
        event.at = at
    entry = audit.entry(
        f"case.{action}", actor=actor, object_type="household", object_id=household.id, **details
    )
    return ReviewRows(event=event, audit=entry, household=columns)


def recompute_allowance(
    household: Household, *, actor: User | None, reason: str
) -> AllowanceResult:
    """Recompute the allowance after the members changed (a death, say): an active or
    suspended case that is still eligible gets the new amount; the state is unchanged
    (the caller suspends a case that is no longer eligible). A ``case_events`` row
    ``recompute_allowance`` with ``reason``, and its audit row. Flushes nothing."""
    result = allowance_for(household)
    before = household.monthly_allowance
    if household.state in (S.APPROVED, S.SUSPENDED) and result.eligible:
        household.monthly_allowance = result.monthly_amount
    _record(
        household,
        "recompute_allowance",
        actor=actor,
        before=household.state,
        reason=reason,
        before_amount=None if before is None else str(before),
        after_amount=None
        if household.monthly_allowance is None
        else str(household.monthly_allowance),
        eligible=result.eligible,
    )
    return result


def allowance_for(
    household: Household,
    rules: RegionRules | None = None,
    month: date | str | None = None,
    *,
    member_incomes: Sequence[Decimal] | None = None,
) -> AllowanceResult:
    """The household's allowance for ``month`` (default: the current month) under the
    class standard in effect for that month (server/cases/standards.py), from its living
    members' incomes, or from ``member_incomes`` (a proposed change's members:
    server/cases/changes.py)."""
    rules = rules or region()
    standard = standard_for(household.household_class, month or local_today())
    return compute_allowance(
        method=rules.allowance_method,
        monthly_standard=standard.monthly_standard,
        fixed_monthly=standard.fixed_monthly,
        minimum_monthly=rules.minimum_monthly,
        member_incomes=(
            [m.monthly_income for m in household.living_members]
            if member_incomes is None
            else member_incomes
        ),
    )


def record_event(
    household: Household, action: str, *, actor: User, reason: str | None, **details: Any
) -> CaseEvent:
    """A ``case_events`` row for something done to the case that leaves its state as
    it is (an approved change), with its audit row ``case.<action>``."""
    return _record(household, action, actor=actor, before=household.state, reason=reason, **details)


STANDARD_CHANGED = "standard_changed"


def apply_standard(household: Household, month: str, *, at: datetime) -> CaseEvent | None:
    """Recompute an approved case's allowance under ``month``'s class standard (a
    change of the class table takes effect), with its ``case_events`` and audit rows;
    nothing when the amount stays. The same on a second run."""
    result = allowance_for(household, month=month)
    before = household.monthly_allowance
    if before == result.monthly_amount:
        return None
    household.monthly_allowance = result.monthly_amount
    return _record(
        household,
        STANDARD_CHANGED,
        actor=None,
        before=household.state,
        reason=f"class standard from {month}",
        at=at,
        month=month,
        eligible=result.eligible,
        previous_amount=None if before is None else str(before),
        amount=str(result.monthly_amount),
    )
