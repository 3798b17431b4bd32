"""Field-visit uploads: idempotent, checked against the manifest, stored durably."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import threading
import uuid
from datetime import UTC, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from flask.testing import FlaskClient
from flask_migrate import upgrade
from PIL import Image
from sqlalchemy import func, select

from server.audit.models import AuditEntry
from server.cases.models import CaseState
from server.extensions import db
from server.visits.models import Survey
from tests import factories
from tests.conftest import DatabaseFactory, make_app
from tests.mobile_api.test_api_devices import bearer, device_login


def jpeg(seed: int = 1, size: tuple[int, int] = (64, 48)) -> bytes:
    image = Image.new("RGB", size, ((seed * 40) % 256, (seed * 90) % 256, (seed * 10) % 256))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def manifest_entry(photo_id: str, data: bytes, kind: str = "housing") -> dict[str, Any]:
    return {
        "photo_id": photo_id,
        "kind": kind,
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
    }


_FIXES = itertools.count()


def honest_fix() -> tuple[float, float]:
    """A fix 4-15 m from the factories' home (46.111, 122.011), never the same twice in
    a test: real fixes scatter (a fix on the home's coordinates is gps_at_registered_point,
    one repeating another visit's is gps_repeated)."""
    n = next(_FIXES) % 97
    return 46.11103 + n * 0.0000011, 122.01104 - n * 0.0000013


def at_daytime(survey: dict[str, Any]) -> dict[str, Any]:
    """The survey moved, at night (the region's zone), to the afternoon before: a visit
    the night's pattern check (``pattern_odd_hours``, run after the upload) leaves
    alone, for tests comparing a replay's flags with the first answer's at any hour."""
    started = datetime.fromisoformat(survey["started_at"])
    local = started.astimezone(ZoneInfo("Asia/Shanghai"))
    if 7 <= local.hour < 21:
        return survey
    day = local.date() - timedelta(days=1 if local.hour < 7 else 0)
    shift = datetime.combine(day, time(16), local.tzinfo) - local
    moved = {**survey, "gps": dict(survey["gps"])}
    for key, holder in (("started_at", moved), ("finished_at", moved), ("fix_at", moved["gps"])):
        if holder.get(key):
            holder[key] = (datetime.fromisoformat(holder[key]) + shift).isoformat()
    return moved


def survey_json(household_id: int, files: dict[str, bytes], **changes: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    lat, lon = honest_fix()
    body: dict[str, Any] = {
        "client_uuid": str(uuid.uuid4()),
        "household_id": household_id,
        "kind": "periodic_review",
        "started_at": (now - timedelta(minutes=40)).isoformat(),
        "finished_at": (now - timedelta(minutes=5)).isoformat(),
        "gps": {
            "lat": lat,
            "lon": lon,
            "accuracy_m": 8.5,
            "provider": "gps",
            "is_mock": False,
            "fix_at": (now - timedelta(minutes=30)).isoformat(),
        },
        "members": [{"member_id": 1, "name": "王大", "monthly_income": "120.00"}],
        "housing": {"rooms": 2, "heating": "炕"},
        "photos": [manifest_entry(pid, data) for pid, data in files.items()],
        "notes": "家中两人，老人卧床",
    }
    body.update(changes)
    return body


def post_multipart(
    client: FlaskClient, token: str, survey: dict[str, Any], photos: dict[str, bytes]
) -> Any:
    data: dict[str, Any] = {"survey": json.dumps(survey, ensure_ascii=False)}
    for photo_id, content in photos.items():
        data[photo_id] = (io.BytesIO(content), f"{photo_id}.jpg", "image/jpeg")
    return client.post(
        "/api/v1/surveys", data=data, headers=bearer(token), content_type="multipart/form-data"
    )


def stored_files(app: Flask) -> tuple[set[str], list[Path]]:
    root = Path(app.instance_path) / "store"
    blobs = {p.name for p in (root / "blobs").rglob("*") if p.is_file()}
    return blobs, [p for p in (root / "tmp").rglob("*") if p.is_file()]


def survey_count() -> int:
    return db.session.scalar(select(func.count()).select_from(Survey)) or 0


@pytest.fixture
def token(client: FlaskClient) -> str:
    value: str = device_login(client).get_json()["token"]
    return value


@pytest.fixture
def household_id(app: Flask) -> int:
    household = factories.make_household(state=CaseState.APPROVED)
    db.session.commit()
    return household.id


@pytest.mark.slow
def test_a_multipart_upload_stores_the_visit_and_its_photos(
    app: Flask, client: FlaskClient, token: str, household_id: int
) -> None:
    photos = {"house-1": jpeg(1), "house-2": jpeg(2)}
    survey = survey_json(household_id, photos)
    response = post_multipart(client, token, survey, photos)
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["client_uuid"] == survey["client_uuid"]
    assert body["status"] == "complete" and body["missing_photos"] == []
    blobs, leftovers = stored_files(app)
    assert {hashlib.sha256(p).hexdigest() for p in photos.values()} <= blobs
    assert leftovers == []
    stored = db.session.scalars(select(Survey)).one()
    assert stored.caseworker.username == "caseworker_a"
    assert json.loads(stored.payload)["notes"] == "家中两人，老人卧床"
    assert (
        db.session.scalar(
            select(func.count())
            .select_from(AuditEntry)
            .where(AuditEntry.action == "survey.received")
        )
        == 1
    )


def test_a_json_survey_waits_for_its_photos_then_completes(
    app: Flask, client: FlaskClient, token: str, household_id: int
) -> None:
    photos = {"p1": jpeg(1), "p2": jpeg(2)}
    survey = survey_json(household_id, photos)
    first = client.post("/api/v1/surveys", json=survey, headers=bearer(token))
    assert first.status_code == 201
    assert first.get_json()["status"] == "awaiting_photos"
    assert first.get_json()["missing_photos"] == ["p1", "p2"]

    url = f"/api/v1/surveys/{survey['client_uuid']}"
    put = client.put(
        f"{url}/photos/p2", data=photos["p2"], headers=bearer(token), content_type="image/jpeg"
    )
    assert put.status_code == 200 and put.get_json()["missing_photos"] == ["p1"]
    again = client.put(f"{url}/photos/p2", data=photos["p2"], headers=bearer(token))
    assert again.get_json() == put.get_json()
    last = client.put(f"{url}/photos/p1", data=photos["p1"], headers=bearer(token))
    assert last.get_json()["status"] == "complete"
    assert client.get(url, headers=bearer(token)).get_json() == last.get_json()


def test_an_identical_replay_returns_the_same_survey(
    app: Flask, client: FlaskClient, token: str, household_id: int
) -> None:
    photos = {"p1": jpeg(1)}
    survey = at_daytime(survey_json(household_id, photos))
    first = post_multipart(client, token, survey, photos)
    # Same content, keys in another order: still the same survey.
    reordered = json.loads(json.dumps(survey, sort_keys=True))
    replay = post_multipart(client, token, reordered, photos)
    assert (first.status_code, replay.status_code) == (201, 200)
    assert replay.get_json() == first.get_json()
    assert survey_count() == 1


def test_a_replay_can_bring_the_photos_the_first_attempt_lacked(
    app: Flask, client: FlaskClient, token: str, household_id: int
) -> None:
    photos = {"p1": jpeg(1)}
    survey = survey_json(household_id, photos)
    assert client.post("/api/v1/surveys", json=survey, headers=bearer(token)).status_code == 201
    replay = post_multipart(client, token, survey, photos)
    assert replay.status_code == 200 and replay.get_json()["status"] == "complete"


def test_the_same_uuid_with_other_content_is_a_conflict(
    app: Flask, client: FlaskClient, token: str, household_id: int
) -> None:
    survey = survey_json(household_id, {})
    assert client.post("/api/v1/surveys", json=survey, headers=bearer(token)).status_code == 201
    changed = {**survey, "notes": "改过的记录"}
    response = client.post("/api/v1/surveys", json=changed, headers=bearer(token))
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "client_uuid_conflict"
    stored = db.session.scalars(select(Survey)).one()
    assert json.loads(stored.payload)["notes"] == "家中两人，老人卧床"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("mutate", "status", "code"),
    [
        (lambda s, p: p.update({"intruder": jpeg(9)}), 422, "photo_not_in_manifest"),
        (lambda s, p: p.update({"p1": jpeg(7)}), 422, "sha256_mismatch"),
        (
            lambda s, p: (
                p.update({"p1": b"not an image at all"}),
                s["photos"].__setitem__(0, manifest_entry("p1", b"not an image at all")),
            ),
            415,
            "unsupported_media_type",
        ),
    ],
    ids=["part-not-in-manifest", "sha256-mismatch", "not-an-image"],
)
def test_a_bad_photo_part_stores_nothing(
    app: Flask,
    client: FlaskClient,
    token: str,
    household_id: int,
    mutate: Any,
    status: int,
    code: str,
) -> None:
    photos = {"p1": jpeg(1)}
    survey = survey_json(household_id, photos)
    mutate(survey, photos)
    blobs_before = stored_files(app)[0]
    response = post_multipart(client, token, survey, photos)
    assert response.status_code == status, response.get_json()
    assert response.get_json()["error"]["code"] == code
    assert survey_count() == 0
    blobs, leftovers = stored_files(app)
    assert blobs == blobs_before and leftovers == []


@pytest.mark.slow
@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"gps": None}, "gps"),
        ({"gps": {"lat": 91, "lon": 122}}, "gps.lat"),
        ({"gps": {"lat": 46, "lon": -181}}, "gps.lon"),
        ({"client_uuid": "not-a-uuid"}, "client_uuid"),
        ({"kind": "picnic"}, "kind"),
        ({"started_at": "2026-11-20T10:00:00"}, "started_at"),
        (
            {
                "photos": [
                    {"photo_id": "../etc/passwd", "kind": "housing", "sha256": "0" * 64, "bytes": 1}
                ]
            },
            "photos.0.photo_id",
        ),
        ({"members": [{"name": "无编号"}]}, "members.0"),
    ],
)
def test_a_bad_field_is_named_and_nothing_is_stored(
    app: Flask,
    client: FlaskClient,
    token: str,
    household_id: int,
    changes: dict[str, Any],
    field: str,
) -> None:
    survey = survey_json(household_id, {}, **changes)
    response = client.post("/api/v1/surveys", json=survey, headers=bearer(token))
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == "validation_failed" and error["details"]["field"] == field
    assert survey_count() == 0


