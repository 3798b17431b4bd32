"""The progress home (/console/): every number on the page equals an independently
written SQL count over planted data, the list behind each number has that many rows,
and the page keeps to the user's area and role."""

from __future__ import annotations

import csv
import io
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from server.areas.models import Area
from server.cases.models import CaseState, Household, HouseholdClass
from server.console.models import CurrentCount, CurrentSummary
from server.console.progress import progress
from server.console.summary import refresh, stored
from server.console.tasks import refresh_task
from server.extensions import db
from server.payments.models import PaymentMonth, PaymentStatus
from server.proof_of_life.models import (
    MonthStatus,
    ProofOfLifeAttempt,
    ProofOfLifeMonth,
    StartedBy,
)
from server.visits.models import Survey, SurveyFlag, SurveyStatus
from sms.models import MessageKind, MessageStatus, SmsMessage
from tests import factories
from tests.conftest import login

# Monday 23 November 2026, 10:00 in Beijing: the November window (20th-25th) is open,
# so the proof of life is November's and the payments are October's (the last closed).
NOW = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
TODAY = date(2026, 11, 23)
MONTH_LAST = date(2026, 11, 30)
NOV_STARTS = datetime(2026, 10, 31, 16, 0, tzinfo=UTC)  # 1 Nov 00:00 local
DEC_STARTS = datetime(2026, 11, 30, 16, 0, tzinfo=UTC)
POL_MONTH, PAYROLL_MONTH = "2026-11", "2026-10"
NOV_CLOSES = datetime(2026, 11, 24, 16, 0, tzinfo=UTC)  # 25 Nov 00:00 local


@pytest.fixture
def clock(app: Flask) -> Iterator[None]:
    app.config["DIBAO_CLOCK"] = lambda: NOW
    yield
    app.config["DIBAO_CLOCK"] = None


# --------------------------------------------------------------------------- planting

_serial = iter(range(10_000, 99_999))


def _household(village: Area, state: CaseState, class_code: str = "A", **values: Any) -> Household:
    household = factories.make_household(village=village, state=state, class_code=class_code)
    for key, value in values.items():
        setattr(household, key, value)
    return household


def _visit(household: Household, finished_at: datetime, *flags: tuple[str, bool]) -> Survey:
    caseworker = factories.user(
        "caseworker_a" if household.village.parent.code == "152201100" else "caseworker_b"
    )
    survey = Survey(
        client_uuid=str(uuid.uuid4()),
        content_hash="0" * 64,
        household_id=household.id,
        caseworker_id=caseworker.id,
        kind="periodic_review",
        status=SurveyStatus.COMPLETE,
        started_at=finished_at - timedelta(minutes=20),
        finished_at=finished_at,
        gps_lat=household.home_lat,
        gps_lon=household.home_lon,
        payload="{}",
    )
    survey.flags = [
        SurveyFlag(
            code=code,
            severity="warning",
            detail="",
            cleared_at=NOW - timedelta(days=1) if cleared else None,
        )
        for code, cleared in flags
    ]
    db.session.add(survey)
    return survey


def _pol(
    household: Household,
    status: MonthStatus,
    *,
    month: str = POL_MONTH,
    attempted: bool = False,
    sms: tuple[MessageStatus, bool] | None = None,
    member: int = 0,
) -> ProofOfLifeMonth:
    person = household.members[member]
    record = ProofOfLifeMonth(
        member_id=person.id,
        household_id=household.id,
        month=month,
        status=status,
        window_closes_at=NOV_CLOSES if month == POL_MONTH else NOV_CLOSES - timedelta(days=30),
    )
    db.session.add(record)
    db.session.flush()
    if attempted:
        db.session.add(
            ProofOfLifeAttempt(
                session_id=f"s{next(_serial)}",
                month_id=record.id,
                member_id=person.id,
                nonce="n",
                challenges="blink",
                started_by=StartedBy.RECIPIENT,
                expires_at=NOW,
            )
        )
    if sms is not None:
        message_status, was_sent = sms
        db.session.add(
            SmsMessage(
                member_id=person.id,
                household_id=household.id,
                month=month,
                kind=MessageKind.REMINDER,
                status=message_status,
                to_phone="+8613912345678",
                body="x",
                sent_at=NOW - timedelta(days=2) if was_sent else None,
                created_at=NOW - timedelta(days=3),
            )
        )
    return record


