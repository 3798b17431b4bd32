"""Never a 5xx from input: every endpoint that takes an id, a count, a date, a token or a
JSON body, fed what a hostile or broken client sends (issue 12, section 1).

Each probe is one request; the answer must be a 4xx in the audience's format (the JSON
envelope under /api/, an OpenRosa message under /openrosa/, a page elsewhere). The probes
run on both databases: SQLite refuses integers past 2**63-1 in a look-up, PostgreSQL
integers past 2**31-1 in a write.
"""

from __future__ import annotations

import base64
import io
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from werkzeug.test import TestResponse

from server import safe_json
from server.cases.models import CaseState
from server.extensions import db
from server.proof_of_life import service as pol
from server.visits.models import Survey
from tests import factories
from tests.conftest import login, make_app
from tests.mobile_api.test_api_devices import bearer, device_login
from tests.proof_of_life.test_proof_of_life_api import next_month
from tests.sms.test_sms_webhooks import _post, _sent_message, _signed, _status, twilio_app  # noqa: F401
from tests.visits.test_api_surveys import jpeg, manifest_entry, survey_json
from tests.visits.test_openrosa import OPENROSA, basic, instance_xml, submit

# Numbers no column holds, and ids that cannot exist.
HUGE_NUMBERS = [
    "2147483648",  # one past PostgreSQL's INTEGER
    "9223372036854775808",  # one past a 64-bit integer (SQLite's INTEGER)
    "99999999999999999999",
    "123456789012345678901234567890",
]
BAD_IDS = [*HUGE_NUMBERS, "-1", "0", "abc", "1e3", "٣", "%00", "1%001"]
BAD_DATES = ["0000-01-01", "0001-01-01", "99999-01-01", "2026-02-30", "2026-13-01", "x"]
BAD_MONTHS = ["0000-01", "0001-01", "9999-12", "99999-01", "2026-13", "26-1", "%00"]
NON_ASCII = ["é" * 32, "令牌" * 12, "\u0000" * 32, "\udcff"]
DEEP = 5000


def deep_json(depth: int = DEEP) -> str:
    return "[" * depth + "]" * depth


def deep_object(depth: int = DEEP) -> str:
    return '{"a":' * depth + "1" + "}" * depth


@dataclass
class Ctx:
    app: Flask
    anon: FlaskClient
    staff: FlaskClient
    token: str
    household_id: int
    member_id: int
    case_code: str
    link_token: str
    session_id: str
    nonce: str


@pytest.fixture
def ctx(app: Flask) -> Ctx:
    household = factories.make_household(state=CaseState.APPROVED)
    head = household.members[0]
    head.proof_of_life_required = True
    db.session.commit()
    record = pol.month_record(head, next_month())
    link_token = pol.link_token(record)
    household_id, member_id, case_code = household.id, head.id, household.case_code
    db.session.commit()
    anon = app.test_client()
    staff = app.test_client()
    assert login(staff, "reviewer_a").status_code == 302
    token = device_login(anon).get_json()["token"]
    session = anon.post("/api/v1/proof-of-life/sessions", json={"link_token": link_token})
    assert session.status_code == 201, session.get_json()
    return Ctx(
        app=app,
        anon=anon,
        staff=staff,
        token=token,
        household_id=household_id,
        member_id=member_id,
        case_code=case_code,
        link_token=link_token,
        session_id=session.get_json()["session_id"],
        nonce=session.get_json()["nonce"],
    )


def assert_refused(response: TestResponse, status: int | None = None) -> None:
    """A 4xx in the format of the audience the path belongs to."""
    path = response.request.path
    summary = f"{path} answered {response.status_code}: {response.data[:120]!r}"
    assert 400 <= response.status_code < 500, summary
    if status is not None:
        assert response.status_code == status, summary
    if path.startswith("/api/"):
        error = response.get_json()["error"]
        assert error["code"] and error["message"], error
    elif path.startswith("/openrosa/"):
        assert response.content_type.startswith("text/xml")
        assert b"<OpenRosaResponse" in response.data
    elif path.startswith("/sms/twilio/"):
        pass  # Twilio reads only the status
    else:
        assert response.content_type.startswith("text/html"), response.content_type
        assert b"<html" in response.data.lower()


