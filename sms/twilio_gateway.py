"""Twilio, through the official ``twilio`` library (the only module that imports it).

``TWILIO_API_BASE_URL``, when set, sends every request to that base URL instead of
https://api.twilio.com (tests point it at a local fake server; regional gateways). HTTP
timeouts are explicit: a connect timeout means nothing was sent (transient); a read
timeout means the request may have arrived (uncertain: look the message up first).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import requests
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from sms.gateway import Sent, TransientSmsError, UncertainSmsError, classify

TWILIO_API = "https://api.twilio.com"


class _HttpClient(TwilioHttpClient):
    """Twilio's HTTP client with a base-URL override and (connect, read) timeouts."""

    def __init__(self, base_url: str | None, connect_s: float, read_s: float) -> None:
        super().__init__(pool_connections=True)
        self._base = base_url.rstrip("/") if base_url else None
        # Passed as is to requests, which takes a (connect, read) pair.
        self.timeout = (connect_s, read_s)

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if self._base and url.startswith(TWILIO_API):
            url = self._base + url[len(TWILIO_API) :]
        return super().request(method, url, *args, **kwargs)


@dataclass(frozen=True)
class TwilioSettings:
    account_sid: str
    auth_token: str
    messaging_service_sid: str | None
    from_number: str | None
    status_callback: str
    api_base_url: str | None = None
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 15.0


class TwilioGateway:
    name = "twilio"

    def __init__(self, settings: TwilioSettings) -> None:
        if not (settings.messaging_service_sid or settings.from_number):
            raise ValueError("Twilio needs a Messaging Service SID or a From number")
        self.settings = settings
        self.client = Client(
            settings.account_sid,
            settings.auth_token,
            http_client=_HttpClient(
                settings.api_base_url, settings.connect_timeout_s, settings.read_timeout_s
            ),
        )

    def send(self, *, to: str, body: str) -> Sent:
        sender: dict[str, str] = (
            {"messaging_service_sid": self.settings.messaging_service_sid}
            if self.settings.messaging_service_sid
            else {"from_": self.settings.from_number or ""}
        )
        try:
            message = self.client.messages.create(
                to=to, body=body, status_callback=self.settings.status_callback, **sender
            )
        except TwilioRestException as exc:
            raise classify(code=exc.code, status=exc.status, message=str(exc.msg)) from exc
        except requests.exceptions.ConnectTimeout as exc:
            raise TransientSmsError("could not connect to Twilio in time") from exc
        except requests.exceptions.ConnectionError as exc:
            # A refused or dropped connection before an answer: if it broke after the
            # request went out, Twilio may have it, so treat it as uncertain.
            raise UncertainSmsError(f"connection to Twilio failed: {type(exc).__name__}") from exc
        except requests.exceptions.ReadTimeout as exc:
            raise UncertainSmsError("Twilio did not answer in time; the message may exist") from exc
        return Sent(sid=str(message.sid), status=str(message.status))

    def find_sent(self, *, to: str, body: str, since: date) -> Sent | None:
        try:
            messages = self.client.messages.list(to=to, date_sent_after=since, limit=100)
        except TwilioRestException as exc:
            raise classify(code=exc.code, status=exc.status, message=str(exc.msg)) from exc
        except requests.exceptions.RequestException as exc:
            raise TransientSmsError(f"could not ask Twilio: {type(exc).__name__}") from exc
        for message in messages:
            if message.body == body:
                return Sent(sid=str(message.sid), status=str(message.status))
        return None
