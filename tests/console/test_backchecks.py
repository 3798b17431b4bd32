"""The monthly back-check sample: reproducible, weighted towards doubtful visits and
caseworkers, drawn once per area and month; outcomes recorded, audited, scoped."""

from __future__ import annotations

import hashlib
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from flask.cli import ScriptInfo
from sqlalchemy import func, select

from server.audit.models import AuditEntry
from server.cases.models import CaseState
from server.cli import cli
from server.extensions import db
from server.visits import backchecks
from server.visits.models import BackCheck, BackCheckDraw
from tests import factories
from tests.conftest import login
from tests.console.visit_data import plant_visit

MONTH = "2026-10"
DAY = datetime(2026, 10, 14, 2, 0, tzinfo=UTC)


def test_the_sample_is_reproducible_for_a_seed() -> None:
    items = [(i, 1.0 + (i % 3)) for i in range(1, 200)]
    seed = backchecks.seed_for(MONTH, "152201100")
    first = backchecks.weighted_sample(items, 10, seed)
    assert len(first) == 10 == len(set(first))
    assert backchecks.weighted_sample(list(reversed(items)), 10, seed) == first
    assert backchecks.weighted_sample(items, 10, backchecks.seed_for(MONTH, "152201101")) != first
    assert backchecks.weighted_sample(items, 500, seed) == sorted(i for i, _w in items)
    assert seed == hashlib.sha256(f"dibao-backchecks:{MONTH}:152201100".encode()).hexdigest()


def test_heavier_visits_are_drawn_more_often() -> None:
    # 20 flagged visits (weight 4) among 80 plain ones (weight 1), 10 drawn, 400 seeds:
    # a flagged visit's chance is well above a plain one's (about 2.6 times here).
    items = [(i, 4.0 if i <= 20 else 1.0) for i in range(1, 101)]
    drawn: Counter[int] = Counter()
    for n in range(400):
        drawn.update(backchecks.weighted_sample(items, 10, hashlib.sha256(b"%d" % n).hexdigest()))
    flagged_rate = sum(drawn[i] for i in range(1, 21)) / (20 * 400)
    plain_rate = sum(drawn[i] for i in range(21, 101)) / (80 * 400)
    assert flagged_rate > 2 * plain_rate
    assert plain_rate > 0.03  # plain visits are drawn too: every visit can be checked
    assert sum(drawn.values()) == 4000


def _plant_month() -> list[int]:
    worker = factories.user("caseworker_a")
    homes = [factories.make_household(state=CaseState.APPROVED) for _ in range(3)]
    ids = []
    for n in range(15):
        survey = plant_visit(
            homes[n % 3],
            worker,
            DAY + timedelta(hours=n),
            flags=("gps_mock",) if n < 3 else (),
        )
        ids.append(survey.id)
    other_township = factories.make_household(
        state=CaseState.APPROVED, village=factories.areas().village_b
    )
    plant_visit(other_township, factories.user("caseworker_b"), DAY)
    db.session.commit()
    return ids


def _audits(action: str) -> int:
    return (
        db.session.scalar(
            select(func.count()).select_from(AuditEntry).where(AuditEntry.action == action)
        )
        or 0
    )


def test_drawing_twice_keeps_one_sample_and_the_weights_are_stored(app: Flask) -> None:
    ids = _plant_month()
    client = app.test_client()
    login(client, "approver")
    for _ in range(2):
        response = client.post(
            "/console/backchecks/draw", data={"area": "152201100", "month": MONTH}
        )
        assert response.status_code == 303
    [draw] = db.session.scalars(select(BackCheckDraw)).all()
    assert draw.population == 15 and len(draw.checks) == 10
    assert {c.survey_id for c in draw.checks} <= set(ids)
    weights = {c.survey_id: c.weight for c in draw.checks}
    # 1 + the visit's risk (one open gps_mock warning: 5) + half the caseworker-month's
    # (15 visits scoring 5, 5, 5, 0...: mean 1 + a quarter of the worst 5 = 2.25).
    assert all(weights[i] == 7.125 for i in ids[:3] if i in weights)
    assert all(weights[i] == 2.125 for i in ids[3:] if i in weights)
    assert _audits("backcheck.drawn") == 1
    page = client.get(f"/console/backchecks?area=152201100&month={MONTH}&lang=en")
    assert page.status_code == 200 and page.get_data(as_text=True).count('name="outcome"') == 10


