"""The public page and open data: generalization on real cases, filters and pages,
caching (ETag, no cookie), refresh on change, bad query strings, rate limits."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event, func, select

from server.cases.codes import EXAMPLE_CASE_CODE, normalize_case_code
from server.cases.models import CaseEvent, CaseState, Household
from server.cases.workflow import transition
from server.extensions import db
from server.proof_of_life.models import MonthStatus, ProofOfLifeMonth
from server.public import changes
from server.public.models import PublicDirty, PublicSnapshot
from server.public.tasks import refresh_public_task
from tests import factories
from tests.conftest import login, make_app


def households(n: int, **kwargs: Any) -> list[str]:
    """The case codes of households made and committed. Requests and snapshot builds
    detach or expire objects (see conftest): tests read a case again with ``case()``."""
    made = [factories.make_household(**kwargs) for _ in range(n)]
    db.session.commit()
    return [household.case_code for household in made]


def case(code: str) -> Household:
    found = db.session.scalar(select(Household).where(Household.case_code == code))
    assert found is not None
    return found


def items(client: FlaskClient, query: str = "") -> list[dict[str, Any]]:
    """Every case of the JSON list, following the next links."""
    url: str | None = f"/api/v1/public/cases?limit=100{query}"
    found: list[dict[str, Any]] = []
    while url:
        answer = client.get(url)
        assert answer.status_code == 200, answer.get_json()
        body = answer.get_json()
        found.extend(body["items"])
        url = body["next"]
        if url:
            parts = urlsplit(url)
            url = f"{parts.path}?{parts.query}"
    return found


@pytest.fixture
def public_rules(app: Flask) -> Iterator[Any]:
    """Change the region's [public] rules for one test."""
    original = app.config["REGION"]

    def use(**changes_: Any) -> None:
        app.config["REGION"] = dataclasses.replace(
            original, public=dataclasses.replace(original.public, **changes_)
        )

    yield use
    app.config["REGION"] = original


def test_small_groups_are_shown_at_the_township_and_tiny_counties_not_at_all(
    app: Flask, client: FlaskClient
) -> None:
    area = factories.areas()
    big = households(5, village=area.village_a)  # A, two members: five alike
    small_a = households(3, village=area.village_a2)
    small_b = households(2, village=area.village_a2, class_code="B")
    changes.refresh(force=True)
    big_codes = big
    small_codes = small_a + small_b

    published = {item["case_code"]: item for item in items(client)}
    assert len(published) == 10
    for code in big_codes:
        item = published[code]
        assert item["village"] == {"code": "152201100201", "name": "红旗村"}
        assert (item["class"], item["household_size"]) == ("A", "2")
    for code in small_codes:
        item = published[code]
        # A at 东升嘎查 (3) and B (2): below five alike even without the village and
        # the size band; together, without their class, they are five.
        assert item["village"] is None
        assert item["township"] == {"code": "152201100", "name": "义勒力特镇"}
        assert item["class"] is None and item["household_size"] is None
        assert item["county"]["code"] == "152201"

    lonely = households(1, village=factories.areas().village_b)[0]
    changes.refresh(force=True)
    # One case alone in its township: it joins the county's smallest published group
    # (the five of 义勒力特镇 that were already shown without a class) at the county.
    item = client.get(f"/api/v1/public/cases/{lonely}").get_json()
    assert item["township"] is None and item["county"]["code"] == "152201"
    stats = client.get("/api/v1/public/stats").get_json()
    assert stats["cases"] == {"published": 11, "withheld": 0}


def test_a_county_with_fewer_than_k_cases_publishes_nothing(
    app: Flask, client: FlaskClient
) -> None:
    few = households(4)
    changes.refresh(force=True)
    body = client.get("/api/v1/public/cases").get_json()
    assert body["items"] == [] and body["total"] == 0
    assert client.get("/api/v1/public/stats").get_json()["cases"] == {
        "published": 0,
        "withheld": 4,
    }
    missing = client.get(f"/api/v1/public/cases/{few[0]}")
    assert missing.status_code == 404
    assert "没有编号为" in missing.get_json()["error"]["message"]


