"""A local fake Twilio (pytest-httpserver): POST Messages.json with scripted outcomes,
GET Messages.json to look a message up, both checking the account's Basic credentials.
Used by the adapter tests and the campaign tests (including a Celery worker in another
process that reaches it over HTTP through TWILIO_API_BASE_URL)."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

ACCOUNT = "AC" + "1" * 32
TOKEN = "fake-auth-token"
SERVICE = "MG" + "2" * 32
MESSAGES = f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json"
CALLBACK = "https://dibao.example.cn/sms/twilio/status"


def _authorised(request: Request) -> bool:
    expected = "Basic " + base64.b64encode(f"{ACCOUNT}:{TOKEN}".encode()).decode()
    return request.headers.get("Authorization") == expected


def _message(sid: str, to: str, body: str, status: str = "accepted") -> dict[str, Any]:
    return {
        "sid": sid,
        "account_sid": ACCOUNT,
        "messaging_service_sid": SERVICE,
        "to": to,
        "body": body,
        "status": status,
        "num_segments": "1",
        "error_code": None,
        "date_created": "Fri, 20 Nov 2026 01:00:00 +0000",
    }


class FakeTwilio:
    """Scripted answers to POST Messages.json, one per call; records what it got.

    ``delay_s``: every accepted message is recorded first, then answered this late (a
    sender killed during the wait leaves a message that exists but was never confirmed).
    """

    def __init__(self, server: HTTPServer) -> None:
        self.server = server
        self.script: list[tuple[int, dict[str, Any]] | float] = []
        self.received: list[dict[str, str]] = []
        self.sent: list[dict[str, Any]] = []
        self.delay_s = 0.0
        self.lookups = 0
        self.lock = threading.Lock()
        server.expect_request(MESSAGES, method="POST").respond_with_handler(self._create)
        server.expect_request(MESSAGES, method="GET").respond_with_handler(self._list)

    def _create(self, request: Request) -> Response:
        if not _authorised(request):
            return _error(401, 20003, "Authenticate")
        form = request.form.to_dict()
        with self.lock:
            self.received.append(form)
            outcome = self.script.pop(0) if self.script else (201, {})
        if isinstance(outcome, float):
            time.sleep(outcome)  # longer than the client's read timeout
            outcome = (201, {})
        status, extra = outcome
        if status != 201:
            return _error(status, extra["code"], extra.get("message", "error"))
        with self.lock:
            message = _message(f"SM{len(self.sent):032d}", form["To"], form["Body"])
            self.sent.append(message)
        if self.delay_s:
            time.sleep(self.delay_s)
        return Response(json.dumps(message), status=201, content_type="application/json")

    def _list(self, request: Request) -> Response:
        if not _authorised(request):
            return _error(401, 20003, "Authenticate")
        self.lookups += 1
        to = request.args.get("To")
        found = [m for m in self.sent if m["to"] == to]
        page = {
            "messages": found,
            "page": 0,
            "page_size": 100,
            "first_page_uri": MESSAGES,
            "next_page_uri": None,
            "previous_page_uri": None,
            "uri": MESSAGES,
        }
        return Response(json.dumps(page), status=200, content_type="application/json")


def _error(status: int, code: int, message: str) -> Response:
    body = {"code": code, "message": message, "more_info": "", "status": status}
    return Response(json.dumps(body), status=status, content_type="application/json")


@pytest.fixture
def fake(httpserver: HTTPServer) -> Iterator[FakeTwilio]:
    yield FakeTwilio(httpserver)
    httpserver.clear()
