"""The OpenRosa face for ODK Collect: form list and download, submissions (whole,
repeated, split across POSTs), and the refusals, each with nothing stored.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import io
import json
import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any
from xml.etree.ElementTree import Element

import pytest
from defusedxml.ElementTree import fromstring
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from werkzeug.datastructures import FileStorage
from werkzeug.test import encode_multipart

from server.cases.models import CaseState
from server.extensions import db
from server.faces.models import FaceTemplate
from server.visits.models import PhotoKind, Survey
from server.visits.openrosa_mapping import parse_submission
from tests import factories
from tests.mobile_api.test_api_devices import bearer, device_login
from tests.visits.test_api_surveys import jpeg, stored_files

ROOT = Path(__file__).resolve().parents[2]
FACES = Path(__file__).resolve().parents[1] / "data" / "faces"  # tests/data/faces/README.md
OPENROSA = {"X-OpenRosa-Version": "1.0"}
RESPONSE_NS = "{http://openrosa.org/http/response}"
XFORMS_NS = "{http://openrosa.org/xforms/xformsList}"


@pytest.fixture
def token(client: FlaskClient) -> str:
    response = device_login(client)
    assert response.status_code == 201, response.get_json()
    value: str = response.get_json()["token"]
    return value


@pytest.fixture
def household(app: Flask) -> tuple[int, int]:
    """An approved household of township A: (household_id, first member_id)."""
    made = factories.make_household(state=CaseState.APPROVED)
    db.session.commit()
    return made.id, made.members[0].id


def basic(username: str, password: str) -> dict[str, str]:
    encoded = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {encoded}", **OPENROSA}


def instance_xml(
    household_id: int | str,
    instance_id: uuid.UUID | None,
    *,
    members: Sequence[tuple[Any, str, str, str | None]] = (),
    housing: Sequence[str] = (),
    gps: str = "46.111 122.011 321.5 8.5",
    kind: str = "periodic_review",
    form_id: str = "household_survey",
) -> bytes:
    """A submission as ODK Collect writes it for forms/household_survey.xml."""
    now = datetime.now(UTC).astimezone()
    start = (now - timedelta(minutes=40)).isoformat(timespec="milliseconds")
    end = (now - timedelta(minutes=5)).isoformat(timespec="milliseconds")
    member_xml = "".join(
        f"<members><member_id>{mid}</member_id><name>{name}</name>"
        f"<monthly_income>{income}</monthly_income>"
        f"<portrait>{portrait or ''}</portrait></members>"
        for mid, name, income, portrait in members
    )
    housing_xml = "".join(f"<housing_photos><photo>{p}</photo></housing_photos>" for p in housing)
    meta = f"<meta><instanceID>uuid:{instance_id}</instanceID></meta>" if instance_id else ""
    return (
        f'<?xml version="1.0"?><data xmlns:jr="http://openrosa.org/javarosa" '
        f'xmlns:orx="http://openrosa.org/xforms" id="{form_id}" version="2026112301">'
        f"<start>{start}</start><end>{end}</end>"
        f"<household_id>{household_id}</household_id><visit_kind>{kind}</visit_kind>"
        f"<gps>{gps}</gps>{member_xml}<housing_notes>土坯房，两间</housing_notes>"
        f"{housing_xml}<notes>老人卧床</notes>{meta}</data>"
    ).encode()


def submit(
    client: FlaskClient,
    headers: dict[str, str],
    xml: bytes,
    files: dict[str, bytes] | None = None,
    *,
    incomplete: bool = False,
) -> Any:
    """One POST as ODK Collect sends it: each file part named by its file name. (The
    body is encoded here: the test client would spool a large one to an unclosed file.)
    """
    parts: dict[str, Any] = {
        "xml_submission_file": FileStorage(io.BytesIO(xml), "instance.xml", content_type="text/xml")
    }
    for name, content in (files or {}).items():
        parts[name] = FileStorage(io.BytesIO(content), name, content_type="image/jpeg")
    if incomplete:
        parts["*isIncomplete*"] = "yes"
    boundary, body = encode_multipart(parts)
    return client.post(
        "/openrosa/submission",
        data=body,
        headers=headers,
        content_type=f"multipart/form-data; boundary={boundary}",
    )


def message(response: Any) -> tuple[str | None, str]:
    """The reply's nature and text; an error's is nature="error", Chinese first."""
    root = fromstring(response.data)
    assert root.tag == f"{RESPONSE_NS}OpenRosaResponse"
    element = root.find(f"{RESPONSE_NS}message")
    assert element is not None
    nature, text = element.get("nature"), element.text or ""
    if response.status_code >= 400:
        assert nature == "error", response.data
    assert re.match(r"^[^\x00-\x7f].*? / \S", text), text  # 中文 / English
    return nature, text


def english(response: Any) -> str:
    """The English half of a reply's message."""
    return message(response)[1].split(" / ", 1)[1]


