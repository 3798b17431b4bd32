"""Sending a stored message exactly once: through the outbox, and through the real
Twilio client against the local fake Twilio (success, refusals, a lost answer)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.cli import ScriptInfo
from pytest_httpserver import HTTPServer
from sqlalchemy import text

from server.cases.models import CaseState
from server.cli import cli
from server.config import ConfigError, build_config
from server.extensions import db
from sms import service
from sms.models import MessageKind, MessageStatus, SmsMessage
from sms.outbox import OutboxGateway
from tests import factories
from tests.sms.test_sms_twilio import ACCOUNT, SERVICE, TOKEN, FakeTwilio, _gateway

NOW = datetime(2026, 11, 20, 1, 0, tzinfo=UTC)


def _message(app: Flask, kind: MessageKind = MessageKind.REMINDER) -> SmsMessage:
    household = factories.make_household(state=CaseState.APPROVED)
    head = household.members[0]
    message = SmsMessage(
        member_id=head.id,
        household_id=household.id,
        month="2026-11",
        kind=kind,
        to_phone="+8613912345678",
        body="【科尔沁区民政局】王*，请在11月25日前完成本月认证：https://x.cn/m/abc",
        created_at=NOW,
    )
    db.session.add(message)
    db.session.commit()
    return message


def test_the_outbox_keeps_the_message_encrypted_and_lists_it_masked(app: Flask) -> None:
    message = _message(app)
    service.send_message(message, OutboxGateway(), now=NOW)
    db.session.commit()
    assert message.status is MessageStatus.SENT and message.provider == "outbox"
    assert message.provider_sid is not None and message.attempts == 1
    raw = db.session.execute(text("SELECT to_phone, body FROM sms_messages")).one()
    assert b"13912345678" not in raw[0] and "认证".encode() not in raw[1]

    result = app.test_cli_runner().invoke(
        cli, ["sms", "outbox", "--month", "2026-11"], obj=ScriptInfo(create_app=lambda: app)
    )
    assert result.exit_code == 0, result.output
    assert "+86*******5678" in result.output and "13912345678" not in result.output
    assert "请在11月25日前完成本月认证" in result.output
    # A second send of the same row does nothing.
    service.send_message(message, OutboxGateway(), now=NOW)
    assert message.attempts == 1


def test_one_row_per_member_month_and_kind(app: Flask) -> None:
    message = _message(app)
    twin = SmsMessage(
        member_id=message.member_id,
        household_id=message.household_id,
        month="2026-11",
        kind=MessageKind.REMINDER,
        to_phone="+8613912345678",
        body="again",
    )
    db.session.add(twin)
    with pytest.raises(Exception, match=r"(?i)unique"):
        db.session.flush()
    db.session.rollback()


def test_twilio_success_then_refusals_each_land_where_they_should(
    app: Flask, httpserver: HTTPServer, fake: FakeTwilio
) -> None:
    gateway = _gateway(httpserver)
    ok = _message(app)
    service.send_message(ok, gateway, now=NOW)
    assert ok.status is MessageStatus.SENT and ok.provider_sid == fake.sent[0]["sid"]

    fake.script += [(400, {"code": 21211}), (429, {"code": 20429}), (400, {"code": 21606})]
    invalid = _message(app)
    service.send_message(invalid, gateway, now=NOW)
    assert (invalid.status, invalid.error_code, invalid.next_attempt_at) == (
        MessageStatus.FAILED,
        21211,
        None,
    )
    busy = _message(app)
    service.send_message(busy, gateway, now=NOW)
    assert busy.status is MessageStatus.QUEUED and busy.error_code == 20429
    assert busy.next_attempt_at == NOW + timedelta(seconds=30)
    misconfigured = _message(app)
    service.send_message(misconfigured, gateway, now=NOW)
    assert misconfigured.status is MessageStatus.QUEUED
    assert misconfigured.next_attempt_at == NOW + timedelta(minutes=15)
    assert len(fake.sent) == 1


@pytest.mark.slow
def test_a_lost_answer_is_looked_up_and_never_sent_twice(
    app: Flask, httpserver: HTTPServer, fake: FakeTwilio
) -> None:
    fake.script.append(1.5)  # accepted, but answered after the client gave up
    gateway = _gateway(httpserver, read_s=0.5)
    message = _message(app)
    service.send_message(message, gateway, now=NOW)
    assert message.status is MessageStatus.UNCERTAIN
    time.sleep(1.2)
    service.send_message(message, gateway, now=NOW + timedelta(minutes=1))
    assert message.status is MessageStatus.SENT
    assert message.provider_sid == fake.sent[0]["sid"]
    assert len(fake.received) == 1


def test_backoff_doubles_up_to_an_hour() -> None:
    assert [service.backoff(n).total_seconds() for n in (1, 2, 3, 4)] == [30, 60, 120, 240]
    assert service.backoff(30) == timedelta(hours=1)


def test_twilio_settings_are_checked_at_start(tmp_path: Any) -> None:
    base = {"SECRET_KEY": "s" * 40, "DIBAO_DATA_KEY": "a" * 43 + "="}
    with pytest.raises(ConfigError, match="SMS_BACKEND must be"):
        build_config(str(tmp_path), {**base, "SMS_BACKEND": "pigeon"})
    with pytest.raises(ConfigError, match="TWILIO_AUTH_TOKEN"):
        build_config(str(tmp_path), {**base, "SMS_BACKEND": "twilio", "TWILIO_ACCOUNT_SID": "AC1"})
    with pytest.raises(ConfigError, match="MESSAGING_SERVICE_SID or TWILIO_FROM_NUMBER"):
        build_config(
            str(tmp_path),
            {**base, "SMS_BACKEND": "twilio", "TWILIO_ACCOUNT_SID": "AC", "TWILIO_AUTH_TOKEN": "t"},
        )
    ok = build_config(
        str(tmp_path),
        {
            **base,
            "SMS_BACKEND": "Twilio",
            "TWILIO_ACCOUNT_SID": ACCOUNT,
            "TWILIO_AUTH_TOKEN": TOKEN,
            "TWILIO_MESSAGING_SERVICE_SID": SERVICE,
        },
    )
    assert ok["SMS_BACKEND"] == "twilio"
