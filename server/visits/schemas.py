"""The survey a tablet uploads (the contract in ../shared/docs/architecture.md),
validated field by field. Unknown fields are ignored; known ones must be right.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, model_validator

from server.validation import ByteCount, DbId, SaneDate, SaneDatetime, Text
from server.visits.models import SurveyStatus
from server.wire import Output

PHOTO_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
PhotoId = Annotated[str, Field(pattern=PHOTO_ID.pattern)]
Lat = Annotated[float, Field(ge=-90, le=90, allow_inf_nan=False)]
RelationName = Literal[
    "head", "spouse", "child", "parent", "grandchild", "grandparent", "sibling", "other"
]
Lon = Annotated[float, Field(ge=-180, le=180, allow_inf_nan=False)]


class Input(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)


class GpsIn(Input):
    lat: Lat
    lon: Lon
    accuracy_m: Annotated[float, Field(ge=0, le=100_000, allow_inf_nan=False)] | None = None
    altitude_m: Annotated[float, Field(ge=-1_000, le=10_000, allow_inf_nan=False)] | None = None
    fix_at: SaneDatetime | None = None
    provider: Annotated[Text, Field(max_length=20)] | None = None
    is_mock: bool = False


class TrackPointIn(Input):
    lat: Lat
    lon: Lon
    accuracy_m: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    at: SaneDatetime


class MemberIn(Input):
    member_id: DbId | None = None
    client_ref: Annotated[Text, Field(max_length=64)] | None = None
    name: Annotated[Text, Field(max_length=50)] | None = None
    id_number: Annotated[str, Field(pattern=r"^\d{17}[\dXx]$")] | None = None
    birth_date: SaneDate | None = None
    relation: (
        Literal[
            "head", "spouse", "child", "parent", "grandchild", "grandparent", "sibling", "other"
        ]
        | None
    ) = None
    able_to_work: bool | None = None
    monthly_income: Annotated[Decimal, Field(ge=0, max_digits=12, decimal_places=2)] | None = None
    phone: Annotated[str, Field(pattern=r"^1\d{10}$")] | None = None
    portrait_photo_id: PhotoId | None = None

    @model_validator(mode="after")
    def _identified(self) -> MemberIn:
        if self.member_id is None and not self.client_ref:
            raise ValueError("each member needs member_id or client_ref")
        return self


class PhotoIn(Input):
    photo_id: PhotoId
    kind: Literal["member_portrait", "housing", "document", "other"]
    member_ref: Annotated[Text, Field(max_length=64)] | None = None
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    bytes: ByteCount
    taken_at: SaneDatetime | None = None


class LocationIn(Input):
    lat: Lat
    lon: Lon


class NewHouseholdIn(Input):
    """An application taken at the home: the household is registered with the visit."""

    village_code: Annotated[Text, Field(min_length=1, max_length=20)]
    address: Annotated[Text, Field(min_length=1, max_length=200)]
    location: LocationIn | None = None  # the registered home; default: the visit's fix
    class_code: Annotated[Text, Field(min_length=1, max_length=8)]
    conflict_of_interest: bool = False
    conflict_note: Annotated[Text, Field(max_length=500)] | None = None
    special_case: bool = False


class SurveyIn(Input):
    client_uuid: UUID
    household_id: DbId | None = None
    new_household: NewHouseholdIn | None = None
    kind: Literal["initial_survey", "periodic_review", "assisted_proof_of_life"]
    started_at: SaneDatetime
    finished_at: SaneDatetime
    gps: GpsIn
    track: Annotated[list[TrackPointIn], Field(max_length=10_000)] = []
    members: Annotated[list[MemberIn], Field(max_length=30)] = []
    housing: dict[str, Any] = {}
    income: dict[str, Any] = {}
    photos: Annotated[list[PhotoIn], Field(max_length=60)] = []
    notes: Annotated[Text, Field(max_length=4000)] = ""

    @model_validator(mode="after")
    def _one_household(self) -> SurveyIn:
        if (self.household_id is None) == (self.new_household is None):
            raise ValueError("give household_id or new_household, not both and not neither")
        if self.new_household is not None:
            if self.kind != "initial_survey":
                raise ValueError("a new_household comes with an initial_survey")
            for index, member in enumerate(self.members):
                missing = [
                    name
                    for name in ("client_ref", "name", "id_number", "birth_date", "relation")
                    if getattr(member, name) in (None, "")
                ]
                if missing:
                    raise ValueError(
                        f"members.{index} of a new household needs {', '.join(missing)}"
                    )
            if [m.relation for m in self.members].count("head") != 1:
                raise ValueError("a new household needs exactly one member with relation head")
        return self

    @model_validator(mode="after")
    def _consistent(self) -> SurveyIn:
        ids = [p.photo_id for p in self.photos]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"photo_id used twice in photos: {', '.join(duplicates)}")
        for member in self.members:
            if member.portrait_photo_id and member.portrait_photo_id not in ids:
                raise ValueError(f"portrait_photo_id {member.portrait_photo_id!r} is not in photos")
        return self


class SurveyFlagOut(Output):
    code: str
    severity: Literal["info", "warning", "critical"]
    value: str | None
    threshold: str | None
    detail: str


class SurveyStatusOut(Output):
    """The answer to every survey request: its state, and the case it belongs to."""

    survey_id: int
    household_id: int
    case_code: str = Field(description="show it to the applicant (the public page)")
    client_uuid: Annotated[str, Field(json_schema_extra={"format": "uuid"})]
    status: SurveyStatus
    missing_photos: list[str] = Field(description="photo_ids still to send")
    flags: list[SurveyFlagOut]
