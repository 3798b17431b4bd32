"""The per-visit integrity checks (server/visits/integrity/visit.py): honest visits pass,
fabricated ones are flagged, with values just inside and just outside each threshold."""

from __future__ import annotations

import math
import random
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from server.region import load_region_rules
from server.visits.integrity.visit import (
    TrackPoint,
    VisitRules,
    gps_at_registered_point,
    gps_fix_stale,
    gps_repeated,
    gps_too_precise,
    minimum_minutes,
    parse_visit_rules,
    photos_bunched,
    repeat_box,
    track_jump,
    track_static,
    visit_too_short,
)

R = VisitRules()
START = datetime(2026, 11, 12, 2, 0, tzinfo=UTC)
HOME = (46.111, 122.011)
# Metres to degrees near the home (46° N).
M_LAT = 1 / 111_132
M_LON = 1 / (111_320 * math.cos(math.radians(46.111)))


def offset(north_m: float, east_m: float, at: tuple[float, float] = HOME) -> tuple[float, float]:
    return at[0] + north_m * M_LAT, at[1] + east_m * M_LON


def codes(flags: list[Any]) -> list[str]:
    return [f.code for f in flags]


# --------------------------------------------------------------------------- rules


def test_the_region_file_holds_the_defaults() -> None:
    assert load_region_rules(None).integrity.visit == VisitRules()


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"min_minutes_per_membr": 1}, "integrity.visit: unknown setting(s) min_minutes_per_membr"),
        ({"jump_kmh": 0}, "integrity.visit.jump_kmh"),
        ({"jump_kmh": -5.0}, "integrity.visit.jump_kmh"),
        ({"precise_below_m": "2"}, "integrity.visit.precise_below_m"),
        ({"precise_below_m": True}, "integrity.visit.precise_below_m"),
        ({"precise_below_m": float("nan")}, "integrity.visit.precise_below_m"),
        ({"bunched_min_photos": 2.5}, "integrity.visit.bunched_min_photos"),
        ({"static_min_points": 1}, "integrity.visit.static_min_points"),
        ({"bunched_share": 1.0}, "integrity.visit.bunched_share"),
        ({"identical_m": 0.5}, "integrity.visit.identical_m"),
    ],
)
def test_bad_rules_are_refused_naming_the_key(data: dict[str, Any], key: str) -> None:
    with pytest.raises(ValueError, match=re.escape(key)):
        parse_visit_rules(data)


def test_rules_can_be_changed_and_some_switched_off() -> None:
    rules = parse_visit_rules({"min_minutes_per_photo": 0, "bunched_seconds": 40, "jump_kmh": 200})
    assert rules.min_minutes_per_photo == 0 and rules.bunched_seconds == 40.0
    assert rules.jump_kmh == 200.0 and rules.precise_below_m == R.precise_below_m


def test_a_bad_integrity_visit_section_is_a_region_error(tmp_path: Any) -> None:
    from importlib import resources

    from server.region import RegionConfigError

    text = resources.files("server").joinpath("region_default.toml").read_text("utf-8")
    assert "fix_stale_minutes = 10.0" in text
    path = tmp_path / "region.toml"
    path.write_text(text.replace("fix_stale_minutes = 10.0", "fix_stale_minutes = -1"), "utf-8")
    with pytest.raises(RegionConfigError, match=r"integrity\.visit\.fix_stale_minutes"):
        load_region_rules(str(path))


# --------------------------------------------------------------------------- duration


def test_the_minimum_grows_with_members_and_photos_and_depends_on_the_kind() -> None:
    review = minimum_minutes("periodic_review", 1, 3, R)
    assert review == 5 + 1 + 0.75
    assert minimum_minutes("initial_survey", 1, 3, R) > review  # type: ignore[operator]
    assert minimum_minutes("assisted_proof_of_life", 1, 3, R) < review  # type: ignore[operator]
    assert minimum_minutes("periodic_review", 4, 8, R) > review  # type: ignore[operator]
    assert minimum_minutes("something_else", 1, 1, R) is None