def test_a_case_shows_its_history_amount_and_this_years_proof_of_life(
    app: Flask, client: FlaskClient, public_rules: Any
) -> None:
    code = households(5, state=CaseState.APPROVED)[0]
    case_ = case(code)
    case_.monthly_allowance = Decimal("523.40")
    for action, state, at in (
        ("accept", "accepted", datetime(2026, 3, 31, 17, 0, tzinfo=UTC)),  # 04-01 in Beijing
        ("approve", "approved", datetime(2026, 5, 10, 2, 0, tzinfo=UTC)),
    ):
        db.session.add(
            CaseEvent(household=case_, action=action, to_state=state, at=at, reason="秘密理由")
        )
    member = case_.members[0]
    for month, status in (("2026-09", MonthStatus.PASSED), ("2026-10", MonthStatus.MISSED)):
        db.session.add(
            ProofOfLifeMonth(
                member_id=member.id,
                household_id=case_.id,
                month=month,
                status=status,
                window_closes_at=datetime(2026, 10, 25, tzinfo=UTC),
            )
        )
    db.session.add(  # last year's is not this year's record
        ProofOfLifeMonth(
            member_id=member.id,
            household_id=case_.id,
            month="2025-12",
            status=MonthStatus.MISSED,
            window_closes_at=datetime(2025, 12, 25, tzinfo=UTC),
        )
    )
    db.session.commit()
    changes.refresh(force=True)

    item = client.get(f"/api/v1/public/cases/{code}").get_json()
    assert item["status"] == "approved"
    assert item["monthly_amount"] == "500-600"  # banded by default
    months = [(c["status"], c["month"]) for c in item["status_changes"]]
    assert ("accepted", "2026-04") in months and ("approved", "2026-05") in months
    assert item["proof_of_life"] == [
        {"month": "2026-09", "result": "passed"},
        {"month": "2026-10", "result": "missed"},
    ]
    assert "masked_name" not in item
    page = client.get(f"/public/cases/{code}")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "保障中" in html and "2026-10" in html
    assert "秘密理由" not in html and "王大" not in html

    public_rules(amount="exact")
    changes.refresh(force=True)
    assert client.get(f"/api/v1/public/cases/{code}").get_json()["monthly_amount"] == "523.40"
    public_rules(amount="hidden")
    changes.refresh(force=True)
    assert client.get(f"/api/v1/public/cases/{code}").get_json()["monthly_amount"] is None


