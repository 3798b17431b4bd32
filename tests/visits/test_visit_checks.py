"""Evidence checks for field visits: pure functions, no Flask and no database."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest
from geopy.distance import distance as geo_distance
from geopy.distance import geodesic
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from server.visits.checks import (
    Flag,
    GpsFix,
    PhotoEvidence,
    PreviousVisit,
    Thresholds,
    check_location,
    check_photo_reuse,
    check_photos,
    check_times,
    check_travel,
    distance_m,
    nearest_faces,
)

HOME = (46.08, 122.05)
T = Thresholds()
CST = timezone(timedelta(hours=8))
START = datetime(2026, 3, 2, 9, 0, tzinfo=CST)
FINISH = START + timedelta(minutes=40)


def offset(
    meters: float, bearing: float = 45.0, origin: tuple[float, float] = HOME
) -> tuple[float, float]:
    """The point ``meters`` away from ``origin`` along ``bearing`` (geodesic, WGS-84)."""
    point = geo_distance(meters=meters).destination(origin, bearing=bearing)
    return (point.latitude, point.longitude)


def fix_at(
    meters: float = 0.0,
    *,
    bearing: float = 45.0,
    accuracy_m: float | None = 8.0,
    is_mock: bool = False,
) -> GpsFix:
    lat, lon = offset(meters, bearing) if meters else HOME
    return GpsFix(lat=lat, lon=lon, accuracy_m=accuracy_m, fix_at=FINISH, is_mock=is_mock)


def codes(flags: list[Flag]) -> list[str]:
    return [f.code for f in flags]


# --------------------------------------------------------------------------- distance


@pytest.mark.parametrize("meters", [1.0, 299.5, 300.5, 5_000.0, 120_000.0])
@pytest.mark.parametrize("bearing", [0.0, 90.0, 200.0])
def test_distance_matches_geodesic_offsets(meters: float, bearing: float) -> None:
    lat, lon = offset(meters, bearing)
    assert distance_m(*HOME, lat, lon) == pytest.approx(meters, abs=1e-3)


def test_distance_is_symmetric_and_zero_on_itself() -> None:
    lat, lon = offset(1234.0)
    assert distance_m(*HOME, *HOME) == 0.0
    assert distance_m(*HOME, lat, lon) == pytest.approx(distance_m(lat, lon, *HOME))


@settings(max_examples=300, deadline=None)
@given(
    st.floats(-90, 90),
    st.floats(-180, 180),
    st.floats(-90, 90),
    st.floats(-180, 180),
    st.booleans(),
)
def test_distance_is_geopys_geodesic_to_the_bit(
    lat1: float, lon1: float, lat2: float, lon2: float, near: bool
) -> None:
    """distance_m calls Karney's method itself (and keeps recent answers): the very
    floats geopy's geodesic gives, so no flag moves across a threshold."""
    if near:  # a caseworker's day: points a few hundred metres apart
        lat2 = min(90.0, max(-90.0, lat1 + lat2 / 9000))
        lon2 = min(180.0, max(-180.0, lon1 + lon2 / 9000))
    expected = geodesic((lat1, lon1), (lat2, lon2)).meters
    assert distance_m(lat1, lon1, lat2, lon2) == expected
    assert distance_m(lat1, lon1, lat2, lon2) == expected  # the kept answer


@pytest.mark.parametrize(
    "coords",
    [(91.0, 0.0, 0.0, 0.0), (0.0, 181.0, 0.0, 0.0), (math.nan, 0.0, 0.0, 0.0), (0, 0, 0, math.inf)],
)
def test_distance_rejects_impossible_coordinates(coords: tuple[float, ...]) -> None:
    with pytest.raises(ValueError):
        distance_m(*coords)


# --------------------------------------------------------------------------- location


def test_location_at_home_raises_nothing() -> None:
    assert check_location(fix_at(0.0), *HOME, T) == []


