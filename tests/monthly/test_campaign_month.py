"""A whole month, simulated with an injected clock (``DIBAO_CLOCK``), through the hourly
Celery tick (eager: no broker), the outbox, and the recipients' real link, page API and
face pipeline on real frames:

- the 20th: reminders to A, B and C; D opted out, so her caseworker gets a task;
- the 22nd: A passes on her phone;
- the 23rd: the follow-up to B and C only;
- the 25th: the window closes: B, C and D missed, their households' payments suspended,
  the caseworker has an assisted visit for each; A's payment stands;
- the 28th: B passes late with the same link: December is restored as back-pay in
  January's payroll; C and D stay suspended.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from flask import Flask, current_app
from flask.cli import ScriptInfo
from flask.testing import FlaskClient
from sqlalchemy import select

from server.cases.models import Household
from server.cli import cli
from server.extensions import db
from server.payments.models import PaymentMonth, PaymentStatus
from server.proof_of_life.models import ContactReason, ContactTask, MonthStatus, ProofOfLifeMonth
from server.visits.queries import VisitKind, due_visits
from sms import optouts, tasks
from sms.models import MessageKind, MessageStatus, SmsMessage
from tests import factories
from tests.pol_frames import clip_frame, clip_numbers, sequence
from tests.proof_of_life.test_proof_of_life_frames import GENUINE, _attempt, _member

pytestmark = pytest.mark.slow  # tests that take seconds: pytest -m 'not slow' skips them

MONTH = "2026-12"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 1, tzinfo=UTC)

    def local(self, day: int, hour: int, minute: int = 0) -> datetime:
        """Set the clock to ``day`` December (or January past 31) at local time."""
        month, day = (12, day) if day <= 31 else (1, day - 31)
        year = 2026 if month == 12 else 2027
        self.now = datetime(year, month, day, hour, minute, tzinfo=UTC) - timedelta(hours=8)
        return self.now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock(app: Flask) -> Iterator[Clock]:
    fake = Clock()
    app.config.update(DIBAO_CLOCK=fake, DIBAO_POL_FIXED_CHALLENGES=GENUINE)
    yield fake
    app.config.update(DIBAO_CLOCK=None, DIBAO_POL_FIXED_CHALLENGES=None)


def run(task: Any) -> Any:
    """Run a task eagerly with this app's Celery (the tests build several apps)."""
    return current_app.extensions["celery"].tasks[task.name].apply().get()


def tick() -> list[str]:
    result: list[str] = run(tasks.campaign_tick_task)
    return result


def outbox(member_id: int, kind: MessageKind) -> list[SmsMessage]:
    return list(
        db.session.scalars(
            select(SmsMessage).where(SmsMessage.member_id == member_id, SmsMessage.kind == kind)
        )
    )


def link_in(message: SmsMessage) -> str:
    return message.body.rsplit("/m/", 1)[1]


def month_of(member_id: int) -> ProofOfLifeMonth:
    found = db.session.scalar(
        select(ProofOfLifeMonth).where(
            ProofOfLifeMonth.member_id == member_id, ProofOfLifeMonth.month == MONTH
        )
    )
    assert found is not None
    return found


def payment_of(member_id: int, month: str = MONTH) -> PaymentMonth | None:
    household_id = month_of(member_id).household_id
    return db.session.scalar(
        select(PaymentMonth).where(
            PaymentMonth.household_id == household_id, PaymentMonth.month == month
        )
    )


def payroll(app: Flask, month: str, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    cli.main(
        ["payroll", "--month", month], obj=ScriptInfo(create_app=lambda: app), standalone_mode=False
    )
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out.lstrip("\ufeff"))))
    names = [h.split(" ")[1] for h in rows[0]]
    return {row[0]: dict(zip(names, row, strict=True)) for row in rows[1:]}


