"""Patterns across visits (issue 16, item 2): honest days stay unflagged, curbstoning
from a village centre a few hundred metres from every home is flagged on every visit
and linked, the thresholds hold just inside and outside, the job is idempotent, and an
upload runs it."""

from __future__ import annotations

import math
import random
import tomllib
import uuid
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from server.auth.models import User
from server.cases.models import CaseState, Household
from server.cli import cli
from server.extensions import db
from server.visits.checks import distance_m
from server.visits.integrity.pattern_job import check_caseworker, check_recent
from server.visits.integrity.pattern_models import VisitPattern, VisitPatternMember
from server.visits.integrity.patterns import (
    FAST_LEGS,
    ODD_HOURS,
    ONE_SPOT,
    SHARED_SPOTS,
    Pattern,
    PatternRules,
    VisitPoint,
    _near_pairs,
    detect_patterns,
    parse_patterns_rules,
    pattern_fast_legs,
    pattern_odd_hours,
    pattern_one_spot,
    pattern_shared_spots,
)
from server.visits.models import Survey, SurveyFlag, SurveyStatus
from tests import factories

TZ = ZoneInfo("Asia/Shanghai")
RULES = PatternRules()
MAX_KMH = 80.0  # [maps] impossible_speed_kmh
SHARED_M = 30.0  # [supervision] shared_spot_m
CENTRE = (46.0823, 122.0471)  # a village in Xing'an League
ROOT = Path(__file__).resolve().parents[2]


def offset(at: tuple[float, float], east_m: float, north_m: float) -> tuple[float, float]:
    lat, lon = at
    return (
        lat + north_m / 111_195.0,
        lon + east_m / (111_195.0 * math.cos(math.radians(lat))),
    )


def jitter(
    rng: random.Random, at: tuple[float, float], low: float, high: float
) -> tuple[float, float]:
    """A point ``low`` to ``high`` metres from ``at`` in a random direction."""
    angle = rng.uniform(0, 2 * math.pi)
    r = rng.uniform(low, high)
    return offset(at, r * math.cos(angle), r * math.sin(angle))


def local(day: str, hhmm: str) -> datetime:
    return datetime.fromisoformat(f"{day}T{hhmm}:00").replace(tzinfo=TZ)


def point(
    survey_id: int,
    household_id: int,
    home: tuple[float, float],
    fix: tuple[float, float],
    started: datetime,
    minutes: float = 15,
    accuracy: float | None = 10.0,
) -> VisitPoint:
    return VisitPoint(
        survey_id,
        household_id,
        home[0],
        home[1],
        fix[0],
        fix[1],
        accuracy,
        started.astimezone(UTC),
        (started + timedelta(minutes=minutes)).astimezone(UTC),
    )


def detect(visits: list[VisitPoint], others: list[VisitPoint] | None = None) -> list[Pattern]:
    return detect_patterns(
        visits, others or [], RULES, max_kmh=MAX_KMH, shared_spot_m=SHARED_M, tz=TZ
    )


def month_of(v: VisitPoint) -> str:
    return v.finished_at.astimezone(TZ).strftime("%Y-%m")


# --------------------------------------------------------------------------- days


def honest_day(
    rng: random.Random,
    *,
    day: str = "2026-11-10",
    first_id: int = 1,
    visits: int = 10,
    step_m: tuple[float, float] = (50, 300),
    start: str = "08:30",
    registration_error_m: float = 20,
) -> list[VisitPoint]:
    """A caseworker walking from home to home (``step_m`` apart), 10-25 minute visits,
    a fix 5-15 m from where they stand (at the door, in the yard), registered homes off
    by up to ``registration_error_m``; accuracies 5-30 m as phones report them."""
    out = []
    at = jitter(rng, CENTRE, 0, 400)
    now = local(day, start)
    for index in range(visits):
        if index:
            step = rng.uniform(*step_m)
            at = jitter(rng, at, step, step)
            now += timedelta(minutes=step / 4000 * 60 + rng.uniform(2, 6))  # walking, greeting
        if now.hour >= 21:
            break  # nobody starts a visit after nine in the evening
        home = jitter(rng, at, 0, registration_error_m)
        fix = jitter(rng, at, 5, 15)
        minutes = rng.uniform(10, 25)
        out.append(
            point(first_id + index, first_id + index, home, fix, now, minutes, rng.uniform(5, 30))
        )
        now += timedelta(minutes=minutes)
    return out