def test_far_from_home_just_above_and_below() -> None:
    assert check_location(fix_at(299.0), *HOME, T) == []
    (flag,) = check_location(fix_at(301.0), *HOME, T)
    assert flag.code == "gps_far_from_home"
    assert flag.severity == "warning"
    assert flag.value == 301.0
    assert flag.threshold == 300
    assert "301 m" in flag.detail


def test_far_from_home_is_critical_past_ten_times_the_threshold() -> None:
    (flag,) = check_location(fix_at(2_999.0), *HOME, T)
    assert (flag.severity, flag.value) == ("warning", 2_999.0)
    (flag,) = check_location(fix_at(3_001.0), *HOME, T)
    assert (flag.severity, flag.value) == ("critical", 3_001.0)


def test_far_from_home_follows_the_configured_threshold() -> None:
    strict = Thresholds(far_from_home_m=50)
    assert check_location(fix_at(49.0), *HOME, strict) == []
    assert codes(check_location(fix_at(51.0), *HOME, strict)) == ["gps_far_from_home"]


def test_low_accuracy_just_above_and_below() -> None:
    assert check_location(fix_at(accuracy_m=100.0), *HOME, T) == []
    (flag,) = check_location(fix_at(accuracy_m=100.5), *HOME, T)
    assert (flag.code, flag.severity, flag.value, flag.threshold) == (
        "gps_low_accuracy",
        "info",
        100.5,
        100,
    )


def test_low_accuracy_is_a_warning_when_it_swamps_the_distance_check() -> None:
    (flag,) = check_location(fix_at(accuracy_m=300.0), *HOME, T)
    assert flag.severity == "info"
    (flag,) = check_location(fix_at(accuracy_m=301.0), *HOME, T)
    assert flag.severity == "warning"


def test_unknown_accuracy_raises_nothing() -> None:
    assert check_location(fix_at(accuracy_m=None), *HOME, T) == []


def test_mock_by_flag() -> None:
    (flag,) = check_location(fix_at(is_mock=True), *HOME, T)
    assert (flag.code, flag.severity, flag.value) == ("gps_mock", "critical", "mock_location")


def test_mock_by_accuracy_exactly_zero() -> None:
    (flag,) = check_location(fix_at(accuracy_m=0.0), *HOME, T)
    assert (flag.code, flag.severity, flag.value) == ("gps_mock", "critical", "accuracy_zero")
    assert check_location(fix_at(accuracy_m=0.001), *HOME, T) == []


@pytest.mark.parametrize("accuracy", [-1.0, math.nan, math.inf])
def test_mock_by_impossible_accuracy(accuracy: float) -> None:
    (flag,) = check_location(fix_at(accuracy_m=accuracy), *HOME, T)
    assert (flag.code, flag.value) == ("gps_mock", "accuracy_invalid")


def test_location_flags_come_in_a_fixed_order() -> None:
    flags = check_location(fix_at(5_000.0, accuracy_m=500.0, is_mock=True), *HOME, T)
    assert codes(flags) == ["gps_far_from_home", "gps_low_accuracy", "gps_mock"]


def test_location_detail_holds_no_coordinates() -> None:
    lat, lon = offset(5_000.0)
    flags = check_location(fix_at(5_000.0, accuracy_m=0.0), *HOME, T)
    for flag in flags:
        for number in (lat, lon, *HOME):
            assert f"{number:.2f}" not in flag.detail


# --------------------------------------------------------------------------- times


def test_times_in_order_raise_nothing() -> None:
    assert check_times(START, FINISH, FINISH + timedelta(hours=2), T) == []


def test_future_just_above_and_below() -> None:
    received = FINISH - timedelta(minutes=5)  # finished exactly at the slack: no flag
    assert check_times(START, FINISH, received, T) == []
    received = FINISH - timedelta(minutes=5, seconds=1)
    (flag,) = check_times(START, FINISH, received, T)
    assert (flag.code, flag.severity, flag.value, flag.threshold) == (
        "visit_in_future",
        "critical",
        301.0,
        300.0,
    )