def _payment(
    household: Household, month: str, status: PaymentStatus, back_pay_month: str | None = None
) -> None:
    db.session.add(
        PaymentMonth(
            household_id=household.id,
            month=month,
            amount=Decimal("300.00"),
            status=status,
            back_pay_month=back_pay_month,
        )
    )


def plant(area: factories.Areas) -> None:
    """Households in every state, decisions on time and overdue, reviews due and
    overdue by class, visits in and out of the month, open and cleared flags,
    proof-of-life months in every status with SMS and attempts, payments."""
    a, a2, b = area.village_a, area.village_a2, area.village_b
    past, future = TODAY - timedelta(days=3), TODAY + timedelta(days=5)
    for village in (a, a2, b):
        for state in CaseState:
            _household(village, state)
    # Decisions: overdue and on time at each step; in notice, the county's deadline.
    _household(a, CaseState.APPLIED, review_due_on=past)
    _household(a, CaseState.ACCEPTED, review_due_on=past)
    _household(b, CaseState.SURVEYED, review_due_on=past)
    _household(b, CaseState.TOWNSHIP_REVIEWED, review_due_on=TODAY)  # due today: not overdue
    _household(a2, CaseState.IN_PUBLIC_NOTICE, review_due_on=future, decision_due_on=past)
    _household(a2, CaseState.IN_PUBLIC_NOTICE, review_due_on=past, decision_due_on=future)
    # Periodic reviews by class: due this month, overdue, next month, a closed case.
    for village, code in ((a, "A"), (a2, "B"), (b, "C"), (b, "A")):
        _household(village, CaseState.APPROVED, code, next_review_on=TODAY)
        _household(village, CaseState.SUSPENDED, code, next_review_on=MONTH_LAST)
        _household(village, CaseState.APPROVED, code, next_review_on=past)
        _household(village, CaseState.APPROVED, code, next_review_on=date(2026, 12, 1))
        _household(village, CaseState.TERMINATED, code, next_review_on=past)

    active = [_household(v, CaseState.APPROVED) for v in (a, a, a2, b, b, b)]
    # Visits: this local month (one at its first local hour), last month, and flags.
    _visit(active[0], NOV_STARTS, ("gps_far_from_home", False), ("photo_reused", True))
    _visit(active[0], NOV_STARTS - timedelta(seconds=1), ("gps_far_from_home", False))
    _visit(active[2], NOW - timedelta(days=2), ("gps_mock", False), ("gps_low_accuracy", False))
    _visit(active[3], NOW - timedelta(hours=1))
    _visit(active[4], DEC_STARTS - timedelta(days=40), ("photo_reused", False))
    # Proof of life, November: every status, SMS at every stage, attempts.
    _pol(active[0], MonthStatus.PENDING, sms=(MessageStatus.DELIVERED, True))
    _pol(active[0], MonthStatus.PASSED, attempted=True, sms=(MessageStatus.SENT, True), member=1)
    _pol(active[1], MonthStatus.FAILED, attempted=True, sms=(MessageStatus.FAILED, True))
    _pol(active[2], MonthStatus.REVIEW, attempted=True, sms=(MessageStatus.QUEUED, False))
    _pol(active[3], MonthStatus.EXEMPT)
    _pol(active[4], MonthStatus.PENDING, sms=(MessageStatus.FAILED, False))
    _pol(active[5], MonthStatus.MISSED, sms=(MessageStatus.DELIVERED, True))
    _pol(active[5], MonthStatus.PASSED, month="2026-10", attempted=True)
    # Payments: October paid, suspended, and September restored as October back-pay.
    _payment(active[0], PAYROLL_MONTH, PaymentStatus.PAYABLE)
    _payment(active[1], PAYROLL_MONTH, PaymentStatus.SUSPENDED)
    _payment(active[3], PAYROLL_MONTH, PaymentStatus.PAYABLE)
    _payment(active[4], "2026-09", PaymentStatus.RESTORED, back_pay_month=PAYROLL_MONTH)
    _payment(active[5], "2026-09", PaymentStatus.RESTORED, back_pay_month="2026-09")
    db.session.commit()


