"""Reviewers see visits on the case page, clear flags with a reason, and open photos
that nobody else can reach; every photo read is audited."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from server.audit.models import AuditEntry
from server.cases.models import CaseState
from server.extensions import db
from server.visits.models import SurveyFlag, SurveyPhoto
from tests import factories
from tests.conftest import login, make_app
from tests.mobile_api.test_api_devices import device_login
from tests.visits.test_api_surveys import jpeg, post_multipart, survey_json


@pytest.fixture
def visit(app: Flask, client: FlaskClient) -> dict[str, Any]:
    """A visit with a photo and a far-from-home flag, uploaded by caseworker_a."""
    household = factories.make_household(state=CaseState.APPROVED)
    code, household_id = household.case_code, household.id
    db.session.commit()
    token = device_login(client).get_json()["token"]
    photos = {"house": jpeg(8, size=(400, 300))}
    survey = survey_json(household_id, photos, gps={"lat": 46.13, "lon": 122.011})
    assert post_multipart(client, token, survey, photos).status_code == 201
    flag = db.session.scalars(
        select(SurveyFlag).where(SurveyFlag.code == "gps_far_from_home")
    ).one()
    photo = db.session.scalars(select(SurveyPhoto)).one()
    return {"code": code, "flag_id": flag.id, "photo_id": photo.id}


def _reads() -> int:
    return (
        db.session.scalar(
            select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "photo.read")
        )
        or 0
    )


def test_the_case_page_shows_visits_flags_and_thumbnails(app: Flask, visit: dict[str, Any]) -> None:
    client = app.test_client()
    login(client, "reviewer_a")
    page = client.get(f"/cases/{visit['code']}?lang=zh_CN").get_data(as_text=True)
    assert "定位点距登记住址过远" in page and "gps_far_from_home" in page
    assert f"/photos/{visit['photo_id']}?size=thumb" in page


def test_a_reviewer_clears_a_flag_only_with_a_reason(app: Flask, visit: dict[str, Any]) -> None:
    client = app.test_client()
    login(client, "reviewer_a")
    url = f"/cases/{visit['code']}/flags/{visit['flag_id']}/clear"
    client.post(url, data={"reason": "  "})
    assert db.session.get(SurveyFlag, visit["flag_id"]).cleared_at is None  # type: ignore[union-attr]
    client.post(url, data={"reason": "户主在村口田里接受询问，已电话核实"})
    flag = db.session.get(SurveyFlag, visit["flag_id"])
    assert flag is not None and flag.cleared_at is not None
    assert flag.cleared_by_id == factories.user("reviewer_a").id


@pytest.mark.parametrize("username", ["caseworker_a", "supervisor"])
def test_only_reviewers_clear_flags(app: Flask, visit: dict[str, Any], username: str) -> None:
    client = app.test_client()
    login(client, username)
    client.post(
        f"/cases/{visit['code']}/flags/{visit['flag_id']}/clear", data={"reason": "看起来没问题"}
    )
    assert db.session.get(SurveyFlag, visit["flag_id"]).cleared_at is None  # type: ignore[union-attr]


def test_a_flag_of_another_case_cannot_be_cleared_through_this_one(
    app: Flask, visit: dict[str, Any]
) -> None:
    other = factories.make_household(state=CaseState.APPROVED).case_code
    db.session.commit()
    client = app.test_client()
    login(client, "reviewer_a")
    response = client.post(
        f"/cases/{other}/flags/{visit['flag_id']}/clear", data={"reason": "理由"}
    )
    assert response.status_code == 404


def test_photos_are_served_to_staff_of_the_area_and_every_read_is_audited(
    app: Flask, visit: dict[str, Any]
) -> None:
    client = app.test_client()
    login(client, "reviewer_a")
    before = _reads()
    with client.get(f"/photos/{visit['photo_id']}?size=thumb") as thumb:
        assert thumb.status_code == 200 and thumb.mimetype == "image/jpeg"
        assert thumb.headers["Cache-Control"] == "private, no-store"
        thumb_size = len(thumb.data)
    with client.get(f"/photos/{visit['photo_id']}") as original:
        assert original.status_code == 200 and len(original.data) > thumb_size
    assert _reads() == before + 2


@pytest.mark.parametrize(("username", "status"), [("reviewer_b", 404), ("admin", 403)])
def test_photos_are_refused_outside_the_area_or_the_roles(
    app: Flask, visit: dict[str, Any], username: str, status: int
) -> None:
    client = app.test_client()
    login(client, username)
    assert client.get(f"/photos/{visit['photo_id']}").status_code == status
    assert _reads() == 0


def test_photos_need_a_login(app: Flask, visit: dict[str, Any]) -> None:
    response = app.test_client().get(f"/photos/{visit['photo_id']}")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_the_store_is_not_served_as_static_files(app: Flask, tmp_path: Any) -> None:
    client = make_app(app.config["SQLALCHEMY_DATABASE_URI"], tmp_path).test_client()
    for path in ("/static/../store/blobs", "/instance/store", "/store/blobs"):
        assert client.get(path).status_code == 404
