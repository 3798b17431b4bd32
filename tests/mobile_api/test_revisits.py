"""A rejected visit goes back to its caseworker's tablet as a revisit item with the
reviewer's reason, and leaves the list once a new visit to the household arrives."""

from __future__ import annotations

import csv
import hashlib
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from defusedxml.ElementTree import fromstring
from flask import Flask
from flask.testing import FlaskClient

from server.cases.models import CaseState
from server.extensions import db
from server.visits.models import ReviewStatus, Survey
from tests import factories
from tests.conftest import login
from tests.console.visit_data import plant_visit
from tests.mobile_api.test_api_devices import bearer, device_login
from tests.visits.test_api_surveys import jpeg, post_multipart, survey_json


def _revisits(client: FlaskClient, token: str) -> list[dict[str, Any]]:
    response = client.get("/api/v1/visits/due", headers=bearer(token))
    assert response.status_code == 200
    return [i for i in response.get_json()["items"] if i["kind"] == "revisit"]


def test_a_rejection_reaches_the_tablet_and_a_new_visit_resolves_it(
    app: Flask, client: FlaskClient
) -> None:
    household = factories.make_household(state=CaseState.APPROVED)
    code, household_id = household.case_code, household.id
    db.session.commit()
    token = device_login(client).get_json()["token"]
    photos = {"house": jpeg(3)}
    first = survey_json(household_id, photos)
    assert post_multipart(client, token, first, photos).status_code == 201
    survey_id = db.session.query(Survey.id).filter_by(client_uuid=first["client_uuid"]).scalar()
    assert _revisits(client, token) == []

    staff = app.test_client()
    login(staff, "reviewer_a")
    staff.post(
        f"/cases/{code}/visits/{survey_id}/review",
        data={"status": "rejected", "reason": "住房照片与该户不符，请重新入户"},
    )

    [item] = _revisits(client, token)
    assert item["case_code"] == code and item["household_id"] == household_id
    assert item["revisit"]["survey_id"] == survey_id
    assert item["revisit"]["client_uuid"] == first["client_uuid"]
    assert item["revisit"]["visit_kind"] == "periodic_review"
    assert item["revisit"]["reason"] == "住房照片与该户不符，请重新入户"
    assert item["members"] and item["reasons"] == []
    # Other items carry no revisit.
    others = client.get("/api/v1/visits/due", headers=bearer(token)).get_json()["items"]
    assert all(i["revisit"] is None for i in others if i["kind"] != "revisit")

    # Another caseworker of the township does not get it.
    assert _revisits(client, device_login(client, "caseworker_b").get_json()["token"]) == []

    # Made after the rejection (a visit finished before it, sent late, does not count).
    now = datetime.now(UTC)
    again = survey_json(
        household_id,
        {"house": jpeg(4)},
        started_at=now.isoformat(),
        finished_at=(now + timedelta(seconds=30)).isoformat(),
    )
    assert post_multipart(client, token, again, {"house": jpeg(4)}).status_code == 201
    assert _revisits(client, token) == []


def test_the_openapi_document_describes_the_revisit(client: FlaskClient) -> None:
    schemas = client.get("/api/openapi.json").get_json()["components"]["schemas"]
    assert "revisit" in schemas["DueVisitOut"]["properties"]
    assert "reason" in schemas["RevisitOut"]["properties"]


MANIFEST_NS = "{http://openrosa.org/xforms/xformsManifest}"
XFORMS_NS = "{http://openrosa.org/xforms/xformsList}"


def test_odk_collect_gets_the_revisit_reason_with_the_forms_media(
    app: Flask, client: FlaskClient
) -> None:
    household = factories.make_household(state=CaseState.APPROVED)
    survey = plant_visit(household, factories.user("caseworker_a"), datetime.now(UTC))
    survey.review_status = ReviewStatus.REJECTED
    survey.reviewed_at = datetime.now(UTC)
    survey.review_reason = "门牌照片看不清，请补拍"
    household_id, code = household.id, household.case_code
    db.session.commit()
    token = device_login(client).get_json()["token"]
    headers = {**bearer(token), "X-OpenRosa-Version": "1.0"}

    listed = fromstring(client.get("/openrosa/formList", headers=headers).data)
    manifest_url = listed.find(f"{XFORMS_NS}xform/{XFORMS_NS}manifestUrl").text
    manifest = client.get(manifest_url, headers=headers)
    assert manifest.status_code == 200
    media = fromstring(manifest.data).find(f"{MANIFEST_NS}mediaFile")
    assert media.find(f"{MANIFEST_NS}filename").text == "due_visits.csv"
    csv_response = client.get(media.find(f"{MANIFEST_NS}downloadUrl").text, headers=headers)
    body = csv_response.data
    assert media.find(f"{MANIFEST_NS}hash").text == "md5:" + hashlib.md5(body).hexdigest()  # noqa: S324
    rows = list(csv.DictReader(io.StringIO(body.decode("utf-8"))))
    [row] = [r for r in rows if r["household_id"] == str(household_id)]
    assert row["case_code"] == code
    assert row["revisit_reason"] == "门牌照片看不清，请补拍"
    assert "退回后重访" in row["kinds"]
    # The form shows it: pulldata from this file, by the household typed in.
    form = (Path(__file__).resolve().parents[2] / "forms" / "household_survey.xml").read_text()
    assert "jr://file-csv/due_visits.csv" in form
    assert "pulldata('due_visits', 'revisit_reason', 'household_id'" in form
    # Another caseworker's tablet does not get it.
    other = device_login(client, "caseworker_b").get_json()["token"]
    other_csv = client.get(
        media.find(f"{MANIFEST_NS}downloadUrl").text,
        headers={**bearer(other), "X-OpenRosa-Version": "1.0"},
    ).get_data(as_text=True)
    assert code not in other_csv


def test_the_manifest_hash_changes_when_a_visit_is_rejected(
    app: Flask, client: FlaskClient
) -> None:
    household = factories.make_household(state=CaseState.APPROVED)
    survey = plant_visit(household, factories.user("caseworker_a"), datetime.now(UTC))
    survey_id, code = survey.id, household.case_code
    db.session.commit()
    token = device_login(client).get_json()["token"]
    headers = {**bearer(token), "X-OpenRosa-Version": "1.0"}

    def media_hash() -> str:
        manifest = client.get("/openrosa/forms/household_survey/manifest", headers=headers)
        return str(fromstring(manifest.data).find(f"{MANIFEST_NS}mediaFile/{MANIFEST_NS}hash").text)

    before = media_hash()
    assert media_hash() == before  # the same list, the same hash: nothing to fetch
    staff = app.test_client()
    login(staff, "approver")
    staff.post(
        f"/cases/{code}/visits/{survey_id}/review",
        data={"status": "rejected", "reason": "定位与住址不符"},
    )
    assert media_hash() != before
