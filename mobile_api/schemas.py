"""Input and output schemas of the tablet API (allow-lists: unknown input fields
are ignored, output carries only what is listed here).
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from pydantic import Field, ValidationError

from server.errors import ValidationFailed
from server.validation import Text
from server.visits.schemas import Input


class DeviceLogin(Input):
    username: Annotated[Text, Field(min_length=1, max_length=64)]
    password: Annotated[Text, Field(min_length=1, max_length=256)]
    device_id: Annotated[Text, Field(min_length=1, max_length=100)]
    device_name: Annotated[Text, Field(max_length=100)] = ""


T = TypeVar("T", bound=Input)


def parse(schema: type[T], payload: Any) -> T:
    """Validate ``payload``; ValidationFailed names the first bad field."""
    if not isinstance(payload, dict):
        raise ValidationFailed("the request body must be a JSON object", field=None)
    try:
        return schema.model_validate(payload)
    except ValidationError as exc:
        errors = [
            {
                "field": ".".join(str(part) for part in error["loc"]),
                "problem": error["msg"],
            }
            for error in exc.errors()
        ]
        first = errors[0]
        raise ValidationFailed(
            f"{first['field']}: {first['problem']}", field=first["field"], errors=errors
        ) from exc
