"""The class table's amounts and their history: each class's monthly standard (低保标准)
and fixed monthly amount, in versions that take effect from a month.

The standard in effect for month M is the class's latest version with
``effective_month <= M``; the region file's table is the first version (written at
seeding, in effect from ``FIRST_MONTH``). Every amount the system computes reads it
here, through ``standard_for`` (one class) or ``standards_for_month`` (all classes):
the allowance of a case (``workflow.allowance_for``), a month's payment rows (the
payroll of M uses M's standard), the seeded history.

A change is scheduled for a month whose payroll is not made yet (never the past; the
current month only while no payment row of it exists), by a user with
``MANAGE_STANDARDS`` whose area is the whole league (the table is the league's), with a
reason; it is audited. Versions are only added: a second change for the same month
adds nothing but an error (schedule the correction for a later month, or see
``docs/office.md``). Functions flush, never commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation

from sqlalchemy import select

from server import clock
from server.areas.models import AreaLevel
from server.audit import service as audit
from server.auth.models import User
from server.auth.permissions import Capability, require
from server.cases.models import ClassStandard, HouseholdClass
from server.errors import NotPermitted, ReasonRequired, ValidationFailed
from server.extensions import db
from server.months import current_month, month_after, parse_month
from server.payments.models import PaymentMonth
from server.region import RegionRules, region
from server.validation import written_reason

# The first version's month: the region file's amounts hold from the start of any
# history the system keeps.
FIRST_MONTH = date(2000, 1, 1)
MAX_AMOUNT = Decimal("100000.00")
CENT = Decimal("0.01")


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


# --------------------------------------------------------------------------- changes


def _amount(text: str | None, field: str) -> Decimal:
    try:
        value = Decimal((text or "").strip())
    except InvalidOperation:
        value = Decimal("NaN")
    if not value.is_finite() or value < 0 or value > MAX_AMOUNT or value != value.quantize(CENT):
        raise ValidationFailed(
            f"{field} must be an amount in yuan, 0 to {MAX_AMOUNT}, at most 2 decimals",
            field=field,
        )
    return value.quantize(CENT)


def first_open_month(now: datetime) -> str:
    """The earliest month a change may take effect from: the current month while no
    payment row of it exists yet, else the next one after the latest paid month."""
    this = current_month(now, region().timezone)
    latest = db.session.scalar(select(PaymentMonth.month).order_by(PaymentMonth.month.desc()))
    if latest is not None and latest >= this:
        return month_after(latest)
    return this


def schedule_change(
    actor: User,
    *,
    class_code: str,
    effective_month: str | None,
    monthly_standard: str | None,
    fixed_monthly: str | None,
    reason: str | None,
) -> ClassStandard:
    """Add a version of a class's amounts in effect from ``effective_month``
    ("YYYY-MM"). Raises NotPermitted, ValidationFailed, ReasonRequired."""
    require(actor, Capability.MANAGE_STANDARDS, "your role does not change the class table")
    if actor.area.level is not AreaLevel.LEAGUE:
        raise NotPermitted("the class table is the league's: only a league administrator")
    household_class = db.session.scalar(
        select(HouseholdClass).where(HouseholdClass.code == (class_code or "").strip())
    )
    if household_class is None:
        raise ValidationFailed(f"no class {class_code!r}", field="class_code")
    try:
        first = month_start((effective_month or "").strip())
    except ValueError as exc:
        raise ValidationFailed(
            "the effective month must be YYYY-MM", field="effective_month"
        ) from exc
    now = clock.utcnow()
    earliest = first_open_month(now)
    if first < month_start(earliest):
        raise ValidationFailed(
            f"a change can take effect from {earliest} at the earliest "
            "(past and paid months keep their standard)",
            field="effective_month",
            earliest=earliest,
        )
    standard = _amount(monthly_standard, "monthly_standard")
    fixed = _amount(fixed_monthly, "fixed_monthly")
    text = written_reason(reason, "change_standard")
    if text is None:
        raise ReasonRequired("a change of the class table needs a reason", field="reason")
    taken = db.session.scalar(
        select(ClassStandard.id).where(
            ClassStandard.class_id == household_class.id, ClassStandard.effective_month == first
        )
    )
    if taken is not None:
        raise ValidationFailed(
            f"class {household_class.code} already has a change from {first:%Y-%m}",
            field="effective_month",
            taken=f"{first:%Y-%m}",
        )
    before = standard_for(household_class, first)
    version = ClassStandard(
        class_id=household_class.id,
        effective_month=first,
        monthly_standard=standard,
        fixed_monthly=fixed,
        set_by_id=actor.id,
        set_at=now,
        reason=text,
    )
    db.session.add(version)
    db.session.flush()
    audit.record(
        "standard.scheduled",
        actor=actor,
        object_type="class_standard",
        object_id=version.id,
        class_code=household_class.code,
        effective_month=f"{first:%Y-%m}",
        monthly_standard=str(standard),
        fixed_monthly=str(fixed),
        previous_monthly_standard=str(before.monthly_standard),
        previous_fixed_monthly=str(before.fixed_monthly),
    )
    return version
