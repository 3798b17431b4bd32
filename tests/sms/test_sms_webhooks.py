"""Twilio's webhooks: real HMAC signatures (twilio's RequestValidator), forged and
altered callbacks refused, statuses only forward, STOP / 退订 / START / HELP."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from server.cases.models import CaseState
from server.extensions import db
from sms import optouts
from sms.models import MessageKind, MessageStatus, SmsMessage, SmsOptOut
from tests import factories

TOKEN = "webhook-test-auth-token"
BASE = "https://dibao.example.cn"


@pytest.fixture
def twilio_app(app: Flask) -> Iterator[Flask]:
    saved = {k: app.config.get(k) for k in ("TWILIO_AUTH_TOKEN", "PUBLIC_BASE_URL")}
    app.config.update(TWILIO_AUTH_TOKEN=TOKEN, PUBLIC_BASE_URL=BASE)
    yield app
    app.config.update(saved)


def _signed(path: str, params: dict[str, str], token: str = TOKEN) -> dict[str, str]:
    return {"X-Twilio-Signature": RequestValidator(token).compute_signature(BASE + path, params)}


def _post(client: FlaskClient, path: str, params: dict[str, str], **kwargs: Any) -> Any:
    headers = kwargs.pop("headers", None) or _signed(path, params)
    # Behind a proxy the request arrives on another host and scheme: the signature is
    # checked against PUBLIC_BASE_URL, not against what the proxy made of it.
    return client.post(path, data=params, headers=headers, base_url="http://10.0.0.7:8000")


def _sent_message() -> int:
    household = factories.make_household(state=CaseState.APPROVED)
    message = SmsMessage(
        member_id=household.members[0].id,
        household_id=household.id,
        month="2026-11",
        kind=MessageKind.REMINDER,
        to_phone="+8613912345678",
        body="x",
        status=MessageStatus.SENT,
        provider="twilio",
        provider_sid="SM" + "a" * 32,
        sent_at=datetime(2026, 11, 20, 1, tzinfo=UTC),
    )
    db.session.add(message)
    db.session.commit()
    return message.id


def _status(message_id: int) -> SmsMessage:
    found = db.session.get(SmsMessage, message_id)
    assert found is not None
    return found


def test_statuses_only_move_forward_and_repeats_are_harmless(
    twilio_app: Flask, client: FlaskClient
) -> None:
    message_id = _sent_message()
    sid = "SM" + "a" * 32
    delivered = {"MessageSid": sid, "MessageStatus": "delivered", "AccountSid": "AC1"}
    assert _post(client, "/sms/twilio/status", delivered).status_code == 204
    assert _status(message_id).status is MessageStatus.DELIVERED
    assert _status(message_id).delivered_at is not None
    # Late and repeated callbacks change nothing.
    for late in ("sent", "queued", "delivered", "failed"):
        params = {"MessageSid": sid, "MessageStatus": late, "ErrorCode": "30003"}
        assert _post(client, "/sms/twilio/status", params).status_code == 204
    assert _status(message_id).status is MessageStatus.DELIVERED
    assert _status(message_id).error_code is None
    unknown = {"MessageSid": "SM" + "0" * 32, "MessageStatus": "delivered"}
    assert _post(client, "/sms/twilio/status", unknown).status_code == 204


def test_a_failed_delivery_records_its_code(twilio_app: Flask, client: FlaskClient) -> None:
    message_id = _sent_message()
    params = {"MessageSid": "SM" + "a" * 32, "MessageStatus": "undelivered", "ErrorCode": "30006"}
    assert _post(client, "/sms/twilio/status", params).status_code == 204
    assert (_status(message_id).status, _status(message_id).error_code) == (
        MessageStatus.FAILED,
        30006,
    )


def test_a_transient_delivery_failure_is_sent_again_then_handed_to_a_caseworker(
    twilio_app: Flask, client: FlaskClient
) -> None:
    from server.proof_of_life.models import ContactReason, ContactTask

    message_id = _sent_message()
    message = _status(message_id)
    message.attempts = 1
    db.session.commit()
    lost = {"MessageSid": "SM" + "a" * 32, "MessageStatus": "undelivered", "ErrorCode": "30003"}
    assert _post(client, "/sms/twilio/status", lost).status_code == 204
    again = _status(message_id)
    assert again.status is MessageStatus.QUEUED and again.provider_sid is None
    assert again.error_code == 30003 and again.next_attempt_at is not None
    assert db.session.scalars(select(ContactTask)).all() == []

    # The third send is lost too: no more tries, a caseworker takes over.
    again.status, again.provider_sid, again.attempts = MessageStatus.SENT, "SM" + "b" * 32, 3
    db.session.commit()
    lost["MessageSid"] = "SM" + "b" * 32
    assert _post(client, "/sms/twilio/status", lost).status_code == 204
    assert _status(message_id).status is MessageStatus.FAILED
    [task] = db.session.scalars(select(ContactTask)).all()
    assert task.reason is ContactReason.NOT_DELIVERED and task.error_code == 30003


def test_forged_altered_or_unsigned_callbacks_are_refused(
    twilio_app: Flask, client: FlaskClient
) -> None:
    message_id = _sent_message()
    params = {"MessageSid": "SM" + "a" * 32, "MessageStatus": "delivered"}
    forged = _signed("/sms/twilio/status", params, token="someone-elses-token")
    assert _post(client, "/sms/twilio/status", params, headers=forged).status_code == 403
    # A genuine signature replayed with one field changed.
    genuine = _signed("/sms/twilio/status", params)
    altered = {**params, "MessageStatus": "failed"}
    assert _post(client, "/sms/twilio/status", altered, headers=genuine).status_code == 403
    assert client.post("/sms/twilio/status", data=params).status_code == 403
    assert _status(message_id).status is MessageStatus.SENT
    # Signed for another path: refused too.
    other = _signed("/sms/twilio/inbound", params)
    assert _post(client, "/sms/twilio/status", params, headers=other).status_code == 403


def test_without_an_auth_token_every_callback_is_refused(app: Flask, client: FlaskClient) -> None:
    params = {"MessageSid": "SM1", "MessageStatus": "delivered"}
    assert app.config.get("TWILIO_AUTH_TOKEN") in (None, "")
    assert _post(client, "/sms/twilio/status", params).status_code == 403


@pytest.mark.parametrize("word", ["STOP", "退订", " stop "])
def test_stop_records_an_opt_out_by_hash_and_start_lifts_it(
    twilio_app: Flask, client: FlaskClient, word: str
) -> None:
    stop = {"From": "+8613912345678", "Body": word}
    response = _post(client, "/sms/twilio/inbound", stop)
    assert response.status_code == 200 and response.mimetype == "application/xml"
    assert "<Response>" in response.get_data(as_text=True)
    assert optouts.is_opted_out("13912345678") and optouts.is_opted_out("+86 139 1234 5678")
    [row] = db.session.scalars(select(SmsOptOut)).all()
    assert "13912345678" not in row.phone_hash
    start = {"From": "+8613912345678", "Body": "START"}
    assert _post(client, "/sms/twilio/inbound", start).status_code == 200
    assert not optouts.is_opted_out("13912345678")


def test_help_answers_with_the_offices_phone(twilio_app: Flask, client: FlaskClient) -> None:
    for word in ("HELP", "帮助"):
        reply = _post(client, "/sms/twilio/inbound", {"From": "+8613900000000", "Body": word})
        text = reply.get_data(as_text=True)
        assert "<Message>" in text
        assert twilio_app.config["REGION"].sms.office_phone in text
    other = _post(client, "/sms/twilio/inbound", {"From": "+8613900000000", "Body": "你好"})
    assert "<Message>" not in other.get_data(as_text=True)
