"""Changes to a case with a maker and a checker (server/cases/changes.py): each kind
proposed, then approved (the effect, the allowance recomputed and paid by the next
payroll), or rejected / withdrawn (nothing changes); the four-eyes rule, roles and
areas, a moved base, and a corrected phone that the next SMS follows."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from flask import Flask
from pytest_httpserver import HTTPServer
from sqlalchemy import func, select, text, update

from server.audit.models import AuditEntry
from server.cases import changes
from server.cases.models import (
    CaseChange,
    CaseEvent,
    CaseState,
    ChangeKind,
    ChangeStatus,
    Household,
    Member,
    Relation,
)
from server.cases.service import NewMember
from server.cases.workflow import allowance_for
from server.errors import IllegalTransition, NotPermitted, OutOfArea, ValidationFailed
from server.extensions import db
from server.monthly import cycle as campaign
from server.monthly import resend
from server.payments import service as payments
from server.payments.models import PaymentMonth
from server.proof_of_life import service as pol
from server.proof_of_life.models import MonthStatus
from sms import sender
from sms.models import MessageKind, MessageStatus, SmsMessage
from tests import factories
from tests.fake_twilio import FakeTwilio
from tests.sms.test_sms_twilio import _gateway

MONTH = "2026-12"
MORNING = datetime(2026, 12, 20, 1, 0, tzinfo=UTC)  # 09:00 local, the window open
BEFORE_WINDOW = datetime(2026, 12, 3, 2, 0, tzinfo=UTC)
CLOSES = datetime(2026, 12, 24, 16, 0, tzinfo=UTC)  # Dec 25 00:00 local


@pytest.fixture
def at(app: Flask) -> Iterator[Any]:
    """Sets the service's clock; restored afterwards."""

    def set_clock(moment: datetime) -> None:
        app.config["DIBAO_CLOCK"] = lambda: moment

    yield set_clock
    app.config.pop("DIBAO_CLOCK", None)


def paid_household(incomes: tuple[str, ...] = ("100.00", "0.00")) -> Household:
    """An approved case paying its allowance; the head proves life each month."""
    household = factories.make_household(state=CaseState.APPROVED, incomes=incomes)
    household.monthly_allowance = allowance_for(household).monthly_amount
    db.session.flush()
    return household


def newborn(**overrides: Any) -> NewMember:
    values: dict[str, Any] = {
        "name": "王小六",
        "id_number": factories.id_number(date(2020, 3, 9)),
        "birth_date": date(2020, 3, 9),
        "relation": Relation.CHILD,
        "phone": None,
        "monthly_income": Decimal("0.00"),
    }
    values.update(overrides)
    return NewMember(**values)


def payroll_amount(household: Household, month: str) -> Decimal:
    row = next(r for r in payments.payroll(month) if r.case_code == household.case_code)
    return row.monthly_amount


def snapshot(household: Household) -> tuple[Any, ...]:
    db.session.expire_all()
    members = db.session.scalars(
        select(Member).where(Member.household_id == household.id).order_by(Member.id)
    )
    return (
        db.session.get(Household, household.id).monthly_allowance,  # type: ignore[union-attr]
        [
            (m.id, m.relation, m.phone, m.monthly_income, m.left_on, m.proof_of_life_required)
            for m in members
        ],
    )


# --------------------------------------------------------------------------- each kind


def test_add_member_waits_for_the_checker_then_counts_and_the_payroll_pays_it(app: Flask) -> None:
    household = paid_household()
    before = snapshot(household)
    maker, checker = factories.user("caseworker_a"), factories.user("reviewer_a")
    change = changes.propose_add_member(maker, household, newborn(), "新生儿落户")
    # A preview, and nothing applied yet.
    assert (change.allowance_before, change.allowance_after) == (
        household.monthly_allowance,
        allowance_for(
            household, member_incomes=[Decimal("100"), Decimal("0"), Decimal("0")]
        ).monthly_amount,
    )
    assert change.allowance_after > change.allowance_before
    assert snapshot(household) == before
    raw = db.session.execute(
        text("SELECT payload FROM case_changes WHERE id = :id"), {"id": change.id}
    ).scalar_one()
    assert "王小六".encode() not in bytes(raw) and b"152201" not in bytes(raw)

    changes.approve(checker, change, "已核实户口簿")
    db.session.flush()
    assert change.status is ChangeStatus.APPROVED and change.checker_id == checker.id
    db.session.refresh(household)
    assert len(household.living_members) == 3
    assert household.members[-1].name == "王小六"
    assert household.monthly_allowance == change.allowance_after
    assert change.effective_month is not None
    assert payroll_amount(household, change.effective_month) == change.allowance_after
    event = db.session.scalar(
        select(CaseEvent).where(
            CaseEvent.household_id == household.id, CaseEvent.action == "case_change"
        )
    )
    assert event is not None and event.actor_id == checker.id
    actions = set(
        db.session.scalars(select(AuditEntry.action).where(AuditEntry.object_id == str(change.id)))
    )
    assert {"case_change.proposed", "case_change.approved"} <= actions


