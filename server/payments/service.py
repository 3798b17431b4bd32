"""What a month's proof of life does to payments.

When a month's window closes (``close_month``), every designated member still
``pending`` becomes ``missed``, and every active household gets its payment row for the
month: ``payable``, or ``suspended`` if a member missed the month (or a reviewer failed
it). A pass later, within the region's grace period, restores the month (``settle``):
the amount is paid as back-pay (补发) in the first payroll cut after the pass. Missing
``missed_months_to_review`` months in a row sends the case to review (a caseworker's
visit is due now); nothing here ever terminates a case.

The payroll for month M is cut when M's window closes: it pays M (unless suspended)
plus the back-pay restored since the previous cut. Services flush, never commit, except
``close_month``, which commits per batch so that a crash loses at most one batch and a
second run finishes the job.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import func, insert, select, update

from server.areas.models import Area
from server.audit import service as audit
from server.cases.models import CaseEvent, CaseState, Household, HouseholdClass, Member, Relation
from server.cases.standards import classes_changing_in
from server.cases.workflow import allowance_for, apply_standard, schedule_review
from server.extensions import db, rows_changed
from server.months import current_month, month_after, window
from server.payments.models import PaymentMonth, PaymentStatus
from server.proof_of_life.events import MonthDecided, month_decided
from server.proof_of_life.models import IN_CARE, PAYMENT_BLOCKING, MonthStatus, ProofOfLifeMonth
from server.region import region
from server.transactions import commits_per_batch

BATCH = 1000
REVIEW_ACTION = "proof_of_life_review"

Progress = Callable[[int], None]


class WindowNotClosed(ValueError):
    pass


def closes_at(month: str) -> datetime:
    rules = region()
    return window(month, rules.proof_of_life, rules.timezone)[1]


def grace_ends_at(month: str) -> datetime:
    return region().campaign.grace_ends(closes_at(month))


def payroll_month_for(moment: datetime) -> str:
    """The payroll that pays what is restored at ``moment``: the first month whose
    window closes after it."""
    month = current_month(moment, region().timezone)
    return month if moment < closes_at(month) else month_after(month)


# --------------------------------------------------------------------------- settle


def settle(household_id: int, month: str, *, now: datetime) -> PaymentMonth | None:
    """Bring the household's payment for ``month`` in line with its members' proof of
    life, after any change to one of them. Before the window closes there is no payment
    row yet and nothing to do."""
    payment = db.session.scalar(
        select(PaymentMonth).where(
            PaymentMonth.household_id == household_id, PaymentMonth.month == month
        )
    )
    if payment is None:
        return None
    blocking = db.session.scalar(
        select(func.count(ProofOfLifeMonth.id)).where(
            ProofOfLifeMonth.household_id == household_id,
            ProofOfLifeMonth.month == month,
            ProofOfLifeMonth.status.in_(PAYMENT_BLOCKING),
        )
    )
    if blocking and payment.status is PaymentStatus.PAYABLE:
        payment.status = PaymentStatus.SUSPENDED
        payment.suspended_at = now
        audit.record(
            "payment.suspended",
            actor=None,
            object_type="household",
            object_id=household_id,
            month=month,
        )
    elif not blocking and payment.status is PaymentStatus.SUSPENDED:
        if now >= grace_ends_at(month):
            return payment  # too late: the month stays suspended
        payment.status = PaymentStatus.RESTORED
        payment.restored_at = now
        payment.back_pay_month = payroll_month_for(now)
        audit.record(
            "payment.restored",
            actor=None,
            object_type="household",
            object_id=household_id,
            month=month,
            back_pay_month=payment.back_pay_month,
        )
    db.session.flush()
    return payment


# --------------------------------------------------------------------------- close


@dataclass
class CloseReport:
    missed: int = 0
    payable: int = 0
    suspended: int = 0
    to_review: list[int] = field(default_factory=list)  # household ids


@month_decided.connect
def _settle_decided_month(event: MonthDecided) -> None:
    """A member's proof of life for a month was decided: the payment follows."""
    settle(event.household_id, event.month, now=event.now)


def _id_batches(query_ids: Callable[[int], list[int]]) -> Iterator[list[int]]:
    after = 0
    while ids := query_ids(after):
        yield ids
        after = ids[-1]


@commits_per_batch
def close_month(month: str, *, now: datetime, progress: Progress | None = None) -> CloseReport:
    """Close ``month``: pending -> missed, one payment row per active household,
    missed-in-a-row cases to review. Commits per batch; safe to run again."""
    if now < closes_at(month):
        raise WindowNotClosed(f"the {month} window closes at {closes_at(month).isoformat()}")
    report = CloseReport()
    report.missed = rows_changed(
        update(ProofOfLifeMonth)
        .where(ProofOfLifeMonth.month == month, ProofOfLifeMonth.status == MonthStatus.PENDING)
        .values(status=MonthStatus.MISSED, updated_at=now)
    )
    db.session.commit()
    _apply_new_standards(month, now)

    def active_households(after: int) -> list[int]:
        return list(
            db.session.scalars(
                select(Household.id)
                .where(Household.state == IN_CARE, Household.id > after)
                .order_by(Household.id)
                .limit(BATCH)
            )
        )

    for ids in _id_batches(active_households):
        blocked, done = _close_batch(month, ids, now, report)
        report.to_review.extend(_missed_in_a_row(month, sorted(blocked - done), now=now))
        db.session.commit()
        if progress is not None:
            progress(len(ids))
    if report.suspended:
        audit.record(
            "payment.month_closed",
            actor=None,
            object_type="payment_month",
            object_id=None,
            month=month,
            suspended=report.suspended,
            payable=report.payable,
        )
        db.session.commit()
    return report


