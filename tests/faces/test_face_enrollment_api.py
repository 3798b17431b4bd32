"""A caseworker enrolls a member's face from one photo taken at the home (real faces)."""

from __future__ import annotations

import io
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from server.audit.models import AuditEntry
from server.cases.models import CaseState, Member
from server.extensions import db
from server.faces.models import FaceTemplate
from tests import factories
from tests.faces.test_faces import FACES
from tests.mobile_api.test_api_devices import bearer, device_login

pytestmark = pytest.mark.slow  # tests that take seconds: pytest -m 'not slow' skips them


def _enroll(client: FlaskClient, token: str, member_id: int, content: bytes) -> Any:
    return client.post(
        f"/api/v1/members/{member_id}/face-templates",
        data={"photo": (io.BytesIO(content), "face.jpg", "image/jpeg")},
        headers=bearer(token),
        content_type="multipart/form-data",
    )


def test_one_face_makes_a_template_and_a_face_of_another_household_is_reported(
    client: FlaskClient,
) -> None:
    first = factories.make_household(state=CaseState.APPROVED)
    second = factories.make_household(state=CaseState.APPROVED)
    member_a, member_b = first.members[0].id, second.members[0].id
    token = device_login(client).get_json()["token"]

    made = _enroll(client, token, member_a, (FACES / "obama" / "obama_1.jpg").read_bytes())
    assert made.status_code == 201, made.get_json()
    body = made.get_json()
    assert body["member_id"] == member_a and body["warnings"] == []
    assert body["model_name"] == "dlib_face_recognition_resnet_model_v1"
    template = db.session.get(FaceTemplate, body["face_template_id"])
    assert template is not None and template.source_sha256 is not None
    assert template.enrolled_by_id == factories.user("caseworker_a").id

    # The same man enrolled in another household: kept, but reported.
    again = _enroll(client, token, member_b, (FACES / "obama" / "obama_2.jpg").read_bytes())
    assert again.status_code == 201
    [warning] = again.get_json()["warnings"]
    assert warning["code"] == "face_in_other_household" and warning["value"] < 0.45
    audit = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "face.enrolled"))
    assert [e.details["matches_in_other_households"] for e in audit] == [0, 1]


def test_no_face_or_two_faces_are_refused_and_nothing_is_kept(client: FlaskClient) -> None:
    member_id = factories.make_household(state=CaseState.APPROVED).members[0].id
    token = device_login(client).get_json()["token"]
    from PIL import Image

    blank = io.BytesIO()
    Image.new("RGB", (400, 300), (120, 120, 120)).save(blank, "JPEG")
    none = _enroll(client, token, member_id, blank.getvalue())
    assert none.status_code == 422 and none.get_json()["error"]["code"] == "no_face"
    two = _enroll(client, token, member_id, (FACES / "group" / "two_people.jpg").read_bytes())
    assert two.status_code == 422 and two.get_json()["error"]["code"] == "many_faces"
    not_image = _enroll(client, token, member_id, b"hello")
    assert not_image.status_code == 415
    assert db.session.scalar(select(FaceTemplate.id)) is None


def test_only_a_caseworker_of_the_township_enrolls(client: FlaskClient) -> None:
    member_id = factories.make_household(state=CaseState.APPROVED).members[0].id
    photo = (FACES / "obama" / "obama_1.jpg").read_bytes()
    other = device_login(client, "caseworker_b").get_json()["token"]
    assert _enroll(client, other, member_id, photo).status_code == 404
    assert _enroll(client, "nonsense", member_id, photo).status_code == 401
    member = db.session.get(Member, member_id)
    assert member is not None
    missing = _enroll(client, device_login(client).get_json()["token"], 999999, photo)
    assert missing.status_code == 404