def test_stale_just_above_and_below() -> None:
    assert check_times(START, FINISH, FINISH + timedelta(days=30), T) == []
    (flag,) = check_times(START, FINISH, FINISH + timedelta(days=30, seconds=1), T)
    assert (flag.code, flag.severity, flag.value, flag.threshold) == (
        "visit_stale",
        "warning",
        float(30 * 86400 + 1),
        float(30 * 86400),
    )
    assert "30.0 days" in flag.detail


def test_inverted_times() -> None:
    assert check_times(FINISH, FINISH, FINISH, T) == []
    (flag,) = check_times(FINISH + timedelta(seconds=1), FINISH, FINISH, T)
    assert (flag.code, flag.severity, flag.value) == ("visit_times_inverted", "warning", 1.0)


def test_times_compare_instants_across_time_zones() -> None:
    received_utc = (FINISH + timedelta(minutes=1)).astimezone(UTC)
    assert check_times(START, FINISH, received_utc, T) == []


def test_time_flags_come_in_a_fixed_order() -> None:
    flags = check_times(FINISH + timedelta(hours=1), FINISH, FINISH - timedelta(hours=1), T)
    assert codes(flags) == ["visit_in_future", "visit_times_inverted"]


@pytest.mark.parametrize("which", range(3))
def test_times_refuse_naive_datetimes(which: int) -> None:
    args = [START, FINISH, FINISH]
    args[which] = args[which].replace(tzinfo=None)
    with pytest.raises(ValueError, match="timezone-aware"):
        check_times(args[0], args[1], args[2], T)


# --------------------------------------------------------------------------- photos


def photo(
    photo_id: str,
    *,
    meters: float | None = 0.0,
    taken_at: datetime | None = START + timedelta(minutes=5),
) -> PhotoEvidence:
    if meters is None:
        return PhotoEvidence(photo_id, taken_at, None, None)
    lat, lon = offset(meters, 120.0) if meters else HOME
    return PhotoEvidence(photo_id, taken_at, lat, lon)


def test_photos_at_the_visit_raise_nothing() -> None:
    assert check_photos([photo("p1"), photo("p2", meters=250.0)], fix_at(), START, FINISH, T) == []


def test_photo_exif_far_just_above_and_below() -> None:
    photos = [photo("near", meters=299.0), photo("far", meters=301.0)]
    (flag,) = check_photos(photos, fix_at(), START, FINISH, T)
    assert (flag.code, flag.severity, flag.value, flag.threshold) == (
        "photo_exif_far",
        "warning",
        301.0,
        300,
    )
    assert "far" in flag.detail


def test_photo_exif_far_is_measured_from_the_fix_not_the_home() -> None:
    fix = fix_at(1_000.0, bearing=120.0)
    assert check_photos([photo("p", meters=1_000.0)], fix, START, FINISH, T) == []


def test_photo_exif_position_without_a_fix_raises_nothing() -> None:
    assert check_photos([photo("p", meters=50_000.0)], None, START, FINISH, T) == []


def test_photo_time_outside_visit_just_above_and_below() -> None:
    slack = timedelta(minutes=10)
    early_ok = START - slack
    late_ok = FINISH + slack
    early = early_ok - timedelta(seconds=1)
    late = late_ok + timedelta(seconds=1)
    photos = [
        photo("a-early-ok", taken_at=early_ok),
        photo("b-late-ok", taken_at=late_ok),
        photo("c-early", taken_at=early),
        photo("d-late", taken_at=late),
    ]
    flags = check_photos(photos, fix_at(), START, FINISH, T)
    assert codes(flags) == ["photo_time_outside_visit", "photo_time_outside_visit"]
    assert [f.value for f in flags] == [1.0, 1.0]
    assert [f.threshold for f in flags] == [600.0, 600.0]
    assert "c-early" in flags[0].detail and "before" in flags[0].detail
    assert "d-late" in flags[1].detail and "after" in flags[1].detail


