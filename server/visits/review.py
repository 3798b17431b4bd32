"""What reviewers do with visits: read them (photos audited), clear their flags, and
review them (received -> has issues / approved / rejected; a rejection sends the visit
back to its caseworker as a revisit, server/visits/queries.py)."""

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
from server.errors import IllegalTransition, ReasonRequired
from server.extensions import db
from server.storage import blob_store
from server.validation import written_reason
from server.visits.models import ReviewStatus, Survey, SurveyFlag, SurveyPhoto, VisitReview
from server.visits.photos import sniff_content_type


def visits_of(household: Household) -> list[Survey]:
    return list(
        db.session.scalars(
            select(Survey)
            .where(Survey.household_id == household.id)
            .options(
                selectinload(Survey.photos),
                selectinload(Survey.flags),
                selectinload(Survey.reviews).selectinload(VisitReview.actor),
            )
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


# The review's moves: from each state, where a reviewer may take a visit. Nothing goes
# back to "received"; an approval or a rejection can be changed (a back-check found
# something, a rejection was a mistake), always with its own row in the history.
REVIEW_MOVES: dict[ReviewStatus, frozenset[ReviewStatus]] = {
    ReviewStatus.RECEIVED: frozenset(
        {ReviewStatus.HAS_ISSUES, ReviewStatus.APPROVED, ReviewStatus.REJECTED}
    ),
    ReviewStatus.HAS_ISSUES: frozenset({ReviewStatus.APPROVED, ReviewStatus.REJECTED}),
    ReviewStatus.APPROVED: frozenset({ReviewStatus.HAS_ISSUES, ReviewStatus.REJECTED}),
    ReviewStatus.REJECTED: frozenset({ReviewStatus.HAS_ISSUES, ReviewStatus.APPROVED}),
}
# A reason in writing is needed to say a visit has issues or to reject it.
REASON_NEEDED = frozenset({ReviewStatus.HAS_ISSUES, ReviewStatus.REJECTED})


class OpenFlags(IllegalTransition):
    """Approving a visit whose flags are still open: clear them (or reject) first."""

    code = "visit_has_open_flags"


def review_moves(survey: Survey) -> list[ReviewStatus]:
    """Where a reviewer may take this visit from its current state (page order)."""
    allowed = REVIEW_MOVES[survey.shown_review_status]
    if survey.review_status is ReviewStatus.RECEIVED and survey.open_flags:
        allowed = allowed - {ReviewStatus.HAS_ISSUES}  # it has them already
    return [s for s in ReviewStatus if s in allowed]


def review_visit(
    actor: User,
    household: Household,
    survey_id: int,
    to: ReviewStatus | str,
    reason: str | None,
) -> Survey:
    """Move a visit's review: a township reviewer or county approver of an area that
    holds the visit's household, with a written reason to say it has issues or to
    reject it; approving needs its flags cleared first. Audited (``visit.reviewed``)
    and kept in the visit's history."""
    survey = db.session.get(Survey, survey_id)
    if survey is not None and survey.household_id != household.id:
        survey = None  # another case's visit, in the actor's area or not: "no such visit"
    survey = require_visible(actor, survey, lambda s: s.household.village, "visit")
    require(
        actor,
        Capability.REVIEW_VISITS,
        "only township reviewers and county approvers review visits",
        action="review_visit",
    )
    try:
        target = ReviewStatus(to)
    except ValueError:
        raise IllegalTransition(f"no review state {to!r}", action="review_visit") from None
    reason = written_reason(reason, "review_visit")
    current = survey.shown_review_status
    if target not in review_moves(survey):
        raise IllegalTransition(
            f"a visit that is {current.value} cannot become {target.value}",
            action="review_visit",
            from_status=current.value,
            to_status=target.value,
        )
    if target in REASON_NEEDED and reason is None:
        raise ReasonRequired(f"{target.value} needs a written reason", action="review_visit")
    if target is ReviewStatus.APPROVED and survey.open_flags:
        raise OpenFlags(
            "clear the visit's open flags (or reject it) before approving it",
            action="review_visit",
            open_flags=len(survey.open_flags),
        )
    now = clock.utcnow()
    survey.reviews.append(
        VisitReview(
            actor_id=actor.id,
            at=now,
            from_status=current.value,
            to_status=target.value,
            reason=reason,
        )
    )
    survey.review_status = target
    survey.reviewed_at = now
    survey.reviewed_by_id = actor.id
    survey.review_reason = reason
    audit.record(
        "visit.reviewed",
        actor=actor,
        object_type="survey",
        object_id=survey.id,
        from_status=current.value,
        to_status=target.value,
        household_id=household.id,
    )
    db.session.flush()
    return survey


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
