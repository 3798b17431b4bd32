"""Input and output schemas of the tablet API (allow-lists: unknown input fields
are ignored, output carries only what is listed here).
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal, TypeVar

from pydantic import Field, ValidationError

from server.cases.models import Relation
from server.errors import ValidationFailed
from server.proof_of_life.models import ContactReason
from server.validation import Text
from server.visits.queries import VisitKind
from server.visits.schemas import Input
from server.wire import IsoDatetime, Output


class DeviceLogin(Input):
    username: Annotated[Text, Field(min_length=1, max_length=64)]
    password: Annotated[Text, Field(min_length=1, max_length=256)]
    device_id: Annotated[Text, Field(min_length=1, max_length=100)]
    device_name: Annotated[Text, Field(max_length=100)] = ""


class AreaOut(Output):
    code: str
    name: str


class UserOut(Output):
    username: str
    role: Literal["caseworker"]
    area: AreaOut


class DeviceTokenOut(Output):
    """The device token: store it in the tablet's secure storage."""

    token: str = Field(description="store it in the tablet's secure storage")
    token_prefix: str = Field(description="names the token in `dibao devices revoke`")
    expires_at: IsoDatetime
    user: UserOut


class VersionOut(Output):
    """The API version and the server's time."""

    api_version: str
    server_time: IsoDatetime


class LimitsOut(Output):
    max_photo_bytes: int
    max_request_bytes: int
    recommended_batch_bytes: int


class DeviceOut(Output):
    device_id: str
    token_expires_at: IsoDatetime


class MetaOut(Output):
    """Upload limits, the server's time and this device's token."""

    api_version: str
    server_time: IsoDatetime
    limits: LimitsOut
    device: DeviceOut


class LocationOut(Output):
    lat: float
    lon: float


class DueMemberOut(Output):
    member_id: int
    name: str
    relation: Relation


class RevisitOut(Output):
    """The rejected visit a revisit item answers (kind ``revisit`` only)."""

    survey_id: int = Field(description="the rejected visit's id on the server")
    client_uuid: str = Field(description="the rejected visit's own client_uuid")
    visit_kind: Literal["initial_survey", "periodic_review", "assisted_proof_of_life"] = Field(
        description="upload the new visit with this kind"
    )
    finished_at: IsoDatetime
    rejected_at: IsoDatetime
    reason: str = Field(description="the reviewer's written reason, to show the caseworker")


class DueVisitOut(Output):
    household_id: int
    case_code: str
    kind: VisitKind
    due_by: date
    village: str
    village_code: str
    address: str
    location: LocationOut
    members: list[DueMemberOut]
    reasons: list[Literal["review", "missed", "assistance_requested"] | ContactReason] = Field(
        description="assisted_proof_of_life only: why (docs/api.md); [] for other kinds"
    )
    revisit: RevisitOut | None = Field(
        default=None, description="revisit only: the rejected visit and the reason; else null"
    )


class DueVisitsOut(Output):
    """The visits due, soonest first (with an ETag)."""

    items: list[DueVisitOut]


class FaceWarningOut(Output):
    code: str = Field(description="face_in_other_household or face_not_member")
    severity: str = Field(description="warning or critical (the band of the distance)")
    value: float | str | None = Field(description="the face distance")
    threshold: float | str | None = Field(description="the limit of the band")


class FaceTemplateOut(Output):
    """The template made from the photo."""

    face_template_id: int
    member_id: int
    model_name: str
    model_version: str
    warnings: list[FaceWarningOut]


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