def test_photo_time_compares_instants_across_time_zones() -> None:
    taken_utc = (START + timedelta(minutes=1)).astimezone(UTC)
    assert check_photos([photo("p", taken_at=taken_utc)], fix_at(), START, FINISH, T) == []


def test_photo_no_exif_once_per_photo_lacking_both() -> None:
    photos = [
        photo("only-time", meters=None),
        photo("only-position", taken_at=None),
        photo("none", meters=None, taken_at=None),
        PhotoEvidence("half-position", None, 46.08, None),
    ]
    flags = check_photos(photos, fix_at(), START, FINISH, T)
    assert [(f.code, f.severity, f.value) for f in flags] == [
        ("photo_no_exif", "info", "half-position"),
        ("photo_no_exif", "info", "none"),
    ]


def test_photo_flags_are_ordered_by_photo_id_then_check() -> None:
    late = FINISH + timedelta(hours=1)
    photos = [
        photo("z", meters=None, taken_at=None),
        photo("b", meters=5_000.0, taken_at=late),
        photo("a", meters=5_000.0),
    ]
    flags = check_photos(photos, fix_at(), START, FINISH, T)
    assert [(f.code, f.value if f.code == "photo_no_exif" else None) for f in flags] == [
        ("photo_exif_far", None),
        ("photo_exif_far", None),
        ("photo_time_outside_visit", None),
        ("photo_no_exif", "z"),
    ]
    assert "photo a " in flags[0].detail and "photo b " in flags[1].detail
    assert flags == check_photos(list(reversed(photos)), fix_at(), START, FINISH, T)


def test_photos_refuse_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        check_photos([photo("p", taken_at=datetime(2026, 3, 2, 9, 5))], None, START, FINISH, T)  # noqa: DTZ001
    with pytest.raises(ValueError, match="timezone-aware"):
        check_photos([], None, START.replace(tzinfo=None), FINISH, T)


# --------------------------------------------------------------------------- travel


def previous_at(km: float, hours_before: float) -> PreviousVisit:
    lat, lon = offset(km * 1000.0, 270.0)
    return PreviousVisit(lat, lon, FINISH - timedelta(hours=hours_before))


def test_travel_without_a_previous_visit_raises_nothing() -> None:
    assert check_travel(fix_at(), FINISH, None, T) == []


def test_travel_at_100_kmh_is_fine_and_at_130_kmh_is_flagged() -> None:
    assert check_travel(fix_at(), FINISH, previous_at(100.0, 1.0), T) == []
    (flag,) = check_travel(fix_at(), FINISH, previous_at(130.0, 1.0), T)
    assert (flag.code, flag.severity, flag.value, flag.threshold) == (
        "impossible_travel",
        "warning",
        130.0,
        120,
    )


def test_travel_just_above_and_below_the_speed_limit() -> None:
    assert check_travel(fix_at(), FINISH, previous_at(59.9, 0.5), T) == []
    (flag,) = check_travel(fix_at(), FINISH, previous_at(60.1, 0.5), T)
    assert flag.value == 120.2


def test_travel_with_no_time_passed() -> None:
    same_time = PreviousVisit(*offset(299.0, 270.0), FINISH)
    assert check_travel(fix_at(), FINISH, same_time, T) == []
    same_time = PreviousVisit(*offset(301.0, 270.0), FINISH)
    (flag,) = check_travel(fix_at(), FINISH, same_time, T)
    assert (flag.code, flag.severity, flag.value) == ("impossible_travel", "critical", None)
    later = PreviousVisit(*offset(5_000.0, 270.0), FINISH + timedelta(minutes=1))
    assert codes(check_travel(fix_at(), FINISH, later, T)) == ["impossible_travel"]


