"""Everyone's worklist (/console/worklist): what waits on each role, by deadline,
overdue marked, township column and filter; a caseworker's visits due are the
tablet's list."""

from __future__ import annotations

from datetime import timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from server.audit.models import AuditEntry
from server.cases.models import CaseState
from server.extensions import db
from server.proof_of_life import service as pol
from tests import factories
from tests.conftest import login
from tests.console.planting import (
    MONTH,
    TODAY,
    case,
    contact_task,
    designated_head,
    foreign_league,
    month_in_review,
    table_rows,
)


def rows_of(client: FlaskClient, query: str = "") -> list[dict[str, object]]:
    response = client.get(f"/console/worklist{query}")
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    return table_rows(response.get_data(as_text=True))


def codes(rows: list[dict[str, object]], kind: str | None = None) -> set[object]:
    return {r["case_code"] for r in rows if kind is None or r["_attrs"]["data-kind"] == kind}  # type: ignore[index]


def test_a_township_reviewer_sees_the_cases_at_their_step_and_months_to_decide(
    app: Flask, client: FlaskClient, clock: object
) -> None:
    area = factories.areas()
    late = case(
        area.village_a, CaseState.SURVEYED, review_due_on=TODAY - timedelta(days=1)
    ).case_code
    notice = case(
        area.village_a2, CaseState.TOWNSHIP_REVIEWED, review_due_on=TODAY + timedelta(3)
    ).case_code
    applied = case(
        area.village_a, CaseState.APPLIED, review_due_on=TODAY + timedelta(days=9)
    ).case_code
    county = case(
        area.village_a,
        CaseState.IN_PUBLIC_NOTICE,
        notice_ends_on=TODAY - timedelta(days=1),
        decision_due_on=TODAY + timedelta(days=5),
    ).case_code
    elsewhere = case(
        area.village_b, CaseState.SURVEYED, review_due_on=TODAY - timedelta(days=2)
    ).case_code
    in_review = case(area.village_a, CaseState.APPROVED, next_review_on=TODAY)
    month_in_review(in_review)
    month_case = in_review.case_code
    mine = {late, notice, applied}
    db.session.commit()
    login(client, "reviewer_a")
    rows = rows_of(client)
    assert codes(rows, "decision") == mine
    assert codes(rows, "pol_decision") == {month_case}
    assert county not in codes(rows) and elsewhere not in codes(rows)
    # Soonest deadline first; the late one is marked.
    assert rows[0]["case_code"] == late
    assert rows[0]["_attrs"]["class"] == "overdue"  # type: ignore[index]
    assert rows[0]["deadline"] == (TODAY - timedelta(days=1)).isoformat()
    assert rows[0]["days_left"] == "-1"
    assert rows[0]["township"] == "义勒力特镇"
    deadlines = [str(r["deadline"]) for r in rows]
    assert deadlines == sorted(deadlines)
    by_code = {r["case_code"]: r for r in rows}
    assert by_code[month_case]["deadline"] == "2026-11-24"  # the window's last day
    assert by_code[notice]["what"] == "启动公示" or by_code[notice]["what"]


def test_a_county_approver_sees_notices_that_have_ended_with_a_township_filter(
    app: Flask, client: FlaskClient, clock: object
) -> None:
    area = factories.areas()
    ended_a = case(
        area.village_a,
        CaseState.IN_PUBLIC_NOTICE,
        notice_ends_on=TODAY - timedelta(days=1),
        decision_due_on=TODAY + timedelta(days=5),
    ).case_code
    ended_b = case(
        area.village_b,
        CaseState.IN_PUBLIC_NOTICE,
        notice_ends_on=TODAY,
        decision_due_on=TODAY + timedelta(days=6),
    ).case_code
    running = case(
        area.village_a,
        CaseState.IN_PUBLIC_NOTICE,
        notice_ends_on=TODAY + timedelta(days=2),
        decision_due_on=TODAY + timedelta(days=9),
    ).case_code
    surveyed = case(area.village_a, CaseState.SURVEYED, review_due_on=TODAY).case_code
    db.session.commit()
    login(client, "approver")
    rows = rows_of(client)
    assert codes(rows, "decision") == {ended_a, ended_b}
    assert running not in codes(rows) and surveyed not in codes(rows)
    assert [r["deadline"] for r in rows][:2] == ["2026-11-27", "2026-11-28"]
    rows = rows_of(client, "?township=152201101")
    assert codes(rows) == {ended_b}
    assert {r["township"] for r in rows} == {"葛根庙镇"}
    foreign_league()
    db.session.commit()
    assert client.get("/console/worklist?township=152202").status_code == 404
    assert client.get("/console/worklist?township=152500").status_code == 404