def test_filters_pages_and_the_csv_agree(app: Flask, client: FlaskClient) -> None:
    area = factories.areas()
    households(7, village=area.village_a, state=CaseState.APPROVED)
    households(6, village=area.village_b, state=CaseState.APPLIED)
    changes.refresh(force=True)

    everything = items(client)
    codes = [item["case_code"] for item in everything]
    assert len(codes) == 13 and codes == sorted(codes) and len(set(codes)) == 13

    first = client.get("/api/v1/public/cases?limit=5").get_json()
    assert first["total"] == 13 and len(first["items"]) == 5 and first["next"]
    pages = []
    url: str | None = "/api/v1/public/cases?limit=5"
    while url:
        body = client.get(url).get_json()
        pages.append([i["case_code"] for i in body["items"]])
        url = body["next"] and "/api/v1/public/cases?" + urlsplit(body["next"]).query
    assert [len(p) for p in pages] == [5, 5, 3]
    assert [code for page in pages for code in page] == codes

    approved = items(client, "&status=approved")
    assert len(approved) == 7 and {i["township"]["code"] for i in approved} == {"152201100"}
    in_b = client.get("/api/v1/public/cases?township=152201101").get_json()
    assert in_b["total"] == 6
    assert client.get("/api/v1/public/cases?village=152201100201&class=A").get_json()["total"] == 7

    csv = client.get("/public/cases.csv?township=152201101")
    assert csv.mimetype == "text/csv"
    lines = csv.get_data(as_text=True).lstrip("\ufeff").splitlines()
    assert lines[0].startswith("case_code,county_code,county,township_code")
    assert "masked_name" not in lines[0]  # the region shows no names at all
    assert sorted(line.split(",")[0] for line in lines[1:]) == sorted(
        i["case_code"] for i in items(client, "&township=152201101")
    )

    html = client.get("/public?township=152201100&lang=en").get_data(as_text=True)
    assert "7 cases." in html and "Active" in html
    assert html.count("/public/cases/") == 7


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("township=999", "no township with the code 999"),
        ("village=152201101201&township=152201100", "is not in township"),
        ("status=alive", "Unknown status alive"),
        ("class=Z", "Unknown class Z"),
        ("limit=1000", "limit must be a whole number from 1 to 100"),
        ("limit=-1", "limit must be a whole number"),
        ("after=not-a-code", "after must be a case code"),
        ("township=" + "9" * 200, "The value of township is not valid"),
    ],
)
def test_bad_filters_get_a_specific_400(
    app: Flask, client: FlaskClient, query: str, message: str
) -> None:
    households(5)
    changes.refresh(force=True)
    answer = client.get(f"/api/v1/public/cases?{query}&lang=en")
    assert answer.status_code == 400
    assert message in answer.get_json()["error"]["message"]
    page = client.get(f"/public?{query}&lang=en")
    assert page.status_code == 400 and message in page.get_data(as_text=True)


NAMES = ["township", "village", "status", "class", "limit", "after", "code", "lang", "x"]


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    query=st.lists(st.tuples(st.sampled_from(NAMES), st.text(max_size=80)), max_size=6),
    path=st.sampled_from(
        [
            "/public",
            "/api/v1/public/cases",
            "/public/cases.csv",
            "/api/v1/public/stats",
            "/public/data",
        ]
    ),
)
def test_no_query_string_ever_gets_a_5xx(
    app: Flask, client: FlaskClient, query: list[tuple[str, str]], path: str
) -> None:
    answer = client.get(path, query_string=query)
    assert answer.status_code in (200, 302, 400), (path, query, answer.status_code)


@given(case_code=st.text(max_size=100))
@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_no_case_code_ever_gets_a_5xx(app: Flask, client: FlaskClient, case_code: str) -> None:
    for path in ("/public/cases/", "/api/v1/public/cases/"):
        answer = client.get(path + case_code.replace("/", "").replace("?", "").replace("#", ""))
        assert answer.status_code in (200, 308, 404), (path, case_code)


def test_the_pages_own_example_code_is_a_code_that_finds_no_case(
    app: Flask, client: FlaskClient
) -> None:
    households(5)
    changes.refresh(force=True)
    assert f'placeholder="{EXAMPLE_CASE_CODE}"' in client.get("/public").get_data(as_text=True)
    assert normalize_case_code(EXAMPLE_CASE_CODE) == EXAMPLE_CASE_CODE
    search = client.get("/public", query_string={"code": EXAMPLE_CASE_CODE, "lang": "en"})
    assert search.status_code == 302
    answer = client.get(search.headers["Location"])
    assert answer.status_code == 404
    assert f"No published case has the code {EXAMPLE_CASE_CODE}." in answer.get_data(as_text=True)
    # A mistyped code is refused, and the message shows the example.
    typo = client.get("/public", query_string={"code": "7K3QF-M9X2A-4", "lang": "en"})
    assert typo.status_code == 400
    assert f"A case code looks like {EXAMPLE_CASE_CODE}." in typo.get_data(as_text=True)


