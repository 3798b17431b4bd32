"""The photo reuse index and its checks (docs/field-visits.md, "Photo reuse"): the
database side of server/visits/integrity/photo_match.py.

``analyse_photo`` (the background job per received photo) calls :func:`index_photo`
and :func:`integrity_flags`; ``dibao index-photos`` (:func:`backfill_photo_hashes`)
indexes photos received before the index existed. Functions only flush; the caller
commits. Reuse candidates come from the worker's resident index
(server/visits/photo_hash_index.py); near-duplicate candidates (one caseworker's
month: a few rows) from a query.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import datetime
from typing import Final

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
    MIN_FEATURES,
    Candidate,
    Features,
    Model,
    PhotoMatch,
    PhotoRules,
    Picture,
    QueryHashes,
    StoredHashes,
    Verification,
    features,
    near_duplicate_flags,
    nearest,
    query_hashes,
    reuse_flags,
    reuse_turns,
    same_picture,
    same_scene,
    stored_hashes,
    verify,
)
from server.visits.models import PhotoHash, PhotoKind, Survey, SurveyPhoto
from server.visits.photo_hash_index import PHOTO_HASHES

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


class FeaturesCache:
    """Stored photos' verification features, keyed by photo id (and its SHA-256, so that
    an id reused by another database never serves another picture), each found by
    ``loader`` on first use. A worker process keeps the last ``size`` photos' features
    (~70 kB each: 500 ORB corners and a 256 px grey copy): a photo is a candidate of
    many later uploads (a village's houses hash alike), and reading its thumbnail and
    finding its features was most of the check's time."""

    def __init__(
        self, loader: Callable[[SurveyPhoto, int], Features | None], size: int = 500
    ) -> None:
        self._loader = loader
        self._size = size
        self._held: OrderedDict[tuple[int, str, int], Features] = OrderedDict()
        self._lock = threading.Lock()  # a worker's threads share it; loads run unlocked

    def get(self, photo: SurveyPhoto, side: int) -> Features | None:
        """The photo's features at ``side``; None when it cannot be read (not kept:
        a blob missing now may be restored)."""
        key = self._key(photo, side)
        with self._lock:
            held = self._held.get(key)
            if held is not None:
                self._held.move_to_end(key)
                return held
        found = self._loader(photo, side)
        if found is not None:
            self.put(photo, side, found)
        return found

    @staticmethod
    def _key(photo: SurveyPhoto, side: int) -> tuple[int, str, int]:
        return (photo.id, photo.sha256 or "", side)

    def put(self, photo: SurveyPhoto, side: int, found: Features) -> None:
        key = self._key(photo, side)
        with self._lock:
            self._held[key] = found
            self._held.move_to_end(key)
            while len(self._held) > self._size:
                self._held.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._held.clear()


def load_features(photo: SurveyPhoto, side: int) -> Features | None:
    """A stored photo's features from its 512 px thumbnail; from the original when the
    thumbnail has too few features to verify with (a simple scene) or is missing. None
    when neither can be read."""
    found: Features | None = None
    for thumbnail in (True, False):
        picture = load_picture(photo, side, thumbnail=thumbnail)
        if picture is None:
            continue
        found = features(picture, side)
        if found.count >= MIN_FEATURES:
            break
    return found


STORED_FEATURES: Final = FeaturesCache(load_features)
"""This process's cache of stored photos' features (see :class:`FeaturesCache`)."""


def _verified(
    photo: SurveyPhoto,
    picture: Picture,
    candidates: Iterable[Candidate],
    household_of: dict[int, int],
    model: Model,
    holds: Callable[[Verification], bool],
) -> list[PhotoMatch]:
    """The candidates, verified nearest first (a reuse candidate under the hashes' turn,
    then plain and mirrored; a near-duplicate as it stands). Once a household has a
    match that ``holds`` (or an identical file), its other candidates are skipped: one
    flag per household."""
    matches: list[PhotoMatch] = []
    settled: set[int] = set()
    for candidate in candidates:
        household_id = household_of[candidate.photo_id]
        if household_id in settled:
            continue
        old_photo = db.session.get(SurveyPhoto, candidate.photo_id)
        if old_photo is not None and old_photo.sha256 == photo.sha256:
            matches.append(PhotoMatch(household_id, candidate, None, identical=True))
            settled.add(household_id)
            continue
        old = None if old_photo is None else STORED_FEATURES.get(old_photo, picture.side)
        turns = reuse_turns(candidate.turn) if model == "similarity" else (0,)
        found = None if old is None else verify(picture, old, turns, model, holds)
        matches.append(PhotoMatch(household_id, candidate, found))
        if found is not None and holds(found):
            settled.add(household_id)
    return matches


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
    strict = region().photo_reuse_hamming
    query: QueryHashes = query_hashes(picture)
    # The new photo's features, per turn, shared by the candidates of both checks.
    turned = Picture(picture, rules.verify_side)
    others = _index_query().where(
        Survey.household_id != survey.household_id, PhotoHash.survey_photo_id != photo.id
    )
    candidates, household_of = PHOTO_HASHES.nearest(
        query,
        rules.candidate_hamming,
        rules.max_candidates,
        household_id=survey.household_id,
        photo_id=photo.id,
    )
    flags = reuse_flags(
        _verified(
            photo,
            turned,
            candidates,
            household_of,
            "similarity",
            lambda v: same_picture(v, rules),
        ),
        rules,
        strict,
    )
    if photo.kind is not PhotoKind.HOUSING:
        _keep_features(photo, turned)
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
    near = near_duplicate_flags(
        _verified(photo, turned, close, household_of, "homography", lambda v: same_scene(v, rules)),
        rules,
    )
    _keep_features(photo, turned)
    return flags + near


def linear_reuse_candidates(
    photo: SurveyPhoto, query: QueryHashes, rules: PhotoRules
) -> tuple[list[Candidate], dict[int, int]]:
    """The reuse candidates as found before the resident index: the whole table read
    and scanned (the reference of the index's tests and benchmarks/photo_index.py)."""
    rows, household_of = _rows(
        _index_query().where(
            Survey.household_id != photo.survey.household_id,
            PhotoHash.survey_photo_id != photo.id,
        )
    )
    found = nearest(query, rows, rules.candidate_hamming, rules.max_candidates)
    return found, {c.photo_id: household_of[c.photo_id] for c in found}


def _keep_features(photo: SurveyPhoto, turned: Picture) -> None:
    """The new photo's own features, found anyway, kept for the uploads it will be a
    candidate of."""
    if photo.sha256 is not None:
        STORED_FEATURES.put(photo, turned.side, turned.turned(0))


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
