"""Limits shared by several views, and how long a refused client must wait.

Failed logins are counted per username, tightly (``DIBAO_LOGIN_RATE_LIMIT``), and per
client address, loosely (``DIBAO_LOGIN_ADDRESS_RATE_LIMIT``): a township office puts
all its staff behind one address, and ten typos there must not lock everyone out. The
dashboard's login form and the tablets' ``/api/v1/auth/device-tokens`` draw on the same
two budgets, so guessing through both doubles nothing. Only failed logins (401) count.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

from flask import Response, current_app, request
from flask_babel import gettext as _
from flask_limiter import RateLimitExceeded

from server.extensions import limiter

F = TypeVar("F", bound=Callable[..., Any])


def _username_rate() -> str:
    return str(current_app.config["DIBAO_LOGIN_RATE_LIMIT"])


def _address_rate() -> str:
    return str(current_app.config["DIBAO_LOGIN_ADDRESS_RATE_LIMIT"])


def _failed(response: Response) -> bool:
    return response.status_code == 401


def login_username_key() -> str:
    """The username a login names (form field or JSON member), hashed: the counters'
    store never holds usernames, and a huge or odd value is still a short key."""
    name: Any = request.form.get("username")
    if name is None and request.is_json:
        payload = request.get_json(silent=True)
        name = payload.get("username") if isinstance(payload, dict) else None
    text = str(name or "").strip().lower()
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return "user:" + digest[:32]


def login_limits(view: F) -> F:
    """Both login budgets, for a view that answers 401 to a wrong password."""
    per_username = limiter.shared_limit(
        _username_rate,
        scope="login-username",
        key_func=login_username_key,
        methods=["POST"],
        deduct_when=_failed,
    )
    per_address = limiter.shared_limit(
        _address_rate, scope="login-address", methods=["POST"], deduct_when=_failed
    )
    return cast(F, per_address(per_username(view)))


def retry_after_seconds(exc: RateLimitExceeded) -> int:
    """Seconds until the limit that refused this request lets it through again."""
    expiry = max(1, int(exc.limit.limit.get_expiry()))
    current = limiter.current_limit
    if current is not None and current.breached:
        # The storage rounds the reset time up to a whole second: never more than the
        # limit's own window.
        return min(expiry, max(1, math.ceil(current.reset_at - time.time())))
    return expiry


def wait_message(seconds: int) -> str:
    return _("Too many requests. Please wait %(seconds)s seconds and try again.", seconds=seconds)


def login_wait_message(seconds: int) -> str:
    return _(
        "Too many failed logins. Please wait %(seconds)s seconds and try again.", seconds=seconds
    )