def test_malformed_json_is_a_clear_error(client: FlaskClient, token: str) -> None:
    response = client.post(
        "/api/v1/surveys", data="{not json", headers=bearer(token), content_type="application/json"
    )
    assert response.status_code == 422
    assert "not valid JSON" in response.get_json()["error"]["message"]


def test_another_townships_household_looks_like_no_household(
    app: Flask, client: FlaskClient, token: str
) -> None:
    theirs = factories.make_household(village=factories.areas().village_b).id
    db.session.commit()
    other = client.post("/api/v1/surveys", json=survey_json(theirs, {}), headers=bearer(token))
    missing = client.post("/api/v1/surveys", json=survey_json(999_999, {}), headers=bearer(token))
    assert other.status_code == missing.status_code == 404
    assert other.get_json()["error"]["message"] == missing.get_json()["error"]["message"]
    assert survey_count() == 0


def test_put_refuses_wrong_bytes_unknown_photos_and_path_tricks(
    app: Flask, client: FlaskClient, token: str, household_id: int
) -> None:
    survey = survey_json(household_id, {"p1": jpeg(1)})
    client.post("/api/v1/surveys", json=survey, headers=bearer(token))
    url = f"/api/v1/surveys/{survey['client_uuid']}/photos"
    wrong = client.put(f"{url}/p1", data=jpeg(5), headers=bearer(token))
    assert wrong.status_code == 422 and wrong.get_json()["error"]["code"] == "sha256_mismatch"
    unknown = client.put(f"{url}/p9", data=jpeg(1), headers=bearer(token))
    assert unknown.get_json()["error"]["code"] == "photo_not_in_manifest"
    tricky = client.put(f"{url}/..%2F..%2Fescape", data=jpeg(1), headers=bearer(token))
    assert tricky.status_code in (404, 422)
    dotted = client.put(f"{url}/p1.jpg", data=jpeg(1), headers=bearer(token))
    assert (
        dotted.status_code == 422 and dotted.get_json()["error"]["details"]["field"] == "photo_id"
    )
    nobody = client.put(
        f"/api/v1/surveys/{uuid.uuid4()}/photos/p1", data=jpeg(1), headers=bearer(token)
    )
    assert nobody.status_code == 404
    _, leftovers = stored_files(app)
    assert leftovers == []


