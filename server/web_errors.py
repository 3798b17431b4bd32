"""Errors mapped once per audience: JSON envelope under /api/, HTML pages elsewhere."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, current_app, jsonify, render_template, request
from werkzeug.exceptions import HTTPException, InternalServerError, RequestEntityTooLarge

from server.errors import DomainError
from server.labels import error_message
from server.storage import TooLarge
from server.wire import Output

logger = logging.getLogger(__name__)


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


def _page(status: int, message: str | None) -> tuple[str, int]:
    if request.blueprint == "public":
        # Their own frame, rendered without the session (server.public.views).
        template = current_app.jinja_env.get_template("public/error.html")
        return template.render(request=request, code=status, message=message), status
    return render_template("error.html", code=status, message=message), status


def register(app: Flask) -> None:
    @app.errorhandler(DomainError)
    def _domain_error(exc: DomainError) -> Response | tuple[str, int]:
        if wants_json():
            response = error_envelope(exc.code, exc.message, exc.http_status, exc.details)
            if exc.http_status == 401:
                response.headers["WWW-Authenticate"] = 'Bearer realm="dibao"'
            return response
        page = render_template("error.html", code=exc.http_status, message=error_message(exc))
        return page, exc.http_status

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response | tuple[str, int]:
        status = exc.code or 500
        if wants_json():
            code = (exc.name or "error").lower().replace(" ", "_")
            return error_envelope(code, exc.description or exc.name, status)
        return _page(status, exc.description)

    @app.errorhandler(TooLarge)
    def _too_large(exc: TooLarge) -> Response | tuple[str, int]:
        return _http_error(RequestEntityTooLarge(f"a photo is too large: {exc}"))

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response | tuple[str, int]:
        logger.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
        if wants_json():
            return error_envelope("internal_error", "internal server error", 500)
        return _page(500, InternalServerError.description)
