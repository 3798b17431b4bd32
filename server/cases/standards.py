"""The class table's amounts and their history: each class's monthly standard (低保标准)
and fixed monthly amount, in versions that take effect from a month.

The standard in effect for month M is the class's latest version with
``effective_month <= M``; the region file's table is the first version (written at
seeding, in effect from ``FIRST_MONTH``). Every amount the system computes reads it
here, through ``standard_for`` (one class) or ``standards_for_month`` (all classes):
the allowance of a case (``workflow.allowance_for``), a month's payment rows (the
payroll of M uses M's standard), the seeded history.

Changes are made in server/payments/class_table.py (``schedule_change``: only for a
month whose payroll is not made yet). Functions flush, never commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from sqlalchemy import select

from server.cases.models import ClassStandard, HouseholdClass
from server.extensions import db
from server.months import parse_month
from server.region import RegionRules

# The first version's month: the region file's amounts hold from the start of any
# history the system keeps.
FIRST_MONTH = date(2000, 1, 1)


@dataclass(frozen=True)
class Standard:
    """A class's amounts for a month (and the version they come from)."""

    class_code: str
    effective_month: date
    monthly_standard: Decimal
    fixed_monthly: Decimal


def month_start(month: date | str) -> date:
    """The first day of ``month`` (a date in it, or "YYYY-MM")."""
    if isinstance(month, str):
        year, number = parse_month(month)
        return date(year, number, 1)
    return month.replace(day=1)


def _standard(version: ClassStandard, class_code: str) -> Standard:
    return Standard(
        class_code, version.effective_month, version.monthly_standard, version.fixed_monthly
    )


def standard_for(household_class: HouseholdClass, month: date | str) -> Standard:
    """The class's amounts in effect for ``month``: its latest version from that month
    or before (the first version when the month is older than every version)."""
    first = month_start(month)
    version = db.session.scalar(
        select(ClassStandard)
        .where(
            ClassStandard.class_id == household_class.id,
            ClassStandard.effective_month <= first,
        )
        .order_by(ClassStandard.effective_month.desc())
        .limit(1)
    ) or db.session.scalar(
        select(ClassStandard)
        .where(ClassStandard.class_id == household_class.id)
        .order_by(ClassStandard.effective_month)
        .limit(1)
    )
    if version is None:
        raise LookupError(f"class {household_class.code} has no standard")
    return _standard(version, household_class.code)


def standards_for_month(month: date | str) -> dict[int, Standard]:
    """Every class's amounts for ``month``, by class id (one query)."""
    first = month_start(month)
    best: dict[int, tuple[ClassStandard, str]] = {}
    for version, code in db.session.execute(
        select(ClassStandard, HouseholdClass.code)
        .join(HouseholdClass, ClassStandard.class_id == HouseholdClass.id)
        .order_by(ClassStandard.effective_month)
    ).all():
        held = best.get(version.class_id)
        if held is None or version.effective_month <= first:
            best[version.class_id] = (version, code)
    return {class_id: _standard(version, code) for class_id, (version, code) in best.items()}


def classes_changing_in(month: date | str) -> set[int]:
    """The classes with a version taking effect in ``month`` (a raise or a cut)."""
    first = month_start(month)
    return set(
        db.session.scalars(
            select(ClassStandard.class_id).where(
                ClassStandard.effective_month == first, ClassStandard.effective_month > FIRST_MONTH
            )
        )
    )


def history(household_class: HouseholdClass) -> list[ClassStandard]:
    """The class's versions, newest first."""
    return list(
        db.session.scalars(
            select(ClassStandard)
            .where(ClassStandard.class_id == household_class.id)
            .order_by(ClassStandard.effective_month.desc())
        )
    )


def seed_first_versions(classes: dict[str, HouseholdClass], rules: RegionRules) -> None:
    """The region file's amounts as the first version of every class that has none."""
    have = set(db.session.scalars(select(ClassStandard.class_id).distinct()))
    for rule in rules.classes:
        row = classes[rule.code]
        if row.id in have:
            continue
        db.session.add(
            ClassStandard(
                class_id=row.id,
                effective_month=FIRST_MONTH,
                monthly_standard=rule.monthly_standard,
                fixed_monthly=rule.fixed_monthly,
                reason="region file",
            )
        )
    db.session.flush()


@dataclass(frozen=True)
class PublishedVersion:
    """One version as the public disclosure shows it: amounts and month, nothing about
    who set it or why (the reason is staff's free text)."""

    class_code: str
    name: str
    name_en: str
    effective_month: str  # "YYYY-MM"
    monthly_standard: Decimal
    fixed_monthly: Decimal

    def as_json(self) -> dict[str, str]:
        return {
            "class": self.class_code,
            "name": self.name,
            "name_en": self.name_en,
            "effective_month": self.effective_month,
            "monthly_standard": str(self.monthly_standard),
            "fixed_monthly": str(self.fixed_monthly),
        }


def published_history() -> list[PublishedVersion]:
    """Every class's versions, by class and then oldest first: the table and every
    change of it, for the public page and the open data (issue 18)."""
    return [
        PublishedVersion(
            household_class.code,
            household_class.name,
            household_class.name_en,
            f"{version.effective_month:%Y-%m}",
            version.monthly_standard,
            version.fixed_monthly,
        )
        for version, household_class in db.session.execute(
            select(ClassStandard, HouseholdClass)
            .join(HouseholdClass, ClassStandard.class_id == HouseholdClass.id)
            .order_by(HouseholdClass.code, ClassStandard.effective_month)
        ).all()
    ]