def test_oversized_photos_and_requests_get_413(app: Flask, tmp_path: Path) -> None:
    small = make_app(
        app.config["SQLALCHEMY_DATABASE_URI"],
        tmp_path,
        DIBAO_MAX_PHOTO_BYTES=2_000,
        DIBAO_MAX_REQUEST_BYTES=50_000,
    )
    client = small.test_client()
    with small.app_context():
        household = factories.make_household(state=CaseState.APPROVED)
        household_id = household.id
        db.session.commit()
    token = device_login(client).get_json()["token"]
    big = jpeg(1, size=(400, 300))
    assert 2_000 < len(big) < 50_000
    survey = survey_json(household_id, {"p1": big})
    too_big_photo = post_multipart(client, token, survey, {"p1": big})
    assert too_big_photo.status_code == 413
    assert too_big_photo.get_json()["error"]["code"] == "request_entity_too_large"
    too_big_request = client.post(
        "/api/v1/surveys",
        data=b"x" * 60_000,
        headers=bearer(token),
        content_type="application/json",
    )
    assert too_big_request.status_code == 413
    assert stored_files(small)[1] == []


@pytest.mark.slow
@pytest.mark.parametrize("uploads", ["json", "multipart", "new_household"])
def test_ten_identical_uploads_at_once_make_exactly_one_survey(
    databases: DatabaseFactory, tmp_path: Path, uploads: str
) -> None:
    application = make_app(databases.new("race"), tmp_path)
    with application.app_context():
        upgrade(directory=application.extensions["migrate"].directory)
        factories.base_data()
        db.session.commit()
        household_id = factories.make_household(state=CaseState.APPROVED).id
        db.session.commit()
    client = application.test_client()
    token = device_login(client).get_json()["token"]
    photos = {"p1": jpeg(3)}
    survey = survey_json(household_id, photos)
    if uploads == "new_household":
        with application.app_context():
            survey = new_application(photos)
    barrier = threading.Barrier(10)
    statuses: list[int] = []
    bodies: list[Any] = []

    def upload() -> None:
        own = application.test_client()
        barrier.wait()
        if uploads in ("json", "new_household"):
            response = own.post("/api/v1/surveys", json=survey, headers=bearer(token))
        else:
            response = post_multipart(own, token, survey, photos)
        statuses.append(response.status_code)
        bodies.append(response.get_json())

    threads = [threading.Thread(target=upload) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200] * 9 + [201], bodies
    assert len({body["survey_id"] for body in bodies}) == 1
    with application.app_context():
        from server.cases.models import Household

        assert survey_count() == 1
        assert db.session.scalar(select(func.count()).select_from(Household)) == (
            2 if uploads == "new_household" else 1
        )
        db.session.remove()


