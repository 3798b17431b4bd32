"""The pattern checks across visits, run as a job (docs/field-visits.md, "Patterns
across visits"): after each upload for its caseworker, and every night for the last
``nightly_days`` of every caseworker. The detection is pure
(``server.visits.integrity.patterns``); this module loads the visits, stores each
pattern once (``VisitPattern``) and flags every visit of it.

Idempotent: a pattern found again (same kind, a visit already in one of that kind) is
the one stored; one that grew gains its new visits, each flagged once. Patterns are
never removed here: a reviewer clears the flags. The caller commits.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Collection
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Select, and_, select
from sqlalchemy.exc import IntegrityError

from server import clock
from server.cases.models import Household
from server.extensions import db
from server.months import first_of_next_month
from server.region import region
from server.transactions import commits_per_batch
from server.visits.integrity.pattern_models import VisitPattern, VisitPatternMember
from server.visits.integrity.patterns import (
    EARTH_RADIUS_M,
    PATTERN_CODES,
    Pattern,
    VisitPoint,
    detect_patterns,
    flag_detail,
)
from server.visits.models import Survey, SurveyFlag

logger = logging.getLogger(__name__)


def _zone() -> ZoneInfo:
    return ZoneInfo(region().timezone)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), _zone()).astimezone(UTC)


def _points(query: Select[*tuple[Any, ...]]) -> list[VisitPoint]:
    return [VisitPoint(*row) for row in db.session.execute(query)]


def _visits() -> Select[*tuple[Any, ...]]:
    """Visits as the patterns see them, with their household's registered home."""
    return select(
        Survey.id,
        Survey.household_id,
        Household.home_lat,
        Household.home_lon,
        Survey.gps_lat,
        Survey.gps_lon,
        Survey.gps_accuracy_m,
        Survey.started_at,
        Survey.finished_at,
    ).join(Household, Household.id == Survey.household_id)


def _window(first_day: date, last_day: date) -> tuple[datetime, datetime]:
    """Whole local months around the days (and a day either side): shared spots are
    judged per month, and the neighbouring visits of the days' first and last legs."""
    start = (first_day - timedelta(days=1)).replace(day=1)
    end = first_of_next_month(last_day + timedelta(days=1))
    return _midnight(start), _midnight(end)


def _others_near(
    caseworker_id: int, mine: list[VisitPoint], start: datetime, end: datetime
) -> list[VisitPoint]:
    """Other caseworkers' visits of the window near this caseworker's fixes (a box
    around them, ``shared_spot_m`` wider): what a shared spot may be shared with."""
    if not mine:
        return []
    margin_m = region().supervision.shared_spot_m
    lats = [v.lat for v in mine]
    lons = [v.lon for v in mine]
    dlat = math.degrees(margin_m / EARTH_RADIUS_M)
    cos_lat = max(math.cos(math.radians(max(abs(min(lats)), abs(max(lats))))), 0.01)
    dlon = dlat / cos_lat
    return _points(
        _visits().where(
            Survey.caseworker_id != caseworker_id,
            Survey.finished_at >= start,
            Survey.finished_at < end,
            and_(Survey.gps_lat >= min(lats) - dlat, Survey.gps_lat <= max(lats) + dlat),
            and_(Survey.gps_lon >= min(lons) - dlon, Survey.gps_lon <= max(lons) + dlon),
        )
    )


def check_caseworker(caseworker_id: int, first_day: date, last_day: date) -> int:
    """Find and store the patterns of one caseworker's visits around the local days
    ``first_day`` to ``last_day``; the number of visits newly flagged."""
    start, end = _window(first_day, last_day)
    mine = _points(
        _visits()
        .where(
            Survey.caseworker_id == caseworker_id,
            Survey.finished_at >= start,
            Survey.finished_at < end,
        )
        .order_by(Survey.started_at, Survey.id)
    )
    rules = region()
    found = detect_patterns(
        mine,
        _others_near(caseworker_id, mine, start, end),
        rules.integrity.patterns,
        max_kmh=rules.integrity.patterns.leg_kmh,
        shared_spot_m=rules.supervision.shared_spot_m,
        tz=_zone(),
    )
    if not found:
        return 0
    finished = {v.survey_id: v.finished_at for v in mine}
    try:
        with db.session.begin_nested():
            return _store(caseworker_id, found, finished)
    except IntegrityError:
        # Another job stored the same pattern meanwhile: theirs is the one, join it.
        logger.info("pattern job of caseworker %s raced another; checking again", caseworker_id)
        with db.session.begin_nested():
            return _store(caseworker_id, found, finished)