def _close_batch(
    month: str, ids: list[int], now: datetime, report: CloseReport
) -> tuple[set[int], set[int]]:
    """One payment row for ``month`` per household of ``ids`` that has none yet:
    suspended when a member's month blocks payment, payable otherwise. Returns the
    blocked households and the ones that already had their row."""
    done = set(
        db.session.scalars(
            select(PaymentMonth.household_id).where(
                PaymentMonth.month == month, PaymentMonth.household_id.in_(ids)
            )
        )
    )
    blocked = set(
        db.session.scalars(
            select(ProofOfLifeMonth.household_id).where(
                ProofOfLifeMonth.month == month,
                ProofOfLifeMonth.household_id.in_(ids),
                ProofOfLifeMonth.status.in_(PAYMENT_BLOCKING),
            )
        )
    )
    amounts = dict(
        db.session.execute(
            select(Household.id, Household.monthly_allowance).where(Household.id.in_(ids))
        ).all()
    )
    rows = []
    for household_id in ids:
        if household_id in done:
            continue
        suspended = household_id in blocked
        rows.append(
            {
                "household_id": household_id,
                "month": month,
                "amount": amounts[household_id] or Decimal("0.00"),
                "status": PaymentStatus.SUSPENDED if suspended else PaymentStatus.PAYABLE,
                "suspended_at": now if suspended else None,
                "created_at": now,
            }
        )
        if suspended:
            report.suspended += 1
        else:
            report.payable += 1
    if rows:
        db.session.execute(insert(PaymentMonth), rows)
    return blocked, done


@commits_per_batch
def _apply_new_standards(month: str, now: datetime) -> None:
    """The payroll of ``month`` pays ``month``'s class standard: the approved and
    suspended cases of a class whose standard changes from this month, and that have no
    payment row of it yet, get their allowance recomputed first (server/cases/
    standards.py). Commits per batch; a second run finds nothing left to do."""
    changing = classes_changing_in(month)
    if not changing:
        return
    paid = select(PaymentMonth.household_id).where(PaymentMonth.month == month)

    def due(after: int) -> list[int]:
        return list(
            db.session.scalars(
                select(Household.id)
                .where(
                    Household.state.in_([CaseState.APPROVED, CaseState.SUSPENDED]),
                    Household.class_id.in_(changing),
                    Household.id.not_in(paid),
                    Household.id > after,
                )
                .order_by(Household.id)
                .limit(BATCH)
            )
        )

    for ids in _id_batches(due):
        for household in db.session.scalars(select(Household).where(Household.id.in_(ids))):
            apply_standard(household, month, at=now)
        db.session.commit()


def _missed_in_a_row(month: str, household_ids: list[int], *, now: datetime) -> list[int]:
    """Households with a member who missed this month and the ones before it, up to the
    region's limit: the case goes to review (a visit is due today), never terminated."""
    limit = region().campaign.missed_months_to_review
    if not household_ids:
        return []
    months = [month_after(month, -k) for k in range(limit)]
    rows = db.session.execute(
        select(ProofOfLifeMonth.household_id, ProofOfLifeMonth.member_id)
        .where(
            ProofOfLifeMonth.household_id.in_(household_ids),
            ProofOfLifeMonth.month.in_(months),
            ProofOfLifeMonth.status == MonthStatus.MISSED,
        )
        .group_by(ProofOfLifeMonth.household_id, ProofOfLifeMonth.member_id)
        .having(func.count(ProofOfLifeMonth.id) == limit)
    ).all()
    flagged = sorted({household_id for household_id, _ in rows})
    today = now.astimezone(ZoneInfo(region().timezone)).date()
    reason = f"{limit} months of proof of life missed in a row (to {month})"
    for household_id in flagged:
        household = db.session.get(Household, household_id)
        if household is None:  # pragma: no cover - foreign key
            continue
        already = db.session.scalar(
            select(CaseEvent.id).where(
                CaseEvent.household_id == household_id,
                CaseEvent.action == REVIEW_ACTION,
                CaseEvent.reason == reason,
            )
        )
        if already is not None:
            continue
        schedule_review(
            household,
            today,
            actor=None,
            action=REVIEW_ACTION,
            reason=reason,
            at=now,
            month=month,
            months=limit,
        )
    return flagged


# --------------------------------------------------------------------------- payroll


