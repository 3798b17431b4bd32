"""The outbox: the embedded default. Messages are kept in the database as sent by
"outbox" and listed by ``dibao sms outbox``; nothing leaves the machine."""

from __future__ import annotations

import secrets
from datetime import date

from sms.gateway import Sent


class OutboxGateway:
    name = "outbox"

    def send(self, *, to: str, body: str) -> Sent:
        return Sent(sid=f"OB{secrets.token_hex(16)}", status="sent")

    def find_sent(self, *, to: str, body: str, since: date) -> Sent | None:
        return None  # send() never fails, so nothing is ever uncertain
