"""What the JSON API answers, as pydantic models (allow-lists).

A view builds its answer through an ``Output`` model and sends
``model.model_dump(mode="json")``: a field reaches the client only if the model names
it, and /api/openapi.json is generated from the same models (mobile_api/openapi.py), so
the document and the answers cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    PlainSerializer,
    WithJsonSchema,
)

from server.validation import DB_INT_MAX

# Ids and counts are bounded by what their INTEGER columns hold (server/validation.py).
DB_ID_MAX = DB_INT_MAX


class Output(BaseModel):
    """An answer's body: exactly these fields, every one always present (a field with a
    default is still sent, so the document lists it as required)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_serialization_defaults_required=True,
        populate_by_name=True,
    )

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


def _iso(value: datetime) -> str:
    return value.isoformat()


# An aware datetime sent as Python writes it (``2024-05-01T08:00:00+00:00``): the form
# the API has always answered, where pydantic would write ``Z``.
IsoDatetime = Annotated[
    AwareDatetime,
    PlainSerializer(_iso, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


# --- the operation registry ---------------------------------------------------------------
# Each /api view carries an ``Operation`` (the ``@operation(...)`` decorator, placed right
# under the route decorator); mobile_api/openapi.py walks the URL map and writes the
# document from these and from the models they name. Path parameters come from the
# route's converters (type, range), so they are not repeated here.

Security = Literal["device", "none", "either"]
BINARY: dict[str, Any] = {"type": "string", "format": "binary"}


@dataclass(frozen=True)
class Query:
    """A query-string parameter."""

    name: str
    schema: dict[str, Any]
    description: str
    required: bool = False


@dataclass(frozen=True)
class Part:
    """One part of a multipart/form-data body: a JSON schema for its value (a file part
    is ``{"type": "string", "format": "binary"}``), or a model sent as a JSON part."""

    schema: dict[str, Any] | type[BaseModel]
    description: str = ""
    required: bool = False


@dataclass(frozen=True)
class Multipart:
    parts: dict[str, Part]
    # Parts with names not listed (e.g. one file part per photo, named by its photo_id).
    other_parts: Part | None = None


@dataclass(frozen=True)
class Operation:
    summary: str
    description: str = ""
    security: Security = "device"
    query: tuple[Query, ...] = ()
    # A JSON body: one model, or several (any one of them: oneOf).
    json_body: type[BaseModel] | tuple[type[BaseModel], ...] | None = None
    multipart: Multipart | None = None
    # A raw body: its media types (the bytes are the content, e.g. a photo).
    raw_body: tuple[str, ...] = ()
    body_required: bool = True
    # Status -> the model of a JSON answer, or a description of an answer without a body.
    responses: dict[int, type[BaseModel] | str] = field(default_factory=dict)
    # Status -> when: every one is answered with the error envelope (ErrorOut).
    errors: dict[int, str] = field(default_factory=dict)
    etag: bool = False


V = TypeVar("V", bound=Callable[..., Any])


def operation(spec: Operation) -> Callable[[V], V]:
    """Describe a view in /api/openapi.json (put it right under the route decorator)."""

    def mark(view: V) -> V:
        view.openapi = spec  # type: ignore[attr-defined]
        return view

    return mark


def operation_of(view: Callable[..., Any]) -> Operation | None:
    spec = getattr(view, "openapi", None)
    return spec if isinstance(spec, Operation) else None
