"""The exceptions inbox (/console/exceptions): planted exceptions of each kind with
their deadline and age, filters, sorting, area scope, who may open it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from server.auth.models import User
from server.cases.models import CaseState, Household
from server.extensions import db
from server.proof_of_life import service as pol
from server.proof_of_life.models import ContactTask, MonthStatus
from tests import factories
from tests.conftest import QueryCounter, login
from tests.console.planting import (
    MONTH,
    NOW,
    TODAY,
    case,
    contact_task,
    designated_head,
    failed_reminder,
    flagged_visit,
    foreign_league,
    month_in_review,
    other_county,
    page_text,
    table_rows,
)

NOVEMBER_LAST_DAY = "2026-11-24"  # the window 20th-24th (closes on the 25th, 00:00)
OCTOBER_LAST_DAY = "2026-10-24"


@dataclass
class Planted:
    """The planted cases (their codes: objects do not outlive a request)."""

    decision: str  # in public notice, county decision 3 days late (township A)
    township_step: str  # surveyed, township review 5 days late (township B)
    review: str  # active, periodic review 10 days late (township A)
    flagged: str  # active, review due today, one open flag (township A)
    in_review: str  # active, November's proof of life under review (township B)
    undelivered: str  # November's reminder failed (township A)
    task: str  # October's contact task, still open (township B)
    elsewhere: str  # another county: a decision 7 days late


def plant() -> Planted:
    area = factories.areas()
    a, b = area.village_a, area.village_b
    cases = dict(
        decision=case(a, CaseState.IN_PUBLIC_NOTICE, decision_due_on=TODAY - timedelta(days=3)),
        township_step=case(b, CaseState.SURVEYED, review_due_on=TODAY - timedelta(days=5)),
        review=case(a, CaseState.APPROVED, next_review_on=TODAY - timedelta(days=10)),
        flagged=case(a, CaseState.APPROVED, next_review_on=TODAY),
        in_review=case(b, CaseState.APPROVED, next_review_on=TODAY + timedelta(days=90)),
        undelivered=case(a, CaseState.APPROVED, next_review_on=TODAY + timedelta(days=90)),
        task=case(b, CaseState.APPROVED, next_review_on=TODAY + timedelta(days=90)),
        elsewhere=case(
            other_county()[0], CaseState.IN_PUBLIC_NOTICE, decision_due_on=TODAY - timedelta(days=7)
        ),
    )
    flagged_visit(cases["flagged"])
    flagged_visit(cases["flagged"], "gps_mock", cleared_at=NOW, clear_reason="ok")
    month_in_review(cases["in_review"])
    failed_reminder(cases["undelivered"])
    failed_reminder(cases["undelivered"], "2026-09")  # its grace period is over
    contact_task(cases["task"], "2026-10")
    # Not exceptions: a decision not yet due, a closed case, a resolved task.
    case(a, CaseState.IN_PUBLIC_NOTICE, decision_due_on=TODAY + timedelta(days=2))
    case(a, CaseState.REJECTED, review_due_on=TODAY - timedelta(days=9))
    contact_task(case(a, CaseState.APPROVED, next_review_on=TODAY), resolved_at=NOW)
    planted = Planted(**{name: household.case_code for name, household in cases.items()})
    db.session.commit()
    return planted


def rows_of(client: FlaskClient, query: str = "") -> list[dict[str, str]]:
    response = client.get(f"/console/exceptions{query}")
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    return table_rows(response.get_data(as_text=True))


def by_case(rows: list[dict[str, str]]) -> dict[str, list[dict[str, str]]]:
    found: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        found.setdefault(row["case_code"], []).append(row)
    return found


@pytest.mark.slow
def test_each_planted_exception_is_listed_with_its_deadline_and_age(
    app: Flask, client: FlaskClient, clock: object
) -> None:
    planted = plant()
    login(client, "approver")
    rows = rows_of(client)
    got = {
        (r["_attrs"]["data-kind"], r["case_code"], r["deadline"], r["age"], r["township"])
        for r in rows
    }
    assert got == {
        ("overdue_decision", planted.decision, "2026-11-19", "3", "义勒力特镇"),
        ("overdue_decision", planted.township_step, "2026-11-17", "5", "葛根庙镇"),
        ("overdue_review", planted.review, "2026-11-12", "10", "义勒力特镇"),
        ("open_flag", planted.flagged, "—", "4", "义勒力特镇"),
        ("pol_review", planted.in_review, NOVEMBER_LAST_DAY, "1", "葛根庙镇"),
        ("undelivered", planted.undelivered, NOVEMBER_LAST_DAY, "2", "义勒力特镇"),
        ("contact_task", planted.task, OCTOBER_LAST_DAY, "2", "葛根庙镇"),
    }
    html = client.get("/console/exceptions").get_data(as_text=True)
    # Labels, not codes; each case links to its page; overdue rows marked.
    assert "决定逾期" in html and "定期复核逾期" in html
    assert f'href="/cases/{planted.decision}"' in html
    decision = by_case(rows)[planted.decision][0]
    assert decision["_attrs"]["class"] == "overdue"
    assert decision["village"] == "红旗村"
    flag = by_case(rows)[planted.flagged][0]
    assert flag["detail"] and "gps_far_from_home" not in flag["detail"]


def test_filters_by_kind_and_township(app: Flask, client: FlaskClient, clock: object) -> None:
    planted = plant()
    login(client, "approver")
    rows = rows_of(client, "?kind=overdue_decision")
    assert {r["case_code"] for r in rows} == {
        planted.decision,
        planted.township_step,
    }
    rows = rows_of(client, "?township=152201101")
    assert {r["township"] for r in rows} == {"葛根庙镇"}
    assert {r["case_code"] for r in rows} == {
        planted.township_step,
        planted.in_review,
        planted.task,
    }
    # Drill-down: the townships below, each a link to its own inbox.
    html = client.get("/console/exceptions?kind=open_flag").get_data(as_text=True)
    assert 'href="/console/exceptions?area=152201100&amp;kind=open_flag"' in html
    assert 'href="/console/exceptions?area=152201101&amp;kind=open_flag"' in html
    rows = rows_of(client, "?township=152201101&kind=contact_task")
    assert [r["case_code"] for r in rows] == [planted.task]
    # A township of another county, or a village code: no such area.
    assert client.get("/console/exceptions?township=152202100").status_code == 404
    assert client.get("/console/exceptions?township=152201100201").status_code == 404
    assert client.get("/console/exceptions?kind=bogus").status_code == 400
    assert client.get("/console/exceptions?sort=name").status_code == 400


def test_sorts_by_deadline_age_kind_and_township(
    app: Flask, client: FlaskClient, clock: object
) -> None:
    plant()
    login(client, "approver")

    def deadlines(rows: list[dict[str, str]]) -> list[str]:
        return [r["deadline"] for r in rows]

    rows = rows_of(client)  # by deadline, soonest first, none last
    dated = [d for d in deadlines(rows) if d != "—"]
    assert dated == sorted(dated) and deadlines(rows)[-1] == "—"
    rows = rows_of(client, "?sort=-deadline")
    dated = [d for d in deadlines(rows) if d != "—"]
    assert dated == sorted(dated, reverse=True) and deadlines(rows)[-1] == "—"
    ages = [int(r["age"]) for r in rows_of(client, "?sort=-age")]
    assert ages == sorted(ages, reverse=True) and ages[0] == 10
    ages = [int(r["age"]) for r in rows_of(client, "?sort=age")]
    assert ages == sorted(ages)
    kinds = [r["_attrs"]["data-kind"] for r in rows_of(client, "?sort=kind")]
    assert kinds[0] == "overdue_decision" and kinds[-1] == "contact_task"
    townships = [r["township"] for r in rows_of(client, "?sort=township")]
    assert townships == sorted(townships)


@pytest.mark.slow
def test_area_scope(app: Flask, client: FlaskClient, clock: object) -> None:
    planted = plant()
    foreign_league()
    db.session.commit()
    login(client, "approver")
    codes = {r["case_code"] for r in rows_of(client)}
    assert planted.elsewhere not in codes
    # Another county, another league, a code that does not exist: the same 404.
    missing = client.get("/console/exceptions?area=999999")
    assert missing.status_code == 404
    for code in ("152202", "152500", "152202100"):
        other = client.get(f"/console/exceptions?area={code}")
        assert other.status_code == 404
        assert page_text(other) == page_text(missing)
    # A township below: only its rows.
    codes = {r["case_code"] for r in rows_of(client, "?area=152201100")}
    assert codes == {
        planted.decision,
        planted.review,
        planted.flagged,
        planted.undelivered,
    }
    client.post("/logout")
    login(client, "supervisor")  # the league: both counties
    codes = {r["case_code"] for r in rows_of(client)}
    assert planted.elsewhere in codes
    codes = {r["case_code"] for r in rows_of(client, "?area=152202")}
    assert codes == {planted.elsewhere}
    client.post("/logout")
    login(client, "reviewer_a")  # township A only
    codes = {r["case_code"] for r in rows_of(client)}
    assert planted.township_step not in codes
    assert planted.decision in codes
    assert client.get("/console/exceptions?area=152201101").status_code == 404


# role -> status of the own area's inbox (the other league is 404 for everyone).
WHO = {
    "caseworker_a": 403,
    "reviewer_a": 200,
    "approver": 200,
    "supervisor": 200,
    "admin": 403,
}


@pytest.mark.parametrize("username", list(WHO))
def test_who_may_open_the_inbox_and_its_exports(
    app: Flask, client: FlaskClient, clock: object, username: str
) -> None:
    foreign_league()
    db.session.commit()
    login(client, username)
    for suffix in ("", "?format=csv", "?format=xlsx"):
        assert client.get(f"/console/exceptions{suffix}").status_code == WHO[username], suffix
    for suffix in ("", "&format=csv"):
        assert client.get(f"/console/exceptions?area=152500{suffix}").status_code == 404
    assert client.get("/console/exceptions?format=pdf").status_code in (400, 403)


@pytest.mark.slow
def test_one_query_per_kind_whatever_the_number_of_rows(
    app: Flask, client: FlaskClient, clock: object, count_queries: QueryCounter
) -> None:
    plant()
    login(client, "approver")
    client.get("/console/exceptions")  # warm: the session's user, babel, ...
    count_queries.count = 0
    client.get("/console/exceptions")
    few = count_queries.count
    plant()
    plant()
    count_queries.count = 0
    rows = rows_of(client)
    assert count_queries.count == few
    assert len(rows) == 3 * 7 + 0  # every planted exception thrice (the other county's aside)
    assert few <= 12


def test_overdue_decisions_follow_the_same_rule_as_the_progress_home(
    app: Flask, client: FlaskClient, clock: object
) -> None:
    """One deadline rule (server.cases.deadlines) for the inbox, the worklists and the
    progress home's numbers: a case sent back from its public notice to an earlier
    step waits for the township again, by the whole review's deadline, not by the
    county's deadline its notice had set."""
    planted = plant()
    area = factories.areas()
    sent_back = case(
        area.village_a,
        CaseState.ACCEPTED,
        review_due_on=TODAY + timedelta(days=4),
        decision_due_on=TODAY - timedelta(days=2),
    ).case_code
    db.session.commit()
    login(client, "supervisor")
    listed = [
        r["case_code"]
        for r in rows_of(client, "?area=152201&kind=overdue_decision")
        if r["_attrs"]["data-kind"] == "overdue_decision"
    ]
    assert sorted(listed) == sorted([planted.decision, planted.township_step])
    assert sent_back not in listed
    home = client.get("/console/?area=152201").get_data(as_text=True)
    overdue = re.findall(
        r'data-key="overdue:[a-z_]+" data-area="152201" href="[^"]+">(\d+)</a>', home
    )
    assert overdue and sum(int(n) for n in overdue) == len(listed)