def curbstoned_day(
    rng: random.Random,
    *,
    spot: tuple[float, float] = CENTRE,
    visits: int = 8,
    homes_m: tuple[float, float] = (150, 300),
    noise_m: tuple[float, float] = (0, 12),
    day: str = "2026-11-10",
    start: str = "14:00",
    first_id: int = 1,
) -> list[VisitPoint]:
    """A caseworker sitting in the village centre filing visits of households whose
    homes lie ``homes_m`` away in every direction (inside far_from_home_m)."""
    out = []
    now = local(day, start)
    for index in range(visits):
        home = jitter(rng, spot, *homes_m)
        fix = jitter(rng, spot, *noise_m)
        minutes = rng.uniform(10, 20)
        out.append(
            point(first_id + index, first_id + index, home, fix, now, minutes, rng.uniform(5, 20))
        )
        now += timedelta(minutes=minutes + rng.uniform(0, 3))
    return out


@pytest.mark.parametrize("seed", range(60))
def test_honest_days_raise_no_pattern(seed: int) -> None:
    rng = random.Random(seed)
    month = [
        v
        for d in range(1, 21)
        for v in honest_day(
            rng,
            day=f"2026-11-{d:02d}",
            first_id=100 * d,
            visits=rng.randint(6, 12),
            start=rng.choice(["08:00", "09:30", "13:30", "17:30"]),
        )
    ]
    assert detect(month) == []


@pytest.mark.parametrize("seed", range(30))
def test_honest_neighbours_next_door_raise_no_pattern(seed: int) -> None:
    """A dense village: homes 15-40 m apart, fixes of neighbours within metres of each
    other; indoor fixes up to 40 m off with their accuracy saying so."""
    rng = random.Random(1000 + seed)
    month = []
    for d in range(1, 16):
        for v in honest_day(
            rng, day=f"2026-11-{d:02d}", first_id=100 * d, visits=12, step_m=(15, 40)
        ):
            if rng.random() < 0.2:  # indoors: a poorer fix, honestly reported
                fix = jitter(rng, (v.lat, v.lon), 20, 40)
                v = replace(v, lat=fix[0], lon=fix[1], accuracy_m=rng.uniform(35, 60))
            month.append(v)
    assert detect(month) == []


def test_an_honest_evening_round_and_one_late_visit_raise_no_pattern() -> None:
    rng = random.Random(7)
    evening = honest_day(rng, start="18:40", visits=6)
    late = honest_day(rng, day="2026-11-11", start="20:30", visits=1, first_id=50)
    assert max(v.started_at.astimezone(TZ).hour for v in evening) >= 20
    assert detect(evening + late) == []


@pytest.mark.parametrize("seed", range(20))
def test_curbstoning_from_the_village_centre_is_flagged_on_every_visit(seed: int) -> None:
    rng = random.Random(2000 + seed)
    day = curbstoned_day(rng)
    assert all(150 - 12 <= v.from_home_m() <= 300 + 12 for v in day)  # far_from_home passes
    found = pattern_one_spot(day, RULES)
    assert [p.members for p in found] == [tuple(v.survey_id for v in day)]
    assert "visits to 8 households from one spot within 40 m" in found[0].summary


def test_curbstoning_beside_one_real_visit_flags_only_the_others() -> None:
    """The household at the spot was visited; the others were filed from its yard."""
    rng = random.Random(3)
    day = curbstoned_day(rng, visits=4)
    real = point(99, 99, offset(CENTRE, 10, 5), offset(CENTRE, 3, 2), local("2026-11-10", "13:30"))
    found = pattern_one_spot([real, *day], RULES)
    assert [p.members for p in found] == [(1, 2, 3, 4)]


def test_one_spot_thresholds_just_inside_and_outside() -> None:
    day = "2026-11-10"
    homes = [offset(CENTRE, 160, 0), offset(CENTRE, -120, 90), offset(CENTRE, 0, -200)]

    def visits(fixes: list[tuple[float, float]], gap_minutes: float) -> list[VisitPoint]:
        return [
            point(
                i + 1,
                i + 1,
                homes[i],
                fixes[i],
                local(day, "10:00") + timedelta(minutes=gap_minutes * i),
            )
            for i in range(3)
        ]

    tight = [offset(CENTRE, 38, 0), CENTRE, offset(CENTRE, 0, -38)]
    assert len(pattern_one_spot(visits(tight, 20), RULES)) == 1
    # Two households only, or fixes 45 m from the centre fix: no pattern.
    assert pattern_one_spot(visits(tight, 20)[:2], RULES) == []
    loose = [offset(CENTRE, 45, 0), CENTRE, offset(CENTRE, 0, -45)]
    assert pattern_one_spot(visits(loose, 20), RULES) == []
    # Within 3 h of the centre visit (the middle one): 2 h 50 min either side still is.
    assert len(pattern_one_spot(visits(tight, 170), RULES)) == 1
    assert pattern_one_spot(visits(tight, 190), RULES) == []


