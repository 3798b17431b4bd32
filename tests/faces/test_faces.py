"""Face enrollment from visit portraits, on real photos, and the 1:N search."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from flask_migrate import upgrade
from sqlalchemy import select, text

from server.cases.models import CaseState
from server.extensions import db
from server.faces.engine import MODEL_NAME
from server.faces.models import FaceTemplate
from tests import factories
from tests.conftest import DatabaseFactory, make_app, process_env
from tests.mobile_api.test_api_devices import bearer, device_login
from tests.processes import start_celery_worker
from tests.visits.test_api_surveys import manifest_entry, post_multipart, survey_json

FACES = Path(__file__).resolve().parents[1] / "data" / "faces"  # tests/data/faces/README.md


def portrait_visit(
    client: FlaskClient, token: str, household_id: int, member_id: int, picture: str | bytes
) -> Any:
    content = picture if isinstance(picture, bytes) else (FACES / picture).read_bytes()
    survey = survey_json(household_id, {})
    entry = manifest_entry("portrait", content, kind="member_portrait")
    entry["member_ref"] = str(member_id)
    survey["photos"] = [entry]
    response = post_multipart(client, token, survey, {"portrait": content})
    assert response.status_code == 201, response.get_json()
    # Eager mode: enrollment ran after the commit; its flags show on the next read.
    return client.get(f"/api/v1/surveys/{survey['client_uuid']}", headers=bearer(token)).get_json()


@pytest.fixture
def token(client: FlaskClient) -> str:
    value: str = device_login(client).get_json()["token"]
    return value


def _household() -> tuple[int, int]:
    household = factories.make_household(state=CaseState.APPROVED)
    db.session.commit()
    return household.id, household.members[0].id


def _codes(body: dict[str, Any]) -> list[str]:
    """The face-related flags (the test photos' own EXIF raises photo_* flags)."""
    return [f["code"] for f in body["flags"] if f["code"].startswith(("face_", "portrait_"))]


@pytest.mark.slow
def test_a_portrait_with_one_face_becomes_an_encrypted_template(
    app: Flask, client: FlaskClient, token: str
) -> None:
    household_id, member_id = _household()
    body = portrait_visit(client, token, household_id, member_id, "obama/obama_1.jpg")
    assert _codes(body) == []
    template = db.session.scalars(select(FaceTemplate)).one()
    assert template.member_id == member_id and template.household_id == household_id
    assert template.model_name == MODEL_NAME and "dlib" in template.model_version
    encoding = np.frombuffer(template.encoding, dtype=np.float64)
    assert encoding.shape == (128,) and 0.5 < float(np.linalg.norm(encoding)) < 2
    raw = db.session.execute(text("SELECT encoding FROM face_templates")).scalar_one()
    assert bytes(raw) != template.encoding and encoding.tobytes()[:16] not in bytes(raw)


@pytest.mark.slow
def test_the_same_person_in_another_household_is_flagged_and_a_stranger_is_not(
    app: Flask, client: FlaskClient, token: str
) -> None:
    first, first_member = _household()
    portrait_visit(client, token, first, first_member, "obama/obama_1.jpg")
    second, second_member = _household()
    same_person = portrait_visit(client, token, second, second_member, "obama/obama_2.jpg")
    flags = [f for f in same_person["flags"] if f["code"] == "face_in_other_household"]
    assert len(flags) == 1 and flags[0]["severity"] == "critical"
    assert float(flags[0]["value"]) < 0.45 and f"household {first}" in flags[0]["detail"]

    third, third_member = _household()
    stranger = portrait_visit(client, token, third, third_member, "biden/biden_1.jpg")
    assert "face_in_other_household" not in _codes(stranger)


@pytest.mark.slow
def test_the_same_person_again_in_the_same_household_is_not_flagged(
    app: Flask, client: FlaskClient, token: str
) -> None:
    household_id, member_id = _household()
    portrait_visit(client, token, household_id, member_id, "obama/obama_1.jpg")
    again = portrait_visit(client, token, household_id, member_id, "obama/obama_3.jpg")
    assert "face_in_other_household" not in _codes(again)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("picture", "code"),
    [("group/two_people.jpg", "portrait_many_faces"), (None, "portrait_no_face")],
)
def test_a_portrait_without_exactly_one_face_is_flagged_and_the_visit_kept(
    app: Flask, client: FlaskClient, token: str, tmp_path: Path, picture: str | None, code: str
) -> None:
    household_id, member_id = _household()
    if picture is None:
        from PIL import Image

        Image.new("RGB", (800, 600), (120, 140, 90)).save(tmp_path / "wall.jpg")
        body = portrait_visit(
            client, token, household_id, member_id, (tmp_path / "wall.jpg").read_bytes()
        )
    else:
        body = portrait_visit(client, token, household_id, member_id, picture)
    assert code in _codes(body) and body["status"] == "complete"
    assert db.session.scalars(select(FaceTemplate)).all() == []


@pytest.mark.slow
def test_enrollment_runs_in_a_celery_worker_over_redis(
    databases: DatabaseFactory, tmp_path: Path
) -> None:
    broker = "redis://127.0.0.1:6379/15"
    url = databases.new("celery")
    application = make_app(url, tmp_path, CELERY_BROKER_URL=broker)
    with application.app_context():
        upgrade(directory=application.extensions["migrate"].directory)
        factories.base_data()
        household = factories.make_household(state=CaseState.APPROVED)
        db.session.commit()
        household_id, member_id = household.id, household.members[0].id
    env = process_env(url, tmp_path, CELERY_BROKER_URL=broker)
    worker = start_celery_worker(env)
    try:
        client = application.test_client()
        token = device_login(client).get_json()["token"]
        content = (FACES / "obama" / "obama_1.jpg").read_bytes()
        survey = survey_json(household_id, {})
        entry = manifest_entry("portrait", content, kind="member_portrait")
        entry["member_ref"] = str(member_id)
        survey["photos"] = [entry]
        started = time.monotonic()
        assert post_multipart(client, token, survey, {"portrait": content}).status_code == 201
        deadline = started + 90
        with application.app_context():
            while not db.session.scalars(select(FaceTemplate)).all():
                assert time.monotonic() < deadline, "the worker never enrolled the portrait"
                assert worker.poll() is None, "the worker died"
                db.session.rollback()
                time.sleep(0.5)
            db.session.remove()
    finally:
        worker.terminate()
        worker.wait(timeout=30)


def test_loading_the_face_engine_keeps_truncated_photos_refused(tmp_path: Path) -> None:
    from server.faces.engine import default_engine
    from server.visits.photos import PhotoRejected, inspect_photo

    default_engine()
    whole = (FACES / "obama" / "obama_1.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(PhotoRejected) as rejected:
        inspect_photo(tmp_path / "cut.jpg")
    assert rejected.value.code == "corrupt_image"
