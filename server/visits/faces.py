"""Enrolling faces from visit portraits and searching them across households."""

from __future__ import annotations

import logging

import numpy as np
from flask import current_app
from sqlalchemy import select

from server.audit import service as audit
from server.auth.models import User
from server.auth.permissions import Capability, require, require_in_area, require_visible
from server.cases.models import Member
from server.devices.models import DeviceToken
from server.errors import DomainError
from server.extensions import db
from server.faces.engine import FaceEngine, default_engine
from server.faces.models import FaceTemplate
from server.region import region
from server.storage import HashingFile, blob_store
from server.validation import parse_id
from server.visits.checks import Flag, nearest_faces
from server.visits.models import PhotoKind, SurveyPhoto
from server.visits.photos import PhotoRejected, check_photo_file, downscaled_rgb
from server.visits.service import stored_flag

logger = logging.getLogger(__name__)

# Detection runs on a downscaled copy: a 12 MP tablet photo at full size takes seconds.
DETECTION_MAX_SIDE = 1000


def _member_for(photo: SurveyPhoto) -> Member | None:
    """The household member a portrait shows, from its ``member_ref`` (a member_id)."""
    ref = parse_id((photo.member_ref or "").strip())
    if ref is None:
        return None
    member = db.session.get(Member, ref)
    if member is None or member.household_id != photo.survey.household_id:
        return None
    return member


def enroll_portrait(survey_photo_id: int, engine: FaceEngine | None = None) -> FaceTemplate | None:
    """Turn a received member portrait into a face template, or flag why it cannot be
    one; then look for the same face in other households. Flushes, never commits.
    """
    photo = db.session.get(SurveyPhoto, survey_photo_id)
    if photo is None or photo.kind is not PhotoKind.MEMBER_PORTRAIT or photo.received_at is None:
        return None
    if (
        db.session.scalar(select(FaceTemplate.id).where(FaceTemplate.survey_photo_id == photo.id))
        is not None
    ):
        return None  # already enrolled: a retried task does nothing
    engine = engine or default_engine()
    survey = photo.survey
    rgb = downscaled_rgb(
        blob_store().path(photo.received_sha256),
        max_side=DETECTION_MAX_SIDE,
        max_pixels=current_app.config["DIBAO_MAX_PHOTO_PIXELS"],
    )
    faces = engine.faces(rgb)
    if len(faces) != 1:
        code = "portrait_no_face" if not faces else "portrait_many_faces"
        survey.flags.append(
            stored_flag(
                Flag(
                    code=code,
                    severity="warning",
                    value=len(faces),
                    threshold=1,
                    detail=f"portrait {photo.photo_id} shows {len(faces)} faces, expected 1",
                )
            )
        )
        db.session.flush()
        return None
    member = _member_for(photo)
    if member is None:
        survey.flags.append(
            stored_flag(
                Flag(
                    code="portrait_member_unknown",
                    severity="info",
                    value=photo.member_ref,
                    threshold=None,
                    detail=f"portrait {photo.photo_id} names no member of this household",
                )
            )
        )
        db.session.flush()
        return None
    encoding = faces[0].encoding
    template = FaceTemplate(
        member_id=member.id,
        household_id=survey.household_id,
        survey_photo_id=photo.id,
        encoding=encoding.astype(np.float64).tobytes(),
        model_name=engine.model_name,
        model_version=engine.model_version,
    )
    db.session.add(template)
    for flag in search_other_households(encoding, survey.household_id, engine.model_name):
        survey.flags.append(stored_flag(flag))
    audit.record(
        "face.enrolled",
        actor=None,
        object_type="member",
        object_id=member.id,
        survey_photo_id=photo.id,
    )
    db.session.flush()
    return template


class EnrollmentRefused(DomainError):
    """The photo cannot make a template (no face, several faces)."""

    http_status = 422


def member_to_enroll(actor: User, member_id: int) -> Member:
    """The member a caseworker asks to enroll, looked up before the request's body is
    read: outside the actor's area it is "no such member", exactly like an unknown id,
    and only then does the actor's role count.
    """
    member = require_visible(
        actor,
        db.session.get(Member, member_id),
        lambda m: m.household.village,
        "member",
        field="member_id",
    )
    require(actor, Capability.ENROLL_FACES, "only caseworkers enroll faces")
    return member


def enroll_member_photo(
    member: Member,
    temp: HashingFile,
    *,
    actor: User,
    device: DeviceToken | None,
    engine: FaceEngine | None = None,
) -> tuple[FaceTemplate, list[Flag]]:
    """A caseworker's explicit enrollment: one photo of one member, taken at the home.
    The photo is kept (content-addressed) as the template's evidence; a face that
    matches another household's member is reported, and audited, not refused.
    """
    require_in_area(actor, member.household.village, "member", field="member_id")
    require(actor, Capability.ENROLL_FACES, "only caseworkers enroll faces")
    if not member.alive:
        raise EnrollmentRefused("this member is recorded as deceased", field="member_id")
    max_pixels = current_app.config["DIBAO_MAX_PHOTO_PIXELS"]
    temp.flush()
    try:
        check_photo_file(temp.path, max_pixels=max_pixels, tz=region().timezone)
        rgb = downscaled_rgb(temp.path, max_side=DETECTION_MAX_SIDE, max_pixels=max_pixels)
    except PhotoRejected as exc:
        error = DomainError(exc.message, field="photo")
        error.code, error.http_status = exc.code, exc.http_status
        raise error from exc
    engine = engine or default_engine()
    faces = engine.faces(rgb)
    if len(faces) != 1:
        refused = EnrollmentRefused(
            f"the photo shows {len(faces)} faces, expected exactly 1", faces=len(faces)
        )
        refused.code = "no_face" if not faces else "many_faces"
        raise refused
    digest = blob_store().store(temp)
    encoding = faces[0].encoding
    template = FaceTemplate(
        member_id=member.id,
        household_id=member.household_id,
        source_sha256=digest,
        enrolled_by_id=actor.id,
        encoding=encoding.astype(np.float64).tobytes(),
        model_name=engine.model_name,
        model_version=engine.model_version,
    )
    db.session.add(template)
    flags = search_other_households(encoding, member.household_id, engine.model_name)
    db.session.flush()
    audit.record(
        "face.enrolled",
        actor=actor,
        object_type="member",
        object_id=member.id,
        household_id=member.household_id,
        face_template_id=template.id,
        device_token_id=device.id if device else None,
        matches_in_other_households=len(flags),
    )
    return template, flags


def search_other_households(encoding: np.ndarray, household_id: int, model_name: str) -> list[Flag]:
    """``face_in_other_household`` flags for templates of other households this close."""
    threshold = region().visit_thresholds.face_distance
    rows = db.session.execute(
        select(FaceTemplate.household_id, FaceTemplate.encoding).where(
            FaceTemplate.active.is_(True),
            FaceTemplate.model_name == model_name,
            FaceTemplate.household_id != household_id,
        )
    ).all()
    if not rows:
        return []
    candidates = np.frombuffer(b"".join(r.encoding for r in rows), dtype=np.float64).reshape(
        len(rows), 128
    )
    best: dict[int, float] = {}
    for index, distance in nearest_faces(encoding.tolist(), candidates, threshold):
        other = rows[index].household_id
        best[other] = min(distance, best.get(other, distance))
    return [
        Flag(
            code="face_in_other_household",
            severity="critical",
            value=round(distance, 3),
            threshold=threshold,
            detail=f"the portrait's face matches a member of household {other}",
        )
        for other, distance in sorted(best.items(), key=lambda item: item[1])
    ]