def test_a_caseworker_shifting_about_on_the_spot_is_one_pattern() -> None:
    """Fixes chained within 40 m of one another: the first and last 70 m apart, each
    within 40 m of a neighbour fix; every visit is in the one pattern."""
    day = "2026-11-10"
    homes = [offset(CENTRE, 160 * math.cos(a), 160 * math.sin(a)) for a in range(6)]
    fixes = [offset(CENTRE, 14 * i, 0) for i in range(6)]  # 0, 14, ... 70 m east
    visits = [
        point(i + 1, i + 1, homes[i], fixes[i], local(day, "10:00") + timedelta(minutes=20 * i))
        for i in range(6)
    ]
    found = pattern_one_spot(visits, RULES)
    assert [p.members for p in found] == [(1, 2, 3, 4, 5, 6)]
    assert "visits to 6 households" in found[0].summary
    # Beyond the time window of the spot's centre, a chained fix stays out.
    late = replace(visits[5], started_at=visits[5].started_at + timedelta(hours=4))
    found = pattern_one_spot([*visits[:5], late], RULES)
    assert [p.members for p in found] == [(1, 2, 3, 4, 5)]


def test_one_spot_needs_the_fixes_away_from_homes_spread_apart() -> None:
    day = local("2026-11-10", "10:00")
    fixes = [CENTRE, offset(CENTRE, 10, 0), offset(CENTRE, 0, 10)]
    # Homes 60-75 m from the spot with 10 m accuracy: within reach of a yard.
    near = [offset(CENTRE, 70, 0), offset(CENTRE, -60, 30), offset(CENTRE, 0, -75)]
    assert (
        pattern_one_spot(
            [point(i, i, near[i], fixes[i], day + timedelta(minutes=20 * i)) for i in range(3)],
            RULES,
        )
        == []
    )
    # All three registered at one wrong place (the village office) 150 m away: honest
    # fixes at the real homes next door, a registration error, not a pattern.
    office = offset(CENTRE, 150, 0)
    same = [offset(office, 3 * i, 0) for i in range(3)]
    assert (
        pattern_one_spot(
            [point(i, i, same[i], fixes[i], day + timedelta(minutes=20 * i)) for i in range(3)],
            RULES,
        )
        == []
    )
    # A poor fix (accuracy 200 m) says nothing about where the caseworker was.
    far = [offset(CENTRE, 180, 0), offset(CENTRE, -150, 60), offset(CENTRE, 0, -190)]
    assert (
        pattern_one_spot(
            [
                point(i, i, far[i], fixes[i], day + timedelta(minutes=20 * i), accuracy=200)
                for i in range(3)
            ],
            RULES,
        )
        == []
    )
    assert (
        len(
            pattern_one_spot(
                [point(i, i, far[i], fixes[i], day + timedelta(minutes=20 * i)) for i in range(3)],
                RULES,
            )
        )
        == 1
    )


def test_fast_legs_between_villages_and_overlaps_are_linked() -> None:
    day = "2026-11-10"
    a = offset(CENTRE, 0, 0)
    b = offset(CENTRE, 8000, 0)  # the next village, 8 km east
    visits = [
        point(1, 1, a, a, local(day, "10:00"), 20),
        point(2, 2, b, b, local(day, "10:22"), 20),  # 8 km in 2 min (+3 min slack)
        point(3, 3, offset(b, 60, 0), offset(b, 60, 0), local(day, "10:50"), 20),
    ]
    found = pattern_fast_legs(visits, RULES, MAX_KMH)
    assert [p.members for p in found] == [(1, 2)]
    assert "8.0 km in 2 min" in found[0].summary
    # 8 km in 20 min is a car on a village road (24 km/h + slack): no pattern.
    slow = [visits[0], replace(visits[1], started_at=visits[1].started_at + timedelta(minutes=18))]
    assert pattern_fast_legs(slow, RULES, MAX_KMH) == []
    # Two places 2 km apart at once for 20 min: both visits, one pattern.
    overlap = [
        point(1, 1, a, a, local(day, "10:00"), 30),
        point(2, 2, offset(a, 2000, 0), offset(a, 2000, 0), local(day, "10:10"), 30),
    ]
    found = pattern_fast_legs(overlap, RULES, MAX_KMH)
    assert [p.members for p in found] == [(1, 2)] and "overlapping" in found[0].summary