@dataclass(frozen=True)
class PayrollRow:
    case_code: str
    township: str
    village: str
    payee: str  # the head of household: the bank pays them
    household_class: str
    monthly_amount: Decimal
    month_status: str  # payable / suspended / restored / open (window not closed yet)
    month_paid: Decimal
    suspended_months: tuple[str, ...]  # still suspended, this month included
    back_pay_months: tuple[str, ...]
    back_pay: Decimal

    @property
    def total(self) -> Decimal:
        return self.month_paid + self.back_pay


def payroll(month: str) -> Iterator[PayrollRow]:
    """Every active household: what the bank pays it for ``month``. Reads columns, not
    entities, in batches: memory stays flat however many households there are."""

    def households(after: int) -> list[int]:
        return list(
            db.session.scalars(
                select(Household.id)
                .where(
                    Household.state.in_([CaseState.APPROVED, CaseState.SUSPENDED]),
                    Household.id > after,
                )
                .order_by(Household.id)
                .limit(BATCH)
            )
        )

    changing = classes_changing_in(month)
    for ids in _id_batches(households):
        rows = db.session.execute(
            select(
                Household.id,
                Household.case_code,
                Household.state,
                Household.monthly_allowance,
                HouseholdClass.code,
                Household.class_id,
                Area.name,
                Area.parent_id,
            )
            .join(Area, Household.village_id == Area.id)
            .join(HouseholdClass, Household.class_id == HouseholdClass.id)
            .where(Household.id.in_(ids))
            .order_by(Household.id)
        ).all()
        heads = dict(
            db.session.execute(
                select(Member.household_id, Member.name).where(
                    Member.household_id.in_(ids), Member.relation == Relation.HEAD
                )
            ).all()
        )
        payments = _payment_rows(ids, month)
        townships = _township_names({row[7] for row in rows})
        for row in rows:
            household_id, case_code, state, allowance, class_code, class_id, village, parent = row
            own = payments.get(household_id, [])
            this = next((p for p in own if p[0] == month), None)
            if this is None and class_id in changing:
                # Not closed yet, and the class's standard changes this month: what the
                # close will pay (server/cases/standards.py).
                allowance = _allowance_in(household_id, month)
            amount = this[1] if this else (allowance or Decimal("0.00"))
            status_text, paid = _month_paid(state, this, amount)
            back = [p for p in own if p[2] is PaymentStatus.RESTORED and p[3] == month]
            yield PayrollRow(
                case_code=case_code,
                township=townships.get(parent or 0, ""),
                village=village,
                payee=heads.get(household_id, ""),
                household_class=class_code,
                monthly_amount=amount,
                month_status=status_text,
                month_paid=paid,
                suspended_months=tuple(p[0] for p in own if p[2] is PaymentStatus.SUSPENDED),
                back_pay_months=tuple(p[0] for p in back),
                back_pay=sum((p[1] for p in back), Decimal("0.00")),
            )


def _allowance_in(household_id: int, month: str) -> Decimal:
    household = db.session.get(Household, household_id)
    if household is None:  # pragma: no cover - read in the same transaction
        return Decimal("0.00")
    return allowance_for(household, month=month).monthly_amount


_PaymentRow = tuple[str, Decimal, PaymentStatus, str | None]  # month, amount, status, back-paid in


def _payment_rows(ids: list[int], month: str) -> dict[int, list[_PaymentRow]]:
    """The households' payment months that the payroll of ``month`` needs: that month,
    every suspended month up to it, and the months back-paid in it."""
    payments: dict[int, list[_PaymentRow]] = {}
    for household_id, paid_month, amount, status, back_pay_month in db.session.execute(
        select(
            PaymentMonth.household_id,
            PaymentMonth.month,
            PaymentMonth.amount,
            PaymentMonth.status,
            PaymentMonth.back_pay_month,
        )
        .where(
            PaymentMonth.household_id.in_(ids),
            (PaymentMonth.month <= month)
            & (
                (PaymentMonth.status == PaymentStatus.SUSPENDED)
                | (PaymentMonth.month == month)
                | (PaymentMonth.back_pay_month == month)
            ),
        )
        .order_by(PaymentMonth.month)
    ):
        payments.setdefault(household_id, []).append((paid_month, amount, status, back_pay_month))
    return payments


def _month_paid(state: CaseState, this: _PaymentRow | None, amount: Decimal) -> tuple[str, Decimal]:
    """The payroll's status of the month and what is paid for it."""
    if state is CaseState.SUSPENDED:
        return "case_suspended", Decimal("0.00")
    if this is None:
        return "open", amount  # the window has not closed yet
    if this[2] is PaymentStatus.SUSPENDED:
        return "suspended", Decimal("0.00")
    if this[2] is PaymentStatus.RESTORED:
        # Restored after this month's cut: paid as back-pay in a later payroll.
        return "restored", Decimal("0.00")
    return "payable", this[1]


def _township_names(ids: set[int | None]) -> dict[int, str]:
    wanted = [i for i in ids if i is not None]
    if not wanted:
        return {}
    return dict(db.session.execute(select(Area.id, Area.name).where(Area.id.in_(wanted))).all())
