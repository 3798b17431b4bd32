"""Domain errors. Each carries a stable machine-readable code; the web layer maps
them once per audience (JSON envelope for the API, an HTML page for the dashboard).
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    code = "domain_error"
    http_status = 400

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class IllegalTransition(DomainError):
    code = "illegal_transition"
    http_status = 409


class ReasonRequired(DomainError):
    code = "reason_required"
    http_status = 422


class NotPermitted(DomainError):
    """The actor's role may not do this."""

    code = "not_permitted"
    http_status = 403


class OutOfArea(DomainError):
    """The object lies outside the actor's area; shown as 'not found' so nothing leaks."""

    code = "not_found"
    http_status = 404


class ValidationFailed(DomainError):
    code = "validation_failed"
    http_status = 422
