"""Evidence checks for field visits (入户调查): pure functions that turn a visit into flags.

A visit uploaded from a tablet is evidence, not a form to accept or refuse. Each check
below returns a list of :class:`Flag`; each flag is something a reviewer must look at and
clear. No check ever rejects a visit: a real visit with a bad GPS fix still happened.

Nothing here touches Flask or the database; the caller loads the visit, the household's
registered location, the caseworker's previous visit and the photo hashes, and stores the
flags. Invalid *input* (a naive datetime, a latitude of 91°, a malformed hash) raises
``ValueError``: that is a bug or a schema hole in the caller, not a property of the visit.

Flag codes, and what ``value`` / ``threshold`` hold:

======================== ======== =================================================
code                     severity value / threshold
======================== ======== =================================================
gps_far_from_home        warning, metres (rounded to 1 m) / ``far_from_home_m``
                         critical (critical above 10 × the threshold)
gps_low_accuracy         info,    reported accuracy in metres / ``low_accuracy_m``
                         warning  (warning when the accuracy is worse than
                                  ``far_from_home_m``: the distance check then
                                  cannot tell home from not home)
gps_mock                 critical ``"mock_location"``, ``"accuracy_zero"`` or
                                  ``"accuracy_invalid"`` / None
visit_in_future          critical seconds after receipt (rounded) / slack in seconds
visit_stale              warning  seconds before receipt (rounded) / limit in seconds
visit_times_inverted     warning  seconds finished before started / 0
photo_exif_far           warning  metres from the fix (rounded) / ``photo_exif_far_m``
photo_time_outside_visit warning  seconds outside the window / slack in seconds
photo_no_exif            info     photo id / None
impossible_travel        warning, km/h (rounded to 0.1) / ``max_speed_kmh``;
                         critical None / ``far_from_home_m`` when no time passed
                                  (critical)
photo_reused             warning  Hamming distance / ``max_hamming`` (this single-hash
                                  rule; uploads use server/visits/integrity/
                                  photo_match.py, which verifies candidates)
======================== ======== =================================================

``detail`` is English text for logs and reviewers; it never contains names, ID numbers
or coordinates, only distances, durations, photo ids and household ids.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Literal

import numpy as np
import numpy.typing as npt
from geographiclib.geodesic import Geodesic
from geopy.distance import ELLIPSOIDS

__all__ = [
    "Flag",
    "GpsFix",
    "PhotoEvidence",
    "PreviousVisit",
    "Severity",
    "Thresholds",
    "check_location",
    "check_photo_reuse",
    "check_photos",
    "check_times",
    "check_travel",
    "distance_m",
    "format_duration",
    "nearest_faces",
]

Severity = Literal["info", "warning", "critical"]


@dataclass(frozen=True)
class Flag:
    code: str
    severity: Severity
    value: float | str | None
    threshold: float | str | None
    detail: str


@dataclass(frozen=True)
class Thresholds:
    far_from_home_m: float = 300
    low_accuracy_m: float = 100
    photo_exif_far_m: float = 300
    photo_time_slack: timedelta = timedelta(minutes=10)
    max_speed_kmh: float = 120
    future_slack: timedelta = timedelta(minutes=5)
    stale_after: timedelta = timedelta(days=30)


@dataclass(frozen=True)
class GpsFix:
    lat: float
    lon: float
    accuracy_m: float | None
    fix_at: datetime | None
    is_mock: bool


@dataclass(frozen=True)
class PhotoEvidence:
    photo_id: str
    taken_at: datetime | None
    gps_lat: float | None
    gps_lon: float | None


@dataclass(frozen=True)
class PreviousVisit:
    """This caseworker's nearest earlier visit (by ``finished_at``)."""

    lat: float
    lon: float
    finished_at: datetime


# --------------------------------------------------------------------------- helpers


