"""The staff page of a month's campaign: counts per township inside the viewer's area,
in Chinese first, nobody identifiable."""

from __future__ import annotations

import re

from flask import Flask
from flask.testing import FlaskClient

from server.cases.models import CaseState
from server.extensions import db
from server.monthly import cycle as campaign
from server.proof_of_life.models import MonthStatus
from tests import factories
from tests.conftest import login
from tests.monthly.test_campaign import MONTH, MORNING, recipient, record


def _cells(html: str, status: str) -> list[str]:
    return re.findall(rf'data-status="{status}">(\d+)<', html)


def test_the_month_page_counts_per_township_within_the_viewers_area(
    app: Flask, client: FlaskClient
) -> None:
    areas = factories.areas()
    first = recipient("13900000091")
    recipient("13900000092")
    other = factories.make_household(village=areas.village_b, state=CaseState.APPROVED)
    other.members[0].proof_of_life_required = True
    db.session.commit()
    campaign.open_month(MONTH, now=MORNING)
    done = record(first)
    assert done is not None
    done.status = MonthStatus.PASSED
    db.session.commit()

    login(client, "supervisor")
    page = client.get(f"/campaign?month={MONTH}")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "每月认证" in html and "义勒力特镇" in html and "葛根庙镇" in html
    assert sorted(_cells(html, "pending")) == ["1", "1"]
    assert sorted(_cells(html, "passed")) == ["0", "1"]
    assert "王大" not in html and "13900000091" not in html  # counts only
    client.post("/logout")

    login(client, "reviewer_b")  # 葛根庙镇 only
    html = client.get(f"/campaign?month={MONTH}").get_data(as_text=True)
    assert "葛根庙镇" in html and "义勒力特镇" not in html
    assert _cells(html, "pending") == ["1"]


def test_a_malformed_month_is_a_clear_400_and_anonymous_visitors_log_in(
    app: Flask, client: FlaskClient
) -> None:
    assert client.get("/campaign").status_code in (302, 401)
    login(client, "supervisor")
    assert client.get("/campaign?month=2026-13").status_code == 400
    assert client.get("/campaign?month=now").status_code == 400
    assert client.get("/campaign").status_code == 200  # this month
