"""The audit-log view (/console/audit): who may open it, its area scope (actors of the
area, and rows about the area's cases), its filters, order, paging and export."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from server.audit import service as audit
from server.audit.models import AuditEntry
from server.auth.models import Role, User
from server.cases.models import CaseState
from server.extensions import db
from tests import factories
from tests.conftest import login
from tests.console.planting import NOW, case, foreign_league, other_county, table_rows


def county_supervisor() -> User:
    found = db.session.scalar(select(User).where(User.username == "county_supervisor"))
    if found is None:
        found = User(
            username="county_supervisor",
            password_hash=factories.user("supervisor").password_hash,
            role=Role.SUPERVISOR,
            area=factories.areas().county,
        )
        db.session.add(found)
        db.session.flush()
    return found


def entry(action: str, actor: User | None, at: datetime = NOW, **kwargs: object) -> AuditEntry:
    row = audit.record(action, actor=actor, **kwargs)  # type: ignore[arg-type]
    row.at = at
    db.session.flush()
    return row


def plant() -> dict[str, str]:
    """Rows of each sort; returns the planted cases' codes."""
    area = factories.areas()
    county_supervisor()
    here = case(area.village_a, CaseState.SURVEYED)
    there = case(other_county()[0], CaseState.SURVEYED)
    reviewer = factories.user("reviewer_a")
    entry("case.township_review", reviewer, object_type="household", object_id=here.id)
    entry("member.read_personal", reviewer, object_type="member", object_id=1, household_id=here.id)
    entry("payment.suspended", None, object_type="household", object_id=here.id, month="2026-10")
    # The league's supervisor about a case of the county: shown through the case.
    entry(
        "photo.read",
        factories.user("supervisor"),
        object_type="survey_photo",
        object_id=9,
        household_id=here.id,
    )
    entry("auth.login", factories.user("supervisor"), object_type="user", object_id=0)
    entry(
        "case.township_review",
        factories.user("other_approver"),
        object_type="household",
        object_id=there.id,
    )
    entry("seed", None, households=3)  # a system row: no actor, no case
    entry(
        "visit.flag_cleared",
        reviewer,
        object_type="survey_flag",
        object_id=5,
        code="<script>alert(1)</script>",
        at=NOW - timedelta(hours=12, minutes=30),
    )
    codes = {"here": here.case_code, "there": there.case_code}
    db.session.commit()
    return codes


def rows_of(client: FlaskClient, query: str = "") -> list[dict[str, object]]:
    response = client.get(f"/console/audit{query}")
    assert response.status_code == 200, response.get_data(as_text=True)[:400]
    return table_rows(response.get_data(as_text=True))


def actions(rows: list[dict[str, object]]) -> list[object]:
    return [r["_attrs"]["data-action"] for r in rows]  # type: ignore[index]


WHO = {
    "caseworker_a": 403,
    "reviewer_a": 403,
    "approver": 403,
    "supervisor": 200,
    "admin": 200,
    "county_supervisor": 200,
}


@pytest.mark.parametrize("username", list(WHO))
def test_who_may_open_the_audit_log_and_its_exports(
    app: Flask, client: FlaskClient, clock: object, username: str
) -> None:
    county_supervisor()
    foreign_league()
    db.session.commit()
    login(client, username)
    for suffix in ("", "?format=csv", "?format=xlsx", "?person=admin"):
        assert client.get(f"/console/audit{suffix}").status_code == WHO[username], suffix
    # Outside every area (another league) or missing: 404 whatever the role.
    assert client.get("/console/audit?area=152500").status_code == 404
    assert client.get("/console/audit?area=999999&format=csv").status_code == 404


@pytest.mark.slow
def test_a_county_supervisor_sees_the_rows_of_the_county(
    app: Flask, client: FlaskClient, clock: object
) -> None:
    codes = plant()
    login(client, "county_supervisor")
    rows = rows_of(client)
    seen = set(actions(rows))
    assert {"case.township_review", "member.read_personal", "payment.suspended"} <= seen
    assert "photo.read" in seen  # the league's supervisor, about a case of the county
    assert "seed" not in seen  # the region's system rows: for the league only
    assert not [r for r in rows if r["person"] == "supervisor" and r["action"] == "登录"]
    assert not [r for r in rows if r["person"] == "other_approver"]
    assert codes["there"] not in {r["case_code"] for r in rows}
    # The other county is outside: 404; so is its case.
    assert client.get("/console/audit?area=152202").status_code == 404
    assert client.get(f"/console/audit?case={codes['there']}").status_code == 404
    client.post("/logout")
    login(client, "supervisor")
    seen = set(actions(rows_of(client)))
    assert {"seed", "auth.login"} <= seen
    assert codes["there"] in {r["case_code"] for r in rows_of(client)}
    assert "seed" not in set(actions(rows_of(client, "?area=152201")))