def test_a_contact_task_is_done_once_the_member_is_reached(
    app: Flask, client: FlaskClient, clock: object
) -> None:
    """A contact task leaves the inbox and the worklist when the member's month goes
    to a reviewer or is decided (here: exempted, then another member's reviewed)."""
    area = factories.areas()
    exempted = case(area.village_a, CaseState.APPROVED, next_review_on=TODAY)
    reviewed = case(area.village_a, CaseState.APPROVED, next_review_on=TODAY)
    for household in (exempted, reviewed):
        contact_task(household)
    codes = (exempted.case_code, reviewed.case_code)
    ids = (exempted.id, reviewed.id)
    db.session.commit()
    login(client, "approver")

    def listed() -> set[str]:
        return {r["case_code"] for r in rows_of(client, "?kind=contact_task")}

    assert listed() == set(codes)
    reviewer = db.session.scalar(select(User).where(User.username == "reviewer_a"))
    assert reviewer is not None
    record = pol.month_record(designated_head(db.session.get(Household, ids[0])), MONTH)
    pol.decide_month(record, actor=reviewer, status=MonthStatus.EXEMPT, reason="住院治疗")
    db.session.commit()
    assert listed() == {codes[1]}
    record = pol.month_record(designated_head(db.session.get(Household, ids[1])), MONTH)
    pol._to_review(record, "assistance_requested")
    db.session.commit()
    assert listed() == set()
    done = db.session.scalars(select(ContactTask.resolved_at)).all()
    assert len(done) == 2 and all(at is not None for at in done)