def test_remove_member_keeps_the_row_and_the_allowance_follows(app: Flask) -> None:
    household = paid_household(("0.00", "0.00", "0.00"))
    child = household.members[1]
    change = changes.propose_remove_member(
        factories.user("caseworker_a"), household, child.id, "外出务工迁出"
    )
    changes.approve(factories.user("approver"), change)
    db.session.flush()
    db.session.refresh(household)
    assert child.left_on is not None and not child.current
    assert [m.id for m in household.living_members] == [
        household.members[0].id,
        household.members[2].id,
    ]
    assert household.monthly_allowance == allowance_for(household).monthly_amount
    assert change.allowance_after < change.allowance_before
    assert payroll_amount(household, change.effective_month or MONTH) == change.allowance_after


def test_removing_the_head_needs_a_new_head_who_then_is_paid_and_proves_life(
    app: Flask, at: Any
) -> None:
    at(MORNING)
    household = paid_household()
    head, child = household.members
    head.proof_of_life_required = True
    db.session.flush()
    record = pol.month_record(head, MONTH)
    maker = factories.user("caseworker_a")
    with pytest.raises(ValidationFailed) as missing:
        changes.propose_remove_member(maker, household, head.id, "户主迁出")
    assert missing.value.details["field"] == "new_head"
    change = changes.propose_remove_member(
        maker, household, head.id, "户主迁出", new_head_id=child.id
    )
    changes.approve(factories.user("reviewer_a"), change)
    db.session.flush()
    assert (head.relation, child.relation) == (Relation.OTHER, Relation.HEAD)
    assert child.proof_of_life_required and not head.proof_of_life_required
    # The old head's month is no longer due (it would suspend the payment at the close).
    assert record.status is MonthStatus.EXEMPT
    row = next(r for r in payments.payroll(MONTH) if r.case_code == household.case_code)
    assert row.payee == child.name
    campaign.open_month(MONTH, now=MORNING)
    assert pol.month_record(child, MONTH).status is MonthStatus.PENDING


def test_income_change_with_several_lines_and_the_next_payroll(app: Flask, at: Any) -> None:
    at(MORNING)
    household = paid_household(("100.00", "0.00", "0.00"))
    head, a, b = household.members
    lines = [
        changes.IncomeLine(head.id, Decimal("300.00")),
        changes.IncomeLine(a.id, Decimal("50.00")),
        changes.IncomeLine(b.id, Decimal("0.00")),  # unchanged: not part of the change
    ]
    change = changes.propose_incomes(factories.user("reviewer_a"), household, lines, "务工收入增加")
    assert len(changes.payload_of(change)["lines"]) == 2
    assert head.monthly_income == Decimal("100.00")
    changes.approve(factories.user("approver"), change)
    db.session.flush()
    assert (head.monthly_income, a.monthly_income) == (Decimal("300.00"), Decimal("50.00"))
    expected = allowance_for(household).monthly_amount
    assert household.monthly_allowance == expected == change.allowance_after
    # Approved while December's window is open: December's payroll pays it.
    assert change.effective_month == MONTH
    assert payroll_amount(household, MONTH) == expected
    db.session.commit()
    payments.close_month(MONTH, now=CLOSES)
    payment = db.session.scalar(
        select(PaymentMonth).where(
            PaymentMonth.household_id == household.id, PaymentMonth.month == MONTH
        )
    )
    assert payment is not None and payment.amount == expected