@pytest.mark.parametrize(
    ("metres", "gap_minutes", "fast"),
    [
        (1200, 1.3, True),  # a hop to the next village in a minute and a half
        (2000, 1.1, True),  # 2 km "ridden" at 110 km/h
        (4000, 4.0, True),  # 60 km/h straight line, door to door
        (3000, 7.0, False),  # a motorbike on village roads: 26 km/h, parking included
        (5000, 7.5, False),  # a car on a county road: 40 km/h door to door
        (480, 0.5, False),  # next door but one, the form finished on the walk
    ],
)
def test_leg_speed_door_to_door(metres: float, gap_minutes: float, fast: bool) -> None:
    """The region file's leg_kmh (45 km/h in a straight line, door to door, 15 s of
    slack) against legs honest fieldwork makes and legs no vehicle makes."""
    day = "2026-11-10"
    a = offset(CENTRE, 0, 0)
    b = offset(CENTRE, metres + 20, 0)  # both fixes of 10 m accuracy: 20 m given back
    visits = [
        point(1, 1, a, a, local(day, "10:00"), 20),
        point(2, 2, b, b, local(day, "10:20") + timedelta(minutes=gap_minutes), 20),
    ]
    found = pattern_fast_legs(visits, RULES, RULES.leg_kmh)
    assert [p.members for p in found] == ([(1, 2)] if fast else [])


def test_a_form_finished_on_the_walk_to_the_next_home_is_no_fast_leg() -> None:
    day = "2026-11-10"
    a, b = CENTRE, offset(CENTRE, 450, 0)
    visits = [
        point(1, 1, a, a, local(day, "10:00"), 30),  # finished at the next door: 10:30
        point(2, 2, b, b, local(day, "10:30"), 20),
        point(3, 3, offset(b, 80, 0), offset(b, 80, 0), local(day, "10:45"), 20),  # 5 min overlap
    ]
    assert pattern_fast_legs(visits, RULES, MAX_KMH) == []


def test_odd_hours_at_night_and_runs_after_work() -> None:
    rng = random.Random(5)
    home = CENTRE
    night = [point(1, 1, home, home, local("2026-11-10", "23:15"))]
    found = pattern_odd_hours(night, RULES, TZ)
    assert [p.members for p in found] == [(1,)] and "at night" in found[0].summary
    # 05:50 is still night, 06:00 is not; 21:59 is not.
    assert (
        len(pattern_odd_hours([point(1, 1, home, home, local("2026-11-10", "05:50"))], RULES, TZ))
        == 1
    )
    assert (
        pattern_odd_hours([point(1, 1, home, home, local("2026-11-10", "06:00"))], RULES, TZ) == []
    )
    assert (
        pattern_odd_hours([point(1, 1, home, home, local("2026-11-10", "21:59"))], RULES, TZ) == []
    )
    # Five visits filed 19:40-20:05, one every 5-7 minutes: one pattern.
    run = []
    at = local("2026-11-10", "19:40")
    for i in range(5):
        run.append(point(10 + i, 10 + i, jitter(rng, home, 50, 200), home, at, 4))
        at += timedelta(minutes=rng.uniform(5, 7.5))
    found = pattern_odd_hours(run, RULES, TZ)
    assert [p.members for p in found] == [(10, 11, 12, 13, 14)]
    # Three of them are no run; nor is the same at 14:00 (lane A's checks judge that).
    assert pattern_odd_hours(run[:3], RULES, TZ) == []
    daytime = [replace(v, started_at=v.started_at - timedelta(hours=6)) for v in run]
    assert pattern_odd_hours(daytime, RULES, TZ) == []


def test_a_night_of_visits_is_one_pattern_across_midnight() -> None:
    home = CENTRE
    visits = [
        point(1, 1, home, home, local("2026-11-10", "22:30")),
        point(2, 2, home, home, local("2026-11-11", "00:40")),
        point(3, 3, home, home, local("2026-11-11", "23:10")),  # the next night
    ]
    found = pattern_odd_hours(visits, RULES, TZ)
    assert [p.members for p in found] == [(1, 2), (3,)]


def _shared_month(shared: int, total: int) -> list[VisitPoint]:
    """``total`` honest visits on separate days, of which ``shared`` were filed from
    the spot of another household's visit, 150 m from their own homes."""
    rng = random.Random(shared * 100 + total)
    out = []
    spot = offset(CENTRE, 300, 300)
    for index in range(total):
        started = local(f"2026-11-{index + 1:02d}", "10:00")
        if index < shared:
            home = jitter(rng, spot, 150, 200)
            out.append(point(index + 1, index + 1, home, jitter(rng, spot, 0, 8), started))
        else:
            home = jitter(rng, CENTRE, 0, 250)
            out.append(point(index + 1, index + 1, home, jitter(rng, home, 0, 10), started))
    return out


