"""The campaign with a real Celery worker (a separate process) on the real Redis,
sending through the official twilio client to the local fake Twilio over HTTP: open ->
send -> delivery callbacks -> remind -> close for a small county; and again with the
worker killed (SIGKILL) in the middle of sending: no reminder sent twice, none lost."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask_migrate import upgrade
from pytest_httpserver import HTTPServer
from sqlalchemy import func, select
from twilio.request_validator import RequestValidator

import server as server_package
from server.cases.models import CaseState
from server.extensions import db
from server.monthly import cycle as campaign
from server.months import current_month, month_after
from server.payments.models import PaymentMonth, PaymentStatus
from server.proof_of_life.models import ContactReason, ContactTask, MonthStatus, ProofOfLifeMonth
from sms import tasks
from sms.models import MessageKind, MessageStatus, SmsMessage
from tests import factories
from tests.conftest import DatabaseFactory, make_app, process_env
from tests.fake_twilio import ACCOUNT, SERVICE, TOKEN, FakeTwilio
from tests.processes import start_celery_worker

pytestmark = pytest.mark.slow  # tests that take seconds: pytest -m 'not slow' skips them

BASE = "https://dibao.example.cn"


@dataclass
class County:
    app: Flask
    env: dict[str, str]
    month: str
    broker: str

    def worker(self) -> subprocess.Popen[bytes]:
        return start_celery_worker(self.env)


def _county(
    databases: DatabaseFactory, tmp_path: Path, fake_server: HTTPServer, label: str, db_number: int
) -> County:
    broker = f"redis://127.0.0.1:6379/{db_number}"
    redis.Redis.from_url(broker).flushdb()
    # Send at any hour: the test runs whenever CI does.
    region = tmp_path / "region.toml"
    region.write_text(
        (Path(server_package.__file__).parent / "region_default.toml")
        .read_text("utf-8")
        .replace("send_from_hour = 8", "send_from_hour = 0")
        .replace("send_until_hour = 21", "send_until_hour = 24"),
        "utf-8",
    )
    settings = {
        "CELERY_BROKER_URL": broker,
        "SMS_BACKEND": "twilio",
        "TWILIO_ACCOUNT_SID": ACCOUNT,
        "TWILIO_AUTH_TOKEN": TOKEN,
        "TWILIO_MESSAGING_SERVICE_SID": SERVICE,
        "TWILIO_API_BASE_URL": fake_server.url_for("/"),
        "PUBLIC_BASE_URL": BASE,
        "SMS_RATE_PER_SECOND": "0",
        "SMS_CLAIM_LEASE_SECONDS": "2",
        "DIBAO_REGION_CONFIG": str(region),
    }
    url = databases.new(label)
    application = make_app(url, tmp_path, **settings)
    with application.app_context():
        upgrade(directory=application.extensions["migrate"].directory)
        factories.base_data()
        db.session.commit()
    env = process_env(url, tmp_path, **settings)
    # Next month: its window is still ahead of the real clock, which the worker reads.
    month = month_after(current_month(datetime.now(UTC), "Asia/Shanghai"))
    return County(application, env, month, broker)


def _recipients(count: int, *, without_phone: int = 0) -> list[int]:
    ids = []
    for index in range(count):
        phone = None if index < without_phone else f"1380000{index:04d}"
        household = factories.make_household(state=CaseState.APPROVED, head_phone=phone)
        head = household.members[0]
        head.proof_of_life_required = True
        db.session.commit()
        ids.append(head.id)
    return ids


def _wait_until(
    condition: Any, worker: subprocess.Popen[bytes], *, seconds: float, nudge: bool = False
) -> None:
    deadline = time.monotonic() + seconds
    last_nudge = 0.0
    while True:
        db.session.rollback()  # see the worker's commits
        done = condition()
        # End the read at once: on SQLite every transaction holds the write lock.
        db.session.rollback()
        if done:
            return
        assert worker.poll() is None, "the worker died"
        assert time.monotonic() < deadline, "the worker did not finish in time"
        if nudge and time.monotonic() - last_nudge > 1.0:
            tasks.enqueue_sending()  # what beat does every minute
            last_nudge = time.monotonic()
        time.sleep(0.2)


def _count(status: MessageStatus, kind: MessageKind | None = None) -> int:
    query = select(func.count(SmsMessage.id)).where(SmsMessage.status == status)
    if kind is not None:
        query = query.where(SmsMessage.kind == kind)
    return db.session.scalar(query) or 0


def _stop(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is None:
        worker.terminate()
        worker.wait(timeout=30)


@pytest.fixture
def stop_workers() -> Iterator[list[subprocess.Popen[bytes]]]:
    workers: list[subprocess.Popen[bytes]] = []
    yield workers
    for worker in workers:
        _stop(worker)


def _callback(app: Flask, sid: str, status: str, error_code: str | None = None) -> None:
    db.session.rollback()  # the request has its own session: let it write
    params = {"MessageSid": sid, "MessageStatus": status, "AccountSid": ACCOUNT}
    if error_code:
        params["ErrorCode"] = error_code
    signature = RequestValidator(TOKEN).compute_signature(BASE + "/sms/twilio/status", params)
    answer = app.test_client().post(
        "/sms/twilio/status", data=params, headers={"X-Twilio-Signature": signature}
    )
    assert answer.status_code == 204


def test_open_send_callbacks_remind_and_close_through_a_celery_worker(
    databases: DatabaseFactory,
    tmp_path: Path,
    httpserver: HTTPServer,
    fake: FakeTwilio,
    stop_workers: list[subprocess.Popen[bytes]],
) -> None:
    county = _county(databases, tmp_path, httpserver, "campaign_celery", 13)
    with county.app.app_context():
        members = _recipients(8, without_phone=1)
        at = campaign.moments(county.month)
        worker = county.worker()
        stop_workers.append(worker)

        report = campaign.open_month(county.month, now=at.opens + timedelta(hours=9))
        assert report.queued == 7 and report.tasks == {"no_phone": 1}
        tasks.enqueue_sending()
        _wait_until(lambda: _count(MessageStatus.SENT) == 7, worker, seconds=90)
        assert len(fake.sent) == 7 and len({m["to"] for m in fake.sent}) == 7
        assert all(m["MessagingServiceSid"] == SERVICE for m in fake.received)
        assert all(m["StatusCallback"] == BASE + "/sms/twilio/status" for m in fake.received)

        # Twilio reports: six delivered (one of them twice, one out of order), one that
        # no phone can receive.
        sids = [m["sid"] for m in fake.sent]
        for sid in sids[:6]:
            _callback(county.app, sid, "delivered")
        _callback(county.app, sids[0], "delivered")
        _callback(county.app, sids[1], "sent")
        _callback(county.app, sids[6], "undelivered", "30006")
        assert _count(MessageStatus.DELIVERED) == 6 and _count(MessageStatus.FAILED) == 1
        undeliverable = db.session.scalar(
            select(SmsMessage.member_id).where(SmsMessage.provider_sid == sids[6])
        )
        task = db.session.scalar(select(ContactTask).where(ContactTask.member_id == undeliverable))
        assert task is not None and task.reason is ContactReason.NOT_DELIVERED

        # One member passes before the follow-up.
        passed = db.session.scalar(
            select(ProofOfLifeMonth).where(
                ProofOfLifeMonth.member_id == members[1], ProofOfLifeMonth.month == county.month
            )
        )
        assert passed is not None
        passed.status = MonthStatus.PASSED
        db.session.commit()

        follow = campaign.remind(county.month, now=at.follow_up)
        assert follow.queued == 5  # not the passed, the undeliverable, nor the phoneless
        tasks.enqueue_sending()
        _wait_until(
            lambda: _count(MessageStatus.SENT, MessageKind.FOLLOW_UP) == 5, worker, seconds=90
        )
        assert len(fake.sent) == 12

        closed = campaign.close(county.month, now=at.closes)
        assert closed.missed == 7 and closed.suspended == 7 and closed.payable == 1
        statuses = db.session.scalars(
            select(PaymentMonth.status).where(PaymentMonth.month == county.month)
        ).all()
        assert sorted(statuses) == [PaymentStatus.PAYABLE] + [PaymentStatus.SUSPENDED] * 7
        assert len(fake.received) == 12  # nothing was ever sent twice
        db.session.remove()


def test_a_worker_killed_mid_send_sends_nothing_twice_and_loses_nothing(
    databases: DatabaseFactory,
    tmp_path: Path,
    httpserver: HTTPServer,
    fake: FakeTwilio,
    stop_workers: list[subprocess.Popen[bytes]],
) -> None:
    county = _county(databases, tmp_path, httpserver, "campaign_kill", 12)
    fake.delay_s = 0.4  # Twilio has each message well before the worker hears back
    with county.app.app_context():
        _recipients(20)
        at = campaign.moments(county.month)
        assert campaign.open_month(county.month, now=at.opens + timedelta(hours=9)).queued == 20
        first = county.worker()
        stop_workers.append(first)
        tasks.enqueue_sending()
        _wait_until(lambda: len(fake.sent) >= 6, first, seconds=90)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        db.session.rollback()
        assert _count(MessageStatus.SENT) < 20  # it died with work left

        second = county.worker()
        stop_workers.append(second)
        _wait_until(lambda: _count(MessageStatus.SENT) == 20, second, seconds=120, nudge=True)

        sent_to = sorted(m["to"] for m in fake.sent)
        assert sent_to == sorted(set(sent_to)) and len(sent_to) == 20  # once each
        rows = dict(db.session.execute(select(SmsMessage.to_phone, SmsMessage.provider_sid)).all())
        assert {m["to"]: m["sid"] for m in fake.sent} == rows  # every row knows its SID
        # The messages the first worker had claimed were looked up before any resend.
        assert fake.lookups >= 1
        db.session.remove()
    redis.Redis.from_url(county.broker).flushdb()