def test_travel_refuses_naive_datetimes() -> None:
    naive = PreviousVisit(*HOME, FINISH.replace(tzinfo=None))
    with pytest.raises(ValueError, match="timezone-aware"):
        check_travel(fix_at(), FINISH, naive, T)


# --------------------------------------------------------------------------- photo reuse

BASE_HASH = 0x8F3C_1A2B_4D5E_6071


def flip_bits(value: int, count: int) -> str:
    for bit in range(0, count * 9, 9):  # spread over the 64 bits
        value ^= 1 << bit
    return f"{value:016x}"


def test_photo_reuse_hamming_5_flags_and_7_does_not() -> None:
    mine = f"{BASE_HASH:016x}"
    others = [(flip_bits(BASE_HASH, 7), 11), (flip_bits(BASE_HASH, 5), 12)]
    (flag,) = check_photo_reuse(mine, others)
    assert (flag.code, flag.value, flag.threshold) == ("photo_reused", 5.0, 6.0)
    assert "household 12" in flag.detail


def test_photo_reuse_at_exactly_the_limit_flags() -> None:
    mine = f"{BASE_HASH:016x}"
    assert check_photo_reuse(mine, [(flip_bits(BASE_HASH, 6), 3)])
    assert not check_photo_reuse(mine, [(flip_bits(BASE_HASH, 6), 3)], max_hamming=5)


def test_photo_reuse_one_flag_per_household_nearest_first() -> None:
    mine = f"{BASE_HASH:016x}"
    others = [
        (flip_bits(BASE_HASH, 4), 30),
        (flip_bits(BASE_HASH, 1), 30),
        (flip_bits(BASE_HASH, 4), 20),
        (f"0x{BASE_HASH:016X}", 40),
    ]
    flags = check_photo_reuse(mine, iter(others))
    assert [(f.value, f.detail.split("household ")[1].split(" ")[0]) for f in flags] == [
        (0.0, "40"),
        (1.0, "30"),
        (4.0, "20"),
    ]


def test_photo_reuse_handles_short_hashes_as_leading_zeros() -> None:
    assert check_photo_reuse("00000000000000ff", [("ff", 1)])[0].value == 0.0


@pytest.mark.parametrize("bad", ["", "xyz", "1" * 17, "0x"])
def test_photo_reuse_refuses_malformed_hashes(bad: str) -> None:
    with pytest.raises(ValueError):
        check_photo_reuse(bad, [])
    with pytest.raises(ValueError):
        check_photo_reuse("ff", [(bad, 1)])


# --------------------------------------------------------------------------- faces


def reference_nearest(
    encoding: list[float], rows: list[list[float]], threshold: float
) -> list[tuple[int, float]]:
    found = [
        (i, math.sqrt(math.fsum((a - b) ** 2 for a, b in zip(encoding, row, strict=True))))
        for i, row in enumerate(rows)
    ]
    return sorted(((i, d) for i, d in found if d < threshold), key=lambda item: (item[1], item[0]))


def test_nearest_faces_small_array() -> None:
    rng = np.random.default_rng(7)
    candidates = (rng.standard_normal((500, 128)) * 0.08).astype(np.float32)
    query = candidates[42] + np.float32(0.01)
    candidates[7] = candidates[42] + np.float32(0.025)  # 0.015 * sqrt(128) ≈ 0.17 away
    candidates[300] = candidates[42] - np.float32(0.02)  # 0.03 * sqrt(128) ≈ 0.34 away
    got = nearest_faces(query.tolist(), candidates, 0.45)
    expected = reference_nearest(query.tolist(), candidates.astype(np.float64).tolist(), 0.45)
    assert [i for i, _ in got] == [42, 7, 300]
    assert [i for i, _ in got] == [i for i, _ in expected]
    for (_, d), (_, e) in zip(got, expected, strict=True):
        assert d == pytest.approx(e, rel=1e-12)
    assert got[0][1] == pytest.approx(math.sqrt(128) * 0.01, rel=1e-6)


