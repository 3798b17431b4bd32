"""Households with months of proof of life and payments, for the death-register tests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal

from sqlalchemy import func, select

from server.cases.models import CaseState, Household, Member
from server.cases.workflow import allowance_for
from server.extensions import db
from server.payments.models import PaymentMonth, PaymentStatus
from server.proof_of_life.models import MonthStatus, ProofOfLifeMonth
from tests import factories

TODAY = date(2026, 6, 15)
MONTHS = ("2026-02", "2026-03", "2026-04", "2026-05", "2026-06")
# The head's months: passed before the death, then pending and missed after it.
POL = dict(
    zip(
        MONTHS,
        (
            MonthStatus.PASSED,
            MonthStatus.PASSED,
            MonthStatus.MISSED,
            MonthStatus.REVIEW,
            MonthStatus.PENDING,
        ),
        strict=True,
    )
)


@dataclass
class Case:
    household: Household
    head: Member

    def line(self, died_on: str = "2026-03-10", name: str | None = None) -> list[object]:
        return [self.head.id_number, name or self.head.name, died_on]


def active_case(*, incomes: tuple[str, ...] = ("100.00", "0.00"), village: object = None) -> Case:
    household = factories.make_household(
        state=CaseState.APPROVED,
        incomes=incomes,
        village=village,  # type: ignore[arg-type]
    )
    household.monthly_allowance = allowance_for(household).monthly_amount
    head = household.members[0]
    for month, status in POL.items():
        db.session.add(
            ProofOfLifeMonth(
                member_id=head.id,
                household_id=household.id,
                month=month,
                status=status,
                window_closes_at=datetime(2026, int(month[5:]), 20, tzinfo=UTC),
            )
        )
    for month in MONTHS[:-1]:  # paid to May; June is not closed yet
        db.session.add(
            PaymentMonth(
                household_id=household.id,
                month=month,
                amount=household.monthly_allowance,
                status=PaymentStatus.SUSPENDED if month == "2026-04" else PaymentStatus.PAYABLE,
            )
        )
    db.session.flush()
    return Case(household, head)


def table_counts() -> dict[str, int]:
    return {
        table.name: db.session.scalar(select(func.count()).select_from(table)) or 0
        for table in db.metadata.sorted_tables
    }


def case_rows() -> list[tuple[object, ...]]:
    households = db.session.execute(
        select(*Household.__table__.columns).order_by(Household.id)
    ).all()
    members = db.session.execute(select(*Member.__table__.columns).order_by(Member.id)).all()
    return [tuple(r) for r in (*households, *members)]


def monthly_allowance(household: Household) -> Decimal | None:
    db.session.refresh(household)
    return household.monthly_allowance