def test_the_cli_draws_the_same_sample_idempotently(app: Flask) -> None:
    _plant_month()
    runner = app.test_cli_runner()
    info = ScriptInfo(create_app=lambda: app)
    args = ["backchecks", "draw", "--month", MONTH, "--area", "152201100"]
    first = runner.invoke(cli, args, obj=info)
    assert first.exit_code == 0, first.output
    assert "152201100 2026-10: drew 10 of 15 visits" in first.output
    again = runner.invoke(cli, args, obj=info)
    assert again.exit_code == 0 and "already" in again.output
    assert db.session.scalar(select(func.count()).select_from(BackCheck)) == 10


def test_a_supervisor_records_an_outcome_with_a_note_audited(app: Flask) -> None:
    _plant_month()
    area = factories.areas().township_a
    draw, _new = backchecks.draw(area, MONTH, actor=None)
    check_id = draw.checks[0].id
    db.session.commit()
    client = app.test_client()
    login(client, "supervisor")
    url = f"/console/backchecks/{check_id}"
    client.post(url, data={"outcome": "fabricated", "note": ""})
    assert db.session.get(BackCheck, check_id).outcome is None  # type: ignore[union-attr]
    client.post(url, data={"outcome": "fabricated", "note": "户主称当月无人入户", "area": ""})
    db.session.expire_all()
    check = db.session.get(BackCheck, check_id)
    assert check is not None and check.outcome == "fabricated"
    assert check.recorded_by_id == factories.user("supervisor").id
    assert _audits("backcheck.recorded") == 1
    csv_text = client.get(f"/console/backchecks?month={MONTH}&format=csv").get_data(as_text=True)
    assert "户主称当月无人入户" in csv_text


@pytest.mark.parametrize(("username", "status"), [("reviewer_b", 404), ("other_approver", 404)])
def test_outcomes_outside_the_area_are_not_found(app: Flask, username: str, status: int) -> None:
    _plant_month()
    draw, _new = backchecks.draw(factories.areas().township_a, MONTH, actor=None)
    check_id = draw.checks[0].id
    db.session.commit()
    client = app.test_client()
    login(client, username)
    response = client.post(f"/console/backchecks/{check_id}", data={"outcome": "confirmed"})
    assert response.status_code == status
    assert db.session.get(BackCheck, check_id).outcome is None  # type: ignore[union-attr]


def test_roles_without_the_capability_neither_draw_nor_record(app: Flask) -> None:
    _plant_month()
    client = app.test_client()
    login(client, "reviewer_a")
    client.post("/console/backchecks/draw", data={"area": "152201100", "month": MONTH})
    assert db.session.scalar(select(func.count()).select_from(BackCheckDraw)) == 0
    assert client.get(f"/console/backchecks?month={MONTH}").status_code == 200  # reads
    login(client, "caseworker_a")
    assert client.get(f"/console/backchecks?month={MONTH}").status_code == 403


def test_a_caseworkers_failed_back_checks_weigh_on_their_next_draw(app: Flask) -> None:
    ids = _plant_month()
    draw, _new = backchecks.draw(factories.areas().township_a, MONTH, actor=None)
    for check in draw.checks[:2]:
        check.outcome, check.note, check.recorded_at = "discrepancy", "不符", DAY
    db.session.flush()
    pool = {c.survey_id: c.weight for c in backchecks.candidates(factories.areas().league, MONTH)}
    # A plain visit: 1 + half of (the month's 2.25 + two failed back-checks, 4 each).
    assert pool[ids[5]] == 1.0 + (2.25 + 2 * 4.0) / 2
    assert pool[ids[0]] == 1.0 + 5.0 + (2.25 + 2 * 4.0) / 2
