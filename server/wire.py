"""What the JSON API answers, as pydantic models (allow-lists).

A view builds its answer through an ``Output`` model and sends
``model.model_dump(mode="json")``: a field reaches the client only if the model names
it, and /api/openapi.json is generated from the same models (mobile_api/openapi.py), so
the document and the answers cannot drift apart.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, PlainSerializer, WithJsonSchema


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
