"""/api/v1/visits/due answers 304 from the caseworker's list stamp, decrypting nothing,
and a new ETag (with the list) whenever the list would read differently."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from mobile_api.conditional import none_match_fails, parse_if_none_match
from server.cases.models import CaseState, Household, Member
from server.cases.workflow import local_today
from server.crypto import counting_decryptions
from server.extensions import db
from server.proof_of_life.models import MonthStatus
from server.visits.models import ReviewStatus, Survey
from tests import factories
from tests.console.visit_data import plant_visit
from tests.mobile_api.test_api_devices import bearer, device_login
from tests.visits.test_api_surveys import jpeg, post_multipart, survey_json


@pytest.fixture
def token(client: FlaskClient) -> str:
    response = device_login(client)
    assert response.status_code == 201, response.get_json()
    value: str = response.get_json()["token"]
    return value


def _due(client: FlaskClient, token: str, if_none_match: str | None = None) -> Any:
    headers = bearer(token)
    if if_none_match is not None:
        headers["If-None-Match"] = if_none_match
    return client.get("/api/v1/visits/due", headers=headers)


def _etag(client: FlaskClient, token: str) -> str:
    response = _due(client, token)
    assert response.status_code == 200
    etag: str = response.headers["ETag"]
    return etag


def _households(count: int, **options: Any) -> list[int]:
    ids = [factories.make_household(state=CaseState.ACCEPTED, **options).id for _ in range(count)]
    db.session.commit()
    return ids


def test_an_unchanged_list_answers_304_with_the_same_etag_and_decrypts_nothing(
    client: FlaskClient, token: str
) -> None:
    _households(3)  # two members each: an address and two names per household

    with counting_decryptions() as full:
        first = _due(client, token)
    assert first.status_code == 200 and len(first.get_json()["items"]) == 3
    assert full.count == 3 * (1 + 2)
    etag = first.headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"') and len(etag) == 34

    with counting_decryptions() as revalidated:
        again = _due(client, token, etag)
    assert again.status_code == 304 and again.data == b""
    assert revalidated.count == 0
    assert again.headers["ETag"] == etag
    assert again.headers["Cache-Control"] == "no-store"
    assert "Authorization" in again.headers["Vary"]
    assert "Authorization" in first.headers["Vary"]
    assert first.headers["Cache-Control"] == "no-store"


def test_a_token_request_decrypts_nothing_but_the_list(client: FlaskClient, token: str) -> None:
    # No household due: the request's only decryptions would be of the login itself
    # (the token's encrypted Digest secret, which a bearer request never needs).
    with counting_decryptions() as counted:
        response = _due(client, token)
    assert response.status_code == 200 and response.get_json()["items"] == []
    assert counted.count == 0


def test_a_new_due_visit_changes_the_etag(client: FlaskClient, token: str) -> None:
    _households(1)
    etag = _etag(client, token)
    _households(1)
    response = _due(client, token, etag)
    assert response.status_code == 200 and len(response.get_json()["items"]) == 2
    assert response.headers["ETag"] != etag


def test_a_household_moved_into_the_township_changes_the_etag(
    client: FlaskClient, token: str
) -> None:
    _households(1)
    [elsewhere] = _households(1, village=factories.areas().village_b)
    etag = _etag(client, token)
    assert _due(client, token, etag).status_code == 304
    household = db.session.get(Household, elsewhere)
    assert household is not None
    household.village_id = factories.areas().village_a.id
    db.session.commit()
    response = _due(client, token, etag)
    assert response.status_code == 200 and response.headers["ETag"] != etag
    assert elsewhere in {i["household_id"] for i in response.get_json()["items"]}


def test_a_proof_of_life_under_review_changes_the_etag(client: FlaskClient, token: str) -> None:
    from server.proof_of_life.models import ProofOfLifeMonth

    household = factories.make_household(state=CaseState.APPROVED)
    household_id, member_id = household.id, household.living_members[0].id
    db.session.commit()
    etag = _etag(client, token)
    now = datetime.now(UTC)
    db.session.add(
        ProofOfLifeMonth(
            member_id=member_id,
            household_id=household_id,
            month=now.strftime("%Y-%m"),
            status=MonthStatus.REVIEW,
            window_closes_at=now + timedelta(days=5),
        )
    )
    db.session.commit()
    response = _due(client, token, etag)
    assert response.status_code == 200 and response.headers["ETag"] != etag
    [item] = response.get_json()["items"]
    assert item["kind"] == "assisted_proof_of_life"


def test_a_completed_visit_changes_the_etag(client: FlaskClient, token: str) -> None:
    household = factories.make_household(state=CaseState.APPROVED)
    household.next_review_on = local_today() + timedelta(days=3)
    household_id = household.id
    db.session.commit()
    etag = _etag(client, token)
    assert _due(client, token, etag).status_code == 304
    photos = {"house": jpeg(5)}
    uploaded = post_multipart(client, token, survey_json(household_id, photos), photos)
    assert uploaded.status_code == 201
    response = _due(client, token, etag)
    assert response.status_code == 200 and response.headers["ETag"] != etag


def test_a_rejected_visit_changes_the_etag(client: FlaskClient, token: str) -> None:
    household = factories.make_household(state=CaseState.APPROVED)
    survey_id = plant_visit(household, factories.user("caseworker_a"), datetime.now(UTC)).id
    db.session.commit()
    etag = _etag(client, token)
    survey = db.session.get(Survey, survey_id)
    assert survey is not None
    survey.review_status = ReviewStatus.REJECTED
    survey.reviewed_at = datetime.now(UTC)
    survey.review_reason = "门牌照片看不清，请补拍"
    db.session.commit()
    rejected = _due(client, token, etag)
    assert rejected.status_code == 200 and rejected.headers["ETag"] != etag
    # The reviewer's reason is part of the list: rewording it is a new list too.
    survey = db.session.get(Survey, survey_id)
    assert survey is not None
    survey.review_reason = "门牌照片看不清"
    db.session.commit()
    reworded = _due(client, token, rejected.headers["ETag"])
    assert reworded.status_code == 200
    assert reworded.headers["ETag"] != rejected.headers["ETag"]


@pytest.mark.parametrize("change", ["name", "address", "relation", "left"])
def test_a_change_to_what_the_list_shows_of_a_household_changes_the_etag(
    client: FlaskClient, token: str, change: str
) -> None:
    [household_id] = _households(1)
    etag = _etag(client, token)
    household = db.session.get(Household, household_id)
    assert household is not None
    member = household.living_members[1]
    if change == "name":
        member.name = "王改名"
    elif change == "address":
        household.address = "红旗村3组14号"
    elif change == "relation":
        from server.cases.models import Relation

        member.relation = Relation.SPOUSE
    else:
        member.left_on = local_today()
    db.session.commit()
    response = _due(client, token, etag)
    assert response.status_code == 200 and response.headers["ETag"] != etag
    # And then the new list is stable again.
    assert _due(client, token, response.headers["ETag"]).status_code == 304


def test_a_change_the_list_does_not_show_keeps_the_etag(client: FlaskClient, token: str) -> None:
    [household_id] = _households(1)
    etag = _etag(client, token)
    member = db.session.scalars(
        db.select(Member).where(Member.household_id == household_id).order_by(Member.id)
    ).first()
    assert member is not None
    member.phone = "13800000000"  # not on the list
    db.session.commit()
    assert _due(client, token, etag).status_code == 304


def test_moving_the_caseworker_to_another_township_changes_the_etag(
    client: FlaskClient, token: str
) -> None:
    # No visit due in either township: the list reads the same, the stamp still moves.
    etag = _etag(client, token)
    caseworker = factories.user("caseworker_a")
    caseworker.area_id = factories.areas().township_b.id
    db.session.commit()
    response = _due(client, token, etag)
    assert response.status_code == 200 and response.headers["ETag"] != etag


def test_another_caseworker_with_the_same_list_gets_another_etag(
    client: FlaskClient, token: str
) -> None:
    _households(2)
    caseworker_b = factories.user("caseworker_b")
    caseworker_b.area_id = factories.user("caseworker_a").area_id  # same township
    db.session.commit()
    other = device_login(client, "caseworker_b").get_json()["token"]
    mine = _due(client, token)
    theirs = _due(client, other)
    assert mine.get_json() == theirs.get_json()
    assert mine.headers["ETag"] != theirs.headers["ETag"]
    # A's ETag replayed by B is not B's list version: B gets the list.
    replayed = _due(client, other, mine.headers["ETag"])
    assert replayed.status_code == 200 and replayed.get_json() == theirs.get_json()


@pytest.mark.parametrize(
    "header",
    [
        "W/{etag}",
        "*",
        ' "nothing" , {etag}',
        '"nothing",W/{etag},  ',
        ", , {etag}",
    ],
)
def test_if_none_match_forms_that_match(client: FlaskClient, token: str, header: str) -> None:
    _households(1)
    etag = _etag(client, token)
    with counting_decryptions() as counted:
        response = _due(client, token, header.format(etag=etag))
    assert response.status_code == 304 and counted.count == 0


@pytest.mark.parametrize(
    "header",
    [
        "",
        "{bare}",  # not quoted
        "{etag} garbage",
        "{etag}, garbage",
        '"unterminated, {etag}',
        "w/{etag}",  # the weak prefix is case-sensitive
        '"{bare}x"',
        '"*"',  # an opaque tag "*" is not the wildcard
        '"nothing"',
    ],
)
def test_if_none_match_forms_that_do_not_match(
    client: FlaskClient, token: str, header: str
) -> None:
    _households(1)
    etag = _etag(client, token)
    response = _due(client, token, header.format(etag=etag, bare=etag.strip('"')))
    assert response.status_code == 200 and len(response.get_json()["items"]) == 1
    assert response.headers["ETag"] == etag


def test_the_if_none_match_parser() -> None:
    assert parse_if_none_match("*") == "*"
    assert parse_if_none_match(' W/"a" ,"b,c", ,"" ') == ["a", "b,c", ""]
    assert parse_if_none_match('"a" "b"') is None
    assert parse_if_none_match('"a"b') is None
    assert parse_if_none_match('*, "a"') is None
    assert parse_if_none_match('"a\x7fb"') is None
    assert parse_if_none_match("") == []
    assert none_match_fails('"x", W/"y"', "y")
    assert not none_match_fails(None, "y")
    assert not none_match_fails('"x" "y"', "y")


def test_the_304_writes_no_audit_row_and_the_200_one(client: FlaskClient, token: str) -> None:
    from sqlalchemy import func, select

    from server.audit.models import AuditEntry

    _households(1)

    def reads() -> int:
        return (
            db.session.scalar(
                select(func.count())
                .select_from(AuditEntry)
                .where(AuditEntry.action == "member.read_personal")
            )
            or 0
        )

    etag = _etag(client, token)
    assert reads() == 1
    assert _due(client, token, etag).status_code == 304
    assert reads() == 1


def test_the_odk_collect_media_file_is_unchanged(
    app: Flask, client: FlaskClient, token: str
) -> None:
    accepted = factories.make_household(state=CaseState.ACCEPTED)
    approved = factories.make_household(state=CaseState.APPROVED)
    survey = plant_visit(approved, factories.user("caseworker_a"), datetime.now(UTC))
    survey.review_status = ReviewStatus.REJECTED
    survey.reviewed_at = datetime.now(UTC)
    survey.review_reason = "定位与住址不符"
    accepted_id, accepted_code, approved_id = accepted.id, accepted.case_code, approved.id
    db.session.commit()
    headers = {**bearer(token), "X-OpenRosa-Version": "1.0"}
    body = client.get(
        "/openrosa/forms/household_survey/media/due_visits.csv", headers=headers
    ).get_data(as_text=True)
    rows = list(csv.DictReader(io.StringIO(body)))
    items = _due(client, token).get_json()["items"]
    assert [int(r["household_id"]) for r in rows] == sorted(
        {i["household_id"] for i in items},
        key=lambda h: (min(i["due_by"] for i in items if i["household_id"] == h), h),
    )
    by_id = {r["household_id"]: r for r in rows}
    assert by_id[str(accepted_id)]["case_code"] == accepted_code
    assert "退回后重访" in by_id[str(approved_id)]["kinds"]
    assert by_id[str(approved_id)]["revisit_reason"] == "定位与住址不符"
    assert by_id[str(approved_id)]["due_by"] == min(
        i["due_by"] for i in items if i["household_id"] == approved_id
    )
    # The media file names nobody.
    assert "王" not in body and "3组12号" not in body