def survey_count() -> int:
    return db.session.scalar(select(func.count()).select_from(Survey)) or 0


def obama() -> bytes:
    return (FACES / "obama" / "obama_1.jpg").read_bytes()


def _child(element: Element, name: str) -> str:
    found = element.find(f"{XFORMS_NS}{name}")
    assert found is not None and found.text, name
    return found.text


# -- forms --------------------------------------------------------------------------------


def test_the_form_list_points_at_a_downloadable_form(
    app: Flask, client: FlaskClient, token: str
) -> None:
    response = client.get("/openrosa/formList", headers=basic("caseworker_a", token))
    assert response.status_code == 200
    assert response.headers["X-OpenRosa-Version"] == "1.0"
    assert response.mimetype == "text/xml"
    root = fromstring(response.data)
    assert root.tag == f"{XFORMS_NS}xforms"
    # The element is <xform> (the OpenRosa spec; case-sensitive clients break on xForm).
    assert [child.tag for child in root] == [f"{XFORMS_NS}xform"]
    (form,) = root.findall(f"{XFORMS_NS}xform")
    assert _child(form, "formID") == "household_survey"
    assert _child(form, "version") == "2026120301"
    assert "低保" in _child(form, "name")
    url = _child(form, "downloadUrl")
    assert url.endswith("/openrosa/forms/household_survey.xml")

    download = client.get(url, headers=basic("caseworker_a", token))
    assert download.status_code == 200 and download.headers["X-OpenRosa-Version"] == "1.0"
    assert download.data == (ROOT / "forms" / "household_survey.xml").read_bytes()
    assert _child(form, "hash") == "md5:" + hashlib.md5(download.data).hexdigest()  # noqa: S324

    unknown = client.get("/openrosa/forms/nope.xml", headers=basic("caseworker_a", token))
    assert unknown.status_code == 404 and unknown.headers["X-OpenRosa-Version"] == "1.0"
    only = client.get("/openrosa/formList?formID=nope", headers={**bearer(token), **OPENROSA})
    assert only.status_code == 200 and list(fromstring(only.data)) == []


def _build_forms_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "build_forms", ROOT / "scripts" / "build_forms.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_forms_match_their_definition_and_pyxform() -> None:
    build = _build_forms_script()
    committed_xlsx = (ROOT / "forms" / "household_survey.xlsx").read_bytes()
    assert build.sheet_values(committed_xlsx) == build.sheet_values(build.workbook_bytes())
    committed_xml = (ROOT / "forms" / "household_survey.xml").read_text(encoding="utf-8")
    assert build.to_xform(committed_xlsx) == committed_xml