# --------------------------------------------------------------------------- expected


def _in(path: str) -> Any:
    return Area.path.like(path + "%")


def expected(key: str, path: str) -> int:
    """The count behind ``key`` in the area with ``path``, written from the rules in
    docs/supervision.md, without the console's code."""
    kind, _, value = key.partition(":")
    homes = select(func.count(Household.id)).join(Area, Area.id == Household.village_id)
    homes = homes.where(_in(path))
    if key == "cases":
        return db.session.scalar(homes) or 0
    if kind in ("state", "pending"):
        return db.session.scalar(homes.where(Household.state == value)) or 0
    if kind == "overdue":
        rows = db.session.execute(
            select(Household.state, Household.review_due_on, Household.decision_due_on)
            .join(Area, Area.id == Household.village_id)
            .where(_in(path), Household.state == value)
        ).all()
        return sum(
            1
            for state, review, decision in rows
            if ((decision or review) if state == "in_public_notice" else review) < TODAY
        )
    if kind in ("review_due", "review_overdue"):
        query = homes.join(HouseholdClass, HouseholdClass.id == Household.class_id).where(
            HouseholdClass.code == value, Household.state.in_(["approved", "suspended"])
        )
        if kind == "review_due":
            query = query.where(Household.next_review_on.between(TODAY, MONTH_LAST))
        else:
            query = query.where(Household.next_review_on < TODAY)
        return db.session.scalar(query) or 0
    visits = (
        select(func.count(Survey.id))
        .join(Household, Household.id == Survey.household_id)
        .join(Area, Area.id == Household.village_id)
        .where(_in(path))
    )
    if key == "visits":
        return (
            db.session.scalar(
                visits.where(Survey.finished_at >= NOV_STARTS, Survey.finished_at < DEC_STARTS)
            )
            or 0
        )
    if key == "flags" or kind == "flag":
        query = (
            select(func.count(SurveyFlag.id))
            .join(Survey, Survey.id == SurveyFlag.survey_id)
            .join(Household, Household.id == Survey.household_id)
            .join(Area, Area.id == Household.village_id)
            .where(_in(path), SurveyFlag.cleared_at.is_(None))
        )
        if kind == "flag":
            query = query.where(SurveyFlag.code == value)
        return db.session.scalar(query) or 0
    if kind == "pol":
        query = (
            select(func.count(ProofOfLifeMonth.id))
            .join(Household, Household.id == ProofOfLifeMonth.household_id)
            .join(Area, Area.id == Household.village_id)
            .where(_in(path), ProofOfLifeMonth.month == POL_MONTH)
        )
        stage = {
            "designated": None,
            "sms_sent": ProofOfLifeMonth.member_id.in_(
                select(SmsMessage.member_id).where(
                    SmsMessage.month == POL_MONTH, SmsMessage.sent_at.is_not(None)
                )
            ),
            "delivered": ProofOfLifeMonth.member_id.in_(
                select(SmsMessage.member_id).where(
                    SmsMessage.month == POL_MONTH, SmsMessage.status == "delivered"
                )
            ),
            "attempted": ProofOfLifeMonth.id.in_(select(ProofOfLifeAttempt.month_id)),
            "at_risk": (ProofOfLifeMonth.status == "pending")
            & (ProofOfLifeMonth.window_closes_at > NOW),
        }
        condition = stage.get(value, ProofOfLifeMonth.status == value)
        return db.session.scalar(query if condition is None else query.where(condition)) or 0
    if kind == "pay":
        query = (
            select(func.count(PaymentMonth.id))
            .join(Household, Household.id == PaymentMonth.household_id)
            .join(Area, Area.id == Household.village_id)
            .where(_in(path))
        )
        condition = {
            "paid": (PaymentMonth.month == PAYROLL_MONTH) & (PaymentMonth.status == "payable"),
            "suspended": (PaymentMonth.month == PAYROLL_MONTH)
            & (PaymentMonth.status == "suspended"),
            "back_paid": (PaymentMonth.back_pay_month == PAYROLL_MONTH)
            & (PaymentMonth.status == "restored"),
        }[value]
        return db.session.scalar(query.where(condition)) or 0
    raise AssertionError(key)