def _flags(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {flag["code"]: flag for flag in body["flags"]}


def test_a_clean_visit_raises_no_flags(
    app: Flask, client: FlaskClient, token: str, household_id: int
) -> None:
    body = client.post(
        "/api/v1/surveys", json=survey_json(household_id, {}), headers=bearer(token)
    ).get_json()
    assert body["flags"] == []


def test_doubtful_evidence_is_flagged_but_the_visit_is_kept(
    app: Flask, client: FlaskClient, token: str, household_id: int
) -> None:
    now = datetime.now(UTC)
    survey = at_daytime(survey_json(household_id, {}))
    survey["gps"] = {"lat": 46.125, "lon": 122.011, "accuracy_m": 0, "is_mock": False}
    survey["finished_at"] = (now + timedelta(hours=2)).isoformat()
    response = client.post("/api/v1/surveys", json=survey, headers=bearer(token))
    assert response.status_code == 201
    flags = _flags(response.get_json())
    assert set(flags) >= {"gps_far_from_home", "gps_mock", "visit_in_future"}
    far = flags["gps_far_from_home"]
    assert 1_400 < float(far["value"]) < 1_700 and float(far["threshold"]) == 300
    assert flags["gps_mock"]["severity"] == "critical"
    # The replay answers with the same flags, raised once.
    replay = client.post("/api/v1/surveys", json=survey, headers=bearer(token)).get_json()
    assert replay["flags"] == response.get_json()["flags"]


def test_driving_faster_than_a_car_between_visits_is_flagged(
    app: Flask, client: FlaskClient, token: str, household_id: int
) -> None:
    far_away = factories.make_household(
        state=CaseState.APPROVED, village=factories.areas().village_a2
    )
    far_away.home_lat, far_away.home_lon = 46.40, 122.011  # about 32 km north
    db.session.commit()
    now = datetime.now(UTC)
    first = survey_json(
        household_id,
        {},
        finished_at=(now - timedelta(minutes=20)).isoformat(),
        started_at=(now - timedelta(minutes=50)).isoformat(),
    )
    second = survey_json(
        far_away.id,
        {},
        gps={"lat": 46.40, "lon": 122.011, "accuracy_m": 5},
        started_at=(now - timedelta(minutes=15)).isoformat(),
        finished_at=(now - timedelta(minutes=5)).isoformat(),
    )
    assert client.post("/api/v1/surveys", json=first, headers=bearer(token)).status_code == 201
    body = client.post("/api/v1/surveys", json=second, headers=bearer(token)).get_json()
    travel = _flags(body)["impossible_travel"]
    assert float(travel["value"]) > 120


def test_a_periodic_review_visit_sets_the_next_review_date(
    app: Flask, client: FlaskClient, token: str
) -> None:
    from server.cases.models import CaseEvent, Household

    household = factories.make_household(state=CaseState.APPROVED, class_code="C")
    household.next_review_on = datetime.now(UTC).date() - timedelta(days=3)
    db.session.commit()
    household_id = household.id
    sent = survey_json(household_id, {})
    sent["gps"]["accuracy_m"] = 0.5  # a flag to write with the review: gps_too_precise
    answer = client.post("/api/v1/surveys", json=sent, headers=bearer(token))
    assert answer.status_code == 201
    body = answer.get_json()
    reviewed = db.session.get(Household, household_id)
    assert reviewed is not None and reviewed.last_reviewed_on is not None
    # Class C: every 3 months.
    assert reviewed.next_review_on is not None
    assert 88 <= (reviewed.next_review_on - reviewed.last_reviewed_on).days <= 92
    events = db.session.scalars(
        select(CaseEvent).where(CaseEvent.household_id == household_id).order_by(CaseEvent.id)
    ).all()
    assert events[-1].action == "periodic_review"
    assert events[-1].reason == f"visit {sent['client_uuid']}"
    assert events[-1].from_state == events[-1].to_state == "approved"
    # The rows written with it (one statement on PostgreSQL): the flags as answered,
    # both audit rows, and the case named for the public page's next refresh.
    stored = db.session.scalars(
        select(Survey).where(Survey.client_uuid == sent["client_uuid"])
    ).one()
    answered = {f["code"] for f in body["flags"]}
    assert "gps_too_precise" in answered
    assert answered <= {f.code for f in stored.flags}
    actions = db.session.scalars(
        select(AuditEntry.action).where(
            ((AuditEntry.object_type == "survey") & (AuditEntry.object_id == str(stored.id)))
            | (
                (AuditEntry.object_type == "household")
                & (AuditEntry.object_id == str(household_id))
            )
        )
    ).all()
    assert {"survey.received", "case.periodic_review"} <= set(actions)
    from server.public.models import PublicDirty

    assert db.session.scalars(
        select(PublicDirty.id).where(PublicDirty.household_id == household_id)
    ).all()


def test_an_initial_survey_moves_an_accepted_case_to_surveyed(
    app: Flask, client: FlaskClient, token: str
) -> None:
    from server.cases.models import Household

    household_id = factories.make_household(state=CaseState.ACCEPTED).id
    db.session.commit()
    survey = survey_json(household_id, {}, kind="initial_survey")
    body = client.post("/api/v1/surveys", json=survey, headers=bearer(token)).get_json()
    assert body["flags"] == []
    moved = db.session.get(Household, household_id)
    assert moved is not None and moved.state is CaseState.SURVEYED
    mismatch = client.post(
        "/api/v1/surveys",
        json=survey_json(household_id, {}, kind="initial_survey"),
        headers=bearer(token),
    ).get_json()
    assert _flags(mismatch)["visit_kind_mismatch"]["severity"] == "info"


def exif_jpeg(seed: int, *, taken: datetime, lat: float, lon: float) -> bytes:
    import piexif

    def dms(value: float) -> tuple[tuple[int, int], ...]:
        value = abs(value)
        degrees = int(value)
        minutes = int((value - degrees) * 60)
        seconds = round(((value - degrees) * 60 - minutes) * 60 * 1000)
        return ((degrees, 1), (minutes, 1), (seconds, 1000))

    local = taken.astimezone(timezone(timedelta(hours=8)))
    exif = {
        "Exif": {
            piexif.ExifIFD.DateTimeOriginal: local.strftime("%Y:%m:%d %H:%M:%S").encode(),
            piexif.ExifIFD.OffsetTimeOriginal: b"+08:00",
        },
        "GPS": {
            piexif.GPSIFD.GPSLatitudeRef: b"N",
            piexif.GPSIFD.GPSLatitude: dms(lat),
            piexif.GPSIFD.GPSLongitudeRef: b"E",
            piexif.GPSIFD.GPSLongitude: dms(lon),
        },
    }
    image = Image.new("RGB", (320, 240))
    for x in range(0, 320, 16):  # some structure, so perceptual hashes differ by seed
        for y in range(0, 240, 16):
            image.paste(
                ((x * seed) % 256, (y * 7 + seed * 31) % 256, (x + y) % 256), (x, y, x + 16, y + 16)
            )
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90, exif=piexif.dump(exif))
    return out.getvalue()