@pytest.mark.parametrize("minutes", [8, 9, 10, 12, 35])
def test_a_quick_but_honest_review_passes(minutes: int) -> None:
    end = START + timedelta(minutes=minutes)
    assert visit_too_short("periodic_review", START, end, 1, 3, R) == []


@pytest.mark.parametrize("kind", ["initial_survey", "periodic_review", "assisted_proof_of_life"])
@pytest.mark.parametrize("seconds", [30, 60, 120, 180])
def test_one_to_three_minute_visits_are_flagged_whatever_they_hold(kind: str, seconds: int) -> None:
    end = START + timedelta(seconds=seconds)
    flags = visit_too_short(kind, START, end, 0, 0, R)
    assert codes(flags) == ["visit_too_short"]
    assert float(flags[0].value or 0) == seconds


def test_the_minimum_is_the_edge_and_half_of_it_is_critical() -> None:
    least = 6.75 * 60  # periodic review, 1 member, 3 photos
    at = visit_too_short("periodic_review", START, START + timedelta(seconds=least), 1, 3, R)
    assert at == []
    under = visit_too_short("periodic_review", START, START + timedelta(seconds=least - 1), 1, 3, R)
    assert [(f.code, f.severity, f.threshold) for f in under] == [
        ("visit_too_short", "warning", least)
    ]
    half = visit_too_short(
        "periodic_review", START, START + timedelta(seconds=least / 2 - 1), 1, 3, R
    )
    assert half[0].severity == "critical"
    assert "1 member(s) and 3 photo(s)" in half[0].detail


def test_a_big_household_needs_a_longer_visit() -> None:
    end = START + timedelta(minutes=12)
    assert visit_too_short("periodic_review", START, end, 1, 4, R) == []
    assert codes(visit_too_short("periodic_review", START, end, 6, 12, R)) == ["visit_too_short"]


def test_inverted_times_are_left_to_visit_times_inverted() -> None:
    assert visit_too_short("periodic_review", START, START - timedelta(minutes=5), 1, 1, R) == []


def test_naive_times_are_a_caller_bug() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        visit_too_short("periodic_review", START.replace(tzinfo=None), START, 1, 1, R)


# --------------------------------------------------------------------------- photo times


def at_seconds(*seconds: float) -> list[datetime]:
    return [START + timedelta(seconds=s) for s in seconds]


def test_photos_taken_over_several_minutes_pass() -> None:
    end = START + timedelta(minutes=12)
    # Two portraits in the main room, the kitchen, the yard: spread over 7 minutes.
    photos = at_seconds(120, 150, 300, 540)
    assert photos_bunched(photos, START, end, R) == []


def test_honest_photos_at_the_end_of_a_visit_over_a_minute_pass() -> None:
    end = START + timedelta(minutes=40)
    assert photos_bunched(at_seconds(2300, 2330, 2365, 2390), START, end, R) == []


def test_photos_within_seconds_of_each_other_in_a_long_visit_are_flagged() -> None:
    end = START + timedelta(minutes=12)
    flags = photos_bunched(at_seconds(300, 306, 311, 318), START, end, R)
    assert [(f.code, f.value, f.threshold) for f in flags] == [("photos_bunched", 18.0, 25.0)]


def test_the_bunching_limit_is_25_seconds_in_a_short_visit() -> None:
    end = START + timedelta(minutes=10)  # 2% of 10 min is 12 s: the 25 s floor holds
    assert codes(photos_bunched(at_seconds(0, 10, 25), START, end, R)) == ["photos_bunched"]
    assert photos_bunched(at_seconds(0, 10, 26), START, end, R) == []


def test_in_a_long_visit_the_limit_grows_to_two_percent_capped_at_a_minute() -> None:
    end = START + timedelta(minutes=40)  # 2% of 40 min: 48 s
    assert codes(photos_bunched(at_seconds(0, 20, 48), START, end, R)) == ["photos_bunched"]
    assert photos_bunched(at_seconds(0, 20, 49), START, end, R) == []
    long_end = START + timedelta(hours=3)  # 2% is 216 s, capped at 60 s
    assert codes(photos_bunched(at_seconds(0, 30, 60), START, long_end, R)) == ["photos_bunched"]
    assert photos_bunched(at_seconds(0, 30, 61), START, long_end, R) == []


