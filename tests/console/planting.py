"""Planted data for the console tests: a fixed clock, cases in chosen states and
dates, visits with flags, proof-of-life months, failed messages, contact tasks."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from server.areas.models import Area, AreaLevel
from server.auth.models import Role, User
from server.cases.models import CaseState, Household
from server.extensions import db
from server.proof_of_life import service as pol
from server.proof_of_life.models import ContactReason, ContactTask, MonthStatus
from server.visits.models import Survey, SurveyFlag, SurveyStatus
from sms.models import MessageKind, MessageStatus, SmsMessage
from tests import factories

# 12:00 on 22 November 2026, Beijing time: the November window (20th-24th) is open,
# October's grace period still runs, September's is over.
NOW = datetime(2026, 11, 22, 4, 0, tzinfo=UTC)
TODAY = date(2026, 11, 22)
MONTH = "2026-11"


@pytest.fixture
def clock(app: Flask) -> Iterator[datetime]:
    app.config["DIBAO_CLOCK"] = lambda: NOW
    yield NOW
    app.config["DIBAO_CLOCK"] = None


def other_county() -> tuple[Area, User]:
    """A township and village of the other county (阿尔山市) with their caseworker."""
    by_code = {a.code: a for a in db.session.scalars(select(Area))}
    if "152202100201" not in by_code:
        factories.add_area(
            by_code, "152202100", "明水河镇", AreaLevel.TOWNSHIP, "152202", 47.1, 119.9
        )
        factories.add_area(
            by_code, "152202100201", "明水河村", AreaLevel.VILLAGE, "152202100", 47.11, 119.91
        )
        db.session.add(
            User(
                username="caseworker_c",
                password_hash=factories.user("caseworker_a").password_hash,
                role=Role.CASEWORKER,
                area=by_code["152202100"],
            )
        )
        db.session.flush()
    caseworker = factories.user("caseworker_c")
    return by_code["152202100201"], caseworker


def case(village: Area, state: CaseState, **dates: Any) -> Household:
    household = factories.make_household(village=village, state=state)
    for name, value in dates.items():
        setattr(household, name, value)
    db.session.flush()
    return household


def flagged_visit(
    household: Household, code: str = "gps_far_from_home", **extra: Any
) -> SurveyFlag:
    caseworker = db.session.scalar(
        select(User).where(
            User.role == Role.CASEWORKER, User.area_id == household.village.parent_id
        )
    )
    assert caseworker is not None
    survey = Survey(
        client_uuid=str(uuid.uuid4()),
        content_hash="0" * 64,
        household_id=household.id,
        caseworker_id=caseworker.id,
        kind="periodic_review",
        status=SurveyStatus.COMPLETE,
        started_at=NOW - timedelta(days=4, hours=1),
        finished_at=NOW - timedelta(days=4),
        gps_lat=household.home_lat,
        gps_lon=household.home_lon,
        payload="{}",
    )
    flag = SurveyFlag(
        code=code, severity="warning", detail="", raised_at=NOW - timedelta(days=4), **extra
    )
    survey.flags.append(flag)
    db.session.add(survey)
    db.session.flush()
    return flag


def designated_head(household: Household) -> Any:
    head = household.members[0]
    head.proof_of_life_required = True
    db.session.flush()
    return head


def month_in_review(household: Household, month: str = MONTH) -> Any:
    record = pol.month_record(designated_head(household), month)
    record.status = MonthStatus.REVIEW
    record.updated_at = NOW - timedelta(days=1)
    db.session.flush()
    return record


def failed_reminder(household: Household, month: str = MONTH) -> SmsMessage:
    message = SmsMessage(
        member_id=designated_head(household).id,
        household_id=household.id,
        month=month,
        kind=MessageKind.REMINDER,
        status=MessageStatus.FAILED,
        to_phone="13912345678",
        body="提醒",
        error_code=30003,
        created_at=NOW - timedelta(days=2),
        updated_at=NOW - timedelta(days=2),
    )
    db.session.add(message)
    db.session.flush()
    return message


def contact_task(household: Household, month: str = MONTH, **extra: Any) -> ContactTask:
    task = ContactTask(
        member_id=designated_head(household).id,
        household_id=household.id,
        month=month,
        reason=ContactReason.NO_PHONE,
        created_at=NOW - timedelta(days=2),
        **extra,
    )
    db.session.add(task)
    db.session.flush()
    return task


def foreign_league() -> Area:
    """A league outside every test user's area (锡林郭勒盟)."""
    by_code = {a.code: a for a in db.session.scalars(select(Area))}
    if "152500" not in by_code:
        factories.add_area(by_code, "152500", "锡林郭勒盟", AreaLevel.LEAGUE, None, 43.9, 116.0)
        db.session.flush()
    return by_code["152500"]


class _Rows(HTMLParser):
    """The rows of a console table: each a dict of its cells by ``data-key``, with
    the row's ``data-*`` attributes and class under ``_attrs``."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, Any]] = []
        self._row: dict[str, Any] | None = None
        self._key: str | None = None
        self._in_console = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "table" and "console" in (found.get("class") or ""):
            self._in_console = True
        elif tag == "tr" and self._in_console and self._row is None:
            self._row = {"_attrs": found}
        elif tag == "td" and self._row is not None:
            self._key = found.get("data-key")
            if self._key:
                self._row[self._key] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._key = None
        elif tag == "tr" and self._row is not None:
            if len(self._row) > 1:
                self.rows.append(self._row)
            self._row = None
        elif tag == "table":
            self._in_console = False

    def handle_data(self, data: str) -> None:
        if self._row is not None and self._key:
            self._row[self._key] += data.strip()


def table_rows(html: str) -> list[dict[str, Any]]:
    parser = _Rows()
    parser.feed(html)
    return parser.rows


CSRF = re.compile(r'name="csrf_token" value="[^"]*"')


def page_text(response: Any) -> str:
    """A page's text with its per-request CSRF token blanked (to compare answers)."""
    return CSRF.sub('name="csrf_token" value=""', response.get_data(as_text=True))
