"""Twilio's webhooks: delivery statuses and inbound messages.

Both answer 403 unless ``X-Twilio-Signature`` validates (twilio's RequestValidator,
with the account's auth token) against the URL rebuilt from ``PUBLIC_BASE_URL``: a
proxy in front of us that rewrites the host or the scheme cannot break it. Statuses only
move forward, so duplicate and out-of-order callbacks are harmless; an unknown message
id is acknowledged and ignored.
"""

from __future__ import annotations

import logging
from urllib.parse import urlparse
from xml.sax.saxutils import escape

from flask import Blueprint, Response, abort, current_app, request
from twilio.request_validator import RequestValidator, add_port, remove_port

from server import clock
from server.crypto import equal_secret
from server.extensions import csrf, db
from server.proof_of_life.models import ContactReason
from server.proof_of_life.service import contact_task
from server.region import region
from server.validation import parse_int
from sms import optouts
from sms.gateway import RECIPIENT_CODES, TRANSIENT_CODES
from sms.models import MessageStatus, SmsMessage
from sms.service import backoff

# Delivery failures with a transient code (30001, 30003, 30008...) are sent again,
# up to this many sends in all; then the caseworker gets a task.
DELIVERY_TRIES = 3

logger = logging.getLogger(__name__)

bp = Blueprint("sms_twilio", __name__, url_prefix="/sms/twilio")
csrf.exempt(bp)  # signed by Twilio, no cookies

# How far along each status is: a callback never moves a message backwards.
_RANK = {
    MessageStatus.QUEUED: 0,
    MessageStatus.UNCERTAIN: 0,
    MessageStatus.SENT: 1,
    MessageStatus.DELIVERED: 2,
    MessageStatus.FAILED: 2,
    MessageStatus.CANCELLED: 2,
}
_TWILIO_STATUS = {
    "accepted": MessageStatus.SENT,
    "queued": MessageStatus.SENT,
    "sending": MessageStatus.SENT,
    "sent": MessageStatus.SENT,
    "delivered": MessageStatus.DELIVERED,
    "undelivered": MessageStatus.FAILED,
    "failed": MessageStatus.FAILED,
}


def _require_signature() -> None:
    token = current_app.config.get("TWILIO_AUTH_TOKEN")
    signature = request.headers.get("X-Twilio-Signature", "")
    if not token or not signature:
        abort(403)
    url = urlparse(current_app.config["PUBLIC_BASE_URL"] + request.full_path.rstrip("?"))
    params = request.form.to_dict(flat=True)
    validator = RequestValidator(token)
    # As RequestValidator.validate: Twilio signs the URL with or without the default
    # port. Compared by the one helper every secret goes through (server.crypto).
    expected = [validator.compute_signature(u, params) for u in (remove_port(url), add_port(url))]
    if not any([equal_secret(e, signature) for e in expected]):
        abort(403)


def _error_code(raw: str) -> int | None:
    """Twilio's error codes are five digits; anything else is no code at all."""
    return parse_int(raw.strip(), 0, 99_999)


@bp.post("/status")
def status() -> Response:
    _require_signature()
    sid = request.form.get("MessageSid", "")
    new = _TWILIO_STATUS.get(request.form.get("MessageStatus", "").lower())
    message = (
        db.session.query(SmsMessage).filter_by(provider_sid=sid).one_or_none() if sid else None
    )
    if message is None or new is None:
        return Response(status=204)
    if _RANK[new] > _RANK[message.status]:
        now = clock.utcnow()
        message.status = new
        if new is MessageStatus.FAILED:
            message.error_code = _error_code(request.form.get("ErrorCode", ""))
            if message.error_code in TRANSIENT_CODES and message.attempts < DELIVERY_TRIES:
                # Accepted, then lost on the way (handset off, carrier trouble): the
                # recipient has nothing, so the same reminder is sent again later.
                message.status = MessageStatus.QUEUED
                message.provider_sid = None
                message.next_attempt_at = now + backoff(message.attempts + 1)
            elif message.error_code in RECIPIENT_CODES or message.error_code in TRANSIENT_CODES:
                # Not deliverable to this number: a caseworker follows up.
                contact_task(
                    member_id=message.member_id,
                    household_id=message.household_id,
                    month=message.month,
                    reason=ContactReason.NOT_DELIVERED,
                    now=now,
                    error_code=message.error_code,
                )
        if new is MessageStatus.DELIVERED:
            message.delivered_at = now
        db.session.commit()
    return Response(status=204)


STOP_WORDS = {"stop", "stopall", "unsubscribe", "cancel", "end", "quit", "退订", "td"}
START_WORDS = {"start", "yes", "unstop"}
HELP_WORDS = {"help", "info", "帮助"}


@bp.post("/inbound")
def inbound() -> Response:
    _require_signature()
    phone = request.form.get("From", "")
    word = request.form.get("Body", "").strip().lower()
    reply = None
    if word in STOP_WORDS:
        optouts.opt_out(phone, source="sms")
        reply = region().sms.stop_reply
    elif word in START_WORDS:
        optouts.opt_in(phone)
        reply = region().sms.start_reply
    elif word in HELP_WORDS:
        reply = region().sms.help_reply
    db.session.commit()
    body = f"<Message>{escape(reply)}</Message>" if reply else ""
    return Response(
        f'<?xml version="1.0" encoding="UTF-8"?><Response>{body}</Response>',
        mimetype="application/xml",
    )
