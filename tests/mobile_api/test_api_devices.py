"""Tablet login, bearer tokens, /meta and /visits/due."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.cli import ScriptInfo
from flask.testing import FlaskClient
from sqlalchemy import func, select, text

from server.audit.models import AuditEntry
from server.cases.models import CaseState
from server.cases.workflow import local_today
from server.cli import cli
from server.devices.models import DeviceToken
from server.extensions import db
from tests import factories
from tests.conftest import make_app


def device_login(client: FlaskClient, username: str = "caseworker_a", **extra: Any) -> Any:
    body = {
        "username": username,
        "password": factories.PASSWORD,
        "device_id": "tab-001",
        "device_name": "华为平板 M5",
    }
    body.update(extra)
    return client.post("/api/v1/auth/device-tokens", json=body)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def token(client: FlaskClient) -> str:
    response = device_login(client)
    assert response.status_code == 201, response.get_json()
    value: str = response.get_json()["token"]
    return value


@pytest.mark.slow
def test_a_caseworker_logs_a_tablet_in_and_only_a_hash_is_stored(
    app: Flask, client: FlaskClient
) -> None:
    response = device_login(client)
    assert response.status_code == 201
    body = response.get_json()
    assert body["user"] == {
        "username": "caseworker_a",
        "role": "caseworker",
        "area": {"code": "152201100", "name": "义勒力特镇"},
    }
    expires = datetime.fromisoformat(body["expires_at"])
    assert timedelta(days=29) < expires - datetime.now(UTC) <= timedelta(days=30)
    raw = db.session.execute(text("SELECT * FROM device_tokens")).mappings().one()
    assert body["token"] not in str(dict(raw))
    assert raw["token_prefix"] == body["token"][:12]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({"password": "wrong password"}, 401, "invalid_credentials", None),
        ({"username": "nobody"}, 401, "invalid_credentials", None),
        ({"username": "reviewer_a"}, 403, "not_permitted", None),
        ({"device_id": ""}, 422, "validation_failed", "device_id"),
        ({"device_id": None}, 422, "validation_failed", "device_id"),
        ({"username": "x" * 65}, 422, "validation_failed", "username"),
    ],
)
def test_a_bad_tablet_login_gets_a_specific_json_error(
    client: FlaskClient, body: dict[str, Any], status: int, code: str, field: str | None
) -> None:
    response = device_login(client, **body)
    assert response.status_code == status
    error = response.get_json()["error"]
    assert error["code"] == code
    if field:
        assert error["details"]["field"] == field and field in error["message"]
    assert "token" not in response.get_json()


def test_a_login_that_is_not_json_is_refused(client: FlaskClient) -> None:
    response = client.post(
        "/api/v1/auth/device-tokens",
        data="username=a",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "validation_failed"


@pytest.mark.slow
def test_a_new_login_from_the_same_tablet_replaces_its_token(client: FlaskClient) -> None:
    first = device_login(client).get_json()["token"]
    second = device_login(client).get_json()["token"]
    assert client.get("/api/v1/meta", headers=bearer(first)).status_code == 401
    assert client.get("/api/v1/meta", headers=bearer(second)).status_code == 200
    other_tablet = device_login(client, device_id="tab-002").get_json()["token"]
    assert client.get("/api/v1/meta", headers=bearer(second)).status_code == 200
    assert client.get("/api/v1/meta", headers=bearer(other_tablet)).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic YTpi"},
        {"Authorization": "Bearer dbt_not-a-real-token"},
        {"Authorization": "Bearer xyz"},
    ],
)
def test_the_api_needs_a_valid_bearer_token(client: FlaskClient, headers: dict[str, str]) -> None:
    response = client.get("/api/v1/meta", headers=headers)
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "invalid_token"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_an_expired_token_is_refused(app: Flask, client: FlaskClient, token: str) -> None:
    record = db.session.scalars(select(DeviceToken)).one()
    record.expires_at = datetime.now(UTC) - timedelta(seconds=1)
    db.session.commit()
    assert client.get("/api/v1/meta", headers=bearer(token)).status_code == 401


def test_a_deactivated_caseworker_loses_tablet_access(
    app: Flask, client: FlaskClient, token: str
) -> None:
    factories.user("caseworker_a").active = False
    db.session.commit()
    assert client.get("/api/v1/meta", headers=bearer(token)).status_code == 401


def test_dibao_devices_revoke_cuts_a_tablet_off(
    app: Flask, client: FlaskClient, token: str
) -> None:
    runner = app.test_cli_runner()
    info = ScriptInfo(create_app=lambda: app)
    listed = runner.invoke(cli, ["devices", "list"], obj=info)
    assert token[:12] in listed.output and "live" in listed.output

    result = runner.invoke(cli, ["devices", "revoke", "--token-prefix", token[:12]], obj=info)
    assert result.exit_code == 0, result.output
    assert f"revoked {token[:12]} (caseworker_a, tab-001)" in result.output
    assert client.get("/api/v1/meta", headers=bearer(token)).status_code == 401
    again = runner.invoke(cli, ["devices", "revoke", "--token-prefix", token[:12]], obj=info)
    assert again.exit_code != 0 and "no live token" in again.output
    audit = db.session.scalar(
        select(func.count())
        .select_from(AuditEntry)
        .where(AuditEntry.action == "device.token_revoked")
    )
    assert audit == 1


def test_meta_advertises_the_upload_limits(client: FlaskClient, token: str) -> None:
    body = client.get("/api/v1/meta", headers=bearer(token)).get_json()
    assert body["api_version"] == "1"
    assert body["limits"]["max_photo_bytes"] <= body["limits"]["max_request_bytes"]
    assert body["limits"]["recommended_batch_bytes"] <= body["limits"]["max_request_bytes"]
    assert abs(datetime.fromisoformat(body["server_time"]) - datetime.now(UTC)) < timedelta(
        seconds=30
    )


@pytest.mark.slow
def test_tablet_logins_are_rate_limited_per_username(app: Flask, tmp_path: Path) -> None:
    limited = make_app(
        app.config["SQLALCHEMY_DATABASE_URI"],
        tmp_path,
        RATELIMIT_ENABLED=True,
        DIBAO_LOGIN_RATE_LIMIT="2 per minute",
    )
    client = limited.test_client()
    statuses = []
    for i in range(4):
        response = client.post(
            "/api/v1/auth/device-tokens",
            json={"username": "caseworker_a", "password": "guess", "device_id": "t"},
            environ_base={"REMOTE_ADDR": f"10.9.0.{i}"},
        )
        statuses.append(response.status_code)
    assert statuses == [401, 401, 429, 429]
    assert response.get_json()["error"]["code"] == "rate_limited"
    assert int(response.headers["Retry-After"]) >= 1


def _due(client: FlaskClient, token: str, **headers: str) -> Any:
    return client.get("/api/v1/visits/due", headers={**bearer(token), **headers})


def test_due_visits_list_surveys_and_reviews_of_the_township_soonest_first(
    app: Flask, client: FlaskClient, token: str
) -> None:
    today = local_today()
    survey = factories.make_household(state=CaseState.ACCEPTED)
    soon = factories.make_household(state=CaseState.APPROVED)
    soon.next_review_on = today + timedelta(days=10)
    overdue = factories.make_household(state=CaseState.SUSPENDED)
    overdue.next_review_on = today - timedelta(days=3)
    later = factories.make_household(state=CaseState.APPROVED)
    later.next_review_on = today + timedelta(days=31)
    elsewhere = factories.make_household(
        village=factories.areas().village_b, state=CaseState.ACCEPTED
    )
    factories.make_household(state=CaseState.APPLIED)
    expected = [
        (overdue.case_code, "periodic_review"),
        (soon.case_code, "periodic_review"),
        (survey.case_code, "initial_survey"),
    ]
    survey_members = [(m.id, m.name, m.relation.value) for m in survey.living_members]
    hidden = {later.case_code, elsewhere.case_code}
    db.session.commit()

    response = _due(client, token)
    assert response.status_code == 200
    items = response.get_json()["items"]
    assert [(i["case_code"], i["kind"]) for i in items] == expected
    assert not hidden & {i["case_code"] for i in items}
    first_survey = items[-1]
    assert [(m["member_id"], m["name"], m["relation"]) for m in first_survey["members"]] == (
        survey_members
    )
    assert first_survey["address"] == "红旗村3组12号"
    assert set(first_survey["location"]) == {"lat", "lon"}
    assert date.fromisoformat(items[0]["due_by"]) < date.fromisoformat(items[1]["due_by"])


def test_due_visits_answer_304_until_something_changes(
    app: Flask, client: FlaskClient, token: str
) -> None:
    household = factories.make_household(state=CaseState.ACCEPTED)
    household_id = household.id
    db.session.commit()

    def reads() -> int:
        return (
            db.session.scalar(
                select(func.count())
                .select_from(AuditEntry)
                .where(AuditEntry.action == "member.read_personal")
            )
            or 0
        )

    first = _due(client, token)
    etag = first.headers["ETag"]
    assert reads() == 1
    unchanged = _due(client, token, **{"If-None-Match": etag})
    assert unchanged.status_code == 304 and unchanged.data == b""
    assert reads() == 1  # nothing personal was sent

    from server.cases.models import Household

    changed = db.session.get(Household, household_id)
    assert changed is not None
    changed.members[0].name = "王改名"
    db.session.commit()
    after = _due(client, token, **{"If-None-Match": etag})
    assert after.status_code == 200 and after.headers["ETag"] != etag
    assert reads() == 2


def test_every_api_route_is_in_the_openapi_document(app: Flask, client: FlaskClient) -> None:
    document = client.get("/api/openapi.json").get_json()
    assert document["openapi"].startswith("3.")
    routes = {
        (re.sub(r"<(?:\w+(?:\([^)]*\))?:)?(\w+)>", r"{\1}", rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/")
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS")
    }
    documented = {(path, method) for path, ops in document["paths"].items() for method in ops}
    assert routes == documented