def test_answers_are_cacheable_and_never_carry_a_cookie(app: Flask, client: FlaskClient) -> None:
    households(5)
    changes.refresh(force=True)
    login(client, "supervisor")  # a staff session cookie comes along
    for url in (
        "/public",
        "/api/v1/public/cases",
        "/api/v1/public/stats",
        "/public/cases.csv",
        "/public/data",
    ):
        first = client.get(url)
        assert first.status_code == 200
        assert "Set-Cookie" not in first.headers
        assert "Cookie" not in first.headers.get("Vary", "")
        assert first.headers["Cache-Control"] == "public, max-age=60"
        again = client.get(url, headers={"If-None-Match": first.headers["ETag"]})
        assert again.status_code == 304 and again.data == b""
    # The staff name never shows: the page is the same for everyone.
    assert "supervisor" not in client.get("/public").get_data(as_text=True)
    zh = client.get("/public")
    en = client.get("/public?lang=en")
    assert zh.headers["ETag"] != en.headers["ETag"]
    assert "低保公示" in zh.get_data(as_text=True)
    assert "Subsistence allowance public notice" in en.get_data(as_text=True)


def test_a_second_identical_request_is_served_from_memory(app: Flask, client: FlaskClient) -> None:
    code = households(5)[0]
    changes.refresh(force=True)
    selects: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            selects.append(statement)

    app.config["DIBAO_PUBLIC_REFRESH"] = "background"  # no staleness check per request
    event.listen(db.engine, "before_cursor_execute", record)
    try:
        for url in ("/public?lang=en", "/api/v1/public/cases", f"/api/v1/public/cases/{code}"):
            first = client.get(url)
            selects.clear()
            second = client.get(url)
            # Only "which snapshot is current" (asked every time in tests).
            assert len(selects) == 1 and "public_snapshots" in selects[0], (url, selects)
            assert second.data == first.data and second.headers["ETag"] == first.headers["ETag"]
            assert second.content_type == first.content_type
        selects.clear()
        other = client.get("/api/v1/public/cases?limit=2")  # another URL: rendered anew
        assert len(other.get_json()["items"]) == 2 and len(selects) == 2
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
        app.config["DIBAO_PUBLIC_REFRESH"] = "inline"


def test_the_search_box_takes_a_code_as_people_type_it(app: Flask, client: FlaskClient) -> None:
    code = households(5)[0]
    changes.refresh(force=True)
    typed = code.replace("-", "").lower()
    answer = client.get(f"/public?code={typed}&lang=en")
    assert answer.status_code == 302
    assert answer.headers["Location"].endswith(f"/public/cases/{code}?lang=en")
    assert code in client.get(answer.headers["Location"]).get_data(as_text=True)
    wrong = client.get("/public?code=12345&lang=en")
    assert wrong.status_code == 400 and "is not a case code" in wrong.get_data(as_text=True)


def test_a_change_is_recorded_and_the_next_view_shows_it(app: Flask, client: FlaskClient) -> None:
    code = households(5)[0]
    changes.refresh(force=True)
    snapshot = changes.current_ready()
    assert snapshot is not None and not changes.is_stale(snapshot)
    assert changes.refresh() is None  # nothing changed: nothing built

    token = db.session.scalar(select(PublicSnapshot.token))
    transition(case(code), "accept", actor=factories.user("caseworker_a"))
    db.session.commit()
    assert db.session.scalar(select(func.count()).select_from(PublicDirty)) > 0
    assert changes.is_stale(changes.current_ready())
    # The embedded default absorbs the change on the next view, in place: the same
    # snapshot (one copy of the rows), a new token (ETag).
    item = client.get(f"/api/v1/public/cases/{code}").get_json()
    assert item["status"] == "accepted"
    assert db.session.scalar(select(func.count()).select_from(PublicSnapshot)) == 1
    assert db.session.scalar(select(PublicSnapshot.token)) != token
    assert db.session.scalar(select(func.count()).select_from(PublicDirty)) == 0