def test_head_advertises_the_largest_post(app: Flask, client: FlaskClient, token: str) -> None:
    response = client.head("/openrosa/submission", headers=basic("caseworker_a", token))
    assert response.status_code == 204
    assert response.headers["X-OpenRosa-Version"] == "1.0"
    advertised = int(response.headers["X-OpenRosa-Accept-Content-Length"])
    assert 0 < advertised < app.config["DIBAO_MAX_REQUEST_BYTES"]
    # Room for the multipart headers of 100 files and a 1 MiB XML above what Collect counts.
    assert app.config["DIBAO_MAX_REQUEST_BYTES"] - advertised >= 1024 * 1024 + 100 * 512


# -- submissions --------------------------------------------------------------------------


@pytest.mark.slow
def test_a_submission_with_its_photos_becomes_a_survey(
    app: Flask, client: FlaskClient, token: str, household: tuple[int, int]
) -> None:
    household_id, member_id = household
    instance = uuid.uuid4()
    portrait, house = obama(), jpeg(5)
    xml = instance_xml(
        household_id,
        instance,
        members=[(member_id, "王大", "120.5", "1714712345678.jpg"), ("", "王小", "0", None)],
        housing=["1714712399999.jpg"],
    )
    files = {"1714712345678.jpg": portrait, "1714712399999.jpg": house}
    response = submit(client, basic("caseworker_a", token), xml, files)
    assert response.status_code == 201, response.data
    assert response.headers["X-OpenRosa-Version"] == "1.0"
    assert int(response.headers["X-OpenRosa-Accept-Content-Length"]) > 0
    nature, text = message(response)
    assert nature == "submit_success" and str(instance) in text
    assert text.startswith("走访记录已收到")

    body = client.get(f"/api/v1/surveys/{instance}", headers=bearer(token)).get_json()
    assert body["status"] == "complete" and body["missing_photos"] == []
    stored = db.session.scalars(select(Survey)).one()
    assert stored.household_id == household_id and stored.kind == "periodic_review"
    assert (stored.gps_lat, stored.gps_lon, stored.gps_altitude_m, stored.gps_accuracy_m) == (
        46.111,
        122.011,
        321.5,
        8.5,
    )
    assert stored.finished_at - stored.started_at == timedelta(minutes=35)
    photos = {p.photo_id: p for p in stored.photos}
    assert set(photos) == {"1714712345678_jpg", "1714712399999_jpg"}
    face = photos["1714712345678_jpg"]
    assert face.kind is PhotoKind.MEMBER_PORTRAIT and face.member_ref == str(member_id)
    assert face.sha256 == hashlib.sha256(portrait).hexdigest() and face.bytes == len(portrait)
    assert photos["1714712399999_jpg"].kind is PhotoKind.HOUSING
    blobs, leftovers = stored_files(app)
    assert {face.sha256, photos["1714712399999_jpg"].sha256} <= blobs and leftovers == []
    payload = json.loads(stored.payload)
    assert payload["members"][0]["portrait_photo_id"] == "1714712345678_jpg"
    assert payload["members"][1]["client_ref"] == "member-2"
    assert payload["housing"] == {"notes": "土坯房，两间"} and payload["notes"] == "老人卧床"
    # The portrait was enrolled (eager Celery) like one sent through the JSON API.
    template = db.session.scalars(select(FaceTemplate)).one()
    assert template.member_id == member_id


def test_a_resubmission_is_acknowledged_again_without_a_second_survey(
    app: Flask, client: FlaskClient, token: str, household: tuple[int, int]
) -> None:
    household_id, _ = household
    instance = uuid.uuid4()
    xml = instance_xml(household_id, instance, housing=["a.jpg"])
    files = {"a.jpg": jpeg(1)}
    first = submit(client, basic("caseworker_a", token), xml, files)
    again = submit(client, {**bearer(token), **OPENROSA}, xml, files)
    assert first.status_code == again.status_code == 201
    assert message(first) == message(again)
    assert survey_count() == 1
    # The same instanceID with other content is refused.
    other = instance_xml(household_id, instance, housing=["a.jpg"], gps="46.2 122.0")
    conflict = submit(client, basic("caseworker_a", token), other, files)
    assert conflict.status_code == 409
    assert "instanceID" in message(conflict)[1]
    assert survey_count() == 1