def _require_aware(name: str, value: datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime")


def _check_coordinate(lat: float, lon: float) -> None:
    if not (math.isfinite(lat) and math.isfinite(lon)):
        raise ValueError("coordinates must be finite numbers")
    if not -90.0 <= lat <= 90.0:
        raise ValueError("latitude must be within [-90, 90]")
    if not -180.0 <= lon <= 180.0:
        raise ValueError("longitude must be within [-180, 180]")


def format_duration(seconds: float) -> str:
    """A short English duration for ``detail`` ("42 s", "12.5 min", "3.0 h", "31.2 days")."""
    seconds = abs(seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


# --------------------------------------------------------------------------- distance


# geopy's WGS-84 (axes in kilometres) and its call of Karney's method, made once: geopy's
# ``geodesic(a, b).meters`` builds the ellipsoid on every call, most of its cost. The
# same arithmetic gives the same floats (tests/visits/test_visit_checks.py).
_MAJOR_KM, _MINOR_KM, _FLATTENING = ELLIPSOIDS["WGS-84"]
_WGS84_KM = Geodesic(_MAJOR_KM, _FLATTENING)


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Geodesic distance in metres on the WGS-84 ellipsoid (Karney's method, as geopy's
    ``geodesic``). The pattern checks measure the same pairs again on every upload of
    the caseworker's day: recent answers are kept."""
    _check_coordinate(lat1, lon1)
    _check_coordinate(lat2, lon2)
    return _distance_m(float(lat1), float(lon1), float(lat2), float(lon2))


@lru_cache(maxsize=65536)
def _distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    if lat1 == lat2 and lon1 == lon2:
        return 0.0
    s12_km: float = _WGS84_KM.Inverse(lat1, lon1, lat2, lon2, Geodesic.DISTANCE)["s12"]
    return s12_km * 1000


# --------------------------------------------------------------------------- location


def check_location(fix: GpsFix, home_lat: float, home_lon: float, t: Thresholds) -> list[Flag]:
    """Judge a visit's GPS fix against the household's registered location.

    Flags, in this order: ``gps_far_from_home``, ``gps_low_accuracy``, ``gps_mock``.
    """
    flags: list[Flag] = []

    dist = distance_m(fix.lat, fix.lon, home_lat, home_lon)
    if dist > t.far_from_home_m:
        critical = dist > 10 * t.far_from_home_m
        flags.append(
            Flag(
                code="gps_far_from_home",
                severity="critical" if critical else "warning",
                value=float(round(dist)),
                threshold=t.far_from_home_m,
                detail=(
                    f"GPS fix is {dist:.0f} m from the registered home location "
                    f"(limit {t.far_from_home_m:g} m)"
                ),
            )
        )

    acc = fix.accuracy_m
    acc_valid = acc is not None and math.isfinite(acc) and acc > 0
    if acc is not None and acc_valid and acc > t.low_accuracy_m:
        flags.append(
            Flag(
                code="gps_low_accuracy",
                severity="warning" if acc > t.far_from_home_m else "info",
                value=float(acc),
                threshold=t.low_accuracy_m,
                detail=(
                    f"GPS fix reports an accuracy of {acc:.0f} m (limit {t.low_accuracy_m:g} m)"
                ),
            )
        )

    mock_reason: str | None = None
    if fix.is_mock:
        mock_reason = "mock_location"
    elif acc is not None and acc == 0:
        mock_reason = "accuracy_zero"
    elif acc is not None and not acc_valid:
        mock_reason = "accuracy_invalid"
    if mock_reason is not None:
        details = {
            "mock_location": "the tablet reported a mock (simulated) location",
            "accuracy_zero": "GPS fix reports an accuracy of exactly 0 m (real GPS never does)",
            "accuracy_invalid": "GPS fix reports a negative or non-finite accuracy",
        }
        flags.append(
            Flag(
                code="gps_mock",
                severity="critical",
                value=mock_reason,
                threshold=None,
                detail=details[mock_reason],
            )
        )
    return flags


# --------------------------------------------------------------------------- times


def check_times(
    started_at: datetime, finished_at: datetime, received_at: datetime, t: Thresholds
) -> list[Flag]:
    """Judge the visit's timestamps against when the server received the upload.

    Flags, in this order: ``visit_in_future``, ``visit_stale``, ``visit_times_inverted``.
    """
    _require_aware("started_at", started_at)
    _require_aware("finished_at", finished_at)
    _require_aware("received_at", received_at)
    flags: list[Flag] = []

    if finished_at > received_at + t.future_slack:
        ahead = (finished_at - received_at).total_seconds()
        flags.append(
            Flag(
                code="visit_in_future",
                severity="critical",
                value=float(round(ahead)),
                threshold=t.future_slack.total_seconds(),
                detail=(
                    f"visit finished {format_duration(ahead)} after the upload was received "
                    f"(allowed clock slack {format_duration(t.future_slack.total_seconds())})"
                ),
            )
        )

    if finished_at < received_at - t.stale_after:
        age = (received_at - finished_at).total_seconds()
        flags.append(
            Flag(
                code="visit_stale",
                severity="warning",
                value=float(round(age)),
                threshold=t.stale_after.total_seconds(),
                detail=(
                    f"visit finished {format_duration(age)} before the upload was received "
                    f"(limit {format_duration(t.stale_after.total_seconds())})"
                ),
            )
        )

    if finished_at < started_at:
        gap = (started_at - finished_at).total_seconds()
        flags.append(
            Flag(
                code="visit_times_inverted",
                severity="warning",
                value=float(round(gap)),
                threshold=0.0,
                detail=f"visit finished {format_duration(gap)} before it started",
            )
        )
    return flags


# --------------------------------------------------------------------------- photos


def check_photos(
    photos: Sequence[PhotoEvidence],
    fix: GpsFix | None,
    started_at: datetime,
    finished_at: datetime,
    t: Thresholds,
) -> list[Flag]:
    """Judge each photo's EXIF time and position against the visit.

    Photos are taken in order of ``photo_id`` (then their position in ``photos``); for each
    photo the flags come in this order: ``photo_exif_far``, ``photo_time_outside_visit``,
    ``photo_no_exif``. A photo with only one of latitude/longitude has no EXIF position.
    Without a GPS fix there is nothing to compare the EXIF position with. If the visit's
    times are inverted, the window spans from the earlier to the later of the two.
    """
    _require_aware("started_at", started_at)
    _require_aware("finished_at", finished_at)
    for photo in photos:
        if photo.taken_at is not None:
            _require_aware(f"taken_at of photo {photo.photo_id}", photo.taken_at)

    slack = t.photo_time_slack
    window_start = min(started_at, finished_at) - slack
    window_end = max(started_at, finished_at) + slack

    flags: list[Flag] = []
    ordered = sorted(enumerate(photos), key=lambda item: (item[1].photo_id, item[0]))
    for _, photo in ordered:
        has_position = photo.gps_lat is not None and photo.gps_lon is not None
        if fix is not None and photo.gps_lat is not None and photo.gps_lon is not None:
            dist = distance_m(photo.gps_lat, photo.gps_lon, fix.lat, fix.lon)
            if dist > t.photo_exif_far_m:
                flags.append(
                    Flag(
                        code="photo_exif_far",
                        severity="warning",
                        value=float(round(dist)),
                        threshold=t.photo_exif_far_m,
                        detail=(
                            f"photo {photo.photo_id} was taken {dist:.0f} m from the visit's "
                            f"GPS fix (limit {t.photo_exif_far_m:g} m)"
                        ),
                    )
                )

        if photo.taken_at is not None and not window_start <= photo.taken_at <= window_end:
            if photo.taken_at < window_start:
                outside = (window_start - photo.taken_at).total_seconds()
                where = "before the visit started"
            else:
                outside = (photo.taken_at - window_end).total_seconds()
                where = "after the visit finished"
            flags.append(
                Flag(
                    code="photo_time_outside_visit",
                    severity="warning",
                    value=float(round(outside)),
                    threshold=slack.total_seconds(),
                    detail=(
                        f"photo {photo.photo_id} was taken {format_duration(outside)} beyond "
                        f"the allowed {format_duration(slack.total_seconds())} {where}"
                    ),
                )
            )

        if photo.taken_at is None and not has_position:
            flags.append(
                Flag(
                    code="photo_no_exif",
                    severity="info",
                    value=photo.photo_id,
                    threshold=None,
                    detail=f"photo {photo.photo_id} carries no EXIF time or position",
                )
            )
    return flags


# --------------------------------------------------------------------------- travel


def check_travel(
    fix: GpsFix, finished_at: datetime, previous: PreviousVisit | None, t: Thresholds
) -> list[Flag]:
    """Flag a caseworker who got here from their previous visit faster than a car can drive.

    The speed is the geodesic distance between the two visits' positions divided by the time
    between their ``finished_at``. If no time passed (or the "previous" visit is later), the
    visit is flagged when the two positions are more than ``far_from_home_m`` apart.
    """
    _require_aware("finished_at", finished_at)
    if previous is None:
        return []
    _require_aware("previous.finished_at", previous.finished_at)

    dist = distance_m(previous.lat, previous.lon, fix.lat, fix.lon)
    seconds = (finished_at - previous.finished_at).total_seconds()
    if seconds <= 0:
        if dist > t.far_from_home_m:
            return [
                Flag(
                    code="impossible_travel",
                    severity="critical",
                    value=None,
                    threshold=t.far_from_home_m,
                    detail=(
                        f"visit is {dist:.0f} m from this caseworker's previous visit "
                        f"but no time passed between them"
                    ),
                )
            ]
        return []

    speed_kmh = (dist / 1000.0) / (seconds / 3600.0)
    if speed_kmh > t.max_speed_kmh:
        return [
            Flag(
                code="impossible_travel",
                severity="warning",
                value=round(speed_kmh, 1),
                threshold=t.max_speed_kmh,
                detail=(
                    f"reaching this visit from the caseworker's previous one means "
                    f"{speed_kmh:.1f} km/h ({dist / 1000:.1f} km in {format_duration(seconds)}; "
                    f"limit {t.max_speed_kmh:g} km/h)"
                ),
            )
        ]
    return []


# --------------------------------------------------------------------------- photo reuse


def _parse_phash(phash_hex: str) -> int:
    text = phash_hex.strip().lower()
    text = text.removeprefix("0x")
    if not text or len(text) > 16 or any(c not in "0123456789abcdef" for c in text):
        raise ValueError("a perceptual hash must be 1 to 16 hexadecimal digits (64 bits)")
    return int(text, 16)


def check_photo_reuse(
    phash_hex: str, others: Iterable[tuple[str, int]], max_hamming: int = 6
) -> list[Flag]:
    """Flag a photo whose 64-bit perceptual hash is near that of a photo in another household.

    ``others`` holds ``(phash hex, household_id)`` of photos in OTHER households (the caller
    must leave this household's own photos out). One flag per household, with the smallest
    distance found there; flags are ordered by distance, then household id.
    """
    if max_hamming < 0:
        raise ValueError("max_hamming must not be negative")
    mine = _parse_phash(phash_hex)
    best: dict[int, int] = {}
    for other_hex, household_id in others:
        dist = (mine ^ _parse_phash(other_hex)).bit_count()
        if dist <= max_hamming and dist < best.get(household_id, 65):
            best[household_id] = dist
    return [
        Flag(
            code="photo_reused",
            severity="warning",
            value=float(dist),
            threshold=float(max_hamming),
            detail=(
                f"photo matches a photo of household {household_id} "
                f"(perceptual hash distance {dist} of 64 bits, limit {max_hamming})"
            ),
        )
        for household_id, dist in sorted(best.items(), key=lambda item: (item[1], item[0]))
    ]


# --------------------------------------------------------------------------- faces

_FACE_CHUNK_ROWS = 16384


def nearest_faces(
    encoding: Sequence[float], candidates: npt.NDArray[np.floating], threshold: float
) -> list[tuple[int, float]]:
    """Rows of ``candidates`` whose Euclidean distance to ``encoding`` is under ``threshold``.

    ``candidates`` is an ``(N, D)`` float array of face encodings (D = ``len(encoding)``,
    128 for dlib/face_recognition; float32 is fastest). Returns ``[(row, distance)]`` with
    ``distance < threshold``, nearest first, ties by row index.

    The scan runs in chunks (a few MB of temporaries, not N × D) in float32, or float64 if
    the candidates are float64, with a small safety margin; the survivors' distances are then
    recomputed in float64 and compared exactly with ``threshold``. Rows holding NaN never match.
    """
    query64 = np.asarray(encoding, dtype=np.float64)
    if query64.ndim != 1 or query64.size == 0:
        raise ValueError("encoding must be a non-empty 1-d sequence of floats")
    if not np.all(np.isfinite(query64)):
        raise ValueError("encoding must hold finite numbers")
    if not math.isfinite(threshold):
        raise ValueError("threshold must be a finite number")
    cands = np.asarray(candidates)
    if cands.ndim != 2 or cands.shape[1] != query64.size:
        raise ValueError(
            f"candidates must be an (N, {query64.size}) array, got shape {cands.shape}"
        )
    if threshold <= 0 or cands.shape[0] == 0:
        return []

    work_dtype = np.float64 if cands.dtype == np.float64 else np.float32
    query = query64.astype(work_dtype)
    # The fast pass must never drop a row the exact pass would keep. Its errors: rounding
    # the query (<= eps * |q|), the subtraction (<= eps * distance) and the sum of D squares
    # (relative <= D * eps); pad the squared limit generously for all three.
    eps = float(np.finfo(work_dtype).eps)
    padded = threshold + 4 * eps * (float(np.linalg.norm(query64)) + threshold)
    limit_sq = padded * padded * (1 + 4 * (query64.size + 4) * eps)

    n = cands.shape[0]
    hits: list[npt.NDArray[np.intp]] = []
    rows_per_chunk = min(n, _FACE_CHUNK_ROWS)
    diff_buf = np.empty((rows_per_chunk, query.size), dtype=work_dtype)
    sq_buf = np.empty(rows_per_chunk, dtype=work_dtype)
    for start in range(0, n, rows_per_chunk):
        block = cands[start : start + rows_per_chunk]
        diff = diff_buf[: block.shape[0]]
        out = sq_buf[: block.shape[0]]
        np.subtract(block, query, out=diff, casting="same_kind")
        np.einsum("ij,ij->i", diff, diff, out=out)
        (rows,) = np.nonzero(out < limit_sq)
        if rows.size:
            hits.append(rows + start)

    if not hits:
        return []
    idx = np.concatenate(hits)
    exact_diff = cands[idx].astype(np.float64) - query64
    dist = np.sqrt(np.einsum("ij,ij->i", exact_diff, exact_diff))
    keep = dist < threshold
    idx, dist = idx[keep], dist[keep]
    order = np.lexsort((idx, dist))
    return [(int(idx[i]), float(dist[i])) for i in order]
