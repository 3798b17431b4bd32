"""The SMS gateway port: what the campaign needs from a provider, and how a provider's
failures are classified. Adapters: ``sms/twilio_gateway.py`` (Twilio) and the outbox
(the embedded default: nothing leaves the machine).

Every failure is one of three kinds, because each needs a different answer:

- :class:`TransientSmsError`: try again later, with backoff (HTTP 429 and 5xx, Twilio
  20429, 30001, 30003, 30008, a connection that could not be made);
- :class:`RecipientSmsError`: this number cannot get our messages (21211 invalid number,
  21610 unsubscribed, 21614 not a mobile, 30005 unknown, 30006 landline or unreachable
  carrier): never retried, the caseworker gets a task instead;
- :class:`UncertainSmsError`: the request may have reached the provider (a read timeout
  after it was sent): before any resend, ask the provider whether the message exists,
  so that a reminder is never sent twice.

Anything else the provider refuses (bad credentials, a wrong sender) is a
:class:`ProviderConfigError`: not the recipient's fault, not retried blindly; an
operator must look.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Protocol

TRANSIENT_CODES = frozenset({20429, 30001, 30003, 30008})
RECIPIENT_CODES = frozenset({21211, 21610, 21614, 30005, 30006})


class SmsError(Exception):
    def __init__(self, message: str, *, code: int | None = None, status: int | None = None):
        super().__init__(message)
        self.code = code
        self.status = status


class TransientSmsError(SmsError):
    """Try again later."""


class RecipientSmsError(SmsError):
    """The number cannot receive our messages: never retry; a caseworker follows up."""


class UncertainSmsError(SmsError):
    """The provider may have the message: look it up before any resend."""


class ProviderConfigError(SmsError):
    """Our side is wrong (credentials, sender): stop and tell an operator."""


def classify(*, code: int | None, status: int | None, message: str) -> SmsError:
    """The error for a provider's answer (an API error, or a failed delivery status)."""
    if code in RECIPIENT_CODES:
        return RecipientSmsError(message, code=code, status=status)
    if code in TRANSIENT_CODES or status == 429 or (status is not None and status >= 500):
        return TransientSmsError(message, code=code, status=status)
    return ProviderConfigError(message, code=code, status=status)


@dataclass(frozen=True)
class Sent:
    """The provider's id for an accepted message and its first status."""

    sid: str
    status: str


class SmsGateway(Protocol):
    name: str

    def send(self, *, to: str, body: str) -> Sent:
        """Hand one message to the provider; raises an :class:`SmsError`."""
        ...

    def find_sent(self, *, to: str, body: str, since: date) -> Sent | None:
        """The message with this recipient and body sent on or after ``since``, if the
        provider has it (used after an :class:`UncertainSmsError`)."""
        ...