def test_nearest_faces_threshold_is_strict_and_ties_go_by_row() -> None:
    candidates = np.zeros((4, 128), dtype=np.float32)
    candidates[1, 0] = 0.5
    candidates[2, 0] = -0.25
    candidates[3, 0] = 0.25
    query = [0.0] * 128
    assert nearest_faces(query, candidates, 0.5) == [(0, 0.0), (2, 0.25), (3, 0.25)]
    assert nearest_faces(query, candidates, 0.0) == []


def test_nearest_faces_accepts_float64_and_skips_nan_rows() -> None:
    candidates = np.zeros((3, 128), dtype=np.float64)
    candidates[1, :] = np.nan
    candidates[2, 5] = 0.1
    assert nearest_faces([0.0] * 128, candidates, 0.45) == [(0, 0.0), (2, pytest.approx(0.1))]


def test_nearest_faces_spans_chunks() -> None:
    rng = np.random.default_rng(3)
    candidates = rng.uniform(-1, 1, (40_000, 128)).astype(np.float32)
    query = candidates[0].copy()
    for row in (0, 16_383, 16_384, 39_999):
        candidates[row] = query + np.float32(0.001 * (row % 7 + 1))
    got = nearest_faces(query.tolist(), candidates, 0.45)
    assert sorted(i for i, _ in got) == [0, 16_383, 16_384, 39_999]


def test_nearest_faces_empty_and_malformed() -> None:
    assert nearest_faces([0.0] * 128, np.empty((0, 128), dtype=np.float32), 0.45) == []
    with pytest.raises(ValueError):
        nearest_faces([0.0] * 128, np.zeros((3, 127), dtype=np.float32), 0.45)
    with pytest.raises(ValueError):
        nearest_faces([0.0] * 128, np.zeros(128, dtype=np.float32), 0.45)
    with pytest.raises(ValueError):
        nearest_faces([], np.zeros((3, 0), dtype=np.float32), 0.45)
    with pytest.raises(ValueError):
        nearest_faces([math.nan] * 128, np.zeros((3, 128), dtype=np.float32), 0.45)
    with pytest.raises(ValueError):
        nearest_faces([0.0] * 128, np.zeros((3, 128), dtype=np.float32), math.nan)


_unit = st.floats(-1.0, 1.0, width=32)


@settings(max_examples=150, deadline=None)
@given(
    data=st.data(),
    dims=st.sampled_from([1, 3, 16, 128]),
    rows=st.integers(1, 40),
    threshold=st.floats(0.0, 4.0),
)
def test_nearest_faces_matches_brute_force(
    data: st.DataObject, dims: int, rows: int, threshold: float
) -> None:
    candidates = data.draw(hnp.arrays(np.float32, (rows, dims), elements=_unit))
    query = data.draw(st.lists(_unit, min_size=dims, max_size=dims))
    # Make near neighbours likely: some rows are small perturbations of the query.
    for row in data.draw(st.lists(st.integers(0, rows - 1), max_size=5)):
        candidates[row] = np.asarray(query, dtype=np.float32) + np.float32(
            data.draw(st.floats(-0.2, 0.2))
        )
    got = nearest_faces(query, candidates, threshold)
    expected = reference_nearest(query, candidates.astype(np.float64).tolist(), threshold)
    # Distances within a rounding error of the threshold may land either side of it.
    edge = 1e-12 * max(threshold, 1.0)
    got_rows = {i for i, _ in got}
    for i, e in reference_nearest(query, candidates.astype(np.float64).tolist(), math.inf):
        if e < threshold - edge:
            assert i in got_rows
        elif e >= threshold + edge:
            assert i not in got_rows
    by_row = dict(expected)
    for i, d in got:
        assert d < threshold
        assert d == pytest.approx(by_row.get(i, d), rel=1e-9, abs=1e-12)
    assert [d for _, d in got] == sorted(d for _, d in got)