def test_shared_spots_flag_a_month_past_its_share() -> None:
    found = pattern_shared_spots(_shared_month(5, 12), [], RULES, SHARED_M, month_of)
    assert [p.members for p in found] == [(1, 2, 3, 4, 5)]
    assert "5 of 12, 42%" in found[0].summary
    # Four such visits are too few; five of twenty are 25 %, under the share.
    assert pattern_shared_spots(_shared_month(4, 12), [], RULES, SHARED_M, month_of) == []
    assert pattern_shared_spots(_shared_month(5, 20), [], RULES, SHARED_M, month_of) == []


def test_shared_spots_count_other_caseworkers_visits_there() -> None:
    month = _shared_month(5, 12)
    mine = [month[0], *month[5:]]  # one visit from the spot, seven honest
    spot_visit = month[0]
    theirs = [replace(v, survey_id=900 + i, household_id=900 + i) for i, v in enumerate(month[1:5])]
    # Their visits share the spot with mine; one of eight of mine is no share.
    assert pattern_shared_spots(mine, theirs, RULES, SHARED_M, month_of) == []
    more = [
        *mine,
        *[
            replace(
                v,
                survey_id=50 + i,
                household_id=50 + i,
                home_lat=spot_visit.home_lat + 0.002 * (i + 1),
            )
            for i, v in enumerate(month[1:5])
        ],
    ]
    found = pattern_shared_spots(more, theirs, RULES, SHARED_M, month_of)
    assert len(found) == 1 and found[0].kind == SHARED_SPOTS


def _shared_by_every_pair(
    visits: list[VisitPoint], others: list[VisitPoint], within_m: float
) -> list[tuple[int, ...]]:
    """The shared-spot rule as it was before the grid's early stop: every visit's
    whole list of neighbours, every month computed per pair."""
    everyone = [*visits, *others]
    near = _near_pairs([(w.lat, w.lon) for w in everyone], within_m)
    months: dict[str, int] = {}
    found: dict[str, list[int]] = {}
    for index, v in enumerate(visits):
        month = month_of(v)
        months[month] = months.get(month, 0) + 1
        if distance_m(v.lat, v.lon, v.home_lat, v.home_lon) - v.accuracy <= RULES.home_away_m:
            continue
        if any(
            everyone[j].household_id != v.household_id
            and month_of(everyone[j]) == month
            and distance_m(v.home_lat, v.home_lon, everyone[j].home_lat, everyone[j].home_lon)
            > RULES.home_away_m
            for j in near[index]
        ):
            found.setdefault(month, []).append(v.survey_id)
    return [
        tuple(sorted(ids))
        for month, ids in sorted(found.items())
        if len(ids) >= RULES.shared_min_visits and len(ids) / months[month] > RULES.shared_share
    ]


@pytest.mark.parametrize("seed", range(6))
def test_shared_spots_equal_the_comparison_of_every_pair(seed: int) -> None:
    rng = random.Random(seed)
    spot = offset(CENTRE, 300, 300)
    visits = []
    for index in range(rng.randint(8, 40)):
        started = local(f"2026-{rng.choice(('10', '11'))}-{rng.randint(1, 28):02d}", "10:00")
        home = jitter(rng, spot if rng.random() < 0.6 else CENTRE, 150, 400)
        fix = jitter(rng, spot, 0, 10) if rng.random() < 0.7 else jitter(rng, home, 0, 5)
        visits.append(point(index + 1, rng.randint(1, 12), home, fix, started))
    others = [
        replace(v, survey_id=500 + v.survey_id, household_id=500 + v.household_id)
        for v in visits[: rng.randint(0, 5)]
    ]
    found = pattern_shared_spots(visits, others, RULES, SHARED_M, month_of)
    assert [p.members for p in found] == _shared_by_every_pair(visits, others, SHARED_M)


# --------------------------------------------------------------------------- rules