def test_filters_by_person_case_action_and_local_dates(
    app: Flask, client: FlaskClient, clock: object
) -> None:
    codes = plant()
    login(client, "supervisor")
    rows = rows_of(client, "?person=REVIEWER_A")
    assert {r["person"] for r in rows} == {"reviewer_a"}
    assert set(actions(rows)) == {
        "case.township_review",
        "member.read_personal",
        "visit.flag_cleared",
    }
    rows = rows_of(client, f"?case={codes['here'].lower()}")
    assert set(actions(rows)) == {
        "case.apply",  # the application, by the caseworker
        "case.township_review",
        "member.read_personal",
        "payment.suspended",
        "photo.read",
    }
    assert {r["case_code"] for r in rows} == {codes["here"]}
    rows = rows_of(client, "?action=case.")
    assert set(actions(rows)) == {"case.apply", "case.township_review"} and len(rows) == 4
    rows = rows_of(client, "?action=seed")
    assert actions(rows) == ["seed"]
    # 23:30 on the 21st, Beijing time: the 21st, not the 22nd.
    assert actions(rows_of(client, "?since=2026-11-21&until=2026-11-21")) == ["visit.flag_cleared"]
    assert "visit.flag_cleared" not in actions(rows_of(client, "?since=2026-11-22"))
    assert client.get("/console/audit?since=2026-13-01").status_code == 400
    assert client.get(f"/console/audit?person={'x' * 65}").status_code == 400
    assert client.get("/console/audit?case=NOSUCH").status_code == 404


def test_newest_first_paged_and_details_shown_safely(
    app: Flask, client: FlaskClient, clock: object
) -> None:
    plant()
    reviewer = factories.user("reviewer_a")
    for minute in range(55):
        entry(
            "auth.login",
            reviewer,
            at=NOW + timedelta(minutes=minute + 1),
            object_type="user",
            object_id=reviewer.id,
            channel="web",
        )
    db.session.commit()
    login(client, "supervisor")
    first = client.get("/console/audit?person=reviewer_a").get_data(as_text=True)
    rows = table_rows(first)
    assert len(rows) == 50
    times = [str(r["at"]) for r in rows]
    assert times == sorted(times, reverse=True)
    assert times[0] == "2026-11-22 12:55:00"  # local time
    assert "page=2" in first
    second = rows_of(client, "?person=reviewer_a&page=2")
    assert len(second) == 55 + 3 - 50
    html = client.get("/console/audit?action=visit.flag_cleared").get_data(as_text=True)
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;" in html
    assert "核销走访疑点" in html  # the action's label


def test_the_export_holds_every_matching_row_and_is_audited(
    app: Flask, client: FlaskClient, clock: object
) -> None:
    codes = plant()
    login(client, "county_supervisor")
    response = client.get(f"/console/audit?case={codes['here']}&format=csv")
    assert response.status_code == 200 and response.is_streamed
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True).lstrip("\ufeff"))))
    assert rows[0] == ["时间", "人员", "角色", "操作", "操作代码", "对象", "案件", "详情"]
    assert {r[4] for r in rows[1:]} == {
        "case.apply",
        "case.township_review",
        "member.read_personal",
        "payment.suspended",
        "photo.read",
    }
    assert {r[6] for r in rows[1:]} == {codes["here"]}
    found = db.session.scalar(
        select(AuditEntry)
        .where(AuditEntry.action == "export.downloaded")
        .order_by(AuditEntry.id.desc())
    )
    assert found is not None
    assert found.actor_id == county_supervisor().id
    assert found.object_id == "audit-log"
    assert found.details["filters"] == {"地区": "乌兰浩特市", "案件": codes["here"]}