def test_two_photos_or_a_short_visit_say_nothing_here() -> None:
    end = START + timedelta(minutes=12)
    assert photos_bunched(at_seconds(0, 2), START, end, R) == []
    short = START + timedelta(minutes=4, seconds=59)
    assert photos_bunched(at_seconds(0, 1, 2), START, short, R) == []


# --------------------------------------------------------------------------- the fix


@pytest.mark.parametrize("accuracy", [2.0, 3.0, 4.7, 8.5, 30.0, None])
def test_phone_accuracies_pass(accuracy: float | None) -> None:
    assert gps_too_precise(accuracy, R) == []


@pytest.mark.parametrize("accuracy", [0.1, 1.0, 1.99])
def test_accuracy_better_than_a_phone_gives_is_flagged(accuracy: float) -> None:
    flags = gps_too_precise(accuracy, R)
    assert [(f.code, f.value) for f in flags] == [("gps_too_precise", accuracy)]


def test_accuracy_zero_is_left_to_gps_mock() -> None:
    assert gps_too_precise(0.0, R) == []


def test_a_fix_metres_from_the_home_passes() -> None:
    for north, east in ((4.0, 3.0), (0.5, 0.0), (0.0, 0.31), (25.0, -40.0)):
        assert gps_at_registered_point(*offset(north, east), *HOME, R) == [], (north, east)


def test_a_fix_on_the_home_is_flagged_critical_when_identical() -> None:
    same = gps_at_registered_point(*HOME, *HOME, R)
    assert [(f.code, f.severity, f.value) for f in same] == [
        ("gps_at_registered_point", "critical", 0.0)
    ]
    assert "46.1" not in same[0].detail  # distances only, never coordinates
    near = gps_at_registered_point(*offset(0.2, 0.1), *HOME, R)
    assert [(f.code, f.severity) for f in near] == [("gps_at_registered_point", "warning")]
    edge = gps_at_registered_point(*offset(0.29, 0.0), *HOME, R)
    assert codes(edge) == ["gps_at_registered_point"]


def test_the_repeat_box_holds_every_fix_within_reach() -> None:
    lat_min, lat_max, lon_min, lon_max = repeat_box(*HOME, R)
    r = R.repeated_within_m
    for north, east in ((r, 0.0), (-r, 0.0), (0.0, r), (0.0, -r), (0.7 * r, -0.7 * r)):
        lat, lon = offset(north, east)
        assert lat_min <= lat <= lat_max and lon_min <= lon <= lon_max
    assert lat_max - lat_min < 1e-5  # a few rows of an index, not a village


def test_other_visits_metres_away_pass_and_identical_ones_are_flagged() -> None:
    rng = random.Random(16)
    honest = [(i, *offset(rng.gauss(0, 6), rng.gauss(0, 6))) for i in range(1, 200)]
    lat, lon = offset(1.0, 1.0)
    assert gps_repeated(lat, lon, honest, R) == []
    pasted = [*honest, (501, lat, lon), (502, *offset(1.015, 1.0))]
    flags = gps_repeated(lat, lon, pasted, R)
    assert [(f.code, f.value) for f in flags] == [("gps_repeated", 2.0)]
    assert "501, 502" in flags[0].detail
    assert gps_repeated(lat, lon, [(503, *offset(1.025, 1.0))], R) == []


def test_a_fix_taken_at_or_during_the_visit_passes() -> None:
    for minutes in (-10, -3, 0, 5, 30):
        assert gps_fix_stale(START + timedelta(minutes=minutes), START, R) == []
    assert gps_fix_stale(None, START, R) == []


def test_a_fix_from_before_the_visit_is_flagged() -> None:
    flags = gps_fix_stale(START - timedelta(minutes=10, seconds=1), START, R)
    assert [(f.code, f.value, f.threshold) for f in flags] == [("gps_fix_stale", 601.0, 600.0)]
    assert codes(gps_fix_stale(START - timedelta(days=2), START, R)) == ["gps_fix_stale"]


# --------------------------------------------------------------------------- the track


