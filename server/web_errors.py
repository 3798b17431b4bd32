"""Errors mapped once per audience: JSON envelope under /api/, HTML pages elsewhere.

An error answer can never itself fail: the database session is rolled back first (a
failed flush leaves it unusable, and the page's frame reads the logged-in user through
it), and when the page or the envelope still cannot be built (the database is down, a
template or a translation is broken, a detail does not serialize) the answer is a
minimal one built from constants: plain text for a page, a bare envelope for the API.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from flask import Flask, Response, current_app, jsonify, make_response, render_template, request
from flask_limiter import RateLimitExceeded
from werkzeug.exceptions import HTTPException, InternalServerError, RequestEntityTooLarge
from werkzeug.http import HTTP_STATUS_CODES

from server.errors import DomainError
from server.extensions import db
from server.labels import error_message, http_error_message
from server.rate_limits import retry_after_seconds, wait_message
from server.storage import TooLarge
from server.wire import Output

logger = logging.getLogger(__name__)

Answer = Response | tuple[str, int]


def wants_json() -> bool:
    return request.path.startswith("/api/")


class ErrorDetailOut(Output):
    code: str
    message: str
    details: dict[str, Any]


class ErrorOut(Output):
    """Every error under /api/ (docs/api.md)."""

    error: ErrorDetailOut


def error_envelope(
    code: str, message: str, status: int, details: dict[str, Any] | None = None
) -> Response:
    body = ErrorOut(error=ErrorDetailOut(code=code, message=message, details=details or {}))
    response = jsonify(body.dump())
    response.status_code = status
    return response


def minimal_envelope(code: str, message: str, status: int) -> Response:
    """The envelope from plain strings, ASCII-escaped: nothing in it can fail to encode."""
    body = json.dumps({"error": {"code": str(code), "message": str(message), "details": {}}})
    return Response(body, status=status, mimetype="application/json")


def plain_page(status: int) -> Response:
    reason = HTTP_STATUS_CODES.get(status, "Error")
    return Response(f"{status} {reason}\n", status=status, mimetype="text/plain")


def rollback_quietly() -> None:
    try:
        db.session.rollback()
    except Exception:
        logger.warning("could not roll back before an error answer", exc_info=True)


def answer_safely(
    build: Callable[[], Answer], fallback: Callable[[], Response], status: int
) -> Answer:
    """``build()``, after a rollback; ``fallback()`` if building fails in any way."""
    rollback_quietly()
    try:
        return build()
    except Exception:
        logger.exception("the %s answer itself failed on %s", status, request.path)
    try:
        return fallback()
    except Exception:  # pragma: no cover - built from constants
        logger.exception("the minimal %s answer failed", status)
        return Response(b"error\n", status=status, mimetype="text/plain")


def _page(status: int, message: str | None) -> tuple[str, int]:
    if request.blueprint == "public":
        # Their own frame, rendered without the session (server.public.views).
        template = current_app.jinja_env.get_template("public/error.html")
        return template.render(request=request, code=status, message=message), status
    return render_template("error.html", code=status, message=message), status


def _answer(status: int, code: str, message: str, page: Callable[[], Answer]) -> Answer:
    if wants_json():
        return answer_safely(
            lambda: error_envelope(code, message, status),
            lambda: minimal_envelope(code, message, status),
            status,
        )
    return answer_safely(page, lambda: plain_page(status), status)


def register(
    app: Flask, other_formats: Mapping[str, Callable[[int, str], Response]] | None = None
) -> None:
    """``other_formats``: path prefix -> answer for the requests under it that match no
    route (a blueprint's own handlers answer those that do), e.g. OpenRosa's XML."""
    prefixes = dict(other_formats or {})

    @app.errorhandler(DomainError)
    def _domain_error(exc: DomainError) -> Answer:
        status = exc.http_status

        def envelope() -> Response:
            response = error_envelope(exc.code, exc.message, status, exc.details)
            if status == 401:
                response.headers["WWW-Authenticate"] = 'Bearer realm="dibao"'
            return response

        if wants_json():
            return answer_safely(
                envelope, lambda: minimal_envelope(exc.code, exc.message, status), status
            )
        return answer_safely(
            lambda: (
                render_template("error.html", code=status, message=error_message(exc)),
                status,
            ),
            lambda: plain_page(status),
            status,
        )

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Answer:
        status = exc.code or 500
        code = (exc.name or "error").lower().replace(" ", "_")
        message = exc.description or exc.name
        for prefix, answer in prefixes.items():
            if request.path.startswith(prefix):
                return answer_safely(
                    partial(answer, status, message), partial(plain_page, status), status
                )
        default = type(exc).description
        return _answer(
            status,
            code,
            message,
            lambda: _page(status, http_error_message(status, exc.description, default)),
        )

    @app.errorhandler(RateLimitExceeded)
    def _rate_limited(exc: RateLimitExceeded) -> Response:
        seconds = retry_after_seconds(exc)
        message = wait_message(seconds)
        if wants_json():
            response = error_envelope("rate_limited", message, 429, {"retry_after": seconds})
        else:
            response = make_response(_page(429, message))
        response.headers["Retry-After"] = str(seconds)
        return response

    @app.errorhandler(TooLarge)
    def _too_large(exc: TooLarge) -> Answer:
        return _http_error(RequestEntityTooLarge(f"a photo is too large: {exc}"))

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Answer:
        logger.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
        default = InternalServerError.description
        return _answer(
            500,
            "internal_error",
            "internal server error",
            lambda: _page(500, http_error_message(500, None, default)),
        )