@pytest.mark.slow
def test_a_split_submission_is_recorded_by_its_first_part_and_completed_by_the_last(
    app: Flask, client: FlaskClient, token: str, household: tuple[int, int]
) -> None:
    household_id, member_id = household
    instance = uuid.uuid4()
    xml = instance_xml(
        household_id,
        instance,
        members=[(member_id, "王大", "120", "face.jpg")],
        housing=["h1.jpg", "h2.jpg"],
    )
    photos = {"face.jpg": obama(), "h1.jpg": jpeg(1), "h2.jpg": jpeg(2)}
    auth = basic("caseworker_a", token)
    part1 = submit(client, auth, xml, {"face.jpg": photos["face.jpg"]}, incomplete=True)
    assert part1.status_code == 202, part1.data
    assert message(part1)[0] == "submit_success" and "1/3" in message(part1)[1]
    assert int(part1.headers["X-OpenRosa-Accept-Content-Length"]) > 0
    # As with ODK Central, the visit is there from the first part, waiting for photos.
    body = client.get(f"/api/v1/surveys/{instance}", headers=bearer(token)).get_json()
    assert body["status"] == "awaiting_photos"
    assert body["missing_photos"] == ["h1_jpg", "h2_jpg"]
    part2 = submit(client, auth, xml, {"h1.jpg": photos["h1.jpg"]}, incomplete=True)
    assert part2.status_code == 202 and "2/3" in message(part2)[1]
    part3 = submit(client, auth, xml, {"h2.jpg": photos["h2.jpg"]})
    assert part3.status_code == 201, part3.data

    body = client.get(f"/api/v1/surveys/{instance}", headers=bearer(token)).get_json()
    assert body["status"] == "complete" and body["missing_photos"] == []
    stored = db.session.scalars(select(Survey)).one()
    assert {p.sha256 for p in stored.photos} == {
        hashlib.sha256(c).hexdigest() for c in photos.values()
    }
    assert {p.bytes for p in stored.photos} == {len(c) for c in photos.values()}
    assert all(p.received_at is not None for p in stored.photos)
    assert stored_files(app)[1] == []
    # Collect retrying the whole submission from its first part: acknowledged, no copy.
    retry = submit(client, auth, xml, {"face.jpg": photos["face.jpg"]}, incomplete=True)
    assert retry.status_code == 201 and message(retry) == message(part3)
    assert survey_count() == 1


@pytest.mark.slow
def test_a_visit_with_a_photo_missing_is_kept_and_takes_the_photo_later(
    app: Flask, client: FlaskClient, token: str, household: tuple[int, int]
) -> None:
    household_id, _ = household
    instance = uuid.uuid4()
    xml = instance_xml(household_id, instance, housing=["h1.jpg", "h2.jpg"])
    auth = basic("caseworker_a", token)
    first = submit(client, auth, xml, {"h1.jpg": jpeg(1)})
    assert first.status_code == 202, first.data
    nature, text = message(first)
    assert nature == "submit_success" and "h2.jpg" in text and "h1.jpg" not in text
    assert int(first.headers["X-OpenRosa-Accept-Content-Length"]) > 0
    body = client.get(f"/api/v1/surveys/{instance}", headers=bearer(token)).get_json()
    assert body["status"] == "awaiting_photos" and body["missing_photos"] == ["h2_jpg"]
    # What arrived is kept: the first photo is stored.
    assert hashlib.sha256(jpeg(1)).hexdigest() in stored_files(app)[0]

    # The same form sent again once the photo is back on the tablet completes it.
    again = submit(client, auth, xml, {"h1.jpg": jpeg(1), "h2.jpg": jpeg(2)})
    assert again.status_code == 201, again.data
    body = client.get(f"/api/v1/surveys/{instance}", headers=bearer(token)).get_json()
    assert body["status"] == "complete" and body["missing_photos"] == []
    stored = db.session.scalars(select(Survey)).one()
    assert {p.photo_id: p.sha256 for p in stored.photos} == {
        "h1_jpg": hashlib.sha256(jpeg(1)).hexdigest(),
        "h2_jpg": hashlib.sha256(jpeg(2)).hexdigest(),
    }
    # A photo already received cannot be replaced by other bytes under the same form.
    swapped = submit(client, auth, xml, {"h1.jpg": jpeg(3)})
    assert swapped.status_code == 409
    assert survey_count() == 1


