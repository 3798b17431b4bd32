"""Sending one stored message through a gateway, exactly once.

The message row exists before anything is sent (a unique member, month and kind), so a
crash leaves either a queued row (send it) or an uncertain one (ask the provider first);
a row is never sent twice. Services flush, never commit.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from flask import current_app

from server.extensions import db
from sms.gateway import (
    ProviderConfigError,
    RecipientSmsError,
    SmsGateway,
    TransientSmsError,
    UncertainSmsError,
)
from sms.models import MessageStatus, SmsMessage
from sms.outbox import OutboxGateway

logger = logging.getLogger(__name__)

BACKOFF_FIRST = timedelta(seconds=30)
BACKOFF_MAX = timedelta(hours=1)
CONFIG_RETRY = timedelta(minutes=15)


def gateway() -> SmsGateway:
    """The configured gateway (SMS_BACKEND)."""
    config = current_app.config
    if config["SMS_BACKEND"] == "outbox":
        return OutboxGateway()
    from sms.twilio_gateway import TwilioGateway, TwilioSettings

    return TwilioGateway(
        TwilioSettings(
            account_sid=config["TWILIO_ACCOUNT_SID"],
            auth_token=config["TWILIO_AUTH_TOKEN"],
            messaging_service_sid=config.get("TWILIO_MESSAGING_SERVICE_SID"),
            from_number=config.get("TWILIO_FROM_NUMBER"),
            status_callback=f"{config['PUBLIC_BASE_URL']}/sms/twilio/status",
            api_base_url=config.get("TWILIO_API_BASE_URL"),
        )
    )


def backoff(attempts: int) -> timedelta:
    """30 s, 1 min, 2 min, ... at most an hour."""
    delay: timedelta = BACKOFF_FIRST * (2 ** max(0, attempts - 1))
    return min(delay, BACKOFF_MAX)


def look_up(message: SmsMessage, sender: SmsGateway, *, now: datetime) -> bool | None:
    """For an uncertain message: does the provider have it? True (then it is recorded
    as sent), False (it never went out), None (could not ask: try again later)."""
    try:
        found = sender.find_sent(
            to=message.to_phone, body=message.body, since=message.created_at.date()
        )
    except TransientSmsError as exc:
        message.next_attempt_at = now + backoff(message.attempts)
        logger.warning("sms %s: could not check an uncertain send: %s", message.id, exc)
        db.session.flush()
        return None
    if found is None:
        return False
    _accepted(message, sender.name, found.sid, now)
    db.session.flush()
    return True


def send_message(
    message: SmsMessage, sender: SmsGateway, *, now: datetime, fresh: bool = False
) -> SmsMessage:
    """Hand a queued (or uncertain) message to the provider once; record what happened.

    ``fresh``: the sender has just claimed this queued row (marking it uncertain, in
    case it dies mid-request), so there is nothing to look up before sending.
    """
    if message.status not in (MessageStatus.QUEUED, MessageStatus.UNCERTAIN):
        return message  # already sent, delivered, failed or cancelled: nothing to do
    uncertain = message.status is MessageStatus.UNCERTAIN and not fresh
    if uncertain and look_up(message, sender, now=now) is not False:
        return message  # the provider has it, or we could not ask
    message.attempts += 1
    message.provider = sender.name
    try:
        sent = sender.send(to=message.to_phone, body=message.body)
    except RecipientSmsError as exc:
        message.status = MessageStatus.FAILED
        message.error_code = exc.code
        message.next_attempt_at = None
    except UncertainSmsError:
        message.status = MessageStatus.UNCERTAIN
        message.next_attempt_at = now + backoff(1)
    except TransientSmsError as exc:
        message.status = MessageStatus.QUEUED  # refused, so certainly not sent
        message.error_code = exc.code
        message.next_attempt_at = now + backoff(message.attempts)
    except ProviderConfigError as exc:
        message.status = MessageStatus.QUEUED
        message.error_code = exc.code
        message.next_attempt_at = now + CONFIG_RETRY
        logger.error("sms %s: the provider refused our request (code %s)", message.id, exc.code)
    else:
        _accepted(message, sender.name, sent.sid, now)
    db.session.flush()
    return message


def _accepted(message: SmsMessage, provider: str, sid: str, now: datetime) -> None:
    message.status = MessageStatus.SENT
    message.provider = provider
    message.provider_sid = sid
    message.sent_at = now
    message.next_attempt_at = None
    message.error_code = None