def test_with_a_broker_the_beat_task_rebuilds_not_the_request(
    app: Flask, client: FlaskClient
) -> None:
    code = households(5)[0]
    changes.refresh(force=True)
    transition(case(code), "accept", actor=factories.user("caseworker_a"))
    db.session.commit()
    app.config["DIBAO_PUBLIC_REFRESH"] = "background"
    # The task as this app's Celery runs it (a test that built its own app made that
    # app's Celery the default one, which ``refresh_public_task.delay()`` would use).
    task = app.extensions["celery"].tasks[refresh_public_task.name]
    try:
        url = f"/api/v1/public/cases/{code}"
        assert client.get(url).get_json()["status"] == "applied"  # the old snapshot
        built = task.delay().get()
        assert built is not None
        assert client.get(url).get_json()["status"] == "accepted"
        assert task.delay().get() is None
    finally:
        app.config["DIBAO_PUBLIC_REFRESH"] = "inline"


def test_a_failed_build_leaves_the_previous_snapshot(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = households(5)[0]
    changes.refresh(force=True)
    from server.public import snapshot as builder

    def broken(*args: Any, **kwargs: Any) -> list[object]:
        raise RuntimeError("disk full")

    monkeypatch.setattr(builder, "_payment_stats", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        changes.refresh(force=True)
    states = db.session.scalars(select(PublicSnapshot.state)).all()
    assert states == ["ready"]  # the half-built one is gone, the old one serves
    assert client.get(f"/api/v1/public/cases/{code}").status_code == 200


def test_masked_names_only_where_k_cases_share_them(
    app: Flask, client: FlaskClient, public_rules: Any
) -> None:
    codes = households(6)  # heads all named 王大 by the factory
    case(codes[5]).members[0].name = "李四"
    db.session.commit()
    public_rules(masked_names=True)
    changes.refresh(force=True)
    shown = {i["case_code"]: i["masked_name"] for i in items(client)}
    # Five 王* and one 李*: the one unnamed case would stand out, so no name at all.
    assert set(shown.values()) == {None}
    case(codes[5]).members[0].name = "王五"
    db.session.commit()
    changes.refresh(force=True)
    assert set(i["masked_name"] for i in items(client)) == {"王*"}
    table = client.get("/public/cases.csv").get_data(as_text=True).lstrip("\ufeff")
    header, *rows = table.splitlines()
    column = header.split(",").index("masked_name")
    assert [row.split(",")[column] for row in rows] == ["王*"] * 6
    assert "王大" not in client.get("/public").get_data(as_text=True)


def test_public_requests_are_rate_limited_per_address(databases: Any, tmp_path: Path) -> None:
    limited = make_app(
        databases.new("public_limits"),
        tmp_path,
        RATELIMIT_ENABLED=True,
        DIBAO_PUBLIC_RATE_LIMIT="3 per minute",
    )
    from flask_migrate import upgrade

    with limited.app_context():
        upgrade(directory=limited.extensions["migrate"].directory)
    client = limited.test_client()
    statuses = [client.get("/api/v1/public/stats").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    assert client.get("/api/v1/public/cases").get_json()["error"]["code"] == "rate_limited"
    other = client.get("/api/v1/public/stats", environ_base={"REMOTE_ADDR": "10.0.0.9"})
    assert other.status_code == 200
    page = client.get("/public?lang=en")
    assert page.status_code == 429 and "Set-Cookie" not in page.headers


def test_the_data_dictionary_describes_every_csv_column(app: Flask, client: FlaskClient) -> None:
    html = client.get("/public/data?lang=en").get_data(as_text=True)
    from server.public.schemas import CSV_COLUMNS

    for column in CSV_COLUMNS:
        if column in ("masked_name",):
            continue
        assert re.search(rf"\b{column}\b", html), column
    assert "banded" not in html and "band of 100 yuan" in html
