"""Visit integrity: patterns across one caseworker's visits (lane D).
Pure: no Flask, no database, no server.region.

A single visit can sit just inside every threshold and still be part of a pattern no
honest day produces. Four patterns, each a group of visits (docs/field-visits.md,
"Patterns across visits"):

- ``pattern_one_spot``: visits to several different households whose fixes lie within
  a few tens of metres of one fix, within a few hours, while the households' registered
  homes are spread wider and the fixes are not at those homes. The key idea: honest
  fixes follow the homes (neighbours next door have fixes next door); curbstoned fixes
  stay on the spot where the caseworker sat.
- ``pattern_fast_legs``: along the day, the leg from one visit's end to the next one's
  start, between the two fixes, faster than village roads allow (beyond the fixes'
  accuracies and a little slack for a form finished on the way); or two visits
  overlapping in time in places far apart.
- ``pattern_odd_hours``: visits started at night, when nobody visits; or a run of
  visits filed back-to-back outside working hours, faster than a visit can be made.
- ``pattern_shared_spots``: a caseworker's month in which a large share of the visits
  were made away from their own home, from a spot where another household's visit fix
  lies (and whose home is elsewhere).

The geometry the console's maps and activity table use (clusters of fixes, leg speeds,
shared spots) lives here too, so the maps and the flags count the same way.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta, tzinfo
from itertools import pairwise
from typing import Any

from server.visits.checks import distance_m

EARTH_RADIUS_M = 6_371_008.8  # mean radius (IUGG)

ONE_SPOT = "pattern_one_spot"
FAST_LEGS = "pattern_fast_legs"
ODD_HOURS = "pattern_odd_hours"
SHARED_SPOTS = "pattern_shared_spots"
PATTERN_CODES = (ONE_SPOT, FAST_LEGS, ODD_HOURS, SHARED_SPOTS)


# --------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class PatternRules:
    """The region file's ``[integrity.patterns]`` section (defaults equal the file's).
    Shared spots use ``[supervision] shared_spot_m`` (one home for the rule: the
    activity table and the flags agree). Legs have their own ``leg_kmh``: the maps'
    ``[maps] impossible_speed_kmh`` (80) draws legs beyond a car; a pattern flags legs
    beyond a motorbike on village roads, in a straight line."""

    # One spot: this many different households' fixes within one_spot_radius_m of one
    # fix, started within one_spot_hours of it.
    one_spot_radius_m: float = 40.0
    one_spot_min_households: int = 3
    one_spot_hours: float = 3.0
    # A fix farther than this from its own registered home, beyond its reported
    # accuracy, was not taken at the home; homes of one spot must also be spread wider
    # than this (neighbours next door are not a pattern).
    home_away_m: float = 80.0
    # Legs between consecutive visits: faster than leg_kmh in a straight line door to
    # door (the gap includes walking to the vehicle and parking; roads wind about 1.3x
    # the straight line: beyond a motorbike on village and township roads) over the
    # gap plus leg_slack_minutes (a form finished at the door, the clock), for legs
    # longer than leg_min_m beyond both accuracies (shorter ones are walked, and a form
    # finished on the walk to the next home shortens the gap). An overlap longer than
    # overlap_slack_minutes between places farther apart than overlap_apart_m (beyond
    # both accuracies) is two places at once.
    leg_kmh: float = 45.0
    leg_slack_minutes: float = 0.25
    leg_min_m: float = 500.0
    overlap_slack_minutes: float = 3.0
    overlap_apart_m: float = 100.0
    # Odd hours (local time of the start): night_start_hour to night_end_hour nobody
    # visits; outside work_start_hour to work_end_hour, a run of run_visits or more
    # visits each started within run_minutes of the previous one is filed, not made.
    night_start_hour: int = 22
    night_end_hour: int = 6
    work_start_hour: int = 7
    work_end_hour: int = 19
    run_visits: int = 4
    run_minutes: float = 8.0
    # Shared spots: a caseworker's month with at least shared_min_visits such visits
    # making more than shared_share of the month's visits.
    shared_share: float = 0.3
    shared_min_visits: int = 5
    # The nightly job looks at the last this many days of every caseworker.
    nightly_days: int = 7


_WHERE = "integrity.patterns."
_INT_KEYS = {
    "one_spot_min_households",
    "night_start_hour",
    "night_end_hour",
    "work_start_hour",
    "work_end_hour",
    "run_visits",
    "shared_min_visits",
    "nightly_days",
}
_HOURS = {"night_start_hour", "night_end_hour", "work_start_hour", "work_end_hour"}


def _value(key: str, raw: Any) -> float | int:
    where = _WHERE + key
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise ValueError(f"{where}: {raw!r} must be a number")
    if key in _INT_KEYS:
        if not isinstance(raw, int):
            raise ValueError(f"{where}: {raw!r} must be a whole number")
        if key in _HOURS:
            if not 0 <= raw <= 23:
                raise ValueError(f"{where}: {raw!r} must be an hour from 0 to 23")
            return raw
        if raw < (2 if key in {"one_spot_min_households", "run_visits"} else 1):
            raise ValueError(f"{where}: {raw!r} is too small")
        return raw
    value = float(raw)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{where}: {raw!r} must be a finite number, not negative")
    if key == "shared_share" and not 0 < value < 1:
        raise ValueError(f"{where}: {raw!r} must be a share between 0 and 1")
    if key not in {"leg_slack_minutes", "overlap_slack_minutes"} and value == 0:
        raise ValueError(f"{where}: {raw!r} must be positive")
    return value


def parse_patterns_rules(data: dict[str, Any]) -> PatternRules:
    """Validate ``[integrity.patterns]``; raises ValueError with the key's path."""
    known = {f.name for f in fields(PatternRules)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"{_WHERE}{sorted(unknown)[0]}: unknown key")
    rules = PatternRules(**{key: _value(key, raw) for key, raw in data.items()})  # type: ignore[arg-type]
    if rules.night_start_hour == rules.night_end_hour:
        raise ValueError(f"{_WHERE}night_end_hour: the night must not be empty")
    if rules.work_start_hour >= rules.work_end_hour:
        raise ValueError(f"{_WHERE}work_end_hour: must be later than work_start_hour")
    return rules