def test_approved_after_the_months_close_the_next_month_pays_it(app: Flask, at: Any) -> None:
    at(CLOSES)
    household = paid_household(("100.00", "0.00"))
    change = changes.propose_incomes(
        factories.user("caseworker_a"),
        household,
        [changes.IncomeLine(household.members[0].id, Decimal("200.00"))],
        "收入",
    )
    changes.approve(factories.user("reviewer_a"), change)
    assert change.effective_month == "2027-01"


def test_an_income_that_reaches_the_standard_pays_nothing_and_sends_the_case_to_review(
    app: Flask,
) -> None:
    household = paid_household(("100.00",))
    head = household.members[0]
    change = changes.propose_incomes(
        factories.user("caseworker_a"),
        household,
        [changes.IncomeLine(head.id, Decimal("5000.00"))],
        "找到工作",
    )
    assert not change.eligible_after and change.allowance_after == Decimal("0.00")
    changes.approve(factories.user("reviewer_a"), change)
    db.session.flush()
    assert household.monthly_allowance == Decimal("0.00")
    assert household.state is CaseState.APPROVED  # the county decides; nothing terminates
    assert household.next_review_on is not None


def test_phone_correction_then_the_next_sms_goes_to_the_new_number_and_the_link_is_resent(
    app: Flask, at: Any, httpserver: HTTPServer, fake: FakeTwilio
) -> None:
    at(MORNING)
    household = paid_household()
    head = household.members[0]
    head.proof_of_life_required = True
    db.session.commit()
    campaign.open_month(MONTH, now=MORNING)
    reminder = db.session.scalar(select(SmsMessage).where(SmsMessage.member_id == head.id))
    assert reminder is not None and reminder.status is MessageStatus.QUEUED

    change = changes.propose_phone(
        factories.user("caseworker_a"), household, head.id, "13700001111", "号码停用"
    )
    assert head.phone == "13912345678"  # nothing before the approval
    changes.approve(factories.user("reviewer_a"), change)
    db.session.commit()
    assert head.phone == "13700001111"

    sender.send_due(_gateway(httpserver), clock=lambda: MORNING, rate_per_s=0)
    assert [m["To"] for m in fake.received] == ["13700001111"]

    reviewer = factories.user("reviewer_a")
    told = resend.resend_link(reviewer, household, head.id, now=MORNING)
    db.session.commit()
    assert told.queued == 1
    sender.send_due(_gateway(httpserver), clock=lambda: MORNING, rate_per_s=0)
    assert [m["To"] for m in fake.received] == ["13700001111", "13700001111"]
    token = pol.link_token(pol.month_record(head, MONTH))
    assert fake.received[1]["Body"].endswith(pol.link_url(token))
    assert db.session.scalar(
        select(func.count(AuditEntry.id)).where(AuditEntry.action == "pol.link_resent")
    )
    # Rate-limited: once per member and month.
    with pytest.raises(resend.AlreadyResent):
        resend.resend_link(reviewer, household, head.id, now=MORNING)
    kinds = db.session.scalars(select(SmsMessage.kind).where(SmsMessage.member_id == head.id))
    assert sorted(kinds) == [MessageKind.REMINDER, MessageKind.RESEND]


def test_resend_only_while_the_window_is_open(app: Flask) -> None:
    household = paid_household()
    household.members[0].proof_of_life_required = True
    db.session.flush()
    with pytest.raises(IllegalTransition):
        resend.resend_link(
            factories.user("caseworker_a"), household, household.members[0].id, now=BEFORE_WINDOW
        )


# --------------------------------------------------------------------------- nothing changes


@pytest.mark.parametrize("outcome", ["reject", "withdraw"])
def test_reject_and_withdraw_leave_the_case_as_it_was(app: Flask, outcome: str) -> None:
    household = paid_household(("100.00", "0.00"))
    head, child = household.members
    before = snapshot(household)
    maker = factories.user("caseworker_a")
    proposed = [
        changes.propose_add_member(maker, household, newborn(), "新生儿"),
        changes.propose_remove_member(maker, household, child.id, "迁出"),
        changes.propose_phone(maker, household, head.id, "13700001111", "换号"),
        changes.propose_incomes(
            maker, household, [changes.IncomeLine(head.id, Decimal("10.00"))], "减少"
        ),
    ]
    for change in proposed:
        if outcome == "reject":
            changes.reject(factories.user("reviewer_a"), change, "材料不全")
        else:
            changes.withdraw(maker, change)
    db.session.flush()
    assert snapshot(household) == before
    expected = ChangeStatus.REJECTED if outcome == "reject" else ChangeStatus.WITHDRAWN
    assert {c.status for c in proposed} == {expected}
    # A decided change cannot be decided again.
    with pytest.raises(IllegalTransition):
        changes.approve(factories.user("approver"), proposed[0])


