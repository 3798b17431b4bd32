"""Enrolling faces from visit portraits and explicit enrollments, and judging each new
face: against other households' members (``face_in_other_household``) and against the
named member's own earlier templates (``face_not_member``); the rules are in
``server.visits.integrity.face_match``."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from flask import current_app
from sqlalchemy import select

from server.audit import service as audit
from server.auth.models import User
from server.auth.permissions import Capability, require, require_in_area, require_visible
from server.cases.models import Member
from server.devices.models import DeviceToken
from server.errors import DomainError
from server.extensions import db
from server.faces.engine import DetectedFace, FaceEngine, default_engine
from server.faces.index import face_index
from server.faces.models import FaceTemplate
from server.region import region
from server.storage import HashingFile, blob_store
from server.validation import parse_id
from server.visits.checks import Flag
from server.visits.integrity import face_match
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
    queries = portrait_encodings(engine, rgb, faces[0])
    flags = judge_face(queries, member, engine.model_name, what=f"portrait {photo.photo_id}")
    template = FaceTemplate(
        member_id=member.id,
        household_id=survey.household_id,
        survey_photo_id=photo.id,
        encoding=encoding.astype(np.float64).tobytes(),
        model_name=engine.model_name,
        model_version=engine.model_version,
        active=_may_vouch(flags),
    )
    db.session.add(template)
    for flag in flags:
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
    queries = portrait_encodings(engine, rgb, faces[0])
    flags = judge_face(queries, member, engine.model_name, what="the enrollment photo")
    template = FaceTemplate(
        member_id=member.id,
        household_id=member.household_id,
        source_sha256=digest,
        enrolled_by_id=actor.id,
        encoding=encoding.astype(np.float64).tobytes(),
        model_name=engine.model_name,
        model_version=engine.model_version,
        active=_may_vouch(flags),
    )
    db.session.add(template)
    db.session.flush()
    audit.record(
        "face.enrolled",
        actor=actor,
        object_type="member",
        object_id=member.id,
        household_id=member.household_id,
        face_template_id=template.id,
        device_token_id=device.id if device else None,
        matches_in_other_households=sum(f.code == "face_in_other_household" for f in flags),
        not_member=any(f.code == "face_not_member" for f in flags),
    )
    return template, flags


def portrait_encodings(
    engine: FaceEngine, rgb: npt.NDArray[np.uint8], face: DetectedFace
) -> list[npt.NDArray[np.float64]]:
    """The face's encoding, and that of the mirror image of the photo (selfie cameras
    mirror; dlib puts a mirror image 0.11-0.22 away from the original) when it shows
    exactly one face: one more engine call per portrait."""
    queries = [face.encoding]
    if region().integrity.faces.check_mirrored:
        mirrored = engine.faces(np.ascontiguousarray(rgb[:, ::-1, :], dtype=np.uint8))
        if len(mirrored) == 1:
            queries.append(mirrored[0].encoding)
    return queries


def judge_face(
    queries: Sequence[npt.NDArray[np.float64]], member: Member, model_name: str, *, what: str
) -> list[Flag]:
    """The flags of a new face of ``member`` (as taken and mirrored): the same person in
    another household, and not the member it names. Runs before the new template is
    added, so that it is never compared with itself."""
    flags = search_other_households(queries, member.household_id, model_name)
    not_member = check_named_member(queries, member, model_name, what=what)
    return flags + ([not_member] if not_member is not None else [])


def _may_vouch(flags: Sequence[Flag]) -> bool:
    """A face clearly not the member's (critical ``face_not_member``) is kept as evidence
    but inactive: it must not vouch for the member in proof of life, nor become the
    reference the member's next portraits are compared with."""
    return not any(f.code == "face_not_member" and f.severity == "critical" for f in flags)


def check_named_member(
    queries: Sequence[npt.NDArray[np.float64]], member: Member, model_name: str, *, what: str
) -> Flag | None:
    """``face_not_member``: the face against the member's own earlier templates, and the
    other members of the household (few templates: no index needed)."""
    rows = db.session.execute(
        select(FaceTemplate.member_id, FaceTemplate.encoding).where(
            FaceTemplate.active.is_(True),
            FaceTemplate.model_name == model_name,
            FaceTemplate.household_id == member.household_id,
        )
    ).all()
    distances = face_match.distances_to(queries, [r.encoding for r in rows])
    own = [d for r, d in zip(rows, distances, strict=True) if r.member_id == member.id]
    others = face_match.best_per_key(
        [r.member_id for r in rows],
        {
            i: d
            for i, (r, d) in enumerate(zip(rows, distances, strict=True))
            if r.member_id != member.id
        },
    )
    return face_match.not_member_flag(own, others, region().integrity.faces, what=what)


def search_other_households(
    queries: Sequence[npt.NDArray[np.float64]], household_id: int, model_name: str
) -> list[Flag]:
    """``face_in_other_household`` flags, by band, for templates of other households
    close to the face (as taken or mirrored)."""
    rules = region().integrity.faces
    best = other_household_distances(queries, household_id, model_name, rules.review_below)
    return face_match.other_household_flags(best, rules)


def other_household_distances(
    queries: Sequence[npt.NDArray[np.float64]],
    household_id: int,
    model_name: str,
    threshold: float,
) -> dict[int, float]:
    """Household id -> the nearest distance of its active templates of ``model_name``
    closer than ``threshold`` to any of ``queries``, other households only.

    The resident index (``server.faces.index``) names the few templates that may be
    that close; those rows are read again and measured in float64 exactly as
    :func:`other_household_distances_brute_force` measures every row: the same result.
    """
    candidates = face_index().candidates(
        db.session, queries, threshold, exclude_household=household_id
    )
    households: list[int] = []
    encodings: list[bytes] = []
    for start in range(0, len(candidates), 1000):
        rows = db.session.execute(
            select(FaceTemplate.household_id, FaceTemplate.encoding).where(
                FaceTemplate.id.in_(candidates[start : start + 1000]),
                FaceTemplate.active.is_(True),
                FaceTemplate.model_name == model_name,
                FaceTemplate.household_id != household_id,
            )
        ).all()
        households.extend(r.household_id for r in rows)
        encodings.extend(r.encoding for r in rows)
    if not encodings:
        return {}
    found = face_match.search(queries, encodings, threshold)
    return face_match.best_per_key(households, found)


def other_household_distances_brute_force(
    queries: Sequence[npt.NDArray[np.float64]],
    household_id: int,
    model_name: str,
    threshold: float,
) -> dict[int, float]:
    """The reference (the search before the index): decrypt every active template of
    ``model_name`` outside the household and scan them all. Tests and
    benchmarks/face_index.py compare the index with it."""
    rows = db.session.execute(
        select(FaceTemplate.household_id, FaceTemplate.encoding).where(
            FaceTemplate.active.is_(True),
            FaceTemplate.model_name == model_name,
            FaceTemplate.household_id != household_id,
        )
    ).all()
    if not rows:
        return {}
    found = face_match.search(queries, [r.encoding for r in rows], threshold)
    return face_match.best_per_key([r.household_id for r in rows], found)