def test_a_missing_photo_can_also_come_through_the_json_api(
    app: Flask, client: FlaskClient, token: str, household: tuple[int, int]
) -> None:
    instance = uuid.uuid4()
    xml = instance_xml(household[0], instance, housing=["h1.jpg"])
    assert submit(client, basic("caseworker_a", token), xml).status_code == 202
    photo = jpeg(9)
    response = client.put(
        f"/api/v1/surveys/{instance}/photos/h1_jpg",
        data=photo,
        headers={**bearer(token), "Content-Type": "image/jpeg"},
    )
    assert response.status_code in (200, 201), response.get_json()
    assert response.get_json()["status"] == "complete"
    stored = db.session.scalars(select(Survey)).one().photos[0]
    assert (stored.sha256, stored.bytes) == (hashlib.sha256(photo).hexdigest(), len(photo))


def test_a_changed_xml_under_the_same_instance_id_is_a_conflict(
    app: Flask, client: FlaskClient, token: str, household: tuple[int, int]
) -> None:
    household_id, _ = household
    instance = uuid.uuid4()
    xml = instance_xml(household_id, instance, housing=["h1.jpg", "h2.jpg"])
    auth = basic("caseworker_a", token)
    part1 = submit(client, auth, xml, {"h1.jpg": jpeg(1)}, incomplete=True)
    assert part1.status_code == 202
    # Between the parts of one split submission...
    changed = xml.replace(b"<notes>", b"<notes>edited ")
    during = submit(client, auth, changed, {"h2.jpg": jpeg(2)})
    assert during.status_code == 409
    assert "instanceID" in message(during)[1]
    assert db.session.scalars(select(Survey)).one().missing_photos == ["h2_jpg"]
    # ... even bytes that read the same (the XML is the submission's identity) ...
    spaced = xml.replace(b"><start>", b">\n<start>")
    assert spaced != xml
    assert submit(client, auth, spaced, {"h2.jpg": jpeg(2)}).status_code == 409
    # ... and after the submission was accepted.
    done = submit(client, auth, xml, {"h2.jpg": jpeg(2)})
    assert done.status_code == 201
    after = submit(client, auth, changed, {})
    assert after.status_code == 409
    identical = submit(client, auth, xml, {})
    assert identical.status_code == 201
    assert survey_count() == 1


# -- refusals -----------------------------------------------------------------------------


