"""What reviewers do with visits: read them (photos audited) and clear their flags."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from server import clock
from server.audit import service as audit
from server.auth.models import User
from server.auth.permissions import Capability, not_found, require, require_visible
from server.cases.models import Household
from server.errors import ReasonRequired
from server.extensions import db
from server.storage import blob_store
from server.validation import written_reason
from server.visits.models import Survey, SurveyFlag, SurveyPhoto
from server.visits.photos import sniff_content_type


def visits_of(household: Household) -> list[Survey]:
    return list(
        db.session.scalars(
            select(Survey)
            .where(Survey.household_id == household.id)
            .options(selectinload(Survey.photos), selectinload(Survey.flags))
            .order_by(Survey.finished_at.desc())
        )
    )


def clear_flag(actor: User, household: Household, flag_id: int, reason: str | None) -> SurveyFlag:
    """A reviewer has looked at the evidence and accepts the visit despite the flag."""
    flag = db.session.get(SurveyFlag, flag_id)
    if flag is not None and flag.survey.household_id != household.id:
        flag = None  # another case's flag, in the actor's area or not: "no such flag"
    flag = require_visible(actor, flag, lambda f: f.survey.household.village, "flag")
    require(
        actor,
        Capability.REVIEW_VISITS,
        "only township reviewers and county approvers clear flags",
    )
    reason = written_reason(reason, "clear_flag")
    if reason is None:
        raise ReasonRequired("clearing a flag needs a written reason", action="clear_flag")
    if flag.cleared_at is None:
        flag.cleared_at = clock.utcnow()
        flag.cleared_by_id = actor.id
        flag.clear_reason = reason
        audit.record(
            "visit.flag_cleared",
            actor=actor,
            object_type="survey_flag",
            object_id=flag.id,
            code=flag.code,
            survey_id=flag.survey_id,
        )
        db.session.flush()
    return flag


PHOTO_EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/heif": "heic"}


@dataclass(frozen=True)
class PhotoFile:
    path: Path
    content_type: str
    filename: str
    """ASCII only, built from the photo's id: never a name a client sent."""


def open_photo(actor: User, survey_photo_id: int, *, thumbnail: bool) -> PhotoFile:
    """The file of a visit photo for a staff member allowed to see it; audited."""
    photo = db.session.get(SurveyPhoto, survey_photo_id)
    if photo is not None and photo.received_at is None:
        photo = None  # announced by a manifest, never received: nothing to show
    photo = require_visible(actor, photo, lambda p: p.survey.household.village, "photo")
    require(actor, Capability.READ_VISIT_PHOTOS, "your role does not read visit photos")
    sha = photo.thumbnail_sha256 if thumbnail else photo.sha256
    if sha is None:
        raise not_found("photo")
    audit.record(
        "photo.read",
        actor=actor,
        object_type="survey_photo",
        object_id=photo.id,
        thumbnail=thumbnail,
    )
    db.session.flush()
    path = blob_store().path(sha)
    # Thumbnails are our own JPEGs; an original not inspected yet is typed by its bytes.
    content_type = "image/jpeg" if thumbnail else (photo.content_type or sniff_content_type(path))
    extension = PHOTO_EXTENSIONS.get(content_type, "bin")
    name = f"photo-{photo.id}-thumb.jpg" if thumbnail else f"photo-{photo.id}.{extension}"
    return PhotoFile(path, content_type, name)
