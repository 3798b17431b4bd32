"""Changes to the class table (server/cases/standards.py holds the versions and reads
them): a new version of a class's amounts from a month whose payroll is not made yet.

A change is scheduled for a month not yet paid (never the past; the current month only
while no payment row of it exists), by a user with ``MANAGE_STANDARDS`` whose area is
the whole league (the table is the league's), with a reason; it is audited. Versions
are only added: a second change for the same class and month is refused (schedule the
correction for a later month). The payroll of the month applies it
(server/payments/service.py). Functions flush, never commit.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal, InvalidOperation

from sqlalchemy import select

from server import clock
from server.areas.models import AreaLevel
from server.audit import service as audit
from server.auth.models import User
from server.auth.permissions import Capability, require
from server.cases.models import ClassStandard, HouseholdClass
from server.cases.standards import month_start, standard_for
from server.errors import NotPermitted, ReasonRequired, ValidationFailed
from server.extensions import db
from server.months import current_month, month_after
from server.payments.models import PaymentMonth
from server.region import region
from server.validation import written_reason

MAX_AMOUNT = Decimal("100000.00")
CENT = Decimal("0.01")


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