def test_a_caseworker_sees_the_tablets_visits_due_and_contact_tasks(
    app: Flask, client: FlaskClient, clock: object
) -> None:
    area = factories.areas()
    survey = case(
        area.village_a, CaseState.ACCEPTED, review_due_on=TODAY + timedelta(days=4)
    ).case_code
    review = case(
        area.village_a2, CaseState.APPROVED, next_review_on=TODAY - timedelta(days=2)
    ).case_code
    unreachable = case(area.village_a, CaseState.APPROVED, next_review_on=TODAY + timedelta(400))
    pol.month_record(designated_head(unreachable), MONTH)
    contact_task(unreachable)
    unreachable_code = unreachable.case_code
    applied = case(area.village_a, CaseState.APPLIED, review_due_on=TODAY + timedelta(9)).case_code
    elsewhere = case(area.village_b, CaseState.ACCEPTED, review_due_on=TODAY).case_code
    db.session.commit()
    reads = db.session.scalar(
        select(func.count()).where(AuditEntry.action == "member.read_personal")
    )
    login(client, "caseworker_a")
    rows = rows_of(client)
    assert codes(rows, "visit") == {survey, review, unreachable_code}
    assert codes(rows, "contact_task") == {unreachable_code}
    assert codes(rows, "decision") == {applied}  # accepting an application
    assert elsewhere not in codes(rows)
    assert rows[0]["case_code"] == review and rows[0]["_attrs"]["class"] == "overdue"  # type: ignore[index]
    task = next(r for r in rows if r["_attrs"]["data-kind"] == "contact_task")  # type: ignore[index]
    assert task["deadline"] == "2026-11-24" and "无手机号码" in str(task["what"])
    # The same rule as the tablet's list: every visit due there is here.
    db.session.expire_all()
    from server.visits.queries import due_visits

    due = due_visits(
        factories.user("caseworker_a"),
        today=TODAY,
        window_days=app.config["DIBAO_DUE_WINDOW_DAYS"],
        shows_names=False,
    )
    assert {v.case_code for v in due} == codes(rows, "visit")
    # No names or addresses shown: no read of personal data recorded.
    db.session.rollback()
    assert (
        db.session.scalar(select(func.count()).where(AuditEntry.action == "member.read_personal"))
        == reads
    )


@pytest.mark.parametrize("username", ["supervisor", "admin", "reviewer_b"])
def test_nothing_waits_on_some_users(
    app: Flask, client: FlaskClient, clock: object, username: str
) -> None:
    case(factories.areas().village_a, CaseState.SURVEYED, review_due_on=TODAY)
    db.session.commit()
    login(client, username)
    response = client.get("/console/worklist")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert not [r for r in table_rows(html) if "data-kind" in r["_attrs"]]
    assert "暂无待办事项" in html


@pytest.mark.parametrize(
    "username", ["caseworker_a", "reviewer_a", "approver", "supervisor", "admin"]
)
def test_every_role_opens_its_worklist_and_its_exports(
    app: Flask, client: FlaskClient, clock: object, username: str
) -> None:
    login(client, username)
    html = client.get("/console/worklist").get_data(as_text=True)
    assert 'href="/console/worklist"' in html  # in the navigation, for everyone
    for fmt in ("csv", "xlsx"):
        assert client.get(f"/console/worklist?format={fmt}").status_code == 200
    assert client.get("/console/worklist?township=999999999").status_code == 404


def test_the_campaign_page_links_to_the_worklist(
    app: Flask, client: FlaskClient, clock: object
) -> None:
    login(client, "reviewer_a")
    assert 'href="/console/worklist"' in client.get("/campaign").get_data(as_text=True)