def test_the_region_file_holds_the_defaults() -> None:
    text = (ROOT / "server" / "region_default.toml").read_text(encoding="utf-8")
    section = tomllib.loads(text)["integrity"]["patterns"]
    assert parse_patterns_rules(section) == PatternRules()
    assert parse_patterns_rules({}) == PatternRules()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"one_spot_radius": 40}, "integrity.patterns.one_spot_radius: unknown key"),
        (
            {"one_spot_radius_m": "40"},
            "integrity.patterns.one_spot_radius_m: '40' must be a number",
        ),
        ({"one_spot_radius_m": 0}, "integrity.patterns.one_spot_radius_m"),
        ({"home_away_m": -5}, "integrity.patterns.home_away_m"),
        ({"one_spot_min_households": 1}, "integrity.patterns.one_spot_min_households"),
        ({"run_visits": 2.5}, "integrity.patterns.run_visits: 2.5 must be a whole number"),
        ({"night_start_hour": 24}, "integrity.patterns.night_start_hour"),
        ({"night_start_hour": 6}, "integrity.patterns.night_end_hour"),
        ({"work_start_hour": 19}, "integrity.patterns.work_end_hour"),
        ({"shared_share": 1.5}, "integrity.patterns.shared_share"),
        ({"nightly_days": True}, "integrity.patterns.nightly_days"),
    ],
)
def test_the_parser_names_the_bad_key(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        parse_patterns_rules(data)


def test_a_slack_of_zero_is_allowed_and_changed_rules_take_effect() -> None:
    rules = parse_patterns_rules({"leg_slack_minutes": 0, "one_spot_min_households": 5})
    assert rules.leg_slack_minutes == 0 and rules.one_spot_min_households == 5
    day = curbstoned_day(random.Random(1), visits=4)
    assert pattern_one_spot(day, rules) == []


# --------------------------------------------------------------------------- the job


def _household(home: tuple[float, float]) -> Household:
    household = factories.make_household(state=CaseState.APPROVED)
    household.home_lat, household.home_lon = home
    return household


def _plant(caseworker: User, visit: VisitPoint, household: Household) -> Survey:
    survey = Survey(
        client_uuid=str(uuid.uuid4()),
        content_hash="0" * 64,
        household_id=household.id,
        caseworker_id=caseworker.id,
        kind="periodic_review",
        status=SurveyStatus.COMPLETE,
        started_at=visit.started_at,
        finished_at=visit.finished_at,
        gps_lat=visit.lat,
        gps_lon=visit.lon,
        gps_accuracy_m=visit.accuracy_m,
        payload="{}",
    )
    db.session.add(survey)
    db.session.flush()
    return survey


def _pattern_flags(code: str) -> list[SurveyFlag]:
    return list(
        db.session.scalars(
            select(SurveyFlag).where(SurveyFlag.code == code).order_by(SurveyFlag.survey_id)
        )
    )


def test_the_job_flags_every_visit_links_them_and_runs_again_without_duplicates(app: Flask) -> None:
    caseworker = factories.user("caseworker_a")
    rng = random.Random(11)
    day = curbstoned_day(rng, visits=4)
    surveys = [_plant(caseworker, v, _household((v.home_lat, v.home_lon))) for v in day]
    today = day[0].started_at.astimezone(TZ).date()

    assert check_caseworker(caseworker.id, today, today) == 4
    db.session.commit()
    flags = _pattern_flags(ONE_SPOT)
    assert [f.survey_id for f in flags] == [s.id for s in surveys]
    pattern = db.session.scalars(select(VisitPattern)).one()
    assert pattern.kind == ONE_SPOT and pattern.caseworker_id == caseworker.id
    assert pattern.month == today.strftime("%Y-%m")
    assert {m.survey_id for m in pattern.members} == {s.id for s in surveys}
    assert {f.value for f in flags} == {str(pattern.id)}
    assert all(f.extra == {"pattern_id": pattern.id} for f in flags)
    assert flags[0].detail.startswith("one of 4 visits to 4 households from one spot")
    assert flags[0].detail.endswith(f"(pattern #{pattern.id})")
    for word in ("°", "王", "lat", "lon"):
        assert word not in flags[0].detail

    # Again (the nightly run, a second upload's job): nothing new.
    assert check_caseworker(caseworker.id, today, today) == 0
    assert len(_pattern_flags(ONE_SPOT)) == 4
    assert db.session.scalar(select(func.count()).select_from(VisitPattern)) == 1

    # A reviewer clears one; the pattern grows by a fifth visit from the spot.
    flags[0].cleared_at = datetime.now(UTC)
    fifth = curbstoned_day(rng, visits=1, start="15:30", first_id=5)[0]
    extra = _plant(caseworker, fifth, _household((fifth.home_lat, fifth.home_lon)))
    # One more one-spot flag, and now five visits of the month from shared spots.
    assert check_caseworker(caseworker.id, today, today) == 1 + 5
    db.session.commit()
    assert len(_pattern_flags(SHARED_SPOTS)) == 5
    flags = _pattern_flags(ONE_SPOT)
    assert len(flags) == 5 and flags[-1].survey_id == extra.id
    one_spot = select(func.count()).where(VisitPattern.kind == ONE_SPOT)
    assert db.session.scalar(one_spot.select_from(VisitPattern)) == 1
    members = select(func.count()).where(VisitPatternMember.kind == ONE_SPOT)
    assert db.session.scalar(members.select_from(VisitPatternMember)) == 5
    assert all(f.detail.startswith("one of 5 ") for f in flags if f.cleared_at is None)
    assert flags[0].detail.startswith("one of 4 ")  # the cleared one keeps what was cleared


def test_an_honest_caseworkers_month_stays_unflagged_in_the_database(app: Flask) -> None:
    caseworker = factories.user("caseworker_a")
    rng = random.Random(21)
    for d in range(2, 8):
        for v in honest_day(rng, day=f"2026-11-{d:02d}", first_id=100 * d, visits=8):
            _plant(caseworker, v, _household((v.home_lat, v.home_lon)))
    checked, flagged = check_recent(10, today=date(2026, 11, 9))
    assert (checked, flagged) == (1, 0)
    assert db.session.scalar(select(func.count()).select_from(VisitPattern)) == 0


def test_the_cli_runs_the_nightly_check(app: Flask) -> None:
    caseworker = factories.user("caseworker_b")
    now = datetime.now(TZ)
    day = curbstoned_day(random.Random(4), visits=3, day=now.strftime("%Y-%m-%d"), start="00:00")
    day = [
        replace(
            v,
            started_at=v.started_at - timedelta(hours=2),
            finished_at=v.finished_at - timedelta(hours=2),
        )
        for v in day
    ]
    for v in day:
        _plant(caseworker, v, _household((v.home_lat, v.home_lon)))
    db.session.commit()
    result = app.test_cli_runner().invoke(cli, ["visits", "patterns", "--days", "3"])
    assert result.exit_code == 0, result.output
    assert "visits newly flagged" in result.output
    assert len(_pattern_flags(ONE_SPOT)) == 3
    again = app.test_cli_runner().invoke(cli, ["visits", "patterns", "--days", "3"])
    assert "0 visits newly flagged" in again.output


def test_other_kinds_store_their_own_patterns(app: Flask) -> None:
    caseworker = factories.user("caseworker_a")
    a, b = CENTRE, offset(CENTRE, 8000, 0)
    day = "2026-11-12"
    visits = [
        point(1, 1, a, a, local(day, "23:00"), 20),
        point(2, 2, b, b, local(day, "23:22"), 20),
    ]
    surveys = [_plant(caseworker, v, _household(a if i == 0 else b)) for i, v in enumerate(visits)]
    found = {p.kind for p in detect(visits)}
    assert found == {FAST_LEGS, ODD_HOURS}
    the_day = local(day, "12:00").date()
    assert check_caseworker(caseworker.id, the_day, the_day) == 4
    assert check_caseworker(caseworker.id, the_day, the_day) == 0
    kinds = {
        (p.kind, tuple(sorted(m.survey_id for m in p.members)))
        for p in db.session.scalars(select(VisitPattern))
    }
    ids = tuple(sorted(s.id for s in surveys))
    assert kinds == {(FAST_LEGS, ids), (ODD_HOURS, ids)}


# --------------------------------------------------------------------------- upload


@pytest.fixture
def token(client: FlaskClient) -> str:
    from tests.mobile_api.test_api_devices import device_login

    value: str = device_login(client).get_json()["token"]
    return value


def one_spot_uploads(client: FlaskClient, token: str) -> list[int]:
    """Three households' reviews uploaded, all made from one spot a couple of hundred
    metres from each home (curbstoning: one ONE_SPOT pattern); their household ids."""
    from tests.visits.test_api_surveys import post_multipart, survey_json

    spot = CENTRE
    homes = [offset(spot, 180, 0), offset(spot, -140, 120), offset(spot, 20, -210)]
    ids = []
    for home in homes:
        ids.append(_household(home).id)
    db.session.commit()
    start = datetime.now(UTC) - timedelta(hours=2)
    for index, (household_id, home) in enumerate(zip(ids, homes, strict=True)):
        begun = start + timedelta(minutes=25 * index)
        fix = offset(spot, 4 * index, -3 * index)
        body = survey_json(
            household_id,
            {},
            started_at=begun.isoformat(),
            finished_at=(begun + timedelta(minutes=15)).isoformat(),
            gps={
                "lat": fix[0],
                "lon": fix[1],
                "accuracy_m": 9.0,
                "provider": "gps",
                "is_mock": False,
            },
        )
        assert distance_m(*fix, *home) < 300
        response = post_multipart(client, token, body, {})
        assert response.status_code == 201, response.get_json()
    db.session.remove()
    return ids


def one_spot_flagged(household_ids: list[int]) -> bool:
    """Whether each of the households' visits holds the one ONE_SPOT pattern's flag."""
    flags = _pattern_flags(ONE_SPOT)
    surveys = {
        s.household_id: s.id
        for s in db.session.scalars(select(Survey).where(Survey.household_id.in_(household_ids)))
    }
    return (
        sorted(f.survey_id for f in flags) == sorted(surveys.values())
        and len(surveys) == len(household_ids)
        and len({f.value for f in flags}) == 1
    )


def test_an_upload_runs_the_pattern_checks_of_its_caseworker(
    app: Flask, client: FlaskClient, token: str
) -> None:
    ids = one_spot_uploads(client, token)
    assert one_spot_flagged(ids)
    assert _pattern_flags(ONE_SPOT)


def test_visits_checked_together_are_flagged_as_by_the_nightly_run(app: Flask) -> None:
    """The background thread checks the visits queued meanwhile in one go, once per
    caseworker: every curbstoned visit is flagged, as the whole day's check does."""
    from server.visits.integrity.pattern_job import check_after_uploads

    caseworker = factories.user("caseworker_a")
    other = factories.user("caseworker_b")
    rng = random.Random(12)
    day = curbstoned_day(rng, visits=5)
    mine = [_plant(caseworker, v, _household((v.home_lat, v.home_lon))) for v in day]
    honest = [
        _plant(other, v, _household((v.home_lat, v.home_lon)))
        for v in honest_day(rng, day="2026-11-10", first_id=500, visits=4)
    ]
    db.session.flush()
    # Each of the five: from one spot, and from the month's shared spots.
    assert check_after_uploads([s.id for s in mine[2:] + honest]) == 5 + 5
    assert sorted(f.survey_id for f in _pattern_flags(ONE_SPOT)) == sorted(s.id for s in mine)
    assert len(_pattern_flags(SHARED_SPOTS)) == 5
    assert check_after_uploads([s.id for s in mine]) == 0  # nothing twice
    assert check_after_uploads([]) == 0


def test_the_job_after_an_upload_reads_little_when_nothing_is_found(
    app: Flask, count_queries: Any
) -> None:
    """The upload waits for the job in eager mode: an honest month costs three reads
    (the visit, the caseworker's months with their homes, other visits near them)."""
    from server.visits.integrity.pattern_job import check_after_upload

    caseworker = factories.user("caseworker_a")
    rng = random.Random(31)
    planted = [
        _plant(caseworker, v, _household((v.home_lat, v.home_lon)))
        for d in range(2, 12)
        for v in honest_day(rng, day=f"2026-11-{d:02d}", first_id=100 * d, visits=8)
    ]
    db.session.flush()
    before = count_queries.count
    assert check_after_upload(planted[-1].id) == 0
    assert count_queries.count - before <= 3


def test_a_visit_is_in_one_pattern_of_a_kind_at_most(app: Flask) -> None:
    from sqlalchemy.exc import IntegrityError

    caseworker = factories.user("caseworker_a")
    v = point(1, 1, CENTRE, CENTRE, local("2026-11-10", "23:00"))
    survey = _plant(caseworker, v, _household(CENTRE))
    first, second = (
        VisitPattern(kind=ODD_HOURS, caseworker_id=caseworker.id, month="2026-11"),
        VisitPattern(kind=ODD_HOURS, caseworker_id=caseworker.id, month="2026-11"),
    )
    db.session.add_all([first, second])
    db.session.flush()
    db.session.add(VisitPatternMember(pattern_id=first.id, survey_id=survey.id, kind=ODD_HOURS))
    db.session.flush()
    with pytest.raises(IntegrityError), db.session.begin_nested():
        db.session.add(
            VisitPatternMember(pattern_id=second.id, survey_id=survey.id, kind=ODD_HOURS)
        )
        db.session.flush()


def test_flag_details_read_well_for_one_visit_and_many() -> None:
    from server.visits.integrity.patterns import flag_detail

    assert flag_detail(3, 1, "visits started at night") == (
        "visits started at night: this visit alone (pattern #3)"
    )
    assert flag_detail(4, 5, "visits to 5 households") == (
        "one of 5 visits to 5 households (pattern #4)"
    )