def _store(caseworker_id: int, found: list[Pattern], finished: dict[int, datetime]) -> int:
    ids = sorted({s for p in found for s in p.members})
    member_of: dict[tuple[str, int], int] = {
        (kind, survey_id): pattern_id
        for kind, survey_id, pattern_id in db.session.execute(
            select(
                VisitPatternMember.kind, VisitPatternMember.survey_id, VisitPatternMember.pattern_id
            ).where(VisitPatternMember.survey_id.in_(ids))
        )
    }
    flagged = 0
    for pattern in found:
        new = [s for s in pattern.members if (pattern.kind, s) not in member_of]
        if not new:
            continue
        stored = _pattern_for(caseworker_id, pattern, member_of, finished)
        for survey_id in new:
            db.session.add(
                VisitPatternMember(pattern_id=stored.id, survey_id=survey_id, kind=pattern.kind)
            )
            member_of[(pattern.kind, survey_id)] = stored.id
        count = sum(
            1 for (kind, _s), pid in member_of.items() if kind == pattern.kind and pid == stored.id
        )
        stored.detail = flag_detail(stored.id, count, pattern.summary)
        stored.updated_at = clock.utcnow()
        _flag(stored, pattern, new, count)
        flagged += len(new)
    db.session.flush()
    return flagged


def _pattern_for(
    caseworker_id: int,
    pattern: Pattern,
    member_of: dict[tuple[str, int], int],
    finished: dict[int, datetime],
) -> VisitPattern:
    """The stored pattern this one is (the one holding most of its visits), or a new one."""
    known = Counter(
        member_of[(pattern.kind, s)] for s in pattern.members if (pattern.kind, s) in member_of
    )
    if known:
        best = min(known, key=lambda pid: (-known[pid], pid))
        stored = db.session.get(VisitPattern, best)
        if stored is not None:
            return stored
    first = min(finished.get(s, clock.utcnow()) for s in pattern.members)
    stored = VisitPattern(
        kind=pattern.kind,
        caseworker_id=caseworker_id,
        month=first.astimezone(_zone()).strftime("%Y-%m"),
    )
    db.session.add(stored)
    db.session.flush()
    return stored


def _flag(stored: VisitPattern, pattern: Pattern, new: list[int], count: int) -> None:
    """A flag on each new visit of the pattern, its value the pattern's id; the open
    flags of its earlier visits say how many visits it has now."""
    detail = flag_detail(stored.id, count, pattern.summary)
    for survey_id in new:
        db.session.add(
            SurveyFlag(
                survey_id=survey_id,
                code=pattern.kind,
                severity="warning",
                value=str(stored.id),
                threshold=None if pattern.threshold is None else str(pattern.threshold),
                detail=detail,
                extra={"pattern_id": stored.id},
            )
        )
    earlier = db.session.scalars(
        select(SurveyFlag).where(
            SurveyFlag.code == pattern.kind,
            SurveyFlag.value == str(stored.id),
            SurveyFlag.cleared_at.is_(None),
            SurveyFlag.survey_id.not_in(new),
        )
    )
    for flag in earlier:
        flag.detail = detail


def check_after_upload(survey_id: int) -> int:
    """The patterns around a newly received visit: its caseworker's local day (and
    the neighbouring visits); the number of visits newly flagged."""
    return check_after_uploads([survey_id])


def check_after_uploads(survey_ids: Collection[int]) -> int:
    """The patterns around several newly received visits, once per caseworker over
    the local days of their visits (the embedded background thread takes the visits
    queued meanwhile together: one look at a caseworker's month, not one per visit)."""
    if not survey_ids:
        return 0
    zone = _zone()
    days: dict[int, set[date]] = {}
    for caseworker_id, started, finished in db.session.execute(
        select(Survey.caseworker_id, Survey.started_at, Survey.finished_at).where(
            Survey.id.in_(sorted(survey_ids))
        )
    ):
        days.setdefault(caseworker_id, set()).update(
            {started.astimezone(zone).date(), finished.astimezone(zone).date()}
        )
    return sum(
        check_caseworker(caseworker_id, min(seen), max(seen))
        for caseworker_id, seen in sorted(days.items())
    )


@commits_per_batch
def check_recent(days: int, today: date | None = None) -> tuple[int, int]:
    """The nightly run: every caseworker with visits in the last ``days`` local days
    (today included); (caseworkers checked, visits newly flagged). Commits after each
    caseworker, so one bad month does not hold back the others."""
    today = today or clock.utcnow().astimezone(_zone()).date()
    first = today - timedelta(days=days - 1)
    caseworkers = list(
        db.session.scalars(
            select(Survey.caseworker_id)
            .where(
                Survey.finished_at >= _midnight(first),
                Survey.finished_at < _midnight(today + timedelta(days=1)),
            )
            .distinct()
            .order_by(Survey.caseworker_id)
        )
    )
    flagged = 0
    for caseworker_id in caseworkers:
        flagged += check_caseworker(caseworker_id, first, today)
        db.session.commit()
    return len(caseworkers), flagged


__all__ = [
    "PATTERN_CODES",
    "check_after_upload",
    "check_after_uploads",
    "check_caseworker",
    "check_recent",
]
