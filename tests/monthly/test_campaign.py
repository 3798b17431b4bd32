"""The monthly campaign, step by step, with an explicit clock: open (who gets an SMS,
who gets a caseworker instead), a crash mid-open, remind, the sender (throttle, sending
hours, cancelling, a sender killed mid-request, refusals and retries), close
(missed, suspended, review after three months), back-pay, the payroll, the hourly tick."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.cli import ScriptInfo
from pytest_httpserver import HTTPServer
from sqlalchemy import func, select

from server.cases.models import CaseEvent, CaseState, Household, Member
from server.cli import cli
from server.extensions import db
from server.monthly import cycle as campaign
from server.monthly.models import CampaignStep
from server.payments import service as payments
from server.payments.models import PaymentMonth, PaymentStatus
from server.proof_of_life import service as pol
from server.proof_of_life.models import (
    ContactReason,
    ContactTask,
    MonthStatus,
    ProofOfLifeMonth,
)
from server.visits.queries import VisitKind, due_visits
from sms import optouts, sender
from sms.models import MessageKind, MessageStatus, SmsMessage
from sms.outbox import OutboxGateway
from tests import factories
from tests.fake_twilio import FakeTwilio
from tests.sms.test_sms_twilio import _gateway

MONTH = "2026-12"
# Asia/Shanghai is UTC+8: the window is [Dec 20 00:00, Dec 25 00:00) local time.
OPENS = datetime(2026, 12, 19, 16, 0, tzinfo=UTC)
MORNING = datetime(2026, 12, 20, 1, 0, tzinfo=UTC)  # 09:00 local on the 20th
FOLLOW_UP = datetime(2026, 12, 23, 0, 0, tzinfo=UTC)  # 08:00 local on the 23rd
CLOSES = datetime(2026, 12, 24, 16, 0, tzinfo=UTC)


def recipient(
    phone: str | None = "13912345678",
    *,
    state: CaseState = CaseState.APPROVED,
    designated: bool = True,
    alive: bool = True,
    allowance: str = "500.00",
) -> Member:
    household = factories.make_household(state=state, head_phone=phone)
    household.monthly_allowance = Decimal(allowance)
    head = household.members[0]
    head.proof_of_life_required = designated
    head.alive = alive
    db.session.commit()
    return head


def messages(member: Member, kind: MessageKind | None = None) -> list[SmsMessage]:
    query = select(SmsMessage).where(SmsMessage.member_id == member.id)
    if kind is not None:
        query = query.where(SmsMessage.kind == kind)
    return list(db.session.scalars(query))


def record(member: Member, month: str = MONTH) -> ProofOfLifeMonth | None:
    return db.session.scalar(
        select(ProofOfLifeMonth).where(
            ProofOfLifeMonth.member_id == member.id, ProofOfLifeMonth.month == month
        )
    )


def task(member: Member, month: str = MONTH) -> ContactTask | None:
    return db.session.scalar(
        select(ContactTask).where(ContactTask.member_id == member.id, ContactTask.month == month)
    )


def payment(member: Member, month: str = MONTH) -> PaymentMonth | None:
    return db.session.scalar(
        select(PaymentMonth).where(
            PaymentMonth.household_id == member.household_id, PaymentMonth.month == month
        )
    )


def send_all(gateway: Any, at: datetime, rate: float = 0) -> sender.SendReport:
    return sender.send_due(gateway, clock=lambda: at, rate_per_s=rate)


# --------------------------------------------------------------------------- open


def test_open_queues_one_reminder_per_reachable_member_and_a_task_for_the_others(
    app: Flask,
) -> None:
    reachable = recipient("13900000001")
    no_phone = recipient(None)
    opted_out = recipient("13900000003")
    optouts.opt_out("+86 139 0000 0003", source="sms")
    wrong = recipient("13900000004")
    db.session.add(
        SmsMessage(
            member_id=wrong.id,
            household_id=wrong.household_id,
            month="2026-11",
            kind=MessageKind.REMINDER,
            status=MessageStatus.FAILED,
            error_code=21211,
            to_phone="+8613900000004",
            body="earlier",
        )
    )
    ignored = [
        recipient("13900000005", designated=False),
        recipient("13900000006", alive=False),
        recipient("13900000007", state=CaseState.SUSPENDED),
    ]
    db.session.commit()

    report = campaign.open_month(MONTH, now=MORNING)

    assert report.members == 4 and report.queued == 1
    assert report.tasks == {"no_phone": 1, "opted_out": 1, "wrong_number": 1}
    [reminder] = messages(reachable)
    assert reminder.status is MessageStatus.QUEUED and reminder.to_phone == "13900000001"
    assert reminder.body.startswith("【科尔沁区民政局】王*您好")
    assert "12月24日" in reminder.body and "/m/" in reminder.body
    assert "王大" not in reminder.body  # a masked name only
    token = reminder.body.rsplit("/m/", 1)[1]
    assert pol.resolve_link(token, now=MORNING).member_id == reachable.id
    for member, reason in (
        (no_phone, ContactReason.NO_PHONE),
        (opted_out, ContactReason.OPTED_OUT),
        (wrong, ContactReason.WRONG_NUMBER),
    ):
        found = task(member)
        assert found is not None and found.reason is reason, member
        assert messages(member, MessageKind.REMINDER) == [] or member is wrong
        assert record(member) is not None and record(member).status is MonthStatus.PENDING  # type: ignore[union-attr]
    for member in ignored:
        assert record(member) is None and messages(member) == []

    # The caseworker sees the unreachable members' households, with why.
    visits = due_visits(
        factories.user("caseworker_a"), today=date(2026, 12, 20), window_days=0, now=MORNING
    )
    assisted = {
        v.household_id: v.reasons for v in visits if v.kind is VisitKind.ASSISTED_PROOF_OF_LIFE
    }
    assert assisted == {
        no_phone.household_id: ("no_phone",),
        opted_out.household_id: ("opted_out",),
        wrong.household_id: ("wrong_number",),
    }

    again = campaign.open_month(MONTH, now=MORNING + timedelta(hours=1))
    assert again.queued == 0 and again.tasks == {} and again.skipped == 1
    assert (
        db.session.scalar(select(func.count(SmsMessage.id)).where(SmsMessage.month == MONTH)) == 1
    )
    assert db.session.scalar(select(func.count(ContactTask.id))) == 3
    step = db.session.scalar(select(CampaignStep).where(CampaignStep.step == "open"))
    assert step is not None and step.runs == 2 and step.finished_at is not None


def test_open_runs_only_while_the_window_is_open(app: Flask) -> None:
    recipient()
    with pytest.raises(campaign.CampaignError, match="opens at"):
        campaign.open_month(MONTH, now=OPENS - timedelta(seconds=1))
    with pytest.raises(campaign.CampaignError, match="closed at"):
        campaign.open_month(MONTH, now=CLOSES)
    assert db.session.scalar(select(func.count(ProofOfLifeMonth.id))) == 0


def test_an_open_that_crashed_half_way_is_finished_by_the_next_run(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    members = [recipient(f"1390000010{i}") for i in range(5)]
    monkeypatch.setattr(campaign, "BATCH", 2)
    calls = []

    def crash_after_the_first_batch(done: int) -> None:
        calls.append(done)
        if len(calls) == 1:
            raise RuntimeError("the machine went down")

    with pytest.raises(RuntimeError):
        campaign.open_month(MONTH, now=MORNING, progress=crash_after_the_first_batch)
    db.session.rollback()
    assert db.session.scalar(select(func.count(SmsMessage.id))) == 2  # the first batch
    step = db.session.scalar(select(CampaignStep).where(CampaignStep.step == "open"))
    assert step is not None and step.finished_at is None

    report = campaign.open_month(MONTH, now=MORNING)
    assert report.queued == 3 and report.skipped == 2
    for member in members:
        assert len(messages(member)) == 1
    assert campaign.status(MONTH)["steps"]["open"]["finished_at"] is not None


# --------------------------------------------------------------------------- remind


def test_the_follow_up_goes_to_members_still_pending_whose_reminder_did_not_fail(
    app: Flask,
) -> None:
    pending = recipient("13900000011")
    passed = recipient("13900000012")
    refused = recipient("13900000013")
    campaign.open_month(MONTH, now=MORNING)
    send_all(OutboxGateway(), MORNING)
    bad = messages(refused)[0]
    bad.status, bad.error_code = MessageStatus.FAILED, 21211
    done = record(passed)
    assert done is not None
    done.status = MonthStatus.PASSED
    db.session.commit()

    with pytest.raises(campaign.CampaignError, match="follow-up is due"):
        campaign.remind(MONTH, now=FOLLOW_UP - timedelta(minutes=1))
    report = campaign.remind(MONTH, now=FOLLOW_UP)
    assert report.queued == 1
    [follow_up] = messages(pending, MessageKind.FOLLOW_UP)
    assert "还未完成" in follow_up.body and "12月24日" in follow_up.body
    assert messages(passed, MessageKind.FOLLOW_UP) == []
    assert messages(refused, MessageKind.FOLLOW_UP) == []
    assert campaign.remind(MONTH, now=FOLLOW_UP).queued == 0


# --------------------------------------------------------------------------- sender


def test_the_sender_is_throttled_and_sends_each_message_once(app: Flask) -> None:
    for i in range(6):
        recipient(f"1390000002{i}")
    campaign.open_month(MONTH, now=MORNING)
    clock = [100.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock[0] += seconds

    throttle = sender.Throttle(4, sleep=sleep, monotonic=lambda: clock[0])
    report = sender.send_due(
        OutboxGateway(), clock=lambda: MORNING, rate_per_s=4, throttle=throttle
    )
    assert report.sent == 6
    # Six messages at 4 per second (sending itself takes no time on this clock): the
    # first at once, then five waits of a quarter second.
    assert waits == pytest.approx([0.25] * 5)
    statuses = db.session.scalars(select(SmsMessage.status)).all()
    assert statuses == [MessageStatus.SENT] * 6
    assert send_all(OutboxGateway(), MORNING).handled == 0


def test_nothing_is_sent_outside_the_sending_hours(app: Flask) -> None:
    recipient()
    campaign.open_month(MONTH, now=OPENS + timedelta(minutes=5))  # 00:05 local
    report = send_all(OutboxGateway(), OPENS + timedelta(minutes=5))
    assert report.outside_hours and report.handled == 0
    assert send_all(OutboxGateway(), MORNING).sent == 1


def test_a_message_no_longer_wanted_is_cancelled_not_sent(app: Flask) -> None:
    passed = recipient("13900000031")
    stopped = recipient("13900000032")
    campaign.open_month(MONTH, now=MORNING)
    done = record(passed)
    assert done is not None
    done.status = MonthStatus.PASSED
    optouts.opt_out("13900000032", source="sms")
    db.session.commit()
    report = send_all(OutboxGateway(), MORNING)
    assert report.cancelled == 2 and report.sent == 0
    assert {m.status for m in messages(passed) + messages(stopped)} == {MessageStatus.CANCELLED}
    stopped_task = task(stopped)
    assert stopped_task is not None and stopped_task.reason is ContactReason.OPTED_OUT


class _DiesAfterSending:
    """The real Twilio client, in a process that dies right after the request went out
    (before the answer is recorded), or just before it."""

    name = "twilio"

    def __init__(self, real: Any, *, before: bool = False) -> None:
        self.real, self.before = real, before

    def send(self, *, to: str, body: str) -> Any:
        if not self.before:
            self.real.send(to=to, body=body)
        raise KeyboardInterrupt  # SIGINT: nothing after this line runs

    def find_sent(self, **kwargs: Any) -> Any:
        return self.real.find_sent(**kwargs)


@pytest.mark.parametrize("dies_before_the_request", [False, True])
def test_a_sender_that_dies_mid_send_neither_resends_nor_loses_the_reminder(
    app: Flask, httpserver: HTTPServer, fake: FakeTwilio, dies_before_the_request: bool
) -> None:
    member = recipient("13900000041")
    campaign.open_month(MONTH, now=MORNING)
    gateway = _gateway(httpserver)
    with pytest.raises(KeyboardInterrupt):
        send_all(_DiesAfterSending(gateway, before=dies_before_the_request), MORNING)
    db.session.rollback()
    [message] = messages(member)
    assert message.status is MessageStatus.UNCERTAIN  # the claim was committed first

    # Another sender, before the lease ran out: leaves it alone.
    assert send_all(gateway, MORNING + timedelta(minutes=1)).handled == 0
    # After the lease: asks Twilio first, sends only if Twilio does not have it.
    report = send_all(gateway, MORNING + timedelta(minutes=6))
    assert report.sent == 1
    db.session.refresh(message)
    assert message.status is MessageStatus.SENT and message.provider_sid is not None
    assert len(fake.sent) == 1 and fake.sent[0]["sid"] == message.provider_sid
    assert [m["to"] for m in fake.sent] == ["13900000041"]


def test_an_unconfirmed_message_no_longer_wanted_is_checked_then_cancelled(
    app: Flask, httpserver: HTTPServer, fake: FakeTwilio
) -> None:
    member = recipient("13900000045")
    campaign.open_month(MONTH, now=MORNING)
    with pytest.raises(KeyboardInterrupt):
        send_all(_DiesAfterSending(_gateway(httpserver), before=True), MORNING)
    db.session.rollback()
    done = record(member)
    assert done is not None
    done.status = MonthStatus.PASSED  # she passed before anyone found out
    db.session.commit()
    report = send_all(_gateway(httpserver), MORNING + timedelta(minutes=6))
    assert report.cancelled == 1 and report.sent == 0
    assert fake.lookups == 1 and fake.sent == []  # asked Twilio, sent nothing
    assert messages(member)[0].status is MessageStatus.CANCELLED


def test_a_refused_number_gets_a_caseworker_and_a_busy_provider_a_retry(
    app: Flask, httpserver: HTTPServer, fake: FakeTwilio
) -> None:
    refused = recipient("13900000051")
    busy = recipient("13900000052")
    campaign.open_month(MONTH, now=MORNING)
    fake.script += [(400, {"code": 21211}), (429, {"code": 20429})]
    report = send_all(_gateway(httpserver), MORNING)
    assert report.failed == 1 and report.retrying == 1
    [bad] = messages(refused)
    assert bad.status is MessageStatus.FAILED and bad.error_code == 21211
    found = task(refused)
    assert found is not None and found.reason is ContactReason.WRONG_NUMBER
    [later] = messages(busy)
    assert later.status is MessageStatus.QUEUED
    assert later.next_attempt_at == MORNING + timedelta(seconds=30)
    assert send_all(_gateway(httpserver), MORNING + timedelta(seconds=10)).handled == 0
    assert send_all(_gateway(httpserver), MORNING + timedelta(seconds=30)).sent == 1
    assert len(fake.sent) == 1  # the refused number was never tried again


# --------------------------------------------------------------------------- close


def test_close_marks_the_pending_missed_suspends_their_households_and_asks_a_caseworker(
    app: Flask,
) -> None:
    missed = recipient("13900000061")
    passed = recipient("13900000062")
    no_designated = recipient("13900000063", designated=False)
    campaign.open_month(MONTH, now=MORNING)
    campaign.remind(MONTH, now=FOLLOW_UP)
    done = record(passed)
    assert done is not None
    done.status = MonthStatus.PASSED
    db.session.commit()

    with pytest.raises(campaign.CampaignError, match="closes at"):
        campaign.close(MONTH, now=CLOSES - timedelta(seconds=1))
    report = campaign.close(MONTH, now=CLOSES)
    assert (report.missed, report.suspended, report.payable) == (1, 1, 2)
    assert record(missed).status is MonthStatus.MISSED  # type: ignore[union-attr]
    assert payment(missed).status is PaymentStatus.SUSPENDED  # type: ignore[union-attr]
    assert payment(passed).status is PaymentStatus.PAYABLE  # type: ignore[union-attr]
    assert payment(no_designated).amount == Decimal("500.00")  # type: ignore[union-attr]
    # Nothing queued survives the close.
    assert {m.status for m in messages(missed) + messages(passed)} == {MessageStatus.CANCELLED}

    visits = due_visits(
        factories.user("caseworker_a"),
        today=date(2026, 12, 25),
        window_days=0,
        now=CLOSES + timedelta(hours=1),
    )
    [assisted] = [v for v in visits if v.kind is VisitKind.ASSISTED_PROOF_OF_LIFE]
    assert assisted.household_id == missed.household_id and assisted.reasons == ("missed",)
    assert assisted.due_by == date(2027, 1, 24)  # the end of the 30-day grace period

    again = campaign.close(MONTH, now=CLOSES + timedelta(hours=1))
    assert (again.missed, again.suspended, again.payable) == (0, 0, 0)
    assert db.session.scalar(select(func.count(PaymentMonth.id))) == 3


def test_three_missed_months_in_a_row_send_the_case_to_review_never_to_termination(
    app: Flask,
) -> None:
    member = recipient()
    for month in ("2026-10", "2026-11"):
        db.session.add(
            ProofOfLifeMonth(
                member_id=member.id,
                household_id=member.household_id,
                month=month,
                status=MonthStatus.MISSED,
                window_closes_at=CLOSES - timedelta(days=30),
            )
        )
    db.session.commit()
    campaign.open_month(MONTH, now=MORNING)
    report = campaign.close(MONTH, now=CLOSES)
    assert report.to_review == [member.household_id]
    household = db.session.get(Household, member.household_id)
    assert household is not None and household.state is CaseState.APPROVED
    assert household.next_review_on == date(2026, 12, 25)
    events = db.session.scalars(
        select(CaseEvent).where(CaseEvent.action == payments.REVIEW_ACTION)
    ).all()
    assert len(events) == 1 and "3 months" in (events[0].reason or "")
    campaign.close(MONTH, now=CLOSES + timedelta(hours=2))
    assert (
        db.session.scalar(
            select(func.count(CaseEvent.id)).where(CaseEvent.action == payments.REVIEW_ACTION)
        )
        == 1
    )


def test_a_pass_within_the_grace_period_restores_the_month_as_back_pay_and_not_after(
    app: Flask,
) -> None:
    late = recipient("13900000071")
    too_late = recipient("13900000072")
    campaign.open_month(MONTH, now=MORNING)
    campaign.close(MONTH, now=CLOSES)
    reviewer = factories.user("reviewer_a")
    app.config["DIBAO_CLOCK"] = lambda: CLOSES + timedelta(days=3)  # Dec 28 local
    try:
        pol.decide_month(record(late), actor=reviewer, status=MonthStatus.PASSED, reason="家访核实")  # type: ignore[arg-type]
        app.config["DIBAO_CLOCK"] = lambda: CLOSES + timedelta(days=31)
        pol.decide_month(
            record(too_late),  # type: ignore[arg-type]
            actor=reviewer,
            status=MonthStatus.PASSED,
            reason="家访核实",
        )
    finally:
        app.config["DIBAO_CLOCK"] = None
    db.session.commit()
    restored = payment(late)
    assert restored is not None and restored.status is PaymentStatus.RESTORED
    assert restored.back_pay_month == "2027-01"  # December's payroll was cut at the close
    assert payment(too_late).status is PaymentStatus.SUSPENDED  # type: ignore[union-attr]


# --------------------------------------------------------------------------- payroll


def _payroll(app: Flask, *args: str) -> Any:
    return cli.main(
        ["payroll", *args], obj=ScriptInfo(create_app=lambda: app), standalone_mode=False
    )


def test_the_payroll_lists_each_household_with_suspended_months_and_back_pay(
    app: Flask, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paid = recipient("13900000081", allowance="420.50")
    restored = recipient("13900000082", allowance="300.00")
    suspended = recipient("13900000083", allowance="250.00")
    campaign.open_month(MONTH, now=MORNING)
    for member in (paid,):
        found = record(member)
        assert found is not None
        found.status = MonthStatus.PASSED
    db.session.commit()
    campaign.close(MONTH, now=CLOSES)
    found = record(restored)
    assert found is not None
    found.status = MonthStatus.PASSED
    db.session.flush()
    payments.settle(restored.household_id, MONTH, now=CLOSES + timedelta(days=3))
    db.session.commit()

    _payroll(app, "--month", MONTH)
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out.lstrip("\ufeff"))))
    header, body = rows[0], rows[1:]
    assert header[0] == "案件编号 case_code" and header[-1] == "合计 total"
    by_code = {
        row[0]: dict(zip([h.split(" ")[1] for h in header], row, strict=True)) for row in body
    }
    codes = {
        m: db.session.get(Household, m.household_id).case_code  # type: ignore[union-attr]
        for m in (paid, restored, suspended)
    }
    assert by_code[codes[paid]]["month_paid"] == "420.50"
    assert by_code[codes[paid]]["payee"] == "王大"
    assert by_code[codes[suspended]]["month_status"] == "suspended"
    # The code is for machines; the label beside it is for the office (zh_CN).
    assert by_code[codes[suspended]]["month_status_label"] == "暂停发放（生存认证）"
    assert by_code[codes[suspended]]["total"] == "0.00"
    assert by_code[codes[suspended]]["suspended_months"] == MONTH
    assert by_code[codes[restored]]["month_status"] == "restored"
    assert by_code[codes[restored]]["total"] == "0.00"

    # January's payroll carries December's back-pay.
    out = tmp_path / "payroll-2027-01.xlsx"
    _payroll(app, "--month", "2027-01", "--format", "xlsx", "--output", str(out))
    from openpyxl import load_workbook

    book = load_workbook(out, read_only=True)  # read-only keeps the file open: close it
    sheet = book.active
    assert sheet is not None
    values = [list(r) for r in sheet.iter_rows(values_only=True)]
    book.close()
    xheader = [str(h).split(" ")[1] for h in values[0]]
    xrows = {r[0]: dict(zip(xheader, r, strict=True)) for r in values[1:]}
    assert xrows[codes[restored]]["back_pay_months"] == MONTH
    assert xrows[codes[restored]]["back_pay"] == 300.0
    assert xrows[codes[restored]]["total"] == 600.0  # January (window open) + December
    assert xrows[codes[suspended]]["suspended_months"] == MONTH
    assert not list(tmp_path.glob("*.part"))


def test_xlsx_needs_an_output_file(app: Flask) -> None:
    import click

    with pytest.raises(click.UsageError, match="needs --output"):
        _payroll(app, "--month", MONTH, "--format", "xlsx")


# --------------------------------------------------------------------------- tick


def test_the_hourly_tick_runs_each_step_once_when_it_is_due(app: Flask) -> None:
    member = recipient()
    assert campaign.tick(now=OPENS - timedelta(hours=1)) == []
    assert campaign.tick(now=OPENS + timedelta(minutes=2)) == [f"open {MONTH}"]
    assert campaign.tick(now=MORNING) == []
    assert campaign.tick(now=FOLLOW_UP) == [f"remind {MONTH}"]
    assert campaign.tick(now=FOLLOW_UP + timedelta(hours=1)) == []
    # The scheduler was down over the close: the next tick, days later, still closes.
    later = CLOSES + timedelta(days=3)
    assert campaign.tick(now=later) == [f"close {MONTH}"]
    assert campaign.tick(now=later + timedelta(hours=1)) == []
    assert record(member).status is MonthStatus.MISSED  # type: ignore[union-attr]
    assert len(messages(member)) == 2  # reminder and follow-up, both cancelled unsent