def test_photos_are_judged_by_what_their_exif_says(
    app: Flask, client: FlaskClient, token: str, household_id: int
) -> None:
    now = datetime.now(UTC)
    honest = exif_jpeg(1, taken=now - timedelta(minutes=20), lat=46.111, lon=122.011)
    elsewhere = exif_jpeg(2, taken=now - timedelta(minutes=20), lat=46.20, lon=122.011)
    old = exif_jpeg(3, taken=now - timedelta(days=40), lat=46.111, lon=122.011)
    photos = {"honest": honest, "elsewhere": elsewhere, "old": old}
    response = post_multipart(client, token, survey_json(household_id, photos), photos)
    assert response.status_code == 201, response.get_json()
    flags = response.get_json()["flags"]
    assert {(f["code"], f["detail"].split()[1]) for f in flags} >= {
        ("photo_exif_far", "elsewhere"),
        ("photo_time_outside_visit", "old"),
    }
    assert not [f for f in flags if "honest" in f["detail"]]

    from server.visits.models import SurveyPhoto

    stored = db.session.scalars(select(SurveyPhoto).where(SurveyPhoto.photo_id == "honest")).one()
    assert stored.width == 320 and stored.exif_lat is not None and stored.phash
    blobs, _ = stored_files(app)
    assert stored.thumbnail_sha256 in blobs