NUMBER = re.compile(
    r'<a class="number[^"]*" data-key="([^"]+)" data-area="([^"]+)" href="([^"]+)">(\d+)</a>'
)


def numbers(html: str) -> list[tuple[str, str, str, int]]:
    return [(k, a, h.replace("&amp;", "&"), int(v)) for k, a, h, v in NUMBER.findall(html)]


# --------------------------------------------------------------------------- tests


@pytest.mark.slow
@pytest.mark.parametrize("summary_seconds", [0, 120], ids=["live", "stored-summary"])
def test_every_number_equals_a_direct_sql_count_and_its_list(
    app: Flask,
    client: FlaskClient,
    area: factories.Areas,
    clock: None,
    summary_seconds: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Counted live, and read from the stored summary of every area (refreshed by the
    first page view: the inline refresh of a process without a broker)."""
    monkeypatch.setitem(app.config, "DIBAO_CONSOLE_SUMMARY_SECONDS", summary_seconds)
    monkeypatch.setitem(app.config, "DIBAO_CONSOLE_REFRESH", "inline")
    plant(area)
    paths = {a.code: a.path for a in db.session.scalars(select(Area))}
    login(client, "supervisor")
    seen: set[str] = set()
    for code in ("152200", "152201", "152201100", "152201100201"):
        page = client.get(f"/console/?area={code}")
        assert page.status_code == 200
        found = numbers(page.get_data(as_text=True))
        assert found, code
        for key, area_code, _href, value in found:
            assert value == expected(key, paths[area_code]), (code, key, area_code)
            seen.add(key)
        if code == "152201":  # the lists behind the county's numbers
            for key, area_code, href, value in found:
                listed = client.get(href + "&format=csv")
                assert listed.status_code == 200, href
                rows = list(csv.reader(io.StringIO(listed.get_data(as_text=True))))
                assert len(rows) - 1 == value, (key, area_code)
    # The planted data reach every kind of number, and some of each are not zero.
    for key in (
        "overdue:applied",
        "overdue:in_public_notice",
        "review_due:A",
        "review_overdue:C",
        "visits",
        "flag:gps_far_from_home",
        "pol:sms_sent",
        "pol:delivered",
        "pol:attempted",
        "pol:at_risk",
        "pay:back_paid",
    ):
        assert key in seen
        assert expected(key, paths["152200"]) > 0, key
    for state in CaseState:
        assert f"state:{state.value}" in seen


def test_the_planted_numbers_are_what_the_rules_say(
    app: Flask, client: FlaskClient, area: factories.Areas, clock: None
) -> None:
    """A few numbers by hand, so that the direct SQL is itself checked."""
    plant(area)
    login(client, "approver")
    html = client.get("/console/?area=152201").get_data(as_text=True)
    total = {k: v for k, a, _, v in numbers(html) if a == "152201"}
    # applied: 3 on time (+1 overdue in village_a); in notice: one past the county's
    # deadline (the other's whole-review deadline passed, but the county's has not).
    assert total["overdue:applied"] == 1
    assert total["overdue:township_reviewed"] == 0
    assert total["overdue:in_public_notice"] == 1
    assert total["review_due:A"] == 4 and total["review_overdue:A"] == 2
    assert total["visits"] == 3  # 1 Nov 00:00 local counts, 31 Oct 23:59 does not
    assert total["flags"] == 5 and total["flag:gps_far_from_home"] == 2
    assert (total["pol:designated"], total["pol:sms_sent"], total["pol:delivered"]) == (7, 4, 2)
    assert (total["pol:attempted"], total["pol:passed"], total["pol:at_risk"]) == (3, 1, 2)
    assert (total["pay:paid"], total["pay:suspended"], total["pay:back_paid"]) == (2, 1, 1)
    assert "剩余天数" in html or "Days left" in html
    # The at-risk members' window closes on 25 Nov 00:00 local: under 2 days from now.
    assert re.search(r"<td>2</td>\s*</tr>\s*<tr class=\"total\"", html) is not None


def test_a_village_shows_its_own_totals_and_its_lists_page(
    app: Flask, client: FlaskClient, area: factories.Areas, clock: None
) -> None:
    for _ in range(3):
        _household(area.village_b, CaseState.APPLIED)
    code = area.village_b.code
    db.session.commit()
    app.config["HOME_PAGE_SIZE"] = 2
    try:
        login(client, "reviewer_b")
        html = client.get(f"/console/?area={code}").get_data(as_text=True)
        own = {k: v for k, a, _, v in numbers(html) if a == code}
        assert own["state:applied"] == 3
        assert 'class="total"' not in html  # one row: the village itself
        first = client.get(f"/console/cases?area={code}&filter=state:applied")
        second = client.get(f"/console/cases?area={code}&filter=state:applied&page=2")
        assert first.status_code == second.status_code == 200
        codes = re.compile(r'href="/cases/([A-Z0-9-]+)"')
        assert len(codes.findall(first.get_data(as_text=True))) == 2
        assert len(codes.findall(second.get_data(as_text=True))) == 1
    finally:
        app.config["HOME_PAGE_SIZE"] = 50


def test_scope_other_county_is_not_found_and_a_caseworker_is_refused(
    app: Flask, client: FlaskClient, area: factories.Areas
) -> None:
    login(client, "other_approver")
    assert client.get("/console/?area=152201").status_code == 404
    assert client.get("/console/cases?area=152201100&filter=cases").status_code == 404
    assert client.get("/console/?area=NOPE").status_code == 404
    assert client.get("/console/").status_code == 200
    client.post("/logout")

    login(client, "caseworker_a")
    refused = client.get("/console/", headers={"Accept-Language": "zh-CN"})
    assert refused.status_code == 403
    assert "督导" in refused.get_data(as_text=True)
    assert client.get("/console/cases?area=152201100&filter=cases").status_code == 403
    assert client.get("/console/?area=152201101").status_code == 404  # outside first
    client.post("/logout")

    login(client, "admin")
    assert client.get("/console/").status_code == 403

    login(client, "reviewer_a")
    assert client.get("/console/cases?area=152201100&filter=nonsense").status_code == 400


def test_a_supervisor_lands_on_the_console_and_sees_chinese_labels(
    app: Flask, client: FlaskClient, area: factories.Areas, clock: None
) -> None:
    plant(area)
    response = login(client, "supervisor")
    assert response.status_code == 302 and response.headers["Location"].endswith("/console/")
    html = client.get("/console/", headers={"Accept-Language": "zh-CN"}).get_data(as_text=True)
    for label in (
        "进度",
        "各状态案件",
        "逾期",
        "周期复核",
        "本月走访",
        "生存认证",
        "短信已发送",
        "有停发风险",
        "补发",
        "近12个月",
    ):
        assert label in html, label
    assert html.count("<svg") == 4
    assert 'href="/console/"' in html  # the nav link
    client.post("/logout")
    response = login(client, "caseworker_a")
    assert response.headers["Location"].endswith("/")
    assert 'href="/console/"' not in client.get("/").get_data(as_text=True)


BAR = re.compile(r'<a href="([^"]+)"><rect [^>]*><title>(\d{4}-\d\d): (\d+)</title>')


@pytest.mark.slow
def test_every_trend_bar_equals_the_list_of_its_month(
    app: Flask, client: FlaskClient, area: factories.Areas, clock: None
) -> None:
    plant(area)
    login(client, "supervisor")
    for code in ("152200", "152201100"):  # the whole league, and a township
        html = client.get(f"/console/?area={code}").get_data(as_text=True)
        bars = BAR.findall(html)
        assert len(bars) == 4 * 12
        for href, _month, value in bars:
            listed = client.get(href.replace("&amp;", "&") + "&format=csv")
            rows = listed.get_data(as_text=True).strip().splitlines()
            assert len(rows) - 1 == int(value), (code, href)
    league = client.get("/console/").get_data(as_text=True)
    values = {h.replace("&amp;", "&"): int(v) for h, _, v in BAR.findall(league)}
    assert values["/console/cases?area=152200&filter=pol:passed&month=2026-10"] == 1
    assert values["/console/cases?area=152200&filter=visits&month=2026-11"] == 3
    assert values["/console/cases?area=152200&filter=visits&month=2026-10"] == 2
    assert values["/console/cases?area=152200&filter=pay:paid&month=2026-10"] == 2


@pytest.mark.slow
def test_rolled_up_trends_equal_the_live_counts_and_their_lists(
    app: Flask, client: FlaskClient, area: factories.Areas, clock: None
) -> None:
    from server.console.progress import months_to_roll, rolled_months, rollup, trends

    plant(area)
    areas = [db.session.scalar(select(Area).where(Area.code == c)) for c in _TREND_AREAS]
    live = [[(t.name, t.points) for t in trends(a, now=NOW)] for a in areas]
    months = months_to_roll(NOW)
    assert months[0] == "2025-12" and months[-1] == "2026-10"  # the closed months
    assert rollup(months, now=NOW) > 0
    db.session.commit()
    assert rolled_months(months) == set(months)
    assert [[(t.name, t.points) for t in trends(a, now=NOW)] for a in areas] == live

    # A late upload into a closed month shows once the month is summed up again.
    late = _household(area.village_b, CaseState.APPROVED)
    _visit(late, NOV_STARTS - timedelta(days=3))
    db.session.commit()
    league = areas[0]
    october = dict(next(t for t in trends(league, now=NOW) if t.name == "visits").points)
    assert october["2026-10"] == dict(live[0][0][1])["2026-10"]  # as summed up
    rollup(months, now=NOW)
    db.session.commit()
    october = dict(next(t for t in trends(league, now=NOW) if t.name == "visits").points)
    assert october["2026-10"] == dict(live[0][0][1])["2026-10"] + 1

    # On the page: every bar of a closed month still equals its list, with the note.
    login(client, "supervisor")
    html = client.get("/console/?area=152201100").get_data(as_text=True)
    assert "summed up at" in html or "汇总于" in html
    for href, month, value in BAR.findall(html):
        if month in ("2026-09", "2026-10"):
            listed = client.get(href.replace("&amp;", "&") + "&format=csv")
            assert len(listed.get_data(as_text=True).strip().splitlines()) - 1 == int(value)


_TREND_AREAS = ("152200", "152201100", "152201100201")


def _village(code: str) -> Area:
    found = db.session.scalar(select(Area).where(Area.code == code))
    assert found is not None
    return found


def _cases_shown(html: str, area_code: str) -> int:
    marker = f'data-key="cases" data-area="{area_code}"'
    return int(html.split(marker, 1)[1].split(">", 1)[1].split("<", 1)[0])


def test_the_stored_summary_is_shown_while_fresh_then_counted_again(
    app: Flask, client: FlaskClient, area: factories.Areas, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(app.config, "DIBAO_CONSOLE_SUMMARY_SECONDS", 120)
    monkeypatch.setitem(app.config, "DIBAO_CONSOLE_REFRESH", "inline")
    moment = [NOW]
    app.config["DIBAO_CLOCK"] = lambda: moment[0]
    try:
        plant(area)
        login(client, "supervisor")
        first = client.get("/console/?area=152201100").get_data(as_text=True)
        assert "120" in first.split('class="asof"', 1)[1].split("</p>", 1)[0]
        before = _cases_shown(first, "152201100")
        assert db.session.scalar(select(func.count()).select_from(CurrentCount)) > 0
        _household(_village("152201100201"), CaseState.APPLIED)
        db.session.commit()
        moment[0] = NOW + timedelta(seconds=119)  # still fresh: the stored numbers
        assert _cases_shown(client.get("/console/?area=152201100").text, "152201100") == before
        moment[0] = NOW + timedelta(seconds=121)  # too old: counted again for every area
        again = client.get("/console/?area=152201100").text
        assert _cases_shown(again, "152201100") == before + 1
        summary = db.session.get(CurrentSummary, 1)
        assert summary is not None
        assert summary.computed_at == NOW + timedelta(seconds=121)
    finally:
        app.config["DIBAO_CLOCK"] = None


def test_a_summary_of_another_day_or_one_refreshed_elsewhere_is_not_shown(
    app: Flask, client: FlaskClient, area: factories.Areas, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In the background mode the page never writes: a missing or old summary (the
    beat task stopped) is counted live, and a summary from yesterday is never shown
    (reviews due today, members at risk: the numbers are about the day)."""
    monkeypatch.setitem(app.config, "DIBAO_CONSOLE_SUMMARY_SECONDS", 100_000)
    monkeypatch.setitem(app.config, "DIBAO_CONSOLE_REFRESH", "background")
    moment = [NOW]
    app.config["DIBAO_CLOCK"] = lambda: moment[0]
    try:
        plant(area)
        login(client, "supervisor")
        live = _cases_shown(client.get("/console/?area=152201").text, "152201")
        assert db.session.get(CurrentSummary, 1) is None  # not refreshed by the page
        app.config["DIBAO_CONSOLE_REFRESH"] = "inline"
        assert refresh_task.run() == 0  # the beat task refreshes in the background only
        app.config["DIBAO_CONSOLE_REFRESH"] = "background"
        refresh(NOW)
        db.session.commit()
        _household(_village("152201100201"), CaseState.APPLIED)
        db.session.commit()
        assert _cases_shown(client.get("/console/?area=152201").text, "152201") == live
        moment[0] = NOW + timedelta(days=1)  # the next local day: counted live
        assert _cases_shown(client.get("/console/?area=152201").text, "152201") == live + 1
        # The beat task stores the new day's numbers.
        assert refresh_task.run() > 0
        summary = db.session.get(CurrentSummary, 1)
        db.session.refresh(summary)
        assert summary is not None and summary.today == "2026-11-24"
    finally:
        app.config["DIBAO_CLOCK"] = None


def test_the_summary_holds_every_area_and_equals_the_live_counts(
    app: Flask, area: factories.Areas
) -> None:
    plant(area)
    refresh(NOW)
    db.session.commit()
    for code in ("152200", "152201", "152201100", "152201100201", "152202"):
        chosen = db.session.scalar(select(Area).where(Area.code == code))
        assert chosen is not None
        found = stored(chosen, now=NOW, max_age=60)
        assert found is not None, code
        live = progress(chosen, now=NOW)
        assert [(b.name, [f.key for f in b.filters], b.counts) for b in found.blocks] == [
            (b.name, [f.key for f in b.filters], b.counts) for b in live.blocks
        ], code
        assert found.at_risk_closes == live.at_risk_closes
    # Older than allowed, or asked about another moment: no summary.
    league = db.session.scalar(select(Area).where(Area.code == "152200"))
    assert league is not None
    assert stored(league, now=NOW + timedelta(seconds=61), max_age=60) is None
    assert stored(league, now=NOW - timedelta(seconds=1), max_age=60) is None
