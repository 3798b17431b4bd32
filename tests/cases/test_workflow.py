"""The case workflow: every legal move, every illegal one, roles, reasons, areas."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from server.audit.models import AuditEntry
from server.auth.models import Role
from server.cases.models import CaseEvent, CaseState, Household
from server.cases.workflow import TRANSITIONS, transition
from server.errors import IllegalTransition, NotPermitted, OutOfArea, ReasonRequired
from server.extensions import db
from server.months import add_months
from tests import factories

# The user of each role whose area covers village A.
ACTOR_FOR_ROLE = {
    Role.CASEWORKER: "caseworker_a",
    Role.TOWNSHIP_REVIEWER: "reviewer_a",
    Role.COUNTY_APPROVER: "approver",
    Role.SUPERVISOR: "supervisor",
    Role.ADMIN: "admin",
}
LEGAL = [(t.action, source) for t in TRANSITIONS.values() for source in sorted(t.sources)]
ILLEGAL = [
    (t.action, state) for t in TRANSITIONS.values() for state in CaseState if state not in t.sources
]
WRONG_ROLE = [
    (t.action, role) for t in TRANSITIONS.values() for role in Role if role not in t.roles
]
TODAY = date(2026, 11, 23)  # a Monday


def _event_count(household: Household) -> int:
    return (
        db.session.scalar(
            select(func.count())
            .select_from(CaseEvent)
            .where(CaseEvent.household_id == household.id)
        )
        or 0
    )


def _actor_for(action: str) -> str:
    role = sorted(TRANSITIONS[action].roles)[0]
    return ACTOR_FOR_ROLE[role]


@pytest.mark.parametrize(("action", "source"), LEGAL, ids=[f"{a}-from-{s}" for a, s in LEGAL])
def test_every_legal_transition_moves_the_case_and_records_it(
    app: object, action: str, source: CaseState
) -> None:
    household = factories.make_household(state=source)
    if source is CaseState.IN_PUBLIC_NOTICE:
        household.notice_ends_on = TODAY - timedelta(days=1)
    actor = factories.user(_actor_for(action))
    events_before = _event_count(household)

    event = transition(household, action, actor=actor, reason="入户核实情况属实", today=TODAY)

    target = TRANSITIONS[action].target
    assert household.state is target
    assert _event_count(household) == events_before + 1
    assert (event.actor_id, event.from_state, event.to_state, event.reason) == (
        actor.id,
        source.value,
        target.value,
        "入户核实情况属实",
    )
    audit = db.session.scalars(
        select(AuditEntry).where(
            AuditEntry.action == f"case.{action}", AuditEntry.object_id == str(household.id)
        )
    ).one()
    assert audit.actor_id == actor.id
    assert audit.details == {"from_state": source.value, "to_state": target.value}


@pytest.mark.parametrize(("action", "state"), ILLEGAL, ids=[f"{a}-from-{s}" for a, s in ILLEGAL])
def test_every_illegal_transition_is_refused_and_changes_nothing(
    app: object, action: str, state: CaseState
) -> None:
    household = factories.make_household(state=state)
    events_before = _event_count(household)
    with pytest.raises(IllegalTransition):
        transition(
            household, action, actor=factories.user(_actor_for(action)), reason="理由", today=TODAY
        )
    assert household.state is state
    assert _event_count(household) == events_before


@pytest.mark.parametrize(("action", "role"), WRONG_ROLE, ids=[f"{a}-by-{r}" for a, r in WRONG_ROLE])
def test_a_role_may_only_make_its_own_moves(app: object, action: str, role: Role) -> None:
    source = sorted(TRANSITIONS[action].sources)[0]
    household = factories.make_household(state=source)
    with pytest.raises(NotPermitted):
        transition(
            household,
            action,
            actor=factories.user(ACTOR_FOR_ROLE[role]),
            reason="理由",
            today=TODAY,
        )
    assert household.state is source


REASONED = [t.action for t in TRANSITIONS.values() if t.reason_required]


def test_the_rules_demand_reasons_for_refusals_returns_and_payment_changes() -> None:
    assert set(REASONED) == {"reject", "return_for_resurvey", "suspend", "reinstate", "terminate"}


@pytest.mark.parametrize("action", REASONED)
@pytest.mark.parametrize("reason", [None, "", "   \n"])
def test_a_move_that_needs_a_reason_is_refused_without_one(
    app: object, action: str, reason: str | None
) -> None:
    source = sorted(TRANSITIONS[action].sources)[0]
    household = factories.make_household(state=source)
    with pytest.raises(ReasonRequired):
        transition(
            household, action, actor=factories.user(_actor_for(action)), reason=reason, today=TODAY
        )
    assert household.state is source


@pytest.mark.parametrize(
    ("username", "state", "action"),
    [
        ("reviewer_a", CaseState.SURVEYED, "township_review"),
        ("caseworker_a", CaseState.APPLIED, "accept"),
        ("other_approver", CaseState.APPROVED, "suspend"),
    ],
)
def test_staff_cannot_act_on_a_case_outside_their_area(
    app: object, username: str, state: CaseState, action: str
) -> None:
    village = factories.areas().village_b if username != "other_approver" else None
    household = factories.make_household(village=village, state=state)
    with pytest.raises(OutOfArea):
        transition(household, action, actor=factories.user(username), reason="理由", today=TODAY)
    assert household.state is state


def test_public_notice_sets_the_notice_end_and_the_county_deadline_in_working_days(
    app: object,
) -> None:
    household = factories.make_household(state=CaseState.TOWNSHIP_REVIEWED)
    transition(
        household,
        "start_public_notice",
        actor=factories.user("reviewer_a"),
        today=date(2026, 9, 21),
    )
    # 7 calendar days of notice; then 10 working days that skip the weekends and the
    # National Day holidays (1, 2, 5-7 Oct in the built-in calendar) but count the
    # make-up working Saturday 10 Oct: 29, 30 Sep, 8, 9, 10, 12, 13, 14, 15, 16 Oct.
    assert household.notice_ends_on == date(2026, 9, 28)
    assert household.decision_due_on == date(2026, 10, 16)


def test_approval_waits_for_the_end_of_the_public_notice(app: object) -> None:
    household = factories.make_household(state=CaseState.IN_PUBLIC_NOTICE)
    household.notice_ends_on = TODAY + timedelta(days=2)
    with pytest.raises(IllegalTransition, match="public notice"):
        transition(household, "approve", actor=factories.user("approver"), today=TODAY)
    assert household.state is CaseState.IN_PUBLIC_NOTICE


def test_approval_fixes_allowance_first_payment_and_next_review(app: object) -> None:
    household = factories.make_household(
        state=CaseState.IN_PUBLIC_NOTICE, incomes=("200.00", "100.00", "0.00"), class_code="B"
    )
    transition(household, "approve", actor=factories.user("approver"), today=TODAY)
    # Class B: standard 662.00, every 6 months; gap = 662*3 - 300 = 1686.00
    assert household.monthly_allowance == Decimal("1686.00")
    assert household.approved_on == TODAY
    assert household.payment_starts_on == date(2026, 12, 1)
    assert household.next_review_on == date(2027, 5, 23)


def test_a_household_above_the_standard_cannot_be_approved(app: object) -> None:
    household = factories.make_household(
        state=CaseState.IN_PUBLIC_NOTICE, incomes=("900.00", "800.00")
    )
    with pytest.raises(IllegalTransition, match="standard"):
        transition(household, "approve", actor=factories.user("approver"), today=TODAY)


def test_a_conflict_of_interest_case_needs_the_county_visit_in_the_reason(app: object) -> None:
    household = factories.make_household(
        state=CaseState.IN_PUBLIC_NOTICE, conflict_of_interest=True
    )
    approver = factories.user("approver")
    with pytest.raises(ReasonRequired):
        transition(household, "approve", actor=approver, today=TODAY)
    transition(household, "approve", actor=approver, reason="县民政局11月20日入户核实", today=TODAY)
    assert household.state is CaseState.APPROVED


def test_an_objection_during_the_notice_reopens_the_survey(app: object) -> None:
    household = factories.make_household(state=CaseState.TOWNSHIP_REVIEWED)
    transition(household, "start_public_notice", actor=factories.user("reviewer_a"), today=TODAY)
    transition(
        household,
        "return_for_resurvey",
        actor=factories.user("reviewer_a"),
        reason="公示期间群众反映家中有营运车辆",
        today=TODAY,
    )
    assert household.state is CaseState.ACCEPTED
    assert household.notice_ends_on is None and household.decision_due_on is None
    transition(household, "record_survey", actor=factories.user("caseworker_a"), today=TODAY)
    assert household.state is CaseState.SURVEYED


@pytest.mark.parametrize(
    ("start", "months", "expected"),
    [
        (date(2026, 1, 31), 1, date(2026, 2, 28)),
        (date(2028, 1, 31), 1, date(2028, 2, 29)),
        (date(2026, 11, 30), 3, date(2027, 2, 28)),
        (date(2026, 12, 15), 12, date(2027, 12, 15)),
    ],
)
def test_review_intervals_in_months_clamp_to_the_end_of_short_months(
    start: date, months: int, expected: date
) -> None:
    assert add_months(start, months) == expected