def test_the_same_photo_in_another_household_is_flagged(
    app: Flask, client: FlaskClient, token: str, household_id: int
) -> None:
    now = datetime.now(UTC)
    picture = exif_jpeg(5, taken=now - timedelta(minutes=20), lat=46.111, lon=122.011)
    first = post_multipart(client, token, survey_json(household_id, {"a": picture}), {"a": picture})
    assert first.get_json()["flags"] == []
    other = factories.make_household(state=CaseState.APPROVED).id
    db.session.commit()
    survey = survey_json(other, {"b": picture})
    assert post_multipart(client, token, survey, {"b": picture}).status_code == 201
    # The reuse check runs in the background job after the acknowledgement.
    second = client.get(f"/api/v1/surveys/{survey['client_uuid']}", headers=bearer(token))
    reused = [f for f in second.get_json()["flags"] if f["code"] == "photo_reused"]
    assert len(reused) == 1 and reused[0]["value"] == "identical file"
    assert f"household {household_id} " in reused[0]["detail"]


@pytest.mark.slow
def test_a_truncated_photo_or_a_pixel_bomb_is_refused(
    app: Flask, client: FlaskClient, token: str, household_id: int
) -> None:
    truncated = jpeg(1, size=(640, 480))[:1500]
    bomb = io.BytesIO()
    Image.new("1", (12_000, 12_000)).save(bomb, "PNG")  # 144 Mpx, a few kB on the wire
    for content, status, code in (
        (truncated, 422, "corrupt_image"),
        (bomb.getvalue(), 413, "image_too_large"),
    ):
        photos = {"p": content}
        response = post_multipart(client, token, survey_json(household_id, photos), photos)
        assert response.status_code == status, response.get_json()
        assert response.get_json()["error"]["code"] == code
    assert survey_count() == 0