def each(values: list[str], check: Callable[[str], None]) -> None:
    """Run ``check`` on every value and report all the values that fail, not just the first."""
    failures = []
    for value in values:
        try:
            check(value)
        except AssertionError as exc:
            failures.append(f"{value!r}: {str(exc).splitlines()[0][:300]}")
    assert not failures, "\n" + "\n".join(failures)


def no_surveys() -> None:
    assert (db.session.scalar(select(func.count()).select_from(Survey)) or 0) == 0


# --------------------------------------------------------------------------- ids in paths


PATH_PROBES: dict[str, Callable[[Ctx, str], TestResponse]] = {
    "photo": lambda c, v: c.staff.get(f"/photos/{v}"),
    "clear_flag": lambda c, v: c.staff.post(
        f"/cases/{c.case_code}/flags/{v}/clear", data={"reason": "checked at the home"}
    ),
    "decide_pol": lambda c, v: c.staff.post(
        f"/cases/{c.case_code}/proof-of-life/{v}", data={"status": "exempt", "reason": "in care"}
    ),
    "case_page": lambda c, v: c.staff.get(f"/cases/{v}"),
    "case_transition": lambda c, v: c.staff.post(f"/cases/{v}/transitions", data={"action": "x"}),
    "enroll_face": lambda c, v: c.anon.post(
        f"/api/v1/members/{v}/face-templates",
        data={"photo": (io.BytesIO(jpeg()), "p.jpg", "image/jpeg")},
        headers=bearer(c.token),
        content_type="multipart/form-data",
    ),
    "get_survey": lambda c, v: c.anon.get(f"/api/v1/surveys/{v}", headers=bearer(c.token)),
    "put_photo_uuid": lambda c, v: c.anon.put(
        f"/api/v1/surveys/{v}/photos/p1", data=jpeg(), headers=bearer(c.token)
    ),
    "put_photo_id": lambda c, v: c.anon.put(
        f"/api/v1/surveys/{uuid.uuid4()}/photos/{v}", data=jpeg(), headers=bearer(c.token)
    ),
    "frames": lambda c, v: c.anon.post(
        f"/api/v1/proof-of-life/sessions/{v}/frames",
        data={"nonce": c.nonce},
        content_type="multipart/form-data",
    ),
    "mobile_page": lambda c, v: c.anon.get(f"/m/{v}"),
    "public_case": lambda c, v: c.anon.get(f"/public/cases/{v}"),
    "public_api_case": lambda c, v: c.anon.get(f"/api/v1/public/cases/{v}"),
    "form_download": lambda c, v: c.anon.get(
        f"/openrosa/forms/{v}.xml", headers=basic("caseworker_a", c.token)
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("probe", sorted(PATH_PROBES))
def test_a_bad_id_in_a_path_is_not_found(ctx: Ctx, probe: str) -> None:
    status = 404 if probe in {"photo", "clear_flag", "decide_pol", "enroll_face"} else None
    each(BAD_IDS, lambda value: assert_refused(PATH_PROBES[probe](ctx, value), status))


# --------------------------------------------------------------------- the query string


QUERY_PROBES: dict[str, Callable[[Ctx, str], TestResponse]] = {
    "home_page": lambda c, v: c.staff.get(f"/?page={v}"),
    "home_state": lambda c, v: c.staff.get(f"/?state={v}"),
    "campaign_month": lambda c, v: c.staff.get(f"/campaign?month={v}"),
    "photo_size": lambda c, v: c.staff.get(f"/photos/1?size={v}"),
    "login_next": lambda c, v: c.anon.get(f"/login?next={v}"),
    "lang": lambda c, v: c.staff.get(f"/?lang={v}"),
    "public_limit": lambda c, v: c.anon.get(f"/public?limit={v}"),
    "public_after": lambda c, v: c.anon.get(f"/public?after={v}"),
    "public_township": lambda c, v: c.anon.get(f"/public?township={v}"),
    "public_code": lambda c, v: c.anon.get(f"/public?code={v}"),
    "public_api_limit": lambda c, v: c.anon.get(f"/api/v1/public/cases?limit={v}"),
    "public_api_status": lambda c, v: c.anon.get(f"/api/v1/public/cases?status={v}"),
    "public_csv": lambda c, v: c.anon.get(f"/public/cases.csv?village={v}"),
    "pol_status": lambda c, v: c.anon.get(f"/api/v1/proof-of-life/status?link_token={v}"),
    "form_list": lambda c, v: c.anon.get(
        f"/openrosa/formList?formID={v}", headers=basic("caseworker_a", c.token)
    ),
}
QUERY_VALUES = [*HUGE_NUMBERS, "-1", "0", "%00", "a%00b", "%C3%A9" * 40, *BAD_MONTHS, "x" * 5000]


@pytest.mark.slow
@pytest.mark.parametrize("probe", sorted(QUERY_PROBES))
def test_a_bad_query_value_is_never_a_server_error(ctx: Ctx, probe: str) -> None:
    def check(value: str) -> None:
        response = QUERY_PROBES[probe](ctx, value)
        assert response.status_code < 500, f"{response.status_code}: {response.data[:120]!r}"
        if response.status_code >= 400:
            assert_refused(response)

    each(QUERY_VALUES, check)


def test_a_month_or_page_out_of_range_is_refused_on_the_staff_pages(ctx: Ctx) -> None:
    each(BAD_MONTHS, lambda month: assert_refused(ctx.staff.get(f"/campaign?month={month}"), 400))
    pages = ["2147483648", "99999999999999999999", "0", "-3", "abc", "1.5"]
    each(pages, lambda page: assert_refused(ctx.staff.get(f"/?page={page}"), 400))
    # Said in the user's language, naming the parameter and its range.
    chinese = ctx.staff.get("/?page=0&lang=zh_CN")
    assert "page 必须是 1 到 2147483647 之间的整数" in chinese.text
    english = ctx.staff.get("/campaign?month=0000-01&lang=en")
    assert "month must be a month such as 2026-11, between 1900 and 2100" in english.text


# --------------------------------------------------------------------------- JSON bodies


def api_error(response: TestResponse, status: int, code: str, field: str | None = None) -> None:
    assert_refused(response, status)
    error = response.get_json()["error"]
    assert error["code"] == code, error
    if field is not None:
        assert error["details"]["field"] == field, error


def survey_with(ctx: Ctx, **changes: Any) -> dict[str, Any]:
    body = survey_json(ctx.household_id, {})
    body["members"] = [{"member_id": ctx.member_id, "name": "王大"}]
    body.update(changes)
    return body


HUGE_INTS = [2**31, 2**63, 10**20, 10**30, 0, -1]
# (what to change in a valid survey, the field the error must name)
SURVEY_CASES: list[tuple[Callable[[Ctx, Any], dict[str, Any]], list[Any], str]] = [
    (
        lambda c, v: survey_with(c, household_id=v),
        [*HUGE_INTS, "99999999999999999999"],
        "household_id",
    ),
    (
        lambda c, v: survey_with(c, members=[{"member_id": v, "name": "王大"}]),
        [*HUGE_INTS, "123456789012345678901234567890"],
        "members.0.member_id",
    ),
    (
        lambda c, v: survey_with(c, photos=[{**manifest_entry("p1", jpeg()), "bytes": v}]),
        HUGE_INTS,
        "photos.0.bytes",
    ),
    (
        lambda c, v: survey_with(c, started_at=v),
        [
            "0000-01-01T00:00:00+00:00",
            "0001-01-01T00:00:00+14:00",
            "9999-12-31T23:59:59-14:00",
            "99999-01-01T00:00:00+00:00",
            "1899-12-31T00:00:00+00:00",
            10**20,
        ],
        "started_at",
    ),
    (
        lambda c, v: survey_with(c, members=[{"member_id": c.member_id, "birth_date": v}]),
        BAD_DATES,
        "members.0.birth_date",
    ),
    (
        lambda c, v: survey_with(c, photos=[{**manifest_entry("p1", jpeg()), "taken_at": v}]),
        ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"],
        "photos.0.taken_at",
    ),
    (lambda c, v: survey_with(c, notes=v), ["a\x00b"], "notes"),
    (
        lambda c, v: survey_with(c, members=[{"member_id": c.member_id, "name": v}]),
        ["王\x00大"],
        "members.0.name",
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize("case", range(len(SURVEY_CASES)), ids=[c[2] for c in SURVEY_CASES])
def test_a_survey_with_a_value_no_column_holds_is_refused_naming_the_field(
    ctx: Ctx, case: int
) -> None:
    build, values, field = SURVEY_CASES[case]

    def check(value: Any) -> None:
        body = build(ctx, value)
        response = ctx.anon.post("/api/v1/surveys", json=body, headers=bearer(ctx.token))
        api_error(response, 422, "validation_failed", field)

    each(values, check)
    no_surveys()


def test_a_portrait_naming_a_member_past_the_id_range_is_not_a_server_error(ctx: Ctx) -> None:
    photo = jpeg(3)
    body = survey_with(
        ctx,
        photos=[{**manifest_entry("face", photo, "member_portrait"), "member_ref": "9" * 25}],
    )
    response = ctx.anon.post(
        "/api/v1/surveys",
        data={
            "survey": json.dumps(body),
            "face": (io.BytesIO(photo), "face.jpg", "image/jpeg"),
        },
        headers=bearer(ctx.token),
        content_type="multipart/form-data",
    )
    assert response.status_code == 201, response.get_json()


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/v1/auth/device-tokens", {"username": "caseworker_a\x00"}, "username"),
        ("/api/v1/auth/device-tokens", {"device_id": "tab\x00"}, "device_id"),
        ("/api/v1/auth/device-tokens", {"device_name": "平板\x00"}, "device_name"),
        ("/api/v1/auth/device-tokens", {"password": "\x00"}, "password"),
    ],
)
def test_nul_in_a_login_field_is_refused_naming_it(
    client: FlaskClient, path: str, body: dict[str, str], field: str
) -> None:
    api_error(device_login(client, **body), 422, "validation_failed", field)


@pytest.mark.parametrize(
    "raw",
    [
        '{"username": "caseworker_a", "password": NaN, "device_id": "t"}',
        '{"username": "caseworker_a", "password": "x", "device_id": Infinity}',
        '{"username": "caseworker_a", "password": "x", "device_id": 1e999}',
        '{"username": "\\udcff", "password": "x", "device_id": "t"}',
        '{"username": "a\\u0000b", "password": "x", "device_id": "t"}',
        '{"username": "caseworker_a", "password": "x", "device_id": ' + "9" * 5000 + "}",
    ],
)
def test_json_that_python_reads_but_no_database_keeps_is_refused(
    client: FlaskClient, raw: str
) -> None:
    response = client.post("/api/v1/auth/device-tokens", data=raw, content_type="application/json")
    api_error(response, 422, "validation_failed")


@pytest.mark.slow
@pytest.mark.parametrize("field", ["household_id", "member_id"])
def test_an_assisted_session_for_an_id_past_the_range_is_refused(ctx: Ctx, field: str) -> None:
    def check(value: str) -> None:
        body = {
            "household_id": ctx.household_id,
            "member_id": ctx.member_id,
            "gps": {"lat": 46.1, "lon": 122.0},
            field: int(value),
        }
        response = ctx.anon.post(
            "/api/v1/proof-of-life/sessions", json=body, headers=bearer(ctx.token)
        )
        api_error(response, 422, "validation_failed", field)

    each(HUGE_NUMBERS, check)


# --------------------------------------------------------------------------- deep JSON


@pytest.fixture
def limited(app: Flask, tmp_path: Path) -> FlaskClient:
    """The app with its rate limits on: the key functions read the body first."""
    strict = make_app(app.config["SQLALCHEMY_DATABASE_URI"], tmp_path, RATELIMIT_ENABLED=True)
    return strict.test_client()


@pytest.mark.slow
@pytest.mark.parametrize("body", [deep_json(), deep_object()], ids=["arrays", "objects"])
def test_json_nested_thousands_deep_is_refused_before_it_is_parsed(
    ctx: Ctx, limited: FlaskClient, body: str
) -> None:
    posts = [
        (limited, "/api/v1/auth/device-tokens", {}),
        (limited, "/api/v1/proof-of-life/sessions", {}),
        (ctx.anon, "/api/v1/proof-of-life/sessions", {}),
        (ctx.anon, "/api/v1/proof-of-life/sessions", bearer(ctx.token)),
        (ctx.anon, "/api/v1/surveys", bearer(ctx.token)),
    ]
    for client, path, headers in posts:
        response = client.post(path, data=body, content_type="application/json", headers=headers)
        api_error(response, 400, "json_too_deep")
    # The login page is a browser form: it never reads a JSON body (nor do its limits).
    page = limited.post("/login", data=body, content_type="application/json")
    assert page.status_code == 200 and b'name="username"' in page.data
    # JSON inside multipart fields: the survey part and the frames' offsets.
    survey = ctx.anon.post(
        "/api/v1/surveys",
        data={"survey": body},
        headers=bearer(ctx.token),
        content_type="multipart/form-data",
    )
    api_error(survey, 400, "json_too_deep")
    frames = ctx.anon.post(
        f"/api/v1/proof-of-life/sessions/{ctx.session_id}/frames",
        data={"nonce": ctx.nonce, "offsets_ms": body},
        content_type="multipart/form-data",
    )
    api_error(frames, 400, "json_too_deep")


def test_json_within_the_depth_limit_is_read(ctx: Ctx) -> None:
    nested: Any = "deep"
    for _ in range(safe_json.MAX_DEPTH - 1):
        nested = {"a": nested}
    body = survey_with(ctx, housing=nested)  # the survey itself is the first level
    response = ctx.anon.post("/api/v1/surveys", json=body, headers=bearer(ctx.token))
    assert response.status_code == 201, response.get_json()
    deeper = survey_with(ctx, housing={"a": nested})
    response = ctx.anon.post("/api/v1/surveys", json=deeper, headers=bearer(ctx.token))
    api_error(response, 400, "json_too_deep")


def test_a_json_body_over_the_size_limit_is_refused_before_it_is_read(client: FlaskClient) -> None:
    big = json.dumps({"username": "x" * safe_json.MAX_BYTES})
    response = client.post("/api/v1/auth/device-tokens", data=big, content_type="application/json")
    api_error(response, 413, "json_too_large")


def test_the_login_page_refuses_json_that_is_not_its_form(ctx: Ctx) -> None:
    for body in [{"username": {"a": 1}, "password": "x"}, [1, 2], {"username": ["x"]}, "x"]:
        response = ctx.anon.post("/login", json=body)
        assert response.status_code == 200, (body, response.status_code)
        assert b'name="username"' in response.data


# --------------------------------------------------------------------------- tokens


def test_non_ascii_tokens_are_no_match_never_a_server_error(ctx: Ctx) -> None:
    def check(value: str) -> None:
        link = ctx.anon.post("/api/v1/proof-of-life/sessions", json={"link_token": value})
        assert_refused(link)
        status = ctx.anon.get("/api/v1/proof-of-life/status", query_string={"link_token": value})
        assert_refused(status)
        frames = ctx.anon.post(
            f"/api/v1/proof-of-life/sessions/{ctx.session_id}/frames",
            data={"nonce": value, "frames": [(io.BytesIO(jpeg()), "f.jpg", "image/jpeg")]},
            content_type="multipart/form-data",
        )
        assert_refused(frames)

    each([v for v in NON_ASCII if v != "\udcff"] + ["é" * 24, "x" * 31 + "é"], check)
    # The same-length ASCII-looking nonce with one non-ASCII character is a mismatch.
    wrong = ctx.anon.post(
        f"/api/v1/proof-of-life/sessions/{ctx.session_id}/frames",
        data={
            "nonce": ctx.nonce[:-1] + "é",
            "frames": [(io.BytesIO(jpeg()), "f.jpg", "image/jpeg")],
        },
        content_type="multipart/form-data",
    )
    api_error(wrong, 403, "nonce_mismatch")


def test_non_ascii_device_tokens_and_credentials_are_refused(ctx: Ctx) -> None:
    latin = "dbt_" + "é" * 40
    bearer_token = ctx.anon.get("/api/v1/meta", headers={"Authorization": "Bearer " + latin})
    api_error(bearer_token, 401, "invalid_token")
    for username, password, status in [
        ("caseworker_a", latin, 401),
        # Logins are ASCII: any other name is told so, whether or not it exists
        # (docs/odk-collect.md).
        ("王小二", ctx.token, 403),
        ("caseworker_a", "dbt_\x00", 401),
        ("caseworker_a\x00", ctx.token, 401),
    ]:
        response = ctx.anon.get("/openrosa/formList", headers=basic(username, password))
        assert_refused(response, status)
    # Credentials that are not UTF-8 at all (ISO-8859-1, as Collect sends them): read as
    # ISO-8859-1, a login outside the ASCII rule, told so.
    raw = base64.b64encode("caseworker_é:".encode("latin-1") + ctx.token.encode()).decode()
    response = ctx.anon.get(
        "/openrosa/formList", headers={"Authorization": f"Basic {raw}", **OPENROSA}
    )
    assert_refused(response, 403)


# --------------------------------------------------------------------------- OpenRosa XML


XML_CASES = [
    ({"household_id": "99999999999999999999"}, "household_id"),
    ({"household_id": "2147483648"}, "household_id"),
    ({"household_id": "-1"}, "household_id"),
    ({"members": [("123456789012345678901234567890", "王大", "0", None)]}, "members[1]/member_id"),
    ({"gps": "NaN NaN"}, "gps"),
    ({"gps": "1e400 122"}, "gps"),
    ({"gps": "91 181"}, "gps"),
    ({"gps": "46.1 122.0 Infinity"}, "gps"),
    ({"members": [("", "王大", "NaN", None)]}, "members[1]/monthly_income"),
    ({"members": [("", "王大", "1e30", None)]}, "members[1]/monthly_income"),
]


@pytest.mark.slow
@pytest.mark.parametrize("case", range(len(XML_CASES)), ids=[c[1] for c in XML_CASES])
def test_an_openrosa_value_no_column_holds_is_refused_naming_the_form_field(
    ctx: Ctx, case: int
) -> None:
    changes, field = XML_CASES[case]
    household_id = changes.pop("household_id", ctx.household_id)
    xml = instance_xml(household_id, uuid.uuid4(), **changes)  # type: ignore[arg-type]
    response = submit(ctx.anon, basic("caseworker_a", ctx.token), xml)
    assert_refused(response, 422)
    assert field.encode() in response.data, response.data
    no_surveys()


@pytest.mark.slow
@pytest.mark.parametrize(
    "moment",
    [
        "0000-01-01T00:00:00.000+00:00",
        "0001-01-01T00:00:00.000+14:00",
        "9999-12-31T23:59:59.000-14:00",
        "2026-02-30T00:00:00.000+08:00",
    ],
)
def test_an_openrosa_time_out_of_range_is_refused(ctx: Ctx, moment: str) -> None:
    xml = instance_xml(ctx.household_id, uuid.uuid4())
    start = xml.index(b"<start>") + len(b"<start>")
    xml = xml[:start] + moment.encode() + xml[xml.index(b"</start>") :]
    response = submit(ctx.anon, basic("caseworker_a", ctx.token), xml)
    assert_refused(response, 422)
    assert b"start" in response.data
    no_surveys()


def test_unrouted_openrosa_paths_answer_in_openrosa(ctx: Ctx) -> None:
    response = ctx.anon.get("/openrosa/forms/a%00b.xml", headers=basic("caseworker_a", ctx.token))
    assert_refused(response, 404)


# --------------------------------------------------------------------------- forms


def test_nul_in_a_form_or_query_string_is_refused_before_any_view(ctx: Ctx) -> None:
    login = ctx.anon.post("/login", data={"username": "reviewer_a\x00", "password": "x"})
    assert_refused(login, 400)
    decision = ctx.staff.post(
        f"/cases/{ctx.case_code}/transitions", data={"action": "suspend", "reason": "a\x00b"}
    )
    assert_refused(decision, 400)
    api = ctx.anon.get("/api/v1/public/cases", query_string={"x\x00": "1"})
    api_error(api, 400, "invalid_parameter")


# --------------------------------------------------------------------------- Twilio


@pytest.mark.usefixtures("twilio_app")
def test_twilio_callbacks_with_odd_signatures_or_codes_are_never_server_errors(
    client: FlaskClient,
) -> None:
    params = {"MessageSid": "SM1", "From": "+8613900000000", "Body": "STOP"}
    for signature in [
        "é" * 28,
        "令牌",
        "a" * 1000,
        _signed("/sms/twilio/status", params)["X-Twilio-Signature"][:-1] + "é",
    ]:
        for path in ["/sms/twilio/status", "/sms/twilio/inbound"]:
            response = _post(client, path, params, headers={"X-Twilio-Signature": signature})
            assert response.status_code == 403, (signature, response.status_code)
    for code, kept in [("99999999999999999999", None), ("²", None), ("-5", None), ("30007", 30007)]:
        message_id = _sent_message()
        sid = _status(message_id).provider_sid = f"SM{code.encode().hex()}"
        db.session.commit()
        response = _post(
            client,
            "/sms/twilio/status",
            {"MessageSid": sid, "MessageStatus": "failed", "ErrorCode": code},
        )
        assert response.status_code == 204, (code, response.status_code)
        assert _status(message_id).error_code == kept