def test_a_rejection_needs_a_note_and_only_the_maker_withdraws(app: Flask) -> None:
    household = paid_household()
    change = changes.propose_phone(
        factories.user("caseworker_a"), household, household.members[0].id, "13700001111", "换号"
    )
    with pytest.raises(ValidationFailed):
        changes.reject(factories.user("reviewer_a"), change, "  ")
    with pytest.raises(NotPermitted):
        changes.withdraw(factories.user("reviewer_a"), change)
    assert change.status is ChangeStatus.PENDING


# ------------------------------------------------------------ four eyes, roles, areas


def test_the_maker_cannot_check_their_own_change(app: Flask) -> None:
    household = paid_household()
    reviewer = factories.user("reviewer_a")
    change = changes.propose_phone(
        reviewer, household, household.members[0].id, "13700001111", "换号"
    )
    for decide in (
        lambda: changes.approve(reviewer, change),
        lambda: changes.reject(reviewer, change, "不同意"),
    ):
        with pytest.raises(NotPermitted) as refused:
            decide()
        assert refused.value.details["action"] == "check_own_change"
    assert change.status is ChangeStatus.PENDING
    assert change not in changes.waiting_for(reviewer)
    assert change in changes.waiting_for(factories.user("approver"))
    # The database refuses it too.
    change.checker_id = reviewer.id
    with pytest.raises(Exception, match=r"(?i)check|four_eyes"):
        db.session.flush()
    db.session.rollback()


def test_roles_and_areas(app: Flask) -> None:
    household = paid_household()
    head = household.members[0]
    for name in ("approver", "supervisor", "admin"):
        with pytest.raises(NotPermitted):
            changes.propose_phone(factories.user(name), household, head.id, "13700001111", "换号")
    # Another township's staff: the case does not exist for them.
    with pytest.raises(OutOfArea):
        changes.propose_phone(
            factories.user("caseworker_b"), household, head.id, "13700001111", "换号"
        )
    change = changes.propose_phone(
        factories.user("caseworker_a"), household, head.id, "13700001111", "换号"
    )
    for name in ("caseworker_a", "supervisor"):
        with pytest.raises(NotPermitted):
            changes.approve(factories.user(name), change)
    for name in ("reviewer_b", "other_approver"):
        with pytest.raises(OutOfArea):
            changes.approve(factories.user(name), change)
        with pytest.raises(OutOfArea):
            changes.change_of_case(factories.user(name), household, change.id)
        assert change not in changes.waiting_for(factories.user(name))
    other = paid_household()
    with pytest.raises(OutOfArea):  # a change of another case: no such change
        changes.change_of_case(factories.user("reviewer_a"), other, change.id)
    assert change.status is ChangeStatus.PENDING


# --------------------------------------------------------------------------- validation, base moved


def test_add_member_is_checked_like_an_application(app: Flask) -> None:
    household = paid_household()
    maker = factories.user("caseworker_a")
    existing = household.members[0].id_number
    good = factories.id_number(date(2020, 3, 9))
    wrong_check = good[:17] + ("0" if good[17] != "0" else "1")
    cases = {
        "duplicate": newborn(id_number=existing, birth_date=date(1960, 5, 17)),
        "checksum": newborn(id_number=wrong_check),
        "format": newborn(id_number="12345"),
        "birth_date": newborn(id_number=good, birth_date=date(2020, 3, 10)),
        "head": newborn(relation=Relation.HEAD),
        "phone": newborn(phone="2345"),
    }
    for problem, member in cases.items():
        with pytest.raises(ValidationFailed) as refused:
            changes.propose_add_member(maker, household, member, "新增")
        assert refused.value.details.get("problem") == problem, problem
    with pytest.raises(ValidationFailed) as no_reason:
        changes.propose_add_member(maker, household, newborn(), " ")
    assert no_reason.value.details["field"] == "reason"
    # The same new person proposed for two households: the second is a duplicate.
    twin = newborn()
    changes.propose_add_member(maker, household, twin, "新增")
    with pytest.raises(ValidationFailed) as again:
        changes.propose_add_member(maker, paid_household(), twin, "新增")
    assert again.value.details["problem"] == "duplicate"
    assert db.session.scalar(select(func.count(CaseChange.id))) == 1


