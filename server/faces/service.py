"""Enrolling faces from visit portraits and searching them across households."""

from __future__ import annotations

import logging

import numpy as np
from flask import current_app
from sqlalchemy import select

from server.audit import service as audit
from server.cases.models import Member
from server.cases.workflow import region
from server.extensions import db
from server.faces.engine import FaceEngine, default_engine
from server.faces.models import FaceTemplate
from server.visits.checks import Flag, nearest_faces
from server.visits.models import PhotoKind, SurveyPhoto
from server.visits.photos import downscaled_rgb
from server.visits.service import blob_store, stored_flag

logger = logging.getLogger(__name__)

# Detection runs on a downscaled copy: a 12 MP tablet photo at full size takes seconds.
DETECTION_MAX_SIDE = 1000


def _member_for(photo: SurveyPhoto) -> Member | None:
    """The household member a portrait shows, from its ``member_ref`` (a member_id)."""
    ref = (photo.member_ref or "").strip()
    if not ref.isdigit():
        return None
    member = db.session.get(Member, int(ref))
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
        blob_store().path(photo.sha256),
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