def test_a_month_of_reminders_passes_misses_and_back_pay(
    app: Flask, client: FlaskClient, clock: Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    frames = sequence([clip_frame(n) for n in clip_numbers(92, 136)])
    a = _member(client)
    b = _member(client)
    c = _member(client, enrolled=False)
    d = _member(client, enrolled=False)
    members = (a, b, c, d)
    for index, member_id in enumerate(members):
        month_household = db.session.scalar(
            select(Household).join(Household.members).where(Household.members.any(id=member_id))
        )
        assert month_household is not None
        month_household.monthly_allowance = Decimal("500.00")
        month_household.members[0].phone = f"1370000000{index}"
    optouts.opt_out("13700000003", source="sms")  # D sent 退订 last month
    db.session.commit()
    codes = {
        m: db.session.scalar(select(Household.case_code).where(Household.members.any(id=m)))
        for m in members
    }

    # The 19th: nothing yet.
    clock.local(19, 23)
    assert tick() == []

    # The 20th, 00:02: the month opens; messages wait for 08:00.
    clock.local(20, 0, 2)
    assert tick() == [f"open {MONTH}"]
    assert [m.status for m in outbox(a, MessageKind.REMINDER)] == [MessageStatus.QUEUED]
    clock.local(20, 8, 1)
    run(tasks.send_due_task)
    for member_id in (a, b, c):
        [reminder] = outbox(member_id, MessageKind.REMINDER)
        assert reminder.status is MessageStatus.SENT and reminder.provider == "outbox"
        assert "12月24日" in reminder.body
    assert outbox(d, MessageKind.REMINDER) == []
    task = db.session.scalar(select(ContactTask).where(ContactTask.member_id == d))
    assert task is not None and task.reason is ContactReason.OPTED_OUT

    # The 22nd: A opens the link from her SMS and passes.
    clock.local(22, 19, 30)
    _, answer = _attempt(client, link_in(outbox(a, MessageKind.REMINDER)[0]), frames)
    assert answer.status_code == 200 and answer.get_json()["outcome"] == "passed"
    assert month_of(a).passed_at == clock.now

    # The 23rd: the follow-up, to B and C only.
    clock.local(23, 8, 2)
    assert tick() == [f"remind {MONTH}"]
    assert [len(outbox(m, MessageKind.FOLLOW_UP)) for m in members] == [0, 1, 1, 0]
    assert {m.status for m in outbox(b, MessageKind.FOLLOW_UP)} == {MessageStatus.SENT}

    # The 25th, 00:02: the window has closed.
    clock.local(25, 0, 2)
    assert tick() == [f"close {MONTH}"]
    assert [month_of(m).status for m in members] == [
        MonthStatus.PASSED,
        MonthStatus.MISSED,
        MonthStatus.MISSED,
        MonthStatus.MISSED,
    ]
    assert payment_of(a).status is PaymentStatus.PAYABLE  # type: ignore[union-attr]
    for member_id in (b, c, d):
        assert payment_of(member_id).status is PaymentStatus.SUSPENDED  # type: ignore[union-attr]
    visits = due_visits(factories.user("caseworker_a"), today=date(2026, 12, 25), window_days=0)
    assisted = {
        v.household_id: v.reasons for v in visits if v.kind is VisitKind.ASSISTED_PROOF_OF_LIFE
    }
    assert set(assisted) == {month_of(m).household_id for m in (b, c, d)}
    assert all(reasons == ("missed",) for reasons in assisted.values())
    december = payroll(app, MONTH, capsys)
    assert december[codes[a]]["total"] == "500.00"
    assert [december[codes[m]]["month_status"] for m in (b, c, d)] == ["suspended"] * 3

    # The 28th: B opens the link she already has: late, but it still counts.
    clock.local(28, 10)
    status = client.get(
        "/api/v1/proof-of-life/status",
        query_string={"link_token": link_in(outbox(b, MessageKind.REMINDER)[0])},
    ).get_json()
    assert status["status"] == "missed"
    assert status["deadline_at"] == "2027-01-23T16:00:00+00:00"  # Jan 24 00:00 local
    _, answer = _attempt(client, link_in(outbox(b, MessageKind.REMINDER)[0]), frames)
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["outcome"] == "passed"
    restored = payment_of(b)
    assert restored is not None and restored.status is PaymentStatus.RESTORED
    assert restored.back_pay_month == "2027-01"
    assert payment_of(c).status is PaymentStatus.SUSPENDED  # type: ignore[union-attr]

    # January's payroll (cut at January's close) carries December's back-pay for B.
    clock.local(31 + 25, 0, 2)
    january = payroll(app, "2027-01", capsys)
    assert january[codes[b]]["back_pay_months"] == MONTH
    assert january[codes[b]]["back_pay"] == "500.00"
    assert january[codes[c]]["suspended_months"] == MONTH
    assert january[codes[c]]["back_pay"] == "0.00"

    # Past the grace period the link no longer opens.
    clock.local(31 + 24, 12)
    session = client.post(
        "/api/v1/proof-of-life/sessions",
        json={"link_token": link_in(outbox(c, MessageKind.REMINDER)[0])},
    )
    assert session.status_code == 410, json.dumps(session.get_json())
