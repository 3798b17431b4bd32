"""The class table's history: a change of standard takes effect from a month; the
payroll of the month before pays the old standard, the month's own the new one."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from server.audit.models import AuditEntry
from server.cases import standards
from server.cases.models import CaseEvent, CaseState, ClassStandard, Household, HouseholdClass
from server.cases.workflow import allowance_for
from server.errors import NotPermitted, ReasonRequired, ValidationFailed
from server.extensions import db
from server.payments import class_table
from server.payments import service as payments
from server.payments.models import PaymentMonth
from tests import factories
from tests.conftest import login

# Local (Asia/Shanghai) moments, in UTC: 10 December 2026, after December's window
# closed (the 25th), mid-January 2027, after January's window closed.
DEC_10 = datetime(2026, 12, 10, 2, 0, tzinfo=UTC)
DEC_CLOSED = datetime(2026, 12, 26, 2, 0, tzinfo=UTC)
JAN_10 = datetime(2027, 1, 10, 2, 0, tzinfo=UTC)
JAN_CLOSED = datetime(2027, 1, 26, 2, 0, tzinfo=UTC)


class Clock:
    def __init__(self, app: Flask) -> None:
        self.app = app
        self.now = DEC_10

    def set(self, now: datetime) -> None:
        self.now = now


@pytest.fixture
def clock(app: Flask) -> Iterator[Clock]:
    fake = Clock(app)
    app.config["DIBAO_CLOCK"] = lambda: fake.now
    yield fake
    app.config["DIBAO_CLOCK"] = None


def class_a() -> HouseholdClass:
    found = db.session.scalar(select(HouseholdClass).where(HouseholdClass.code == "A"))
    assert found is not None
    return found


def approved_household() -> Household:
    household = factories.make_household(state=CaseState.APPROVED, incomes=("100.00", "0.00"))
    household.monthly_allowance = allowance_for(household).monthly_amount
    db.session.flush()
    return household


def test_seeding_writes_the_region_file_as_the_first_version(app: Flask) -> None:
    rule = app.config["REGION"].class_rule("A")
    versions = standards.history(class_a())
    assert len(versions) == 1
    assert versions[0].effective_month == standards.FIRST_MONTH
    assert versions[0].monthly_standard == rule.monthly_standard
    assert versions[0].fixed_monthly == rule.fixed_monthly
    assert versions[0].set_by_id is None
    # Any month, however old, has the first version's standard.
    assert standards.standard_for(class_a(), "1999-01").monthly_standard == rule.monthly_standard


def test_the_standard_in_effect_is_the_latest_version_from_that_month_or_before(
    app: Flask, clock: Clock
) -> None:
    admin = factories.user("admin")
    old = standards.standard_for(class_a(), "2026-12").monthly_standard
    class_table.schedule_change(
        admin,
        class_code="A",
        effective_month="2027-01",
        monthly_standard="700.00",
        fixed_monthly="520",
        reason="2027 raise",
    )
    class_table.schedule_change(
        admin,
        class_code="A",
        effective_month="2027-07",
        monthly_standard="730.50",
        fixed_monthly="540",
        reason="mid-year raise",
    )
    assert standards.standard_for(class_a(), "2026-12").monthly_standard == old
    assert standards.standard_for(class_a(), date(2027, 1, 1)).monthly_standard == Decimal("700")
    assert standards.standard_for(class_a(), "2027-06").monthly_standard == Decimal("700")
    assert standards.standard_for(class_a(), "2027-07").monthly_standard == Decimal("730.50")
    assert standards.standard_for(class_a(), "2030-01").fixed_monthly == Decimal("540")
    by_class = standards.standards_for_month("2027-03")
    assert by_class[class_a().id].monthly_standard == Decimal("700")
    assert [v.effective_month for v in standards.history(class_a())] == [
        date(2027, 7, 1),
        date(2027, 1, 1),
        standards.FIRST_MONTH,
    ]
    audit = db.session.scalars(
        select(AuditEntry).where(AuditEntry.action == "standard.scheduled")
    ).all()
    assert [a.details["effective_month"] for a in audit] == ["2027-01", "2027-07"]
    assert audit[0].details["previous_monthly_standard"] == str(old)


@pytest.mark.parametrize(
    ("changes", "error", "field"),
    [
        ({"effective_month": "2026-11"}, ValidationFailed, "effective_month"),  # the past
        ({"effective_month": "2027-13"}, ValidationFailed, "effective_month"),
        ({"effective_month": "soon"}, ValidationFailed, "effective_month"),
        ({"monthly_standard": "-1"}, ValidationFailed, "monthly_standard"),
        ({"monthly_standard": "7.005"}, ValidationFailed, "monthly_standard"),
        ({"monthly_standard": "NaN"}, ValidationFailed, "monthly_standard"),
        ({"fixed_monthly": "lots"}, ValidationFailed, "fixed_monthly"),
        ({"class_code": "Z"}, ValidationFailed, "class_code"),
        ({"reason": "  "}, ReasonRequired, "reason"),
    ],
)
def test_a_bad_change_is_refused_with_its_field_and_writes_nothing(
    app: Flask, clock: Clock, changes: dict[str, str], error: type[Exception], field: str
) -> None:
    values = {
        "class_code": "A",
        "effective_month": "2027-01",
        "monthly_standard": "700",
        "fixed_monthly": "500",
        "reason": "raise",
    }
    values.update(changes)
    before = len(standards.history(class_a()))
    with pytest.raises(error) as raised:
        class_table.schedule_change(factories.user("admin"), **values)
    assert raised.value.details["field"] == field  # type: ignore[attr-defined]
    assert len(standards.history(class_a())) == before


def test_only_a_league_administrator_changes_the_table(app: Flask, clock: Clock) -> None:
    for username in ("supervisor", "approver", "caseworker_a", "reviewer_a"):
        with pytest.raises(NotPermitted):
            class_table.schedule_change(
                factories.user(username),
                class_code="A",
                effective_month="2027-01",
                monthly_standard="700",
                fixed_monthly="500",
                reason="raise",
            )
    county_admin = factories.user("approver")
    county_admin.role = factories.Role.ADMIN
    db.session.flush()
    with pytest.raises(NotPermitted, match="league"):
        class_table.schedule_change(
            county_admin,
            class_code="A",
            effective_month="2027-01",
            monthly_standard="700",
            fixed_monthly="500",
            reason="raise",
        )


def test_the_current_month_is_open_until_its_payroll_is_made(app: Flask, clock: Clock) -> None:
    admin = factories.user("admin")
    approved_household()
    assert class_table.first_open_month(clock.now) == "2026-12"
    clock.set(DEC_CLOSED)
    payments.close_month("2026-12", now=DEC_CLOSED)
    assert class_table.first_open_month(clock.now) == "2027-01"
    with pytest.raises(ValidationFailed) as raised:
        class_table.schedule_change(
            admin,
            class_code="A",
            effective_month="2026-12",
            monthly_standard="700",
            fixed_monthly="500",
            reason="too late",
        )
    assert raised.value.details["earliest"] == "2027-01"
    with pytest.raises(ValidationFailed, match="already has a change"):
        for _ in range(2):
            class_table.schedule_change(
                admin,
                class_code="A",
                effective_month="2027-02",
                monthly_standard="700",
                fixed_monthly="500",
                reason="twice",
            )


def test_the_payroll_before_the_change_pays_the_old_standard_and_after_it_the_new(
    app: Flask, clock: Clock
) -> None:
    household = approved_household()
    other_class = factories.make_household(
        state=CaseState.APPROVED, incomes=("100.00", "0.00"), class_code="B"
    )
    other_class.monthly_allowance = allowance_for(other_class).monthly_amount
    old_standard = standards.standard_for(class_a(), "2026-12").monthly_standard
    old_amount = old_standard * 2 - Decimal("100.00")
    assert household.monthly_allowance == old_amount
    b_amount = other_class.monthly_allowance
    suspended = approved_household()
    suspended.state = CaseState.SUSPENDED
    class_table.schedule_change(
        factories.user("admin"),
        class_code="A",
        effective_month="2027-01",
        monthly_standard=str(old_standard + 50),
        fixed_monthly="500",
        reason="2027 raise",
    )
    db.session.commit()

    clock.set(DEC_CLOSED)
    payments.close_month("2026-12", now=DEC_CLOSED)
    december = {row.case_code: row for row in payments.payroll("2026-12")}
    assert december[household.case_code].month_paid == old_amount
    # January not closed yet: its payroll already shows January's standard.
    preview = {row.case_code: row for row in payments.payroll("2027-01")}
    assert preview[household.case_code].monthly_amount == old_amount + 100

    clock.set(JAN_CLOSED)
    payments.close_month("2027-01", now=JAN_CLOSED)
    payments.close_month("2027-01", now=JAN_CLOSED)  # a second run changes nothing
    january = {row.case_code: row for row in payments.payroll("2027-01")}
    assert january[household.case_code].month_paid == old_amount + 100  # 2 persons x 50
    assert january[other_class.case_code].month_paid == b_amount  # class B unchanged
    # December's row keeps the old standard.
    rows = dict(
        db.session.execute(
            select(PaymentMonth.month, PaymentMonth.amount).where(
                PaymentMonth.household_id == household.id
            )
        ).all()
    )
    assert rows == {"2026-12": old_amount, "2027-01": old_amount + 100}
    db.session.expire_all()
    assert db.session.get(Household, household.id).monthly_allowance == old_amount + 100  # type: ignore[union-attr]
    events = db.session.scalars(
        select(CaseEvent).where(
            CaseEvent.household_id == household.id, CaseEvent.action == "standard_changed"
        )
    ).all()
    assert len(events) == 1 and events[0].reason == "class standard from 2027-01"
    assert allowance_for(household, month="2026-12").monthly_amount == old_amount
    # A suspended case is recomputed too: reinstated, it is paid the new standard.
    assert db.session.get(Household, suspended.id).monthly_allowance == old_amount + 100  # type: ignore[union-attr]


def test_an_approval_uses_the_standard_of_the_first_month_paid(app: Flask, clock: Clock) -> None:
    class_table.schedule_change(
        factories.user("admin"),
        class_code="A",
        effective_month="2027-01",
        monthly_standard="800",
        fixed_monthly="500",
        reason="raise",
    )
    household = factories.make_household(state=CaseState.IN_PUBLIC_NOTICE)
    household.notice_ends_on = date(2026, 12, 1)
    db.session.flush()
    from server.cases import workflow

    workflow.transition(household, "approve", actor=factories.user("approver"), reason=None)
    # Approved in December, paid from January: January's standard.
    assert household.payment_starts_on == date(2027, 1, 1)
    assert household.monthly_allowance == Decimal("800") * 2 - Decimal("100.00")


def test_the_class_table_page_lists_the_history_and_schedules_a_change(
    app: Flask, client: FlaskClient, clock: Clock
) -> None:
    login(client, "admin")
    page = client.get("/admin/standards")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "2000-01" in text and 'value="2026-12"' in text
    answer = client.post(
        "/admin/standards",
        data={
            "class_code": "B",
            "effective_month": "2027-03",
            "monthly_standard": "690.00",
            "fixed_monthly": "0",
            "reason": "省厅通知",
        },
    )
    assert answer.status_code == 303
    after = client.get("/admin/standards").get_data(as_text=True)
    assert "2027-03" in after and "690.00" in after and "省厅通知" in after
    versions = db.session.scalars(
        select(ClassStandard).where(ClassStandard.effective_month == date(2027, 3, 1))
    ).all()
    assert [v.monthly_standard for v in versions] == [Decimal("690.00")]
    refused = client.post(
        "/admin/standards?lang=en",
        data={
            "class_code": "B",
            "effective_month": "2026-01",
            "monthly_standard": "690.00",
            "fixed_monthly": "0",
            "reason": "past",
        },
    )
    assert refused.status_code == 303
    shown = client.get("/admin/standards?lang=en").get_data(as_text=True)
    assert "at the earliest" in shown
    zh = client.post(
        "/admin/standards?lang=zh_CN",
        data={
            "class_code": "B",
            "effective_month": "2027-04",
            "monthly_standard": "1",
            "fixed_monthly": "0",
        },
    )
    assert zh.status_code == 303
    assert "原因" in client.get("/admin/standards").get_data(as_text=True)


def test_the_published_history_has_every_version_and_nobody_who_set_it(
    app: Flask, clock: Clock
) -> None:
    class_table.schedule_change(
        factories.user("admin"),
        class_code="A",
        effective_month="2027-01",
        monthly_standard="700",
        fixed_monthly="520",
        reason="内部说明",
    )
    published = [v.as_json() for v in standards.published_history()]
    a_rows = [row for row in published if row["class"] == "A"]
    assert [row["effective_month"] for row in a_rows] == ["2000-01", "2027-01"]
    assert a_rows[1]["monthly_standard"] == "700.00" and a_rows[1]["fixed_monthly"] == "520.00"
    classes = {row["class"] for row in published}
    assert classes == {c.code for c in app.config["REGION"].classes}
    assert "内部说明" not in str(published) and "admin" not in str(published)


def test_a_county_administrator_reads_the_table_and_changes_nothing(
    app: Flask, client: FlaskClient, clock: Clock
) -> None:
    from server.auth.models import Role, User
    from server.auth.passwords import hash_password

    db.session.add(
        User(
            username="county_admin",
            password_hash=hash_password(factories.PASSWORD),
            role=Role.ADMIN,
            area=factories.areas().county,
        )
    )
    db.session.commit()
    login(client, "county_admin")
    page = client.get("/admin/standards")
    assert page.status_code == 200 and 'name="effective_month"' not in page.get_data(as_text=True)
    refused = client.post(
        "/admin/standards",
        data={
            "class_code": "A",
            "effective_month": "2027-01",
            "monthly_standard": "700",
            "fixed_monthly": "0",
            "reason": "县里想调",
        },
    )
    assert refused.status_code == 403
    assert len(standards.history(class_a())) == 1
