"""Input at the edge: ids, counts, dates, months and text, checked where a request comes
in (path, query string, form, JSON body, OpenRosa XML) so that nothing a client sends
reaches a query or a flush it cannot survive (docs/decisions/0004-edge-converters.md).

Three faces of one set of limits:

- URL converters, registered on the app: ``<id:name>`` (a row id), ``<token:name>``
  (``A-Z a-z 0-9 _ -``, at most 64) and the default ``<name>`` without NUL. A path
  part outside them does not match the route: 404, the same answer as a missing row.
- Query-string and form helpers (``query_int``, ``query_month``, ``query_date``,
  ``query_enum``; ``parse_id``, ``parse_int``, ``parse_date``): a bad value is an
  :class:`InvalidParameter` (400) naming the parameter.
- Pydantic types for bodies (``DbId``, ``ByteCount``, ``SaneDate``, ``SaneDatetime``,
  ``Text``): a bad value is a 422 naming the field, like every other validation error.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from enum import Enum
from typing import Annotated, Any, ClassVar, TypeVar

from flask import Flask, request
from flask_babel import gettext as _
from pydantic import AwareDatetime, Field, StringConstraints
from werkzeug.routing import BaseConverter, Map, UnicodeConverter, ValidationError

from server.errors import DomainError, ValidationFailed

# Every id and count column is an INTEGER: on PostgreSQL at most 2**31-1 (SQLite holds
# 2**63-1, but both databases must answer alike, so the smaller one is the limit).
DB_INT_MAX = 2**31 - 1
# Dates a person or a device can mean: birth dates, visit times, months.
MIN_YEAR = 1900
MAX_YEAR = 2100
MIN_DATE = date(MIN_YEAR, 1, 1)
MAX_DATE = date(MAX_YEAR, 12, 31)
# Aware datetimes are compared in UTC; a day's margin keeps every offset (±14 h) in range.
MIN_DATETIME = datetime(MIN_YEAR, 1, 2, tzinfo=UTC)
MAX_DATETIME = datetime(MAX_YEAR, 12, 30, tzinfo=UTC)
TOKEN_MAX = 64

_DIGITS = re.compile(r"[0-9]{1,20}")
_MONTH = re.compile(r"([0-9]{4})-(0[1-9]|1[0-2])")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# PostgreSQL refuses NUL in text; nothing a person types contains it.
NO_NUL = r"^[^\x00]*$"


class InvalidParameter(DomainError):
    """A query-string or form value that is not what the parameter takes."""

    code = "invalid_parameter"
    http_status = 400


# --------------------------------------------------------------------------- plain values


def parse_id(text: str | None) -> int | None:
    """A row id written in ASCII digits, 1..DB_INT_MAX; None for anything else."""
    if text is None or not _DIGITS.fullmatch(text):
        return None
    value = int(text)
    return value if 1 <= value <= DB_INT_MAX else None


def parse_int(text: str | None, minimum: int, maximum: int) -> int | None:
    """A whole number in ASCII digits (an optional leading minus), within the bounds."""
    if text is None:
        return None
    digits = text[1:] if text.startswith("-") else text
    if not _DIGITS.fullmatch(digits):
        return None
    value = int(text)
    return value if minimum <= value <= maximum else None


def parse_month(text: str | None) -> str | None:
    """A month ``YYYY-MM`` within MIN_YEAR..MAX_YEAR, or None."""
    match = _MONTH.fullmatch(text or "")
    if match is None or not MIN_YEAR <= int(match.group(1)) <= MAX_YEAR:
        return None
    return match.group(0)


def parse_date(text: str | None) -> date | None:
    """A date ``YYYY-MM-DD`` within MIN_DATE..MAX_DATE, or None."""
    if text is None or not _DATE.fullmatch(text):
        return None
    try:
        value = date.fromisoformat(text)
    except ValueError:
        return None
    return value if MIN_DATE <= value <= MAX_DATE else None


def has_nul(text: str) -> bool:
    return "\x00" in text


# --------------------------------------------------------------------------- query string


def query_int(name: str, default: int, *, minimum: int = 1, maximum: int = DB_INT_MAX) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    value = parse_int(raw.strip(), minimum, maximum)
    if value is None:
        raise InvalidParameter(
            _(
                "%(name)s must be a whole number from %(minimum)s to %(maximum)s.",
                name=name,
                minimum=minimum,
                maximum=maximum,
            ),
            parameter=name,
        )
    return value


def query_month(name: str, default: str) -> str:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    month = parse_month(raw.strip())
    if month is None:
        raise InvalidParameter(
            _(
                "%(name)s must be a month such as 2026-11, between %(first)s and %(last)s.",
                name=name,
                first=MIN_YEAR,
                last=MAX_YEAR,
            ),
            parameter=name,
        )
    return month


def query_date(name: str) -> date | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    value = parse_date(raw.strip())
    if value is None:
        raise InvalidParameter(
            _(
                "%(name)s must be a date such as 2026-11-23, between %(first)s and %(last)s.",
                name=name,
                first=MIN_DATE.isoformat(),
                last=MAX_DATE.isoformat(),
            ),
            parameter=name,
        )
    return value


E = TypeVar("E", bound=Enum)


def query_enum(name: str, enum: type[E]) -> E | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    try:
        return enum(raw)
    except ValueError:
        raise InvalidParameter(
            _("%(name)s must be one of %(values)s.", name=name, values=_values(enum)),
            parameter=name,
        ) from None


def _values(enum: type[Enum]) -> str:
    return ", ".join(str(member.value) for member in enum)


# --------------------------------------------------------------------------- URL converters


class IdConverter(BaseConverter):
    """``<id:name>``: a row id. Leading zeros, signs and numbers past DB_INT_MAX do not
    match, so the route answers 404 as for an id that does not exist."""

    regex = r"[1-9][0-9]{0,9}"
    # For the OpenAPI document (mobile_api/openapi.py).
    json_schema: ClassVar[dict[str, Any]] = {"type": "integer", "minimum": 1, "maximum": DB_INT_MAX}

    def to_python(self, value: str) -> int:
        number = int(value)
        if number > DB_INT_MAX:
            raise ValidationError()
        return number

    def to_url(self, value: Any) -> str:
        return str(int(value))


class TokenConverter(BaseConverter):
    """``<token:name>``: an opaque identifier (session ids, photo ids)."""

    regex = rf"[A-Za-z0-9_-]{{1,{TOKEN_MAX}}}"
    json_schema: ClassVar[dict[str, Any]] = {"type": "string", "pattern": f"^{regex}$"}


class IndexConverter(BaseConverter):
    """``<index:name>``: a small position (0-99), such as a guided session's step."""

    regex = r"[0-9]{1,2}"
    json_schema: ClassVar[dict[str, Any]] = {"type": "integer", "minimum": 0, "maximum": 99}

    def to_python(self, value: str) -> int:
        return int(value)

    def to_url(self, value: Any) -> str:
        return str(int(value))