def new_application(photos: dict[str, bytes] | None = None, **block: Any) -> dict[str, Any]:
    """A survey that registers a new household (an application taken at the home)."""
    body = survey_json(0, photos or {}, kind="initial_survey")
    del body["household_id"]
    body["new_household"] = {
        "village_code": "152201100201",
        "address": "红旗村5组3号",
        "class_code": "B",
        **block,
    }
    body["members"] = [
        {
            "client_ref": "m1",
            "name": "李秀兰",
            "id_number": factories.id_number(),
            "birth_date": "1958-03-02",
            "relation": "head",
            "phone": "13900001111",
            "monthly_income": "150.00",
        },
        {
            "client_ref": "m2",
            "name": "李强",
            "id_number": factories.id_number(),
            "birth_date": "1990-07-09",
            "relation": "child",
            "able_to_work": True,
            "monthly_income": "0",
        },
    ]
    return body


def test_a_tablet_registers_a_new_application_with_its_survey(
    app: Flask, client: FlaskClient, token: str
) -> None:
    from server.cases.models import Household

    survey = at_daytime(new_application())
    first = client.post("/api/v1/surveys", json=survey, headers=bearer(token))
    assert first.status_code == 201, first.get_json()
    body = first.get_json()
    household = db.session.get(Household, body["household_id"])
    assert household is not None and household.case_code == body["case_code"]
    assert household.state is CaseState.SURVEYED
    assert [e.action for e in household.events] == ["apply", "accept", "record_survey"]
    assert sorted(m.name for m in household.members) == ["李强", "李秀兰"]
    fix = (survey["gps"]["lat"], survey["gps"]["lon"])
    assert (household.home_lat, household.home_lon) == fix  # the visit's fix
    assert not [f for f in body["flags"] if f["code"] == "gps_at_registered_point"]

    replay = client.post("/api/v1/surveys", json=survey, headers=bearer(token))
    assert replay.status_code == 200 and replay.get_json() == body
    assert db.session.scalar(select(func.count()).select_from(Household)) == 1


@pytest.mark.slow
@pytest.mark.parametrize(
    ("change", "status", "field"),
    [
        (lambda s: s["new_household"].update(village_code="152201101201"), 404, "new_household"),
        (lambda s: s.update(household_id=1), 422, ""),
        (lambda s: s.update(kind="periodic_review"), 422, ""),
        (lambda s: s["members"][0].update(relation="spouse"), 422, ""),
        (lambda s: s["members"][1].pop("id_number"), 422, ""),
        (lambda s: s["new_household"].update(class_code="Z"), 422, "class"),
    ],
    ids=["other-township", "both", "not-initial", "no-head", "no-id-number", "bad-class"],
)
def test_a_bad_new_application_creates_nothing(
    app: Flask, client: FlaskClient, token: str, change: Any, status: int, field: str
) -> None:
    from server.cases.models import Household

    survey = new_application()
    change(survey)
    response = client.post("/api/v1/surveys", json=survey, headers=bearer(token))
    assert response.status_code == status, response.get_json()
    assert field in str(response.get_json()["error"]["details"].get("field", ""))
    assert db.session.scalar(select(func.count()).select_from(Household)) == 0
    assert survey_count() == 0


def test_an_applicant_registered_in_another_household_is_flagged(
    app: Flask, client: FlaskClient, token: str
) -> None:
    existing = factories.make_household(state=CaseState.APPROVED)
    existing_id, their_id_number = existing.id, existing.members[0].id_number
    db.session.commit()
    survey = new_application()
    survey["members"][1]["id_number"] = their_id_number
    body = client.post("/api/v1/surveys", json=survey, headers=bearer(token)).get_json()
    flags = [f for f in body["flags"] if f["code"] == "member_registered_elsewhere"]
    assert len(flags) == 1 and flags[0]["severity"] == "critical"
    assert f"household {existing_id}" in flags[0]["detail"]
