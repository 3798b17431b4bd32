"""The per-visit integrity checks through the real upload paths (the tablet's JSON and
multipart API, photos sent later, ODK Collect's OpenRosa): a fabricated visit is
flagged, a realistic honest one is not."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from flask.testing import FlaskClient

from server.cases.models import CaseState
from server.extensions import db
from tests import factories
from tests.mobile_api.test_api_devices import bearer, device_login
from tests.visits.test_api_surveys import exif_jpeg, manifest_entry, post_multipart, survey_json
from tests.visits.test_openrosa import basic, instance_xml, submit


def daytime_now() -> datetime:
    """The latest 16:00 Beijing time at or before now (in UTC): these visits are then
    made in the afternoon whenever the tests run (a visit at night is a pattern of its
    own, ``pattern_odd_hours``, which the background job adds after the upload)."""
    local = datetime.now(ZoneInfo("Asia/Shanghai")).replace(microsecond=0)
    afternoon = local.replace(hour=16, minute=0, second=0)
    if afternoon > local:
        afternoon -= timedelta(days=1)
    return afternoon.astimezone(UTC)


LANE_A = {
    "visit_too_short",
    "photos_bunched",
    "gps_too_precise",
    "gps_at_registered_point",
    "gps_repeated",
    "gps_fix_stale",
    "track_static",
    "track_jump",
}


@pytest.fixture
def token(client: FlaskClient) -> str:
    value: str = device_login(client).get_json()["token"]
    return value


@pytest.fixture
def home(app: Flask) -> tuple[int, float, float]:
    """An approved household of township A: its id and registered coordinates."""
    household = factories.make_household(state=CaseState.APPROVED)
    db.session.commit()
    return household.id, household.home_lat, household.home_lon


def codes(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {flag["code"]: flag for flag in body["flags"]}


def iso(moment: datetime) -> str:
    return moment.isoformat()


def honest_visit(
    household_id: int, home_lat: float, home_lon: float, seed: int
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """A 12-minute periodic review of one member: a fix 6-10 m from the door with 8 m
    accuracy taken as the visit began, a jittering track, four photos over 7 minutes."""
    rng = random.Random(seed)
    now = daytime_now()
    start, finish = now - timedelta(minutes=20), now - timedelta(minutes=8)
    lat, lon = home_lat + 0.00006, home_lon - 0.00005
    track = [
        {
            "lat": lat + rng.gauss(0, 4) / 111_000,
            "lon": lon + rng.gauss(0, 4) / 77_000,
            "accuracy_m": round(rng.uniform(6, 18), 1),
            "at": iso(start + timedelta(seconds=30 * i)),
        }
        for i in range(24)
    ]
    photos = {
        f"p{i}": exif_jpeg(
            seed * 10 + i,
            taken=start + timedelta(seconds=offset),
            lat=lat + rng.gauss(0, 3) / 111_000,
            lon=lon + rng.gauss(0, 3) / 77_000,
        )
        for i, offset in enumerate((140, 170, 320, 560))
    }
    survey = survey_json(
        household_id,
        photos,
        started_at=iso(start),
        finished_at=iso(finish),
        gps={
            "lat": lat,
            "lon": lon,
            "accuracy_m": 8.0,
            "provider": "gps",
            "fix_at": iso(start + timedelta(seconds=40)),
        },
        track=track,
    )
    for entry, offset in zip(survey["photos"], (140, 170, 320, 560), strict=True):
        entry["taken_at"] = iso(start + timedelta(seconds=offset))
    return survey, photos


def test_a_realistic_honest_visit_raises_no_flag(
    app: Flask, client: FlaskClient, token: str, home: tuple[int, float, float]
) -> None:
    survey, photos = honest_visit(*home, seed=1)
    response = post_multipart(client, token, survey, photos)
    assert response.status_code == 201, response.get_json()
    body = client.get(f"/api/v1/surveys/{survey['client_uuid']}", headers=bearer(token)).get_json()
    assert body["status"] == "complete"
    assert body["flags"] == []


def test_a_fabricated_visit_is_flagged_on_every_sign_and_kept(
    app: Flask, client: FlaskClient, token: str, home: tuple[int, float, float]
) -> None:
    household_id, home_lat, home_lon = home
    now = daytime_now()
    start, finish = now - timedelta(minutes=12), now - timedelta(minutes=10)
    track = [
        {
            "lat": home_lat,
            "lon": home_lon,
            "accuracy_m": 1.0,
            "at": iso(start + timedelta(seconds=s)),
        }
        for s in range(0, 150, 30)
    ]
    survey = survey_json(
        household_id,
        {},
        started_at=iso(start),
        finished_at=iso(finish),
        gps={
            "lat": home_lat,
            "lon": home_lon,
            "accuracy_m": 1.0,
            "fix_at": iso(start - timedelta(hours=3)),
        },
        track=track,
    )
    response = client.post("/api/v1/surveys", json=survey, headers=bearer(token))
    assert response.status_code == 201
    flags = codes(response.get_json())
    assert set(flags) & LANE_A == {
        "visit_too_short",
        "gps_too_precise",
        "gps_at_registered_point",
        "gps_fix_stale",
        "track_static",
    }
    assert flags["visit_too_short"]["severity"] == "critical"  # 2 min of at least 6 min
    assert flags["gps_at_registered_point"]["severity"] == "critical"
    for flag in flags.values():
        assert str(home_lat)[:6] not in flag["detail"]  # no coordinates in a flag
    replay = client.post("/api/v1/surveys", json=survey, headers=bearer(token)).get_json()
    assert replay["flags"] == response.get_json()["flags"]


def test_the_same_coordinates_in_another_visit_are_flagged(
    app: Flask, client: FlaskClient, token: str, home: tuple[int, float, float]
) -> None:
    household_id = home[0]
    other = factories.make_household(state=CaseState.APPROVED).id
    db.session.commit()
    fix = {"lat": 46.1113417, "lon": 122.0107713, "accuracy_m": 6.0}
    first = client.post(
        "/api/v1/surveys", json=survey_json(household_id, {}, gps=fix), headers=bearer(token)
    ).get_json()
    assert "gps_repeated" not in codes(first)
    nearby = {**fix, "lat": fix["lat"] + 0.000002}  # 0.22 m away: a real second fix
    second = client.post(
        "/api/v1/surveys", json=survey_json(other, {}, gps=nearby), headers=bearer(token)
    ).get_json()
    assert "gps_repeated" not in codes(second)
    third = client.post(
        "/api/v1/surveys", json=survey_json(other, {}, gps=fix), headers=bearer(token)
    ).get_json()
    repeated = codes(third)["gps_repeated"]
    assert float(repeated["value"]) == 1 and str(first["survey_id"]) in repeated["detail"]


def test_a_track_that_leaps_is_flagged(
    app: Flask, client: FlaskClient, token: str, home: tuple[int, float, float]
) -> None:
    household_id, home_lat, home_lon = home
    survey = survey_json(household_id, {})
    start = datetime.fromisoformat(survey["started_at"])
    survey["track"] = [
        {"lat": home_lat + 0.00005, "lon": home_lon, "accuracy_m": 8.0, "at": iso(start)},
        {
            "lat": home_lat + 0.01,  # 1.1 km north 10 s later
            "lon": home_lon,
            "accuracy_m": 8.0,
            "at": iso(start + timedelta(seconds=10)),
        },
    ]
    body = client.post("/api/v1/surveys", json=survey, headers=bearer(token)).get_json()
    assert float(codes(body)["track_jump"]["value"]) > 150


def test_a_household_registered_from_the_visit_is_not_at_its_registered_point(
    app: Flask, client: FlaskClient, token: str
) -> None:
    from tests.visits.test_api_surveys import new_application

    survey = new_application()
    survey["gps"]["accuracy_m"] = 6.0
    body = client.post("/api/v1/surveys", json=survey, headers=bearer(token)).get_json()
    assert not set(codes(body)) & LANE_A


def test_photos_bunched_by_their_exif_are_flagged_once_when_all_are_in(
    app: Flask, client: FlaskClient, token: str, home: tuple[int, float, float]
) -> None:
    household_id, home_lat, home_lon = home
    survey = survey_json(household_id, {})
    start = datetime.fromisoformat(survey["started_at"])  # a 35-minute visit
    photos = {
        f"p{i}": exif_jpeg(
            40 + i, taken=start + timedelta(minutes=10, seconds=4 * i), lat=home_lat, lon=home_lon
        )
        for i in range(4)
    }
    survey["photos"] = [manifest_entry(pid, data) for pid, data in photos.items()]
    # The tablet claims the photos were spread over the visit: the EXIF says otherwise.
    for i, entry in enumerate(survey["photos"]):
        entry["taken_at"] = iso(start + timedelta(minutes=3 + 6 * i))
    first = client.post("/api/v1/surveys", json=survey, headers=bearer(token)).get_json()
    assert "photos_bunched" not in codes(first)
    url = f"/api/v1/surveys/{survey['client_uuid']}/photos"
    for photo_id in ("p0", "p1", "p2"):
        put = client.put(f"{url}/{photo_id}", data=photos[photo_id], headers=bearer(token))
        assert "photos_bunched" not in codes(put.get_json())
    last = client.put(f"{url}/p3", data=photos["p3"], headers=bearer(token)).get_json()
    assert last["status"] == "complete"
    bunched = [f for f in last["flags"] if f["code"] == "photos_bunched"]
    assert len(bunched) == 1 and float(bunched[0]["value"]) == 12
    again = client.put(f"{url}/p3", data=photos["p3"], headers=bearer(token)).get_json()
    assert [f["code"] for f in again["flags"]].count("photos_bunched") == 1


def test_photos_bunched_by_the_manifest_are_flagged_at_once_and_only_once(
    app: Flask, client: FlaskClient, token: str, home: tuple[int, float, float]
) -> None:
    household_id, home_lat, home_lon = home
    survey = survey_json(household_id, {})
    start = datetime.fromisoformat(survey["started_at"])
    photos = {
        f"q{i}": exif_jpeg(
            60 + i, taken=start + timedelta(minutes=2 + 7 * i), lat=home_lat, lon=home_lon
        )
        for i in range(3)
    }
    survey["photos"] = [manifest_entry(pid, data) for pid, data in photos.items()]
    for i, entry in enumerate(survey["photos"]):
        entry["taken_at"] = iso(start + timedelta(minutes=20, seconds=3 * i))
    body = post_multipart(client, token, survey, photos).get_json()
    assert body["status"] == "complete"
    assert [f["code"] for f in body["flags"]].count("photos_bunched") == 1


def test_documents_shot_in_a_row_are_not_bunched_photos(
    app: Flask, client: FlaskClient, token: str, home: tuple[int, float, float]
) -> None:
    household_id = home[0]
    survey = survey_json(household_id, {})
    start = datetime.fromisoformat(survey["started_at"])
    pages = {f"doc{i}": exif_jpeg(80 + i, taken=start, lat=0.0, lon=0.0) for i in range(4)}
    survey["photos"] = [manifest_entry(pid, data, "document") for pid, data in pages.items()]
    for i, entry in enumerate(survey["photos"]):
        entry["taken_at"] = iso(start + timedelta(minutes=15, seconds=5 * i))
    body = client.post("/api/v1/surveys", json=survey, headers=bearer(token)).get_json()
    assert "photos_bunched" not in codes(body)
    survey = survey_json(household_id, {})
    survey["photos"] = [manifest_entry(pid, data, "housing") for pid, data in pages.items()]
    for i, entry in enumerate(survey["photos"]):
        entry["taken_at"] = iso(start + timedelta(minutes=15, seconds=5 * i))
    body = client.post("/api/v1/surveys", json=survey, headers=bearer(token)).get_json()
    assert "photos_bunched" in codes(body)  # the same times on housing photos


def test_an_odk_collect_submission_goes_through_the_same_checks(
    app: Flask, client: FlaskClient, token: str, home: tuple[int, float, float]
) -> None:
    household_id, home_lat, home_lon = home
    instance = uuid.uuid4()
    xml = instance_xml(household_id, instance, gps=f"{home_lat} {home_lon} 320.0 1.0")
    response = submit(client, basic("caseworker_a", token), xml)
    assert response.status_code == 201, response.data
    body = client.get(f"/api/v1/surveys/{instance}", headers=bearer(token)).get_json()
    assert {"gps_too_precise", "gps_at_registered_point"} <= set(codes(body))