# --------------------------------------------------------------------------- geometry


def leg_speed_kmh(distance_m: float, seconds: float) -> float | None:
    """Speed over a leg; None when no time passed (or the clock went backwards)."""
    if seconds <= 0:
        return None
    return (distance_m / 1000.0) / (seconds / 3600.0)


def local_metres(lat0: float, points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """``(lat, lon)`` points as metres east and north of (lat0, 0), equirectangular."""
    cos0 = math.cos(math.radians(lat0))
    return [
        (EARTH_RADIUS_M * math.radians(lon) * cos0, EARTH_RADIUS_M * math.radians(lat))
        for lat, lon in points
    ]


class _Grid:
    """Points on a grid of ``radius_m`` cells over a local flat projection (around
    their mean latitude): the points within ``radius_m`` of one are found in the 3x3
    cells around it, so the work grows with the points, not their square."""

    def __init__(self, latlon: Sequence[tuple[float, float]], radius_m: float) -> None:
        self.radius_m = radius_m
        self.r2 = radius_m * radius_m
        lat0 = sum(p[0] for p in latlon) / len(latlon) if latlon else 0.0
        self.xy = local_metres(lat0, latlon)
        self.cells: dict[tuple[int, int], list[int]] = defaultdict(list)
        for index, (x, y) in enumerate(self.xy):
            self.cells[(math.floor(x / radius_m), math.floor(y / radius_m))].append(index)

    def near(self, index: int) -> Iterator[int]:
        """The points within ``radius_m`` of point ``index`` (itself included), cell by
        cell: a caller that needs only one may stop early."""
        xy = self.xy
        x, y = xy[index]
        cx, cy = math.floor(x / self.radius_m), math.floor(y / self.radius_m)
        r2 = self.r2
        for gx in (cx - 1, cx, cx + 1):
            for gy in (cy - 1, cy, cy + 1):
                for other in self.cells.get((gx, gy), ()):
                    if (xy[other][0] - x) ** 2 + (xy[other][1] - y) ** 2 <= r2:
                        yield other


def _near_pairs(latlon: Sequence[tuple[float, float]], radius_m: float) -> list[list[int]]:
    """For each point, the indices of the points within ``radius_m`` (itself included),
    ascending (:class:`_Grid`)."""
    if not latlon:
        return []
    grid = _Grid(latlon, radius_m)
    return [sorted(grid.near(index)) for index in range(len(latlon))]


@dataclass(frozen=True)
class Cluster:
    """Fixes of several households within ``radius_m`` of the fix at ``centre``."""

    centre: int  # index of the central fix
    members: tuple[int, ...]  # indices of every fix in it, the centre included
    households: int  # how many different households


def find_clusters(
    points: Sequence[tuple[float, float, object]],
    radius_m: float,
    min_households: int,
    *,
    times: Sequence[float] | None = None,
    within_s: float | None = None,
) -> list[Cluster]:
    """Spots from which fixes of at least ``min_households`` different households were
    taken: ``points`` are ``(lat, lon, household key)``. Greedy: the fix with the most
    other households within ``radius_m`` is a centre; its neighbours (not yet in a
    cluster) join it; repeat. A fix belongs to one cluster at most. With ``times``
    (seconds) and ``within_s``, a neighbour must also lie within ``within_s`` of the
    centre in time. Linear in the number of fixes for spread-out data."""
    if not points or radius_m <= 0:
        return []
    near = _near_pairs([(p[0], p[1]) for p in points], radius_m)
    if times is not None and within_s is not None:
        near = [
            [j for j in row if abs(times[j] - times[i]) <= within_s] for i, row in enumerate(near)
        ]
    order = sorted(range(len(points)), key=lambda i: (-len({points[j][2] for j in near[i]}), i))
    taken: set[int] = set()
    clusters: list[Cluster] = []
    for centre in order:
        if centre in taken:
            continue
        members = sorted(j for j in near[centre] if j not in taken)
        households = len({points[j][2] for j in members})
        if households < min_households:
            continue
        taken.update(members)
        clusters.append(Cluster(centre, tuple(members), households))
    return clusters


def shared_spot_visits(points: list[tuple[int, int, float, float]], within_m: float) -> set[int]:
    """The visits (id, household, lat, lon) whose fix lies within ``within_m`` metres of
    the fix of a visit to another household (the console's activity column)."""
    near = _near_pairs([(p[2], p[3]) for p in points], within_m)
    shared: set[int] = set()
    for i, row in enumerate(near):
        for j in row:
            if points[j][1] != points[i][1]:
                shared.update((points[i][0], points[j][0]))
    return shared


# --------------------------------------------------------------------------- visits


@dataclass(frozen=True)
class VisitPoint:
    """One visit as the patterns see it (times aware, positions WGS-84)."""

    survey_id: int
    household_id: int
    home_lat: float
    home_lon: float
    lat: float
    lon: float
    accuracy_m: float | None
    started_at: datetime
    finished_at: datetime

    @property
    def accuracy(self) -> float:
        """The reported accuracy; none (or nonsense) counts as none at all."""
        acc = self.accuracy_m
        return acc if acc is not None and math.isfinite(acc) and acc > 0 else 0.0

    def from_home_m(self) -> float:
        return distance_m(self.lat, self.lon, self.home_lat, self.home_lon)


@dataclass(frozen=True)
class Pattern:
    """A group of visits that together look made up. ``summary`` completes "one of N
    ..." in the flags' detail (English; distances, durations and counts only)."""

    kind: str
    members: tuple[int, ...]  # survey ids, ascending
    summary: str
    value: float | None = None
    threshold: float | None = None


def flag_detail(pattern_id: int, members: int, summary: str) -> str:
    """The detail of every flag of a pattern (the job completes it with its id)."""
    if members == 1:  # a night's only visit
        return f"{summary}: this visit alone (pattern #{pattern_id})"
    return f"one of {members} {summary} (pattern #{pattern_id})"


def _span(seconds: float) -> str:
    seconds = abs(seconds)
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _not_at_home(v: VisitPoint, away_m: float) -> bool:
    """The fix is farther from the visit's own home than its accuracy and away_m explain."""
    return v.from_home_m() - v.accuracy > away_m


def _spread_m(points: Sequence[tuple[float, float]]) -> float:
    """The largest distance between two of the points (0 for one point)."""
    unique = sorted(set(points))
    return max(
        (distance_m(a[0], a[1], b[0], b[1]) for i, a in enumerate(unique) for b in unique[i + 1 :]),
        default=0.0,
    )


def _by_start(visits: Iterable[VisitPoint]) -> list[VisitPoint]:
    return sorted(visits, key=lambda v: (v.started_at, v.survey_id))


# --------------------------------------------------------------------------- one spot


def pattern_one_spot(visits: Sequence[VisitPoint], rules: PatternRules) -> list[Pattern]:
    """Several households "visited" from one spot in a short time: fixes of at least
    ``one_spot_min_households`` households within ``one_spot_radius_m`` of one fix and
    started within ``one_spot_hours`` of it, each fix away from its own home, the homes
    spread over more than ``home_away_m``; then every such fix (away from its home, in
    that time) within ``one_spot_radius_m`` of one already in joins (a caseworker
    shifting about on the spot). Visits whose fix is at their home stay out (the one
    household the caseworker did visit, neighbours next door)."""
    away = [v for v in visits if _not_at_home(v, rules.home_away_m)]
    found = find_clusters(
        [(v.lat, v.lon, v.household_id) for v in away],
        rules.one_spot_radius_m,
        rules.one_spot_min_households,
        times=[v.started_at.timestamp() for v in away],
        within_s=rules.one_spot_hours * 3600,
    )
    near = _near_pairs([(v.lat, v.lon) for v in away], rules.one_spot_radius_m)
    taken = {i for cluster in found for i in cluster.members}
    patterns = []
    for cluster in found:
        centre_start = away[cluster.centre].started_at
        window = timedelta(hours=rules.one_spot_hours)
        grown = set(cluster.members)
        edge = list(cluster.members)
        while edge:  # a caseworker shifting about on the spot: fixes chained within the radius
            added = {
                j
                for i in edge
                for j in near[i]
                if j not in grown
                and j not in taken
                and abs(away[j].started_at - centre_start) <= window
            }
            grown |= added
            taken |= added
            edge = sorted(added)
        members = [away[i] for i in sorted(grown)]
        if _spread_m([(v.home_lat, v.home_lon) for v in members]) <= rules.home_away_m:
            continue  # homes registered at one place: a data error, not a pattern
        centre = away[cluster.centre]
        households = len({v.household_id for v in members})
        span = max(v.finished_at for v in members) - min(v.started_at for v in members)
        homes = [distance_m(centre.lat, centre.lon, v.home_lat, v.home_lon) for v in members]
        patterns.append(
            Pattern(
                kind=ONE_SPOT,
                members=tuple(sorted(v.survey_id for v in members)),
                summary=(
                    f"visits to {households} households from one spot within "
                    f"{rules.one_spot_radius_m:g} m in {_span(span.total_seconds())}, "
                    f"their homes {min(homes):.0f}-{max(homes):.0f} m away"
                ),
                value=float(households),
                threshold=rules.one_spot_radius_m,
            )
        )
    return patterns


# --------------------------------------------------------------------------- legs


@dataclass(frozen=True)
class _BadLeg:
    before: VisitPoint
    after: VisitPoint
    speed_kmh: float | None  # None: an overlap
    apart_m: float
    gap_s: float


def _bad_leg(a: VisitPoint, b: VisitPoint, rules: PatternRules, max_kmh: float) -> _BadLeg | None:
    apart = distance_m(a.lat, a.lon, b.lat, b.lon) - a.accuracy - b.accuracy
    if apart <= 0:
        return None
    gap = (b.started_at - a.finished_at).total_seconds()
    if gap < -rules.overlap_slack_minutes * 60:
        return _BadLeg(a, b, None, apart, gap) if apart > rules.overlap_apart_m else None
    if apart < rules.leg_min_m:
        return None
    slack = rules.leg_slack_minutes * 60
    speed = leg_speed_kmh(apart, max(gap, 0.0) + slack)
    if speed is None:  # no slack and no gap: apart in no time at all
        return _BadLeg(a, b, math.inf, apart, gap) if apart > rules.overlap_apart_m else None
    return _BadLeg(a, b, speed, apart, gap) if speed > max_kmh else None


def pattern_fast_legs(
    visits: Sequence[VisitPoint], rules: PatternRules, max_kmh: float
) -> list[Pattern]:
    """Along the caseworker's visits in time order, legs from one visit's end to the
    next one's start faster than ``max_kmh`` over the distance between the fixes less
    both accuracies (legs of at least ``leg_min_m``), with ``leg_slack_minutes`` added
    to the gap; and overlaps longer than ``overlap_slack_minutes`` between places more
    than ``overlap_apart_m`` apart. Consecutive bad
    legs make one pattern (a chain of visits)."""
    ordered = _by_start(visits)
    chains: list[list[_BadLeg]] = []
    for a, b in pairwise(ordered):
        leg = _bad_leg(a, b, rules, max_kmh)
        if leg is None:
            continue
        if chains and chains[-1][-1].after is a:
            chains[-1].append(leg)
        else:
            chains.append([leg])
    patterns = []
    for chain in chains:
        members = {leg.before.survey_id for leg in chain} | {leg.after.survey_id for leg in chain}
        overlaps = [leg for leg in chain if leg.speed_kmh is None]
        if overlaps:
            worst = max(overlaps, key=lambda leg: leg.apart_m)
            summary = (
                f"visits overlapping in time in places {worst.apart_m / 1000:.1f} km apart "
                f"(beyond their GPS accuracy) for {_span(-worst.gap_s)}"
            )
            value = None
        else:
            worst = max(chain, key=lambda leg: leg.speed_kmh or 0.0)
            speed = worst.speed_kmh or 0.0
            shown = "no time" if math.isinf(speed) else f"{speed:.0f} km/h"
            summary = (
                f"visits linked by legs faster than village roads allow: "
                f"{worst.apart_m / 1000:.1f} km in {_span(max(worst.gap_s, 0.0))} "
                f"({shown}, limit {max_kmh:g} km/h with {rules.leg_slack_minutes:g} min slack)"
            )
            value = None if math.isinf(speed) else round(speed, 1)
        patterns.append(
            Pattern(FAST_LEGS, tuple(sorted(members)), summary, value=value, threshold=max_kmh)
        )
    return patterns


# --------------------------------------------------------------------------- odd hours


def _in_hours(hour: int, start: int, end: int) -> bool:
    """``start <= hour < end`` on a clock (the range may wrap past midnight)."""
    return start <= hour < end if start < end else hour >= start or hour < end


def pattern_odd_hours(
    visits: Sequence[VisitPoint], rules: PatternRules, tz: tzinfo
) -> list[Pattern]:
    """Visits started at night (local time), one pattern per night; and runs of at
    least ``run_visits`` visits started outside working hours, each within
    ``run_minutes`` of the previous one's start (no visit is made that fast)."""
    ordered = _by_start(visits)
    groups: list[tuple[set[int], str]] = []
    nights: dict[object, list[VisitPoint]] = defaultdict(list)
    for v in ordered:
        local = v.started_at.astimezone(tz)
        if _in_hours(local.hour, rules.night_start_hour, rules.night_end_hour):
            nights[(local - timedelta(hours=rules.night_end_hour)).date()].append(v)
    window = f"{rules.night_start_hour:02d}:00-{rules.night_end_hour:02d}:00"
    for night in nights.values():
        groups.append(
            ({v.survey_id for v in night}, f"visits started at night ({window} local time)")
        )
    for run in _runs(ordered, rules, tz):
        span = (run[-1].started_at - run[0].started_at).total_seconds()
        groups.append(
            (
                {r.survey_id for r in run},
                f"visits started back-to-back outside working hours "
                f"({len(run)} in {_span(span)}, each within {rules.run_minutes:g} min "
                f"of the previous one)",
            )
        )
    return [
        Pattern(ODD_HOURS, tuple(sorted(ids)), summary) for ids, summary in _merge_groups(groups)
    ]


def _runs(ordered: Sequence[VisitPoint], rules: PatternRules, tz: tzinfo) -> list[list[VisitPoint]]:
    """Runs of at least ``run_visits`` consecutive visits started outside working
    hours, each within ``run_minutes`` of the previous one's start."""
    runs: list[list[VisitPoint]] = []
    current: list[VisitPoint] = []
    for v in ordered:
        hour = v.started_at.astimezone(tz).hour
        outside = not _in_hours(hour, rules.work_start_hour, rules.work_end_hour)
        gap = (v.started_at - current[-1].started_at).total_seconds() if current else None
        if outside and gap is not None and gap < rules.run_minutes * 60:
            current.append(v)
            continue
        if len(current) >= rules.run_visits:
            runs.append(current)
        current = [v] if outside else []
    if len(current) >= rules.run_visits:
        runs.append(current)
    return runs


def _merge_groups(groups: list[tuple[set[int], str]]) -> list[tuple[set[int], str]]:
    """Groups sharing a visit become one (the first group's summary)."""
    merged: list[tuple[set[int], str]] = []
    for ids, summary in groups:
        joined = [m for m in merged if m[0] & ids]
        for m in joined:
            merged.remove(m)
        union = set(ids).union(*(m[0] for m in joined))
        merged.append((union, joined[0][1] if joined else summary))
    return sorted(merged, key=lambda m: min(m[0]))


# --------------------------------------------------------------------------- shared spots


def pattern_shared_spots(
    visits: Sequence[VisitPoint],
    others: Sequence[VisitPoint],
    rules: PatternRules,
    within_m: float,
    month_of: Callable[[VisitPoint], str],
) -> list[Pattern]:
    """Per month (``month_of``), the caseworker's visits made away from their own home
    (``home_away_m`` beyond accuracy) from a spot within ``within_m`` of another
    household's visit fix (theirs or ``others``, any caseworker's) whose home lies more
    than ``home_away_m`` from this visit's home. Flagged when at least
    ``shared_min_visits`` of them make more than ``shared_share`` of the month."""
    everyone = [*visits, *others]
    # Only a visit away from its home is judged, so only its neighbours are looked at,
    # and only until one qualifies: a month of visits made at home (or at one spot of
    # one household) costs a pass over the visits, not a comparison of every pair.
    grid = _Grid([(v.lat, v.lon) for v in everyone], within_m)
    month_at = [month_of(v) for v in everyone]
    months: dict[str, list[VisitPoint]] = defaultdict(list)
    shared: dict[str, list[VisitPoint]] = defaultdict(list)
    for index, v in enumerate(visits):
        month = month_at[index]
        months[month].append(v)
        if not _not_at_home(v, rules.home_away_m):
            continue
        if any(
            everyone[j].household_id != v.household_id
            and month_at[j] == month
            and distance_m(v.home_lat, v.home_lon, everyone[j].home_lat, everyone[j].home_lon)
            > rules.home_away_m
            for j in grid.near(index)
        ):
            shared[month].append(v)
    patterns = []
    for month, found in sorted(shared.items()):
        total = len(months[month])
        share = len(found) / total
        if len(found) < rules.shared_min_visits or share <= rules.shared_share:
            continue
        patterns.append(
            Pattern(
                SHARED_SPOTS,
                tuple(sorted(v.survey_id for v in found)),
                (
                    f"visits of {month} ({len(found)} of {total}, {100 * share:.0f}%) made away "
                    f"from their home, within {within_m:g} m of another household's visit"
                ),
                value=round(100 * share, 1),
                threshold=100 * rules.shared_share,
            )
        )
    return patterns


def detect_patterns(
    visits: Sequence[VisitPoint],
    others: Sequence[VisitPoint],
    rules: PatternRules,
    *,
    max_kmh: float,
    shared_spot_m: float,
    tz: tzinfo,
) -> list[Pattern]:
    """Every pattern among one caseworker's ``visits`` (``others``: other caseworkers'
    visits of the same months near them, for shared spots)."""

    def month_of(v: VisitPoint) -> str:
        return v.finished_at.astimezone(tz).strftime("%Y-%m")

    return [
        *pattern_one_spot(visits, rules),
        *pattern_fast_legs(visits, rules, max_kmh),
        *pattern_odd_hours(visits, rules, tz),
        *pattern_shared_spots(visits, others, rules, shared_spot_m, month_of),
    ]