def test_income_and_phone_inputs(app: Flask) -> None:
    with pytest.raises(ValidationFailed):
        changes.parse_income("-1")
    with pytest.raises(ValidationFailed):
        changes.parse_income("abc")
    with pytest.raises(ValidationFailed):
        changes.parse_income("1.234")
    assert changes.parse_income(" 12.5 ") == Decimal("12.5")
    with pytest.raises(ValidationFailed):
        changes.check_phone("1391234567")


def test_one_pending_change_of_a_kind_per_member(app: Flask) -> None:
    household = paid_household()
    head = household.members[0]
    maker = factories.user("caseworker_a")
    changes.propose_phone(maker, household, head.id, "13700001111", "换号")
    with pytest.raises(ValidationFailed) as twice:
        changes.propose_phone(
            factories.user("reviewer_a"), household, head.id, "13700002222", "换号"
        )
    assert twice.value.details["problem"] == "pending"
    # Another kind for the same member is fine.
    changes.propose_incomes(maker, household, [changes.IncomeLine(head.id, Decimal("1"))], "收入")


def test_a_change_whose_base_moved_is_refused_at_approval(app: Flask) -> None:
    household = paid_household(("100.00", "0.00", "0.00"))
    _head, a, b = household.members
    maker, checker = factories.user("caseworker_a"), factories.user("reviewer_a")
    phone = changes.propose_phone(maker, household, a.id, "13700001111", "换号")
    income = changes.propose_incomes(
        maker, household, [changes.IncomeLine(b.id, Decimal("20"))], "收入"
    )
    removal = changes.propose_remove_member(maker, household, a.id, "迁出")
    changes.approve(checker, removal)
    db.session.flush()
    with pytest.raises(changes.BaseMoved) as moved:
        changes.approve(checker, phone)
    assert moved.value.details["why"] == "member_gone"
    b.monthly_income = Decimal("5.00")  # changed another way meanwhile
    db.session.flush()
    with pytest.raises(changes.BaseMoved) as moved_income:
        changes.approve(checker, income)
    assert moved_income.value.details["why"] == "income"
    assert (phone.status, income.status) == (ChangeStatus.PENDING, ChangeStatus.PENDING)


def test_a_closed_case_takes_no_change(app: Flask) -> None:
    household = factories.make_household(state=CaseState.TERMINATED)
    with pytest.raises(IllegalTransition):
        changes.propose_phone(
            factories.user("caseworker_a"), household, household.members[0].id, "13700001111", "x"
        )


def test_history_lists_every_change_newest_first(app: Flask) -> None:
    household = paid_household()
    head = household.members[0]
    maker = factories.user("caseworker_a")
    first = changes.propose_phone(maker, household, head.id, "13700001111", "换号")
    changes.reject(factories.user("reviewer_a"), first, "号码有误")
    second = changes.propose_phone(maker, household, head.id, "13700002222", "换号")
    assert {c.id for c in changes.history(household)} == {first.id, second.id}
    assert second.kind == ChangeKind.CORRECT_PHONE


def test_a_change_decided_meanwhile_by_someone_else_is_not_applied_again(app: Flask) -> None:
    """Two checkers on the same change: the one whose copy is stale is refused (the
    decision is a compare-and-set on the row)."""
    household = paid_household()
    head = household.members[0]
    change = changes.propose_phone(
        factories.user("caseworker_a"), household, head.id, "13700001111", "换号"
    )
    db.session.execute(
        update(CaseChange)
        .where(CaseChange.id == change.id)
        .values(status=ChangeStatus.REJECTED)
        .execution_options(synchronize_session=False)
    )
    assert change.status is ChangeStatus.PENDING  # this checker's stale copy
    with pytest.raises(IllegalTransition):
        changes.approve(factories.user("approver"), change)
    assert head.phone == "13912345678"