def honest_track(seed: int, points: int = 24, step_s: int = 30) -> list[TrackPoint]:
    """A receiver lying in a house: metres of jitter, accuracy 6-20 m."""
    rng = random.Random(seed)
    return [
        TrackPoint(
            *offset(rng.gauss(0, 4), rng.gauss(0, 4)),
            accuracy_m=rng.uniform(6, 20),
            at=START + timedelta(seconds=i * step_s),
        )
        for i in range(points)
    ]


@pytest.mark.parametrize("seed", range(20))
def test_honest_tracks_pass_both_track_checks(seed: int) -> None:
    track = honest_track(seed)
    assert track_static(track, R) == [] and track_jump(track, R) == []


def still(points: int, step_s: float, accuracy: float | None = 4.0) -> list[TrackPoint]:
    return [
        TrackPoint(*HOME, accuracy_m=accuracy, at=START + timedelta(seconds=i * step_s))
        for i in range(points)
    ]


def test_a_track_that_never_moves_over_minutes_is_flagged() -> None:
    flags = track_static(still(5, 30), R)  # 5 points over exactly 2 minutes
    assert [(f.code, f.value) for f in flags] == [("track_static", 5.0)]
    assert codes(track_static(still(12, 20, accuracy=None), R)) == ["track_static"]


def test_a_still_track_too_short_or_too_small_passes() -> None:
    assert track_static(still(4, 60), R) == []  # four points
    assert track_static(still(5, 29), R) == []  # 116 s
    jittered = still(5, 30)
    jittered[2] = TrackPoint(*offset(0.02, 0.0), accuracy_m=4.0, at=jittered[2].at)
    assert track_static(jittered, R) == []


def test_a_repeating_network_fix_is_left_alone() -> None:
    assert track_static(still(10, 30, accuracy=35.0), R) == []


def test_a_track_leaping_hundreds_of_metres_is_flagged() -> None:
    track = honest_track(3, points=10)
    jumped = TrackPoint(*offset(900, 0), accuracy_m=8.0, at=track[5].at + timedelta(seconds=5))
    # Out in 5 s (646 km/h); back in the 25 s left before the next point (129 km/h).
    flags = track_jump([*track[:6], jumped, *track[6:]], R)
    assert [f.code for f in flags] == ["track_jump"]
    assert float(flags[0].value or 0) > 600 and "1 time(s)" in flags[0].detail


def test_a_jump_within_the_points_error_or_the_floor_is_jitter() -> None:
    first = TrackPoint(*HOME, accuracy_m=20.0, at=START)
    # 110 m in 1 s (396 km/h) but 3 x (20 + 20) = 120 m: inside the error.
    wide = TrackPoint(*offset(110, 0), accuracy_m=20.0, at=START + timedelta(seconds=1))
    assert track_jump([first, wide], R) == []
    # 99 m in 1 s with small accuracies: under the 100 m floor.
    small = TrackPoint(*offset(99, 0), accuracy_m=3.0, at=START + timedelta(seconds=1))
    assert track_jump([first.__class__(*HOME, 3.0, START), small], R) == []
    far = TrackPoint(*offset(130, 0), accuracy_m=20.0, at=START + timedelta(seconds=1))
    assert codes(track_jump([first, far], R)) == ["track_jump"]


def test_driving_at_village_speeds_is_no_jump() -> None:
    # 2 km in 60 s: 120 km/h, under 150.
    a = TrackPoint(*HOME, accuracy_m=5.0, at=START)
    b = TrackPoint(*offset(2000, 0), accuracy_m=5.0, at=START + timedelta(seconds=60))
    assert track_jump([a, b], R) == []
    c = TrackPoint(*offset(2000, 0), accuracy_m=5.0, at=START + timedelta(seconds=47))
    assert codes(track_jump([a, c], R)) == ["track_jump"]  # 153 km/h


def test_two_far_points_at_the_same_moment_jump() -> None:
    a = TrackPoint(*HOME, accuracy_m=5.0, at=START)
    b = TrackPoint(*offset(500, 0), accuracy_m=5.0, at=START)
    flags = track_jump([b, a], R)
    assert codes(flags) == ["track_jump"] and flags[0].value is None