def test_a_request_without_the_openrosa_version_is_refused(
    app: Flask, client: FlaskClient, token: str
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    for response in (
        client.get("/openrosa/formList", headers=headers),
        client.head("/openrosa/submission", headers=headers),
        client.post("/openrosa/submission", headers=headers),
    ):
        assert response.status_code == 400
        assert response.headers["X-OpenRosa-Version"] == "1.0"
    assert "X-OpenRosa-Version" in message(client.get("/openrosa/formList", headers=headers))[1]


def test_other_addresses_and_methods_get_openrosa_errors(
    app: Flask, client: FlaskClient, token: str
) -> None:
    auth = basic("caseworker_a", token)
    for method, path, status in (
        ("GET", "/openrosa/submission", 405),
        ("GET", "/openrosa/forms", 404),
        ("GET", "/openrosa/", 404),
        ("PUT", "/openrosa/formList/x", 404),
    ):
        response = client.open(path, method=method, headers=auth)
        assert response.status_code == status, (method, path)
        assert response.headers["X-OpenRosa-Version"] == "1.0"
        message(response)


def test_credentials_must_be_a_valid_device_token_for_that_username(
    app: Flask, client: FlaskClient, token: str, household: tuple[int, int]
) -> None:
    xml = instance_xml(household[0], uuid.uuid4())
    for headers in (
        OPENROSA,
        basic("caseworker_a", "dbt_not-a-real-token"),
        basic("caseworker_a", factories.PASSWORD),  # the account password is not enough
        basic("caseworker_b", token),  # someone else's username
        {"Authorization": "Bearer nonsense", **OPENROSA},
    ):
        for response in (
            client.get("/openrosa/formList", headers=headers),
            submit(client, headers, xml),
        ):
            assert response.status_code == 401
            # Plain HTTP: Digest only (Collect answers Basic only over HTTPS).
            challenges = response.headers.getlist("WWW-Authenticate")
            assert [c.split(" ", 1)[0] for c in challenges] == ["Digest", "Digest"]
            assert all('realm="dibao"' in c for c in challenges)
            assert response.headers["X-OpenRosa-Version"] == "1.0"
            assert message(response)[1].startswith("登录失败")
    assert survey_count() == 0


@pytest.mark.slow
@pytest.mark.parametrize(
    ("xml", "status"),
    [
        (b"<data id='household_survey'><unclosed></data>", 400),
        (
            b'<!DOCTYPE d [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]>'
            b"<data id='household_survey'>&b;</data>",
            400,
        ),
        (b"<data id='household_survey'><household_id>1</household_id></data>", 400),
        (b"<data id='household_survey'><meta><instanceID>7</instanceID></meta></data>", 400),
        (b"<data id='another_form'><meta><instanceID>uuid:x</instanceID></meta></data>", 404),
    ],
    ids=["malformed", "entities", "no-instance-id", "bad-instance-id", "unknown-form"],
)
def test_an_unreadable_submission_is_refused(
    app: Flask, client: FlaskClient, token: str, xml: bytes, status: int
) -> None:
    response = submit(client, basic("caseworker_a", token), xml, {"a.jpg": jpeg(1)})
    assert response.status_code == status, response.data
    assert message(response)[1]
    assert survey_count() == 0
    assert stored_files(app)[1] == []


def test_a_bad_field_is_named_as_in_the_form(
    app: Flask, client: FlaskClient, token: str, household: tuple[int, int]
) -> None:
    auth = basic("caseworker_a", token)
    for xml, field in (
        (instance_xml(household[0], uuid.uuid4(), gps="north"), "gps"),
        (instance_xml(household[0], uuid.uuid4(), gps="95 122 0 5"), "gps"),
        (instance_xml(household[0], uuid.uuid4(), kind="picnic"), "visit_kind"),
        (instance_xml("abc", uuid.uuid4()), "household_id"),
        (instance_xml("", uuid.uuid4()), "household_id"),
        (
            instance_xml(household[0], uuid.uuid4(), members=[(1, "王大", "-3", None)]),
            "members[1]/monthly_income",
        ),
    ):
        response = submit(client, auth, xml)
        assert response.status_code == 422, response.data
        assert message(response)[1].startswith(f"表单字段无效：{field}")
        assert english(response).startswith(field)
    assert survey_count() == 0


def test_another_townships_household_is_not_found_and_nothing_is_stored(
    app: Flask, client: FlaskClient, token: str
) -> None:
    elsewhere = factories.make_household(
        state=CaseState.APPROVED, village=factories.areas().village_b
    )
    db.session.commit()
    elsewhere_id = elsewhere.id  # objects do not outlive a request (its error rolls back)
    before, _ = stored_files(app)
    photo = jpeg(7)
    auth = basic("caseworker_a", token)
    for incomplete in (False, True):
        xml = instance_xml(elsewhere_id, uuid.uuid4(), housing=["h1.jpg", "h2.jpg"])
        files = {"h1.jpg": photo} if incomplete else {"h1.jpg": photo, "h2.jpg": jpeg(8)}
        response = submit(client, auth, xml, files, incomplete=incomplete)
        assert response.status_code == 404, response.data
        assert "household" in english(response)
    assert survey_count() == 0
    after, leftovers = stored_files(app)
    assert after == before and leftovers == []


def test_a_part_that_is_not_an_image_is_refused_before_anything_is_kept(
    app: Flask, client: FlaskClient, token: str, household: tuple[int, int]
) -> None:
    before, _ = stored_files(app)
    xml = instance_xml(household[0], uuid.uuid4(), housing=["h1.jpg", "h2.jpg"])
    auth = basic("caseworker_a", token)
    response = submit(client, auth, xml, {"h1.jpg": b"not an image at all"}, incomplete=True)
    assert response.status_code == 415
    assert message(response)[1].startswith("有照片不是 JPEG 或 PNG 图片")
    assert stored_files(app) == (before, [])
    assert survey_count() == 0


def test_an_oversized_submission_xml_gets_413(
    app: Flask, client: FlaskClient, token: str, household: tuple[int, int]
) -> None:
    xml = instance_xml(household[0], uuid.uuid4()).replace(
        b"<notes>", b"<notes>" + b"x" * (1024 * 1024)
    )
    response = submit(client, basic("caseworker_a", token), xml)
    assert response.status_code == 413
    message(response)
    assert survey_count() == 0


def test_odk_file_names_become_unique_photo_ids() -> None:
    instance = uuid.uuid4()
    parsed = parse_submission(
        instance_xml(
            1,
            instance,
            members=[("", "新生儿", "0", "a.jpg")],
            housing=["a_jpg", "a.jpg", "照片 1.jpg"],
        )
    )
    assert parsed.instance_id == instance
    ids = [a.photo_id for a in parsed.attachments]
    assert ids[:2] == ["a_jpg", "a_jpg-" + hashlib.sha256(b"a_jpg").hexdigest()[:12]]
    assert len(set(ids)) == len(ids) and all(len(i) <= 64 for i in ids)
    assert parsed.attachments[0].member_ref == "member-1"


def test_parts_are_matched_by_file_name_and_a_truncated_body_is_refused(
    app: Flask, client: FlaskClient, token: str, household: tuple[int, int]
) -> None:
    """A photo part under another name is found by its file name; a part the XML does
    not name is dropped with its temp file; a body cut short is a 422 and keeps nothing."""
    auth = basic("caseworker_a", token)
    xml = instance_xml(household[0], uuid.uuid4(), housing=["h1.jpg"])
    parts: dict[str, Any] = {
        "xml_submission_file": FileStorage(io.BytesIO(xml), "instance.xml", "text/xml"),
        "photo-1": FileStorage(io.BytesIO(jpeg(3)), "h1.jpg", content_type="image/jpeg"),
        "audit.csv": FileStorage(io.BytesIO(b"event,start\n"), "audit.csv", "text/csv"),
    }
    boundary, body = encode_multipart(parts)
    content_type = f"multipart/form-data; boundary={boundary}"
    cut = client.post(
        "/openrosa/submission", data=body[:-200], headers=auth, content_type=content_type
    )
    assert cut.status_code == 422, cut.data
    assert message(cut)[0] == "error" and survey_count() == 0
    assert stored_files(app)[1] == []

    response = client.post(
        "/openrosa/submission", data=body, headers=auth, content_type=content_type
    )
    assert response.status_code == 201, response.data
    stored = db.session.scalars(select(Survey)).one()
    assert [(p.photo_id, p.received_at is not None) for p in stored.photos] == [("h1_jpg", True)]
    assert stored_files(app)[1] == []  # no temp file left behind
