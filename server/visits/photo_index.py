"""The photo reuse index and its checks (docs/field-visits.md, "Photo reuse"): the
database side of server/visits/integrity/photo_match.py.

``analyse_photo`` (the background job per received photo) calls :func:`index_photo`
and :func:`integrity_flags`; ``dibao index-photos`` (:func:`backfill_photo_hashes`)
indexes photos received before the index existed. Functions only flush; the caller
commits.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime

from flask import current_app
from PIL import Image
from sqlalchemy import Select, delete, exists, select

from server.extensions import db
from server.images import DECODE_ERRORS, ImageRejected, oriented_rgb
from server.months import current_month, local_moment, month_after
from server.region import region
from server.storage import blob_store
from server.visits.checks import Flag
from server.visits.integrity.photo_match import (
    Candidate,
    Features,
    Model,
    PhotoMatch,
    PhotoRules,
    QueryHashes,
    StoredHashes,
    matching_points,
    near_duplicate_flags,
    nearest,
    query_hashes,
    reuse_flags,
    stored_hashes,
)
from server.visits.models import PhotoHash, PhotoKind, Survey, SurveyPhoto

logger = logging.getLogger(__name__)


def load_picture(photo: SurveyPhoto, side: int, *, thumbnail: bool = False) -> Image.Image | None:
    """The photo oriented, RGB, at most ``side`` px long; None when it cannot be read
    (a missing blob, an undecodable file). ``thumbnail``: from the stored 512 px
    thumbnail when there is one (a candidate being verified: decoding a 12 MP original
    for each candidate of each new photo is most of the check's time), else the
    original."""
    if photo.received_at is None or photo.sha256 is None:
        return None
    source = photo.sha256
    if thumbnail and photo.thumbnail_sha256 not in (None, photo.received_sha256):
        source = photo.thumbnail_sha256
    try:
        return oriented_rgb(
            blob_store().path(source), side, current_app.config["DIBAO_MAX_PHOTO_PIXELS"]
        )
    except (ImageRejected, OSError, *DECODE_ERRORS):
        return None


def index_photo(photo: SurveyPhoto, picture: Image.Image) -> None:
    """Store (or replace) the photo's index hashes."""
    db.session.execute(delete(PhotoHash).where(PhotoHash.survey_photo_id == photo.id))
    for kind, value in stored_hashes(picture).items():
        db.session.add(PhotoHash(survey_photo_id=photo.id, kind=kind, hash=value))
    db.session.flush()


def _rows(query: Select[int, str, int, int]) -> tuple[StoredHashes, dict[int, int]]:
    """Index rows of a query selecting (photo id, kind, hash, household id)."""
    ids: list[int] = []
    kinds: list[str] = []
    hashes: list[int] = []
    household_of: dict[int, int] = {}
    for photo_id, kind, value, household_id in db.session.execute(query):
        ids.append(photo_id)
        kinds.append(kind)
        hashes.append(value)
        household_of[photo_id] = household_id
    return StoredHashes(ids, kinds, hashes), household_of


def _index_query() -> Select[int, str, int, int]:
    return (
        select(PhotoHash.survey_photo_id, PhotoHash.kind, PhotoHash.hash, Survey.household_id)
        .join(SurveyPhoto, SurveyPhoto.id == PhotoHash.survey_photo_id)
        .join(Survey, Survey.id == SurveyPhoto.survey_id)
    )


def _verified(
    photo: SurveyPhoto,
    picture: Image.Image,
    candidates: Iterable[Candidate],
    household_of: dict[int, int],
    model: Model,
    side: int,
    cache: dict[tuple[str, int], Features],
) -> list[PhotoMatch]:
    """The candidates' matching points. ``cache``: the pictures' features, kept across
    the candidates and both checks of one new photo (each picture is read and its
    features found once)."""
    matches = []
    for candidate in candidates:
        household_id = household_of[candidate.photo_id]
        old_photo = db.session.get(SurveyPhoto, candidate.photo_id)
        if old_photo is not None and old_photo.sha256 == photo.sha256:
            matches.append(PhotoMatch(household_id, candidate, None, identical=True))
            continue
        points = _points_of(photo, picture, old_photo, candidate, model, side, cache)
        matches.append(PhotoMatch(household_id, candidate, points))
    return matches


def _points_of(
    photo: SurveyPhoto,
    picture: Image.Image,
    old_photo: SurveyPhoto | None,
    candidate: Candidate,
    model: Model,
    side: int,
    cache: dict[tuple[str, int], Features],
) -> int | None:
    """The candidate's matching points, from its stored thumbnail first; from its
    original when the thumbnail has too few features to tell (a simple scene)."""
    if old_photo is None:
        return None
    for key, thumbnail in ((old_photo.id, True), (-old_photo.id, False)):
        if ("old", key) in cache:
            old: Image.Image | None = picture  # features known: the pixels are not read
        else:
            old = load_picture(old_photo, side, thumbnail=thumbnail)
        if old is None:
            continue
        points = matching_points(picture, old, candidate.turn, model, side, cache, key)
        if points is not None:
            return points
    return None


def _month_bounds(moment: datetime, tz: str) -> tuple[datetime, datetime]:
    month = current_month(moment, tz)
    return local_moment(month, 1, tz), local_moment(month_after(month), 1, tz)


def integrity_flags(photo: SurveyPhoto, picture: Image.Image) -> list[tuple[int, Flag]]:
    """``photo_reused`` (any other household of the league) and ``photo_near_duplicate``
    (housing photos of other households the same caseworker visited in the same local
    month) for a newly received photo, each with the other household's id. The photo's
    own hashes need not be indexed yet. One query reads the league's index; only the
    nearest few candidates are loaded and verified."""
    survey = photo.survey
    rules: PhotoRules = region().integrity.photos
    query: QueryHashes = query_hashes(picture)
    others = _index_query().where(
        Survey.household_id != survey.household_id, PhotoHash.survey_photo_id != photo.id
    )
    rows, household_of = _rows(others)
    candidates = nearest(query, rows, rules.candidate_hamming, rules.max_candidates)
    cache: dict[tuple[str, int], Features] = {}
    flags = reuse_flags(
        _verified(photo, picture, candidates, household_of, "similarity", rules.verify_side, cache),
        rules,
        region().photo_reuse_hamming,
    )
    if photo.kind is not PhotoKind.HOUSING:
        return flags
    start, end = _month_bounds(survey.finished_at, region().timezone)
    same_month = others.where(
        Survey.caseworker_id == survey.caseworker_id,
        Survey.finished_at >= start,
        Survey.finished_at < end,
        SurveyPhoto.kind == PhotoKind.HOUSING,
    )
    rows, household_of = _rows(same_month)
    reused_households = {hid for hid, _ in flags}
    # A house re-shot is neither mirrored nor turned (an edited copy is photo_reused):
    # verified as it stands, whatever turn its hash came closest under.
    close = [
        replace(c, turn=0)
        for c in nearest(query, rows, rules.near_duplicate_hamming, rules.max_candidates)
        if household_of[c.photo_id] not in reused_households
    ]
    return flags + near_duplicate_flags(
        _verified(photo, picture, close, household_of, "homography", rules.verify_side, cache),
        rules,
    )


def backfill_photo_hashes(batch: int = 200) -> int:
    """Index up to ``batch`` received photos that have no index hashes yet (photos
    received before the index existed); returns how many were indexed or skipped as
    unreadable. No flags are raised for them: the index only serves later uploads."""
    side = region().integrity.photos.verify_side
    pending = db.session.scalars(
        select(SurveyPhoto)
        .where(
            SurveyPhoto.received_at.is_not(None),
            ~exists().where(PhotoHash.survey_photo_id == SurveyPhoto.id),
        )
        .order_by(SurveyPhoto.id)
        .limit(batch)
    ).all()
    done = 0
    for photo in pending:
        picture = load_picture(photo, side)
        if picture is None:
            logger.warning("photo %s cannot be read: left out of the reuse index", photo.id)
            # A marker so that the backfill does not retry it forever: never matched.
            db.session.add(PhotoHash(survey_photo_id=photo.id, kind="none", hash=0))
        else:
            index_photo(photo, picture)
        done += 1
    db.session.flush()
    return done
