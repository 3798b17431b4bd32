"""Several sending workers share one rate through the real local Redis: each worker (a
thread with its own app context, database session and limiter object, as a separate
process would have) sends through the real sender and the official twilio client to the
local fake Twilio, which records when each message arrives. All messages arrive once,
and no second holds more than the rate. With Redis unreachable a worker sends nothing
and says so without a phone number.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
from flask import Flask
from flask_migrate import upgrade
from pytest_httpserver import HTTPServer
from sqlalchemy import func, select
from werkzeug import Request, Response

import server as server_package
from server.cases.models import CaseState
from server.extensions import db
from server.monthly import cycle
from sms import sender, service, shared_rate
from sms.models import MessageStatus, SmsMessage
from tests import factories
from tests.conftest import DatabaseFactory, make_app
from tests.fake_twilio import ACCOUNT, SERVICE, TOKEN, FakeTwilio

pytestmark = pytest.mark.slow  # a few seconds of paced sending

REDIS = "redis://127.0.0.1:6379/14"
MONTH = "2026-12"
MORNING = datetime(2026, 12, 20, 2, 0, tzinfo=UTC)  # 10:00 local on the 20th
RATE = 4  # messages per second, for all workers together
WORKERS = 3
# Turns (1 + SLACK_S) / RATE apart: arrivals keep within RATE a second while the time from
# a turn to the fake server varies by less than this (threads, a busy test machine).
SLACK_S = 0.2
MESSAGES = 14


class TimedTwilio(FakeTwilio):
    """The fake Twilio, also noting when each POST arrived."""

    def __init__(self, server: HTTPServer) -> None:
        self.arrivals: list[float] = []
        super().__init__(server)

    def _create(self, request: Request) -> Response:
        with self.lock:
            self.arrivals.append(time.monotonic())
        return super()._create(request)


def busiest_second(arrivals: list[float]) -> int:
    """The most arrivals in any window [t, t + 1 s) starting at an arrival."""
    times = sorted(arrivals)
    return max(sum(1 for u in times if t <= u < t + 1.0) for t in times)


def _app(databases: DatabaseFactory, tmp_path: Path, fake_server: HTTPServer) -> Flask:
    region = tmp_path / "region.toml"
    region.write_text(
        (Path(server_package.__file__).parent / "region_default.toml").read_text("utf-8"),
        "utf-8",
    )
    application = make_app(
        databases.new("shared_rate"),
        tmp_path,
        SMS_BACKEND="twilio",
        TWILIO_ACCOUNT_SID=ACCOUNT,
        TWILIO_AUTH_TOKEN=TOKEN,
        TWILIO_MESSAGING_SERVICE_SID=SERVICE,
        TWILIO_API_BASE_URL=fake_server.url_for("/"),
        PUBLIC_BASE_URL="https://dibao.example.cn",
        SMS_RATE_PER_SECOND=RATE,
        SMS_RATE_REDIS_URL=REDIS,
        SMS_RATE_KEY=f"dibao:test:sms-rate:{uuid.uuid4().hex}",
        DIBAO_REGION_CONFIG=str(region),
    )
    with application.app_context():
        upgrade(directory=application.extensions["migrate"].directory)
        factories.base_data()
        for index in range(MESSAGES):
            household = factories.make_household(
                state=CaseState.APPROVED, head_phone=f"1380000{index:04d}"
            )
            household.members[0].proof_of_life_required = True
        db.session.commit()
        report = cycle.open_month(MONTH, now=MORNING)
        db.session.commit()
        assert report.queued >= MESSAGES
        db.session.remove()
    return application


def test_workers_sharing_the_limiter_never_exceed_the_rate_together(
    databases: DatabaseFactory,
    tmp_path: Path,
    httpserver: HTTPServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sender, "CLAIM_BATCH", 2)  # every worker gets messages to send
    fake = TimedTwilio(httpserver)
    application = _app(databases, tmp_path, httpserver)
    with application.app_context():
        assert isinstance(shared_rate.throttle(application.config), shared_rate.SharedThrottle)
        queued = db.session.scalar(
            select(func.count(SmsMessage.id)).where(SmsMessage.status == MessageStatus.QUEUED)
        )
        db.session.remove()
    errors: list[BaseException] = []
    sent: list[int] = []

    ready = threading.Barrier(WORKERS)

    def worker() -> None:
        try:
            with application.app_context():
                gateway = service.gateway()
                # A running worker's client is warm: the first request of a new one
                # (lazy imports, the connection) would arrive later than its turn.
                gateway.find_sent(to="+8613800000000", body="warm-up", since=MORNING.date())
                throttle = shared_rate.SharedThrottle(
                    REDIS, RATE, key=application.config["SMS_RATE_KEY"], slack_s=SLACK_S
                )
                ready.wait(timeout=30)
                count = 0
                # As the Celery task is queued again while messages are due: on SQLite
                # (no SKIP LOCKED) a worker that lost every row of a claim stops early.
                while True:
                    report = sender.send_due(
                        gateway, clock=lambda: MORNING, rate_per_s=RATE, throttle=throttle
                    )
                    count += report.sent
                    if not sender.due(MORNING):
                        break
                sent.append(count)
                db.session.remove()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    assert not any(thread.is_alive() for thread in threads)

    # Every message went out once, by several workers on PostgreSQL (SKIP LOCKED: each
    # claim takes rows no other worker holds; on SQLite one worker may win them all).
    assert len(sent) == WORKERS and sum(sent) == queued
    with application.app_context():
        postgresql = db.session.get_bind().dialect.name == "postgresql"
        db.session.remove()
    assert sum(1 for count in sent if count) >= (2 if postgresql else 1)
    assert len(fake.sent) == queued
    assert len({(m["to"], m["body"]) for m in fake.sent}) == queued
    with application.app_context():
        statuses = db.session.scalars(select(SmsMessage.status)).all()
        db.session.remove()
    assert set(statuses) == {MessageStatus.SENT}
    # No second held more than the rate, counted where the provider counts.
    assert busiest_second(fake.arrivals) <= RATE


def test_the_limiter_gives_turns_to_all_its_users_at_the_rate_in_total(
    databases: DatabaseFactory,
) -> None:
    key = f"dibao:test:sms-rate:{uuid.uuid4().hex}"
    # Two limiter objects (two workers) on one key: each turn is taken by one of them.
    first = shared_rate.SharedThrottle(REDIS, 2.0, key=key)
    second = shared_rate.SharedThrottle(REDIS, 2.0, key=key)
    assert first.take() == 0.0
    wait = second.take()  # the next turn is the interval away, for the other worker too
    assert 0.0 < wait <= (1 + shared_rate.SLACK_S) / 2.0
    assert first.take() > 0.0
    redis.Redis.from_url(REDIS).delete(key)


def test_an_unreachable_redis_sends_nothing_and_logs_no_number(
    databases: DatabaseFactory,
    tmp_path: Path,
    httpserver: HTTPServer,
) -> None:
    fake = TimedTwilio(httpserver)
    application = _app(databases, tmp_path, httpserver)
    sleeps: list[float] = []

    class Stop(Exception):
        pass

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 4:
            raise Stop

    # Nothing listens on port 1: every call fails to connect.
    down = shared_rate.SharedThrottle("redis://127.0.0.1:1/0", RATE, sleep=sleep)
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    logging.getLogger("sms.shared_rate").addHandler(handler)
    try:
        with application.app_context(), pytest.raises(Stop):
            sender.send_due(
                service.gateway(), clock=lambda: MORNING, rate_per_s=RATE, throttle=down
            )
        with application.app_context():
            db.session.remove()
    finally:
        logging.getLogger("sms.shared_rate").removeHandler(handler)
    assert fake.received == []
    assert sleeps == [0.5, 1.0, 2.0, 4.0]  # waiting longer each time, never sending
    text = "\n".join(record.getMessage() for record in records)
    assert "Redis unreachable" in text and len(records) == 4
    assert "1380000" not in text and "/m/" not in text