class TextConverter(UnicodeConverter):
    """The default ``<name>`` (and ``<string:name>``, with its length options): any path
    part without a NUL, which PostgreSQL refuses in text."""

    def __init__(self, map: Map, *args: Any, **kwargs: Any) -> None:
        super().__init__(map, *args, **kwargs)
        self.regex = self.regex.replace("[^/]", r"[^/\x00]", 1)

    # For the OpenAPI document: one path segment, never a slash nor a NUL.
    json_schema: ClassVar[dict[str, Any]] = {"type": "string", "pattern": "^[^/\\x00]+$"}


def register_converters(app: Flask) -> None:
    """Before any blueprint: rules pick their converters when they are added."""
    app.url_map.converters.update(
        id=IdConverter,
        token=TokenConverter,
        index=IndexConverter,
        default=TextConverter,
        string=TextConverter,
    )


def refuse_nul(app: Flask) -> None:
    """NUL in a query string or a form field is refused before any view reads it."""

    @app.before_request
    def _no_nul() -> None:
        fields = [request.args]
        if request.mimetype == "application/x-www-form-urlencoded":
            fields.append(request.form)
        for values in fields:
            for key, value in values.items(multi=True):
                if has_nul(key) or has_nul(value):
                    raise InvalidParameter(
                        _("%(name)s holds a NUL character.", name=key.replace("\x00", "")),
                        parameter=key.replace("\x00", ""),
                    )


# --------------------------------------------------------------------------- body types

DbId = Annotated[int, Field(ge=1, le=DB_INT_MAX)]
ByteCount = Annotated[int, Field(ge=1, le=DB_INT_MAX)]
SaneDate = Annotated[date, Field(ge=MIN_DATE, le=MAX_DATE)]
SaneDatetime = Annotated[AwareDatetime, Field(ge=MIN_DATETIME, le=MAX_DATETIME)]
# Text without NUL; give the length where it is used: ``Annotated[Text, Field(max_length=n)]``.
Text = Annotated[str, StringConstraints(pattern=NO_NUL)]


def init_app(app: Flask) -> None:
    register_converters(app)
    refuse_nul(app)


# --------------------------------------------------------------------------- reasons

MAX_REASON_LENGTH = 500  # characters of a decision's written reason


def written_reason(reason: str | None, action: str) -> str | None:
    """A decision's reason, stripped (None when empty); ValidationFailed (field
    ``reason``, ``max_length``) when longer than MAX_REASON_LENGTH characters."""
    text = (reason or "").strip()
    if len(text) > MAX_REASON_LENGTH:
        raise ValidationFailed(
            f"a reason is at most {MAX_REASON_LENGTH} characters",
            field="reason",
            action=action,
            max_length=MAX_REASON_LENGTH,
            length=len(text),
        )
    return text or None
