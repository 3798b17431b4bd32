"""Caseworker activity: the numbers of one month on planted visits, the caseworker's own
row only, the area scope, the export."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

from flask import Flask

from server.auth.models import Role, User
from server.cases.models import CaseState
from server.console.visits import activity, shared_spot_visits
from server.extensions import db
from server.visits.models import BackCheck, BackCheckDraw, ReviewStatus
from tests import factories
from tests.conftest import login
from tests.console.visit_data import plant_visit

MONTH = "2026-10"
# Mid-October, 10:00 Beijing time.
DAY = datetime(2026, 10, 14, 2, 0, tzinfo=UTC)


def _plant() -> dict[str, int]:
    areas = factories.areas()
    worker = factories.user("caseworker_a")
    other = factories.user("caseworker_b")
    homes = [factories.make_household(state=CaseState.APPROVED) for _ in range(4)]
    # Four visits of caseworker_a in October: 10, 20, 30 and 60 minutes; two reviews on
    # time, one late; fixes 0 m, ~111 m, ~1.1 km and 0 m from home.
    plant_visit(homes[0], worker, DAY, minutes=10, on_time=True)
    plant_visit(
        homes[1],
        worker,
        DAY + timedelta(hours=1),
        minutes=20,
        lat=homes[1].home_lat + 0.001,
        on_time=True,
        flags=("gps_far_from_home",),
    )
    plant_visit(
        homes[2],
        worker,
        DAY + timedelta(hours=2),
        minutes=30,
        lat=homes[2].home_lat + 0.01,
        on_time=False,
        flags=("gps_far_from_home", "photo_reused"),
        status=ReviewStatus.REJECTED,
    )
    # Filed from the very spot of homes[0]'s visit: a shared spot (both count).
    shared = plant_visit(
        homes[3],
        worker,
        DAY + timedelta(days=1),
        minutes=60,
        lat=homes[0].home_lat + 0.0001,
        lon=homes[0].home_lon,
        kind="assisted_proof_of_life",
        cleared=("gps_far_from_home",),
    )
    # Not counted: September, and another township's visit.
    plant_visit(homes[0], worker, DAY - timedelta(days=30), minutes=5)
    far_home = factories.make_household(state=CaseState.APPROVED, village=areas.village_b)
    plant_visit(far_home, other, DAY, minutes=90)
    draw = BackCheckDraw(area_id=areas.township_a.id, month=MONTH, seed="0" * 64, population=4)
    draw.checks.append(
        BackCheck(
            survey_id=shared.id,
            weight=1.0,
            outcome="discrepancy",
            note="户主说当天无人来访",
            recorded_at=DAY + timedelta(days=5),
        )
    )
    db.session.add(draw)
    db.session.commit()
    return {"worker": worker.id, "other": other.id}


def test_one_caseworkers_month_on_planted_visits(app: Flask) -> None:
    ids = _plant()
    with app.test_request_context("/?lang=en"):
        rows = {
            r.caseworker_id: r
            for r in activity(factories.user("supervisor"), factories.areas().league, MONTH)
        }
    row = rows[ids["worker"]]
    assert row.visits == 4
    assert (row.reviews_on_time, row.reviews_late) == (2, 1)
    assert row.median_minutes == 25.0  # median of 10, 20, 30, 60
    # Distances 0, ~11, ~111, ~1112 m: the median is between the middle two.
    assert 55 < (row.median_distance_m or 0) < 65
    assert row.flagged == 3  # a cleared flag still counts: the visit was flagged
    assert row.flagged_share == 75.0
    assert row.flags.startswith("GPS fix far from the registered home 3")
    assert "photo" in row.flags.lower()
    assert row.shared_spot == 2
    assert row.rejected == 1
    assert (row.back_checks_done, row.back_checks_failed) == (1, 1)
    assert rows[ids["other"]].visits == 1 and rows[ids["other"]].shared_spot == 0


def test_a_caseworker_sees_only_their_own_row(app: Flask) -> None:
    ids = _plant()
    db.session.add(
        User(
            username="caseworker_a2",
            password_hash=factories.user("caseworker_a").password_hash,
            role=Role.CASEWORKER,
            area=factories.areas().township_a,
        )
    )
    db.session.commit()
    client = app.test_client()
    login(client, "caseworker_a2")
    own = client.get(f"/console/activity?month={MONTH}&format=csv").get_data(as_text=True)
    rows = list(csv.reader(io.StringIO(own.lstrip("\ufeff"))))
    assert len(rows) == 2 and rows[1][0] == "caseworker_a2" and rows[1][2] == "0"
    login(client, "caseworker_a")
    own = client.get(f"/console/activity?month={MONTH}&format=csv").get_data(as_text=True)
    rows = list(csv.reader(io.StringIO(own.lstrip("\ufeff"))))
    assert [r[0] for r in rows[1:]] == ["caseworker_a"] and rows[1][2] == "4"
    assert ids["worker"]


def test_the_reviewer_sees_the_township_and_not_the_next_one(app: Flask) -> None:
    _plant()
    client = app.test_client()
    login(client, "reviewer_a")
    page = client.get(f"/console/activity?month={MONTH}&lang=zh_CN")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "caseworker_a" in text and "caseworker_b" not in text
    assert client.get(f"/console/activity?month={MONTH}&area=152201101").status_code == 404
    assert client.get("/console/activity?month=2026-13").status_code == 400
    login(client, "admin")
    assert client.get("/console/activity").status_code == 403


def test_shared_spots_need_another_household_within_the_distance() -> None:
    points = [
        (1, 10, 46.0, 122.0),
        (2, 10, 46.0, 122.0),  # the same household twice: not shared
        (3, 11, 46.0002, 122.0),  # ~22 m from 1 and 2
        (4, 12, 46.01, 122.0),  # ~1.1 km away
        (5, 13, 46.0106, 122.0),  # ~67 m from 4: beyond 30 m
    ]
    assert shared_spot_visits(points, 30) == {1, 2, 3}
    assert shared_spot_visits(points, 100) == {1, 2, 3, 4, 5}
    assert shared_spot_visits([], 30) == set()
