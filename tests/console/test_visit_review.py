"""A visit's review: received / has issues / approved / rejected, by reviewers of its
area with a reason, audited, with its history; the list of visits by review state."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from server.audit.models import AuditEntry
from server.cases.models import CaseState
from server.extensions import db
from server.visits.models import ReviewStatus, Survey, SurveyFlag, VisitReview
from tests import factories
from tests.conftest import login
from tests.console.visit_data import plant_visit


@pytest.fixture
def visit(app: Flask) -> dict[str, Any]:
    household = factories.make_household(state=CaseState.APPROVED)
    survey = plant_visit(
        household, factories.user("caseworker_a"), datetime.now(UTC) - timedelta(days=1)
    )
    db.session.commit()
    return {
        "code": household.case_code,
        "id": survey.id,
        "url": f"/cases/{household.case_code}/visits/{survey.id}/review",
    }


def _survey(visit: dict[str, Any]) -> Survey:
    db.session.expire_all()
    found = db.session.get(Survey, visit["id"])
    assert found is not None
    return found


def _audits(survey_id: int) -> list[AuditEntry]:
    return list(
        db.session.scalars(
            select(AuditEntry).where(
                AuditEntry.action == "visit.reviewed", AuditEntry.object_id == str(survey_id)
            )
        )
    )


def test_a_reviewer_rejects_with_a_reason_and_the_move_is_kept_and_audited(
    app: Flask, visit: dict[str, Any]
) -> None:
    client = app.test_client()
    login(client, "reviewer_a")
    response = client.post(visit["url"], data={"status": "rejected", "reason": "照片不是该户"})
    assert response.status_code == 303
    survey = _survey(visit)
    assert survey.review_status is ReviewStatus.REJECTED
    assert survey.review_reason == "照片不是该户"
    assert survey.reviewed_by_id == factories.user("reviewer_a").id
    [move] = survey.reviews
    assert (move.from_status, move.to_status, move.reason) == (
        "received",
        "rejected",
        "照片不是该户",
    )
    [entry] = _audits(survey.id)
    assert entry.details["to_status"] == "rejected"
    assert "照片" not in str(entry.details)  # the reason stays in the visit's history

    page = client.get(f"/cases/{visit['code']}?lang=zh_CN").get_data(as_text=True)
    assert "已退回，待重访" in page and "照片不是该户" in page


@pytest.mark.parametrize("status", ["rejected", "has_issues"])
def test_rejecting_or_marking_issues_needs_a_reason(
    app: Flask, visit: dict[str, Any], status: str
) -> None:
    client = app.test_client()
    login(client, "reviewer_a")
    client.post(visit["url"], data={"status": status, "reason": "   "})
    assert _survey(visit).review_status is ReviewStatus.RECEIVED
    assert _survey(visit).reviews == []
    assert _audits(visit["id"]) == []


def test_the_county_approver_reviews_too_and_approval_needs_no_reason(
    app: Flask, visit: dict[str, Any]
) -> None:
    client = app.test_client()
    login(client, "approver")
    client.post(visit["url"], data={"status": "approved", "reason": ""})
    assert _survey(visit).review_status is ReviewStatus.APPROVED


@pytest.mark.parametrize(("username", "status"), [("caseworker_a", 403), ("supervisor", 403)])
def test_roles_without_review_visits_cannot_review(
    app: Flask, visit: dict[str, Any], username: str, status: int
) -> None:
    client = app.test_client()
    login(client, username)
    response = client.post(visit["url"], data={"status": "rejected", "reason": "不像真的"})
    # The case page form flashes the refusal; nothing is written.
    assert response.status_code in (303, status)
    assert _survey(visit).review_status is ReviewStatus.RECEIVED
    assert _audits(visit["id"]) == []


@pytest.mark.parametrize("username", ["reviewer_b", "other_approver"])
def test_another_townships_reviewer_gets_404(
    app: Flask, visit: dict[str, Any], username: str
) -> None:
    client = app.test_client()
    login(client, username)
    response = client.post(visit["url"], data={"status": "rejected", "reason": "理由"})
    assert response.status_code == 404
    assert _survey(visit).review_status is ReviewStatus.RECEIVED


def test_a_visit_of_another_case_is_not_found_through_this_one(
    app: Flask, visit: dict[str, Any]
) -> None:
    other = factories.make_household(state=CaseState.APPROVED).case_code
    db.session.commit()
    client = app.test_client()
    login(client, "reviewer_a")
    response = client.post(
        f"/cases/{other}/visits/{visit['id']}/review", data={"status": "approved"}
    )
    assert response.status_code == 404


def test_open_flags_mean_has_issues_and_block_approval_until_cleared(
    app: Flask, visit: dict[str, Any]
) -> None:
    survey = _survey(visit)
    survey.flags.append(SurveyFlag(code="gps_far_from_home", severity="warning", detail=""))
    db.session.commit()
    assert _survey(visit).shown_review_status is ReviewStatus.HAS_ISSUES
    client = app.test_client()
    login(client, "reviewer_a")
    page = client.get(f"/cases/{visit['code']}?lang=en").get_data(as_text=True)
    assert 'data-review="has_issues"' in page and "Has issues" in page

    client.post(visit["url"], data={"status": "approved"})
    assert _survey(visit).review_status is ReviewStatus.RECEIVED  # refused

    flag_id = _survey(visit).flags[0].id
    client.post(f"/cases/{visit['code']}/flags/{flag_id}/clear", data={"reason": "已电话核实"})
    assert _survey(visit).shown_review_status is ReviewStatus.RECEIVED
    client.post(visit["url"], data={"status": "approved"})
    assert _survey(visit).review_status is ReviewStatus.APPROVED


def test_the_state_machine_refuses_moves_that_do_not_exist(
    app: Flask, visit: dict[str, Any]
) -> None:
    client = app.test_client()
    login(client, "reviewer_a")
    for status in ("received", "nonsense"):
        client.post(visit["url"], data={"status": status, "reason": "x"})
        assert _survey(visit).reviews == []
    client.post(visit["url"], data={"status": "approved"})
    client.post(visit["url"], data={"status": "approved"})  # already approved
    client.post(visit["url"], data={"status": "rejected", "reason": "抽查发现问题"})
    moves = [
        (r.from_status, r.to_status)
        for r in db.session.scalars(
            select(VisitReview).where(VisitReview.survey_id == visit["id"]).order_by(VisitReview.id)
        )
    ]
    assert moves == [("received", "approved"), ("approved", "rejected")]


def test_the_review_list_counts_and_filters_by_state_and_exports(app: Flask) -> None:
    a, b = factories.areas().village_a, factories.areas().village_b
    worker_a, worker_b = factories.user("caseworker_a"), factories.user("caseworker_b")
    when = datetime.now(UTC) - timedelta(days=2)
    home_a = factories.make_household(state=CaseState.APPROVED, village=a)
    home_b = factories.make_household(state=CaseState.APPROVED, village=b)
    plant_visit(home_a, worker_a, when)
    plant_visit(home_a, worker_a, when, flags=("gps_mock",))
    plant_visit(home_a, worker_a, when, status=ReviewStatus.REJECTED)
    plant_visit(home_a, worker_a, when, status=ReviewStatus.APPROVED)
    plant_visit(home_b, worker_b, when, status=ReviewStatus.REJECTED)
    code_a, code_b = home_a.case_code, home_b.case_code
    db.session.commit()

    client = app.test_client()
    login(client, "reviewer_a")
    page = client.get("/console/visits?lang=en").get_data(as_text=True)
    for status, count in (("received", 1), ("has_issues", 1), ("rejected", 1), ("approved", 1)):
        assert f'data-status="{status}">{count}<' in page
    rejected = client.get("/console/visits?status=rejected&format=csv").get_data(as_text=True)
    assert code_a in rejected and code_b not in rejected
    assert len(rejected.strip().splitlines()) == 2  # header + one visit

    login(client, "supervisor")
    league = client.get("/console/visits?status=rejected&format=csv").get_data(as_text=True)
    assert code_a in league and code_b in league
    assert client.get("/console/visits?area=152201101").status_code == 200
    login(client, "reviewer_a")
    assert client.get("/console/visits?area=152201101").status_code == 404
    login(client, "caseworker_a")
    assert client.get("/console/visits").status_code == 403


def test_a_visit_marked_with_issues_stays_so_after_its_flags_are_cleared(
    app: Flask, visit: dict[str, Any]
) -> None:
    survey = _survey(visit)
    survey.flags.append(SurveyFlag(code="photo_reused", severity="warning", detail=""))
    db.session.commit()
    client = app.test_client()
    login(client, "reviewer_a")
    client.post(visit["url"], data={"status": "has_issues", "reason": "x"})
    assert _survey(visit).reviews == []  # it has issues already (an open flag)
    client.post(visit["url"], data={"status": "rejected", "reason": "照片重复"})
    client.post(visit["url"], data={"status": "has_issues", "reason": "待村委会核实"})
    flag_id = _survey(visit).flags[0].id
    client.post(f"/cases/{visit['code']}/flags/{flag_id}/clear", data={"reason": "不同房屋"})
    assert _survey(visit).shown_review_status is ReviewStatus.HAS_ISSUES
    assert [r.to_status for r in _survey(visit).reviews] == ["rejected", "has_issues"]


def test_the_review_list_pages_through_every_visit_newest_first(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("server.console.visits.PAGE_ROWS", 2)
    worker = factories.user("caseworker_a")
    home = factories.make_household(state=CaseState.APPROVED, village=factories.areas().village_a)
    start = datetime.now(UTC) - timedelta(days=3)
    ids = [plant_visit(home, worker, start + timedelta(hours=k)).id for k in range(5)]
    db.session.commit()
    client = app.test_client()
    login(client, "reviewer_a")

    def shown(query: str) -> list[int]:
        html = client.get(f"/console/visits?lang=en{query}").get_data(as_text=True)
        return [int(v) for v in re.findall(r'<td data-key="visit">(\d+)</td>', html)]

    pages = [shown(f"&page={n}") for n in (1, 2, 3)]
    assert pages == [ids[::-1][0:2], ids[::-1][2:4], ids[::-1][4:]]
    html = client.get("/console/visits?lang=en&page=2").get_data(as_text=True)
    assert "Page 2 of 3, 5 rows" in html and "page=1" in html and "page=3" in html
    assert shown("&page=40") == ids[:1]  # past the end: the last page
    assert client.get("/console/visits?page=zero").status_code == 400
    # The export has every visit, whatever the page.
    exported = client.get("/console/visits?format=csv&page=2").get_data(as_text=True)
    assert len(exported.strip().splitlines()) == 6
