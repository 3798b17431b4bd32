"""Visit integrity: per-visit checks of the upload (lane A).
Pure: no Flask, no database, no server.region.

Each function judges one sign of a fabricated visit and returns a list of
:class:`~server.visits.checks.Flag` (empty when the visit looks honest). They target the
visit built to sit just inside the older single-number checks: a two-minute "visit", a
fix with 1 m accuracy at exactly the registered home, the same coordinates pasted into
several visits, a cached fix from before the visit, a track that never moves or leaps.
Every threshold is in :class:`VisitRules` (the region file's ``[integrity.visit]``);
docs/field-visits.md, "Per-visit checks", says why each value was chosen.

======================== ======== ====================================================
code                     severity value / threshold
======================== ======== ====================================================
visit_too_short          warning, the visit's seconds / the minimum in seconds
                         critical (critical under half the minimum)
photos_bunched           warning  seconds between first and last photo / the limit
gps_too_precise          warning  reported accuracy in metres / ``precise_below_m``
gps_at_registered_point  warning, metres from the registered home (0.01 m steps) /
                         critical ``registered_point_m`` (critical when identical)
gps_repeated             warning  number of other visits / ``repeated_within_m``
gps_fix_stale            warning  seconds the fix predates the start / slack seconds
track_static             warning  number of identical points / ``static_min_points``
track_jump               warning  km/h of the fastest leap / ``jump_kmh``
======================== ======== ====================================================
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any

from server.visits.checks import Flag, _require_aware, distance_m, format_duration

__all__ = [
    "TrackPoint",
    "VisitRules",
    "gps_at_registered_point",
    "gps_fix_stale",
    "gps_repeated",
    "gps_too_precise",
    "minimum_minutes",
    "parse_visit_rules",
    "photos_bunched",
    "repeat_box",
    "track_jump",
    "track_static",
    "visit_too_short",
]

# Metres per degree of latitude (and of longitude at the equator): the box a database
# query uses before the exact geodesic distance decides.
_M_PER_DEGREE = 111_320.0


@dataclass(frozen=True)
class VisitRules:
    """The region file's ``[integrity.visit]`` section (the defaults are that file's)."""

    # visit_too_short: the least a visit takes, by kind, plus per member recorded and
    # per photo in its manifest.
    min_minutes_initial_survey: float = 15.0
    min_minutes_periodic_review: float = 5.0
    min_minutes_assisted_proof_of_life: float = 4.0
    min_minutes_per_member: float = 1.0
    min_minutes_per_photo: float = 0.25
    # photos_bunched: at least this many photos with a time, all within bunched_seconds
    # (or within bunched_share of the visit, at most bunched_max_seconds), in a visit of
    # at least bunched_min_visit_minutes.
    bunched_min_photos: int = 3
    bunched_seconds: float = 25.0
    bunched_share: float = 0.02
    bunched_max_seconds: float = 60.0
    bunched_min_visit_minutes: float = 5.0
    # gps_too_precise: a reported accuracy under this (0 itself is gps_mock).
    precise_below_m: float = 2.0
    # gps_at_registered_point: the fix this close to the registered home; critical when
    # within identical_m (the coordinates copied).
    registered_point_m: float = 0.3
    identical_m: float = 0.01
    # gps_repeated: another visit's fix this close.
    repeated_within_m: float = 0.02
    # gps_fix_stale: the fix taken more than this before the visit started.
    fix_stale_minutes: float = 10.0
    # track_static: this many points over at least static_min_seconds, all within
    # identical_m of each other, unless every point reports an accuracy worse than
    # static_max_accuracy_m (a network fix repeats itself; a GPS fix never does).
    static_min_points: int = 5
    static_min_seconds: float = 120.0
    static_max_accuracy_m: float = 20.0
    # track_jump: consecutive points faster than jump_kmh, over more than jump_min_m and
    # more than jump_accuracy_factor times their accuracies added up.
    jump_kmh: float = 150.0
    jump_min_m: float = 100.0
    jump_accuracy_factor: float = 3.0

    def minimum_for(self, kind: str) -> float | None:
        """The base minutes of a visit kind (None for a kind with no rule)."""
        base: dict[str, float] = {
            "initial_survey": self.min_minutes_initial_survey,
            "periodic_review": self.min_minutes_periodic_review,
            "assisted_proof_of_life": self.min_minutes_assisted_proof_of_life,
        }
        return base.get(kind)


_WHOLE = frozenset({"bunched_min_photos", "static_min_points"})
# May be 0 (switches that part of a rule off); every other value must be positive.
_MAY_BE_ZERO = frozenset({"min_minutes_per_member", "min_minutes_per_photo", "bunched_share"})


def parse_visit_rules(data: dict[str, Any]) -> VisitRules:
    """Validate ``[integrity.visit]``; raises ValueError with the key's path."""
    known = {f.name for f in fields(VisitRules)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"integrity.visit: unknown setting(s) {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for name, raw in data.items():
        where = f"integrity.visit.{name}"
        if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
            raise ValueError(f"{where}: {raw!r} must be a number")
        if name in _WHOLE:
            if not isinstance(raw, int) or raw < 2:
                raise ValueError(f"{where}: {raw!r} must be a whole number of at least 2")
            values[name] = raw
            continue
        if raw < 0 or (raw == 0 and name not in _MAY_BE_ZERO):
            raise ValueError(f"{where}: {raw!r} must be a positive number")
        values[name] = float(raw)
    rules = VisitRules(**values)
    if rules.bunched_share >= 1:
        raise ValueError("integrity.visit.bunched_share: must be below 1 (a share of the visit)")
    if rules.identical_m > rules.registered_point_m:
        raise ValueError("integrity.visit.identical_m: must not exceed registered_point_m")
    return rules


# --------------------------------------------------------------------------- duration


def minimum_minutes(kind: str, members: int, photos: int, rules: VisitRules) -> float | None:
    """The least time a visit of this kind recording this much can honestly take."""
    base = rules.minimum_for(kind)
    if base is None:
        return None
    return (
        base
        + max(members, 0) * rules.min_minutes_per_member
        + max(photos, 0) * rules.min_minutes_per_photo
    )


def visit_too_short(
    kind: str,
    started_at: datetime,
    finished_at: datetime,
    members: int,
    photos: int,
    rules: VisitRules,
) -> list[Flag]:
    """A visit shorter than what it recorded needs: talking to each member, taking each
    photo, and the kind's own work (an application takes longer than a review). Critical
    under half the minimum: no honest visit is that fast. Inverted times are
    ``visit_times_inverted``'s business and are not judged here.
    """
    _require_aware("started_at", started_at)
    _require_aware("finished_at", finished_at)
    least = minimum_minutes(kind, members, photos, rules)
    seconds = (finished_at - started_at).total_seconds()
    if least is None or seconds < 0 or seconds >= least * 60:
        return []
    critical = seconds < least * 30
    return [
        Flag(
            code="visit_too_short",
            severity="critical" if critical else "warning",
            value=float(round(seconds)),
            threshold=round(least * 60, 1),
            detail=(
                f"a {kind} visit recording {members} member(s) and {photos} photo(s) "
                f"lasted {format_duration(seconds)}; "
                f"it needs at least {format_duration(least * 60)}"
            ),
        )
    ]


# --------------------------------------------------------------------------- photo times


def photos_bunched(
    photo_times: Sequence[datetime],
    started_at: datetime,
    finished_at: datetime,
    rules: VisitRules,
) -> list[Flag]:
    """Photos of a long visit all taken within moments of each other: what a visit
    "done" from the doorstep or the car looks like. An honest caseworker takes a portrait
    of each member, the rooms and the outside over several minutes. ``photo_times``: each
    photo's EXIF time when it has one, else the tablet's ``taken_at``; photos without
    either, and documents (shot in a row at one table), are left out by the caller.
    """
    _require_aware("started_at", started_at)
    _require_aware("finished_at", finished_at)
    for moment in photo_times:
        _require_aware("a photo's time", moment)
    if len(photo_times) < rules.bunched_min_photos:
        return []
    visit = (finished_at - started_at).total_seconds()
    if visit < rules.bunched_min_visit_minutes * 60:
        return []  # a short visit is visit_too_short's business
    spread = (max(photo_times) - min(photo_times)).total_seconds()
    limit = min(max(rules.bunched_seconds, rules.bunched_share * visit), rules.bunched_max_seconds)
    if spread > limit:
        return []
    return [
        Flag(
            code="photos_bunched",
            severity="warning",
            value=float(round(spread)),
            threshold=round(limit, 1),
            detail=(
                f"{len(photo_times)} photos were all taken within {format_duration(spread)} "
                f"of a visit lasting {format_duration(visit)} (limit {format_duration(limit)})"
            ),
        )
    ]


# --------------------------------------------------------------------------- the fix


def gps_too_precise(accuracy_m: float | None, rules: VisitRules) -> list[Flag]:
    """An accuracy no phone or tablet receiver reports: consumer GNSS chips report
    about 3 m at best in open sky (dual-frequency phones rarely 1.5-2.5 m). An accuracy of
    exactly 0 (or invalid) is ``gps_mock``'s and is left to it.
    """
    if accuracy_m is None or not math.isfinite(accuracy_m) or accuracy_m <= 0:
        return []
    if accuracy_m >= rules.precise_below_m:
        return []
    return [
        Flag(
            code="gps_too_precise",
            severity="warning",
            value=float(accuracy_m),
            threshold=rules.precise_below_m,
            detail=(
                f"GPS fix reports an accuracy of {accuracy_m:.2f} m, better than a phone "
                f"receiver gives (floor {rules.precise_below_m:g} m)"
            ),
        )
    ]


def gps_at_registered_point(
    lat: float, lon: float, home_lat: float, home_lon: float, rules: VisitRules
) -> list[Flag]:
    """A fix on the registered home's coordinates to within centimetres: typed in from
    the case file, not measured (real fixes scatter metres around the door). The caller
    must skip it when the home was registered from this very visit's fix.
    """
    dist = distance_m(lat, lon, home_lat, home_lon)
    if dist > rules.registered_point_m:
        return []
    identical = dist <= rules.identical_m
    return [
        Flag(
            code="gps_at_registered_point",
            severity="critical" if identical else "warning",
            value=round(dist, 2),
            threshold=rules.registered_point_m,
            detail=(
                f"GPS fix is {dist:.2f} m from the registered home location "
                f"(limit {rules.registered_point_m:g} m): "
                + ("the same coordinates" if identical else "closer than a receiver repeats")
            ),
        )
    ]


def repeat_box(lat: float, lon: float, rules: VisitRules) -> tuple[float, float, float, float]:
    """(lat_min, lat_max, lon_min, lon_max) holding every fix within
    ``repeated_within_m`` of this one (with a margin): the index range a query scans
    before :func:`gps_repeated` measures.
    """
    reach = rules.repeated_within_m * 2
    dlat = reach / _M_PER_DEGREE
    dlon = reach / (_M_PER_DEGREE * max(math.cos(math.radians(lat)), 0.01))
    return lat - dlat, lat + dlat, lon - dlon, lon + dlon


def gps_repeated(
    lat: float, lon: float, others: Sequence[tuple[int, float, float]], rules: VisitRules
) -> list[Flag]:
    """The same coordinates as other visits' fixes (``others``: their survey id, lat,
    lon): two real fixes never land within centimetres of each other, a pasted or replayed
    one does. One flag naming up to five of the visits.
    """
    matches = sorted(
        survey_id
        for survey_id, other_lat, other_lon in others
        if distance_m(lat, lon, other_lat, other_lon) <= rules.repeated_within_m
    )
    if not matches:
        return []
    shown = ", ".join(str(i) for i in matches[:5]) + (" ..." if len(matches) > 5 else "")
    return [
        Flag(
            code="gps_repeated",
            severity="warning",
            value=float(len(matches)),
            threshold=rules.repeated_within_m,
            detail=(
                f"GPS fix is within {rules.repeated_within_m:g} m of the fix of "
                f"{len(matches)} other visit(s): {shown}"
            ),
        )
    ]


def gps_fix_stale(fix_at: datetime | None, started_at: datetime, rules: VisitRules) -> list[Flag]:
    """A fix taken well before the visit started: the tablet's cached last-known
    location, which says where it was earlier, not where the visit happened.
    """
    _require_aware("started_at", started_at)
    if fix_at is None:
        return []
    _require_aware("fix_at", fix_at)
    slack = timedelta(minutes=rules.fix_stale_minutes)
    if fix_at >= started_at - slack:
        return []
    before = (started_at - fix_at).total_seconds()
    return [
        Flag(
            code="gps_fix_stale",
            severity="warning",
            value=float(round(before)),
            threshold=slack.total_seconds(),
            detail=(
                f"GPS fix was taken {format_duration(before)} before the visit started "
                f"(allowed {format_duration(slack.total_seconds())})"
            ),
        )
    ]


# --------------------------------------------------------------------------- the track


@dataclass(frozen=True)
class TrackPoint:
    lat: float
    lon: float
    accuracy_m: float | None
    at: datetime


def _in_order(points: Sequence[TrackPoint]) -> list[TrackPoint]:
    for point in points:
        _require_aware("a track point's time", point.at)
    return sorted(points, key=lambda p: p.at)


def track_static(points: Sequence[TrackPoint], rules: VisitRules) -> list[Flag]:
    """A track whose points never move, over minutes: a real receiver jitters by
    metres even lying on a table (indoors more). Left alone when every point reports an
    accuracy worse than ``static_max_accuracy_m``: a Wi-Fi or cell fix can repeat itself.
    """
    ordered = _in_order(points)
    if len(ordered) < rules.static_min_points:
        return []
    span = (ordered[-1].at - ordered[0].at).total_seconds()
    if span < rules.static_min_seconds:
        return []
    reported = [p.accuracy_m for p in ordered if p.accuracy_m is not None]
    if reported and min(reported) > rules.static_max_accuracy_m:
        return []
    first = ordered[0]
    if any(distance_m(first.lat, first.lon, p.lat, p.lon) > rules.identical_m for p in ordered[1:]):
        return []
    return [
        Flag(
            code="track_static",
            severity="warning",
            value=float(len(ordered)),
            threshold=float(rules.static_min_points),
            detail=(
                f"all {len(ordered)} points of the GPS track over {format_duration(span)} "
                f"have the same coordinates (a real receiver jitters)"
            ),
        )
    ]


def track_jump(points: Sequence[TrackPoint], rules: VisitRules) -> list[Flag]:
    """Consecutive track points farther apart than any vehicle could go in the time
    between them, by more than the points' own error: a track stitched together or
    replayed. Jitter is excluded by the distance floor and the accuracy margin.
    """
    ordered = _in_order(points)
    worst: tuple[float, float, float] | None = None  # (km/h, metres, seconds)
    jumps = 0
    for prev, cur in pairwise(ordered):
        dist = distance_m(prev.lat, prev.lon, cur.lat, cur.lon)
        error = (prev.accuracy_m or 0.0) + (cur.accuracy_m or 0.0)
        if dist <= max(rules.jump_min_m, rules.jump_accuracy_factor * error):
            continue
        seconds = (cur.at - prev.at).total_seconds()
        speed = math.inf if seconds <= 0 else (dist / 1000) / (seconds / 3600)
        if speed <= rules.jump_kmh:
            continue
        jumps += 1
        if worst is None or speed > worst[0]:
            worst = (speed, dist, seconds)
    if worst is None:
        return []
    speed, dist, seconds = worst
    shown = "no time" if math.isinf(speed) else f"{speed:.0f} km/h"
    return [
        Flag(
            code="track_jump",
            severity="warning",
            value=None if math.isinf(speed) else round(speed, 1),
            threshold=rules.jump_kmh,
            detail=(
                f"the GPS track jumps {jumps} time(s); the largest is {dist:.0f} m in "
                f"{format_duration(seconds)} ({shown}; limit {rules.jump_kmh:g} km/h)"
            ),
        )
    ]
