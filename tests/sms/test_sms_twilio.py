"""The Twilio adapter: the official twilio client talking HTTP to a local fake Twilio
(pytest-httpserver) that checks the account's credentials and the form fields, and
answers with scripted outcomes."""

from __future__ import annotations

import time
from datetime import date

import pytest
from pytest_httpserver import HTTPServer

from sms.gateway import (
    ProviderConfigError,
    RecipientSmsError,
    TransientSmsError,
    UncertainSmsError,
    classify,
)
from sms.twilio_gateway import TwilioGateway, TwilioSettings
from tests.fake_twilio import ACCOUNT, CALLBACK, SERVICE, TOKEN, FakeTwilio


def _gateway(server: HTTPServer, *, token: str = TOKEN, read_s: float = 2.0) -> TwilioGateway:
    return TwilioGateway(
        TwilioSettings(
            account_sid=ACCOUNT,
            auth_token=token,
            messaging_service_sid=SERVICE,
            from_number=None,
            status_callback=CALLBACK,
            api_base_url=server.url_for("/"),
            connect_timeout_s=2.0,
            read_timeout_s=read_s,
        )
    )


def test_a_message_is_sent_with_the_service_the_callback_and_the_accounts_credentials(
    httpserver: HTTPServer, fake: FakeTwilio
) -> None:
    sent = _gateway(httpserver).send(to="+8613912345678", body="【民政局】请完成本月认证")
    assert sent.sid.startswith("SM") and sent.status == "accepted"
    [form] = fake.received
    assert form == {
        "To": "+8613912345678",
        "Body": "【民政局】请完成本月认证",
        "MessagingServiceSid": SERVICE,
        "StatusCallback": CALLBACK,
    }


def test_a_from_number_is_used_when_there_is_no_messaging_service(
    httpserver: HTTPServer, fake: FakeTwilio
) -> None:
    gateway = TwilioGateway(
        TwilioSettings(
            account_sid=ACCOUNT,
            auth_token=TOKEN,
            messaging_service_sid=None,
            from_number="+15005550006",
            status_callback=CALLBACK,
            api_base_url=httpserver.url_for("/"),
        )
    )
    gateway.send(to="+8613912345678", body="x")
    assert fake.received[0]["From"] == "+15005550006"
    assert "MessagingServiceSid" not in fake.received[0]
    with pytest.raises(ValueError, match="Messaging Service SID or a From number"):
        TwilioGateway(TwilioSettings(ACCOUNT, TOKEN, None, None, CALLBACK, httpserver.url_for("/")))


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [
        (400, 21211, RecipientSmsError),  # invalid number
        (400, 21610, RecipientSmsError),  # unsubscribed (STOP)
        (400, 21614, RecipientSmsError),  # not a mobile number
        (429, 20429, TransientSmsError),  # too many requests
        (500, 20500, TransientSmsError),  # Twilio's own failure
        (503, 20503, TransientSmsError),
        (400, 21606, ProviderConfigError),  # our From number cannot send: an operator looks
    ],
)
def test_each_refusal_is_classified(
    httpserver: HTTPServer, fake: FakeTwilio, status: int, code: int, error: type[Exception]
) -> None:
    fake.script.append((status, {"code": code, "message": f"error {code}"}))
    with pytest.raises(error) as caught:
        _gateway(httpserver).send(to="+8613912345678", body="x")
    assert getattr(caught.value, "code", None) == code
    assert getattr(caught.value, "status", None) == status
    assert fake.sent == []


def test_wrong_credentials_are_a_configuration_error_not_the_recipients(
    httpserver: HTTPServer, fake: FakeTwilio
) -> None:
    with pytest.raises(ProviderConfigError) as caught:
        _gateway(httpserver, token="wrong").send(to="+8613912345678", body="x")
    assert caught.value.code == 20003
    assert fake.received == []


@pytest.mark.slow
def test_a_read_timeout_is_uncertain_and_the_message_is_found_before_any_resend(
    httpserver: HTTPServer, fake: FakeTwilio
) -> None:
    fake.script.append(1.5)  # Twilio accepts it, but answers after the client gave up
    gateway = _gateway(httpserver, read_s=0.5)
    with pytest.raises(UncertainSmsError):
        gateway.send(to="+8613912345678", body="reminder 42")
    time.sleep(1.2)  # the fake finishes handling the request
    found = gateway.find_sent(to="+8613912345678", body="reminder 42", since=date(2026, 11, 20))
    assert found is not None and found.sid == fake.sent[0]["sid"]
    assert gateway.find_sent(to="+8613912345678", body="other", since=date(2026, 11, 20)) is None
    assert len(fake.received) == 1  # nothing was sent twice


def test_nothing_listening_is_transient_or_uncertain_never_a_recipient_error() -> None:
    gateway = TwilioGateway(
        TwilioSettings(ACCOUNT, TOKEN, SERVICE, None, CALLBACK, "http://127.0.0.1:9", 0.5, 0.5)
    )
    with pytest.raises((TransientSmsError, UncertainSmsError)):
        gateway.send(to="+8613912345678", body="x")


def test_delivery_status_codes_classify_like_api_errors() -> None:
    assert isinstance(classify(code=30003, status=None, message="unreachable"), TransientSmsError)
    assert isinstance(classify(code=30006, status=None, message="landline"), RecipientSmsError)
    assert isinstance(classify(code=30005, status=None, message="unknown"), RecipientSmsError)
    assert isinstance(classify(code=30008, status=None, message="unknown"), TransientSmsError)
