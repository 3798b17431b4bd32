"""The walk-in application page (docs/office.md, "Walk-in applications"): the same
checks as a tablet's new household, every error beside its field with what was typed
kept, nothing written on a refusal, and the tablet then sees the initial survey due."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from server.areas.models import Area
from server.audit.models import AuditEntry
from server.cases.models import CaseEvent, CaseState, Household, Member
from server.extensions import db
from tests import factories
from tests.conftest import login, make_app
from tests.mobile_api.test_api_devices import bearer, device_login
from tests.visits.test_api_surveys import new_application, survey_json

URL = "/office/applications/new"


def form(village_id: int, **changes: str) -> dict[str, str]:
    """A complete form: a head (birth date left to the ID number) and a child."""
    data = {
        "rows": "3",
        "action": "submit",
        "village": str(village_id),
        "address": "红旗村7组21号",
        "class": "B",
        "m-0-name": "赵桂芝",
        "m-0-id_number": factories.id_number(date(1962, 8, 3)),
        "m-0-birth_date": "",
        "m-0-relation": "head",
        "m-0-phone": "+86 139 0000 2222",
        "m-0-income": "120.50",
        "m-1-name": "赵明",
        "m-1-id_number": factories.id_number(date(1995, 1, 9)),
        "m-1-birth_date": "1995-01-09",
        "m-1-relation": "child",
        "m-1-able_to_work": "yes",
        "m-1-income": "800",
    }
    data.update(changes)
    return data


@dataclass(frozen=True)
class Village:
    id: int
    name: str
    lat: float
    lon: float


@dataclass(frozen=True)
class Places:
    """The villages as plain values: ORM objects do not outlive a request."""

    village_a: Village
    village_a2: Village
    village_b: Village


@pytest.fixture
def places(app: Flask) -> Places:
    found = factories.areas()

    def plain(area: Area) -> Village:
        return Village(area.id, area.name, area.lat, area.lon)

    return Places(plain(found.village_a), plain(found.village_a2), plain(found.village_b))


def counts() -> tuple[int, int, int]:
    return (
        db.session.scalar(select(func.count()).select_from(Household)) or 0,
        db.session.scalar(select(func.count()).select_from(Member)) or 0,
        db.session.scalar(select(func.count()).select_from(CaseEvent)) or 0,
    )


def test_a_walk_in_application_is_registered_applied_and_audited(
    app: Flask, client: FlaskClient, places: Places, caplog: pytest.LogCaptureFixture
) -> None:
    area = places
    login(client, "reviewer_a")
    page = client.get(URL).get_data(as_text=True)
    assert "来访申请" in page and area.village_a.name in page
    assert area.village_b.name not in page  # only the actor's villages

    data = form(area.village_a.id)
    head_id = data["m-0-id_number"]
    with caplog.at_level(logging.DEBUG):
        response = client.post(URL, data=data)
    assert response.status_code == 303, response.get_data(as_text=True)
    # No ID number in the next URL, a log line or an audit row.
    assert head_id not in response.headers["Location"] and head_id not in caplog.text
    assert head_id[-6:] not in str(
        db.session.execute(select(AuditEntry.details, AuditEntry.object_id)).all()
    )
    code = response.headers["Location"].rsplit("/", 1)[1]
    household = db.session.scalar(select(Household).where(Household.case_code == code))
    assert household is not None
    assert household.state is CaseState.APPLIED and household.household_class.code == "B"
    # No location given: the village's centre stands in until the initial survey.
    assert household.home_pending
    assert (household.home_lat, household.home_lon) == (area.village_a.lat, area.village_a.lon)
    head, child = household.members
    assert head.id_number == head_id and head.birth_date == date(1962, 8, 3)
    assert head.phone == "13900002222" and head.phone_hash is not None
    assert head.monthly_income == 120.5 and head.proof_of_life_required
    assert child.able_to_work and child.birth_date == date(1995, 1, 9)
    assert [e.action for e in household.events] == ["apply"]
    entry = db.session.scalar(
        select(AuditEntry).where(
            AuditEntry.action == "case.apply", AuditEntry.object_id == str(household.id)
        )
    )
    assert entry is not None and entry.actor_id == factories.user("reviewer_a").id

    shown = client.get(response.headers["Location"]).get_data(as_text=True)
    assert code in shown and "村中心" in shown  # the flash says where the home stands


def test_a_known_location_is_the_home(app: Flask, client: FlaskClient, places: Places) -> None:
    area = places
    login(client, "caseworker_a")
    response = client.post(URL, data=form(area.village_a2.id, lat="46.1234", lon="121.9876"))
    assert response.status_code == 303
    household = db.session.scalars(select(Household)).one()
    assert (household.home_lat, household.home_lon, household.home_pending) == (
        46.1234,
        121.9876,
        False,
    )


@pytest.mark.parametrize(
    ("changes", "where", "message"),
    [
        ({"village": ""}, "village", "请选择您辖区内的村"),
        ({"address": ""}, "address", "请填写地址"),
        ({"class": "Z"}, "class", "请选择类别"),
        ({"lat": "46.1"}, "location", "纬度"),
        ({"m-0-name": ""}, "m-0-name", "请填写姓名"),
        ({"m-0-id_number": "12345"}, "m-0-id_number", "18 位"),
        ({"m-0-id_number": "152201196208031239"}, "m-0-birth_date", "请填写出生日期"),
        ({"m-1-birth_date": "1996-01-09"}, "m-1-birth_date", "1995-01-09"),
        ({"m-0-phone": "12345"}, "m-0-phone", "11 位"),
        ({"m-1-income": "-3"}, "m-1-income", "收入"),
        ({"m-1-relation": "head"}, "members", "户主"),
        ({"m-1-relation": ""}, "m-1-relation", "关系"),
    ],
    ids=[
        "village",
        "address",
        "class",
        "half-location",
        "name",
        "id-shape",
        "id-checksum-no-birth",
        "birth-differs",
        "phone",
        "income",
        "two-heads",
        "relation",
    ],
)
def test_each_refusal_names_its_field_keeps_every_value_and_writes_nothing(
    app: Flask,
    client: FlaskClient,
    places: Places,
    changes: dict[str, str],
    where: str,
    message: str,
) -> None:
    area = places
    login(client, "reviewer_a")
    before = counts()
    data = form(area.village_a.id, **changes)
    response = client.post(URL, data=data)
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert message in page
    assert "没有保存" in page
    for name, value in data.items():
        if name.startswith("m-") and not name.endswith(("relation", "able_to_work")) and value:
            assert f'name="{name}" value="{value}"' in page, name
    assert f'value="{data["address"]}"' in page or not data["address"]
    assert counts() == before
    # Beside its field: after the field's input (and, in a member row, in that row).
    anchor = {"location": 'name="lon"', "members": "</fieldset>"}.get(where, f'name="{where}"')
    after = page[page.index(anchor) :]
    if where.startswith("m-"):
        after = after.split("</tr>", 1)[0]
    assert message in after


def test_an_error_stands_beside_its_own_row(
    app: Flask, client: FlaskClient, places: Places
) -> None:
    area = places
    login(client, "reviewer_a")
    page = client.post(URL, data=form(area.village_a.id, **{"m-1-phone": "999"})).get_data(
        as_text=True
    )
    row = page.split('data-row="1"', 1)[1].split("</tr>", 1)[0]
    assert "11 位" in row
    assert "11 位" not in page.split('data-row="0"', 1)[1].split("</tr>", 1)[0]


def test_the_same_id_number_twice_in_one_application_is_refused(
    app: Flask, client: FlaskClient, places: Places
) -> None:
    area = places
    login(client, "reviewer_a")
    data = form(area.village_a.id)
    data["m-1-id_number"] = data["m-0-id_number"]
    data["m-1-birth_date"] = ""
    response = client.post(URL, data=data)
    assert response.status_code == 422
    assert "与第 1 位成员的身份证号相同" in response.get_data(as_text=True)
    assert counts()[0] == 0


def test_an_applicant_in_a_tablet_registered_case_is_refused_at_the_office(
    app: Flask, client: FlaskClient, places: Places
) -> None:
    area = places
    token = device_login(client, "caseworker_a").get_json()["token"]
    survey = new_application()
    registered = client.post("/api/v1/surveys", json=survey, headers=bearer(token))
    assert registered.status_code == 201, registered.get_json()
    case_code = registered.get_json()["case_code"]
    tablet_id_number = survey["members"][1]["id_number"]
    before = counts()

    login(client, "reviewer_a")
    data = form(area.village_a2.id)
    data["m-1-id_number"] = tablet_id_number
    data["m-1-birth_date"] = ""
    response = client.post(URL, data=data)
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert f"已登记在案件 {case_code}" in page
    assert f'value="{tablet_id_number}"' in page
    assert counts() == before


def test_an_applicant_registered_outside_the_area_is_refused_without_naming_the_case(
    app: Flask, client: FlaskClient, places: Places
) -> None:
    area = places
    theirs = factories.make_household(village=factories.areas().village_b, state=CaseState.APPROVED)
    their_code, their_id = theirs.case_code, theirs.members[0].id_number
    db.session.commit()
    login(client, "reviewer_a")
    data = form(area.village_a.id, **{"m-1-id_number": their_id, "m-1-birth_date": ""})
    page = client.post(URL, data=data).get_data(as_text=True)
    assert "辖区以外" in page and their_code not in page


def test_a_closed_case_does_not_hold_its_members(
    app: Flask, client: FlaskClient, places: Places
) -> None:
    area = places
    rejected = factories.make_household(state=CaseState.REJECTED)
    their_id = rejected.members[0].id_number
    db.session.commit()
    login(client, "reviewer_a")
    data = form(area.village_a.id, **{"m-0-id_number": their_id})
    assert client.post(URL, data=data).status_code == 303


def test_a_tablet_flags_an_applicant_registered_at_the_office(
    app: Flask, client: FlaskClient, places: Places
) -> None:
    area = places
    login(client, "reviewer_a")
    data = form(area.village_a.id)
    assert client.post(URL, data=data).status_code == 303
    office_id = db.session.scalars(select(Household.id)).one()

    token = device_login(client, "caseworker_a").get_json()["token"]
    survey = new_application()
    survey["members"][0]["id_number"] = data["m-0-id_number"]
    body = client.post("/api/v1/surveys", json=survey, headers=bearer(token)).get_json()
    flags = [f for f in body["flags"] if f["code"] == "member_registered_elsewhere"]
    assert len(flags) == 1 and f"household {office_id}" in flags[0]["detail"]


def test_add_a_row_keeps_what_was_typed_and_writes_nothing(
    app: Flask, client: FlaskClient, places: Places
) -> None:
    area = places
    login(client, "reviewer_a")
    data = form(area.village_a.id, action="add_row")
    response = client.post(URL, data=data)
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert 'name="rows" value="4"' in page and 'name="m-3-name"' in page
    assert f'value="{data["m-0-id_number"]}"' in page and "没有保存" not in page
    assert counts()[0] == 0


def test_the_tablet_sees_the_initial_survey_due_once_the_case_is_accepted(
    app: Flask, client: FlaskClient, places: Places
) -> None:
    area = places
    login(client, "reviewer_a")
    response = client.post(URL, data=form(area.village_a.id))
    code = response.headers["Location"].rsplit("/", 1)[1]
    token = device_login(client, "caseworker_a").get_json()["token"]

    def due() -> list[dict[str, Any]]:
        items = client.get("/api/v1/visits/due", headers=bearer(token)).get_json()["items"]
        return [i for i in items if i["case_code"] == code]

    assert due() == []  # applied: the workflow has not accepted it yet
    login(client, "reviewer_a")
    accepted = client.post(f"/cases/{code}/transitions", data={"action": "accept"})
    assert accepted.status_code == 303
    (item,) = due()
    assert item["kind"] == "initial_survey"
    assert item["location"] == {"lat": area.village_a.lat, "lon": area.village_a.lon}
    assert {m["name"] for m in item["members"]} == {"赵桂芝", "赵明"}

    # The initial survey's fix becomes the home; no flag for being "far from home".
    household_id = item["household_id"]
    survey = survey_json(household_id, {}, kind="initial_survey")
    survey["gps"].update(lat=area.village_a.lat + 0.02, lon=area.village_a.lon + 0.01)
    body = client.post("/api/v1/surveys", json=survey, headers=bearer(token)).get_json()
    assert "gps_far_from_home" not in {f["code"] for f in body["flags"]}
    household = db.session.get(Household, household_id)
    assert household is not None
    db.session.refresh(household)
    assert not household.home_pending and household.state is CaseState.SURVEYED
    assert household.home_lat == pytest.approx(area.village_a.lat + 0.02)


def test_roles_without_the_capability_get_403(
    app: Flask, client: FlaskClient, places: Places
) -> None:
    area = places
    for username in ("approver", "supervisor", "admin"):
        login(client, username)
        assert client.get(URL).status_code == 403
        assert client.post(URL, data=form(area.village_a.id)).status_code == 403
    assert counts()[0] == 0


def test_a_village_outside_the_area_is_no_such_village(
    app: Flask, client: FlaskClient, places: Places
) -> None:
    area = places
    login(client, "reviewer_a")
    outside = client.post(URL, data=form(area.village_b.id))
    missing = client.post(URL, data=form(2**31 - 1))
    assert outside.status_code == missing.status_code == 404
    assert counts()[0] == 0


def test_the_form_needs_its_csrf_token(app: Flask, tmp_path: Path, places: Places) -> None:
    area = places
    strict = make_app(app.config["SQLALCHEMY_DATABASE_URI"], tmp_path, WTF_CSRF_ENABLED=True)
    client = strict.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = page.split('name="csrf_token" type="hidden" value="', 1)[1].split('"', 1)[0]
    client.post(
        "/login",
        data={"username": "reviewer_a", "password": factories.PASSWORD, "csrf_token": token},
    )
    assert client.get(URL).status_code == 200
    response = client.post(URL, data=form(area.village_a.id))
    assert response.status_code == 400


def test_a_tablet_upload_with_one_id_number_twice_is_refused_by_the_same_check(
    app: Flask, client: FlaskClient
) -> None:
    token = device_login(client, "caseworker_a").get_json()["token"]
    survey = new_application()
    survey["members"][1]["id_number"] = survey["members"][0]["id_number"]
    response = client.post("/api/v1/surveys", json=survey, headers=bearer(token))
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == "duplicate_id_number"
    assert error["details"]["field"] == "members.1.id_number"
    assert counts()[0] == 0
