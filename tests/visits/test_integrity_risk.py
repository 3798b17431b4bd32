"""The risk score (docs/field-visits.md, "The risk score"): hand-computed scores from
planted flags, the caps, cleared flags, the bands, the caseworker-month, the region
file's section; shown on the review list, the activity table and the case page (zh_CN
and English, in the files); the back-check draw prefers risky visits."""

from __future__ import annotations

import csv
import hashlib
import io
import tomllib
from collections import Counter
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from server.cases.models import CaseState
from server.extensions import db
from server.labels import FLAG_LABELS
from server.visits import backchecks
from server.visits.integrity.risk import (
    DEFAULT_WEIGHTS,
    Part,
    RiskFlag,
    RiskRules,
    Score,
    draw_weight,
    parse_risk_rules,
    score_month,
    score_visit,
)
from server.visits.integrity.risk_queries import month_scores, visit_scores
from server.visits.models import BackCheck, BackCheckDraw, ReviewStatus, Survey, SurveyFlag
from server.visits.rules import SupervisionConfigError, parse_supervision_rules
from tests import factories
from tests.conftest import QueryCounter, login
from tests.console.visit_data import plant_visit

RULES = RiskRules()
MONTH = "2026-10"
DAY = datetime(2026, 10, 14, 2, 0, tzinfo=UTC)  # 10:00 Beijing time


def _flags(*items: tuple[str, str] | tuple[str, str, bool]) -> list[RiskFlag]:
    return [RiskFlag(*item) for item in items]


# ------------------------------------------------------------------ pure scoring


def test_a_visit_adds_weight_times_severity_per_flag_biggest_first() -> None:
    score = score_visit(
        _flags(
            ("gps_low_accuracy", "info"),  # 1 x 0.25
            ("visit_too_short", "warning"),  # 3 x 1
            ("photo_reused", "warning"),  # 5 x 1
        ),
        RULES,
    )
    assert score.total == 8.25 and score.band == "high"
    assert score.parts == (
        Part("photo_reused", "warning", 1, 0, 5.0),
        Part("visit_too_short", "warning", 1, 0, 3.0),
        Part("gps_low_accuracy", "info", 1, 0, 0.25),
    )
    critical = score_visit(_flags(("face_in_other_household", "critical")), RULES)
    assert critical.total == 12.0 and critical.band == "high"  # 6 x 2


def test_a_code_is_capped_so_many_weak_flags_never_outweigh_one_strong() -> None:
    no_exif = score_visit(_flags(*[("photo_no_exif", "info")] * 10), RULES)
    assert no_exif.total == 2.0  # 10 x 1 x 0.25 = 2.5, capped at 2 x 1
    assert no_exif.band == "low"
    assert no_exif.total < score_visit(_flags(("face_in_other_household", "critical")), RULES).total
    reused = score_visit(_flags(*[("photo_reused", "warning")] * 3), RULES)
    assert reused.total == 10.0 and reused.parts[0].times == 3  # 15 capped at 2 x 5
    assert (
        score_visit(_flags(*[("photo_reused", "warning")] * 3), RiskRules(code_cap=5)).total == 15
    )


def test_a_cleared_flag_counts_a_quarter_and_says_so() -> None:
    cleared = score_visit(_flags(("photo_reused", "warning", True)), RULES)
    assert cleared.total == 1.25 and cleared.band == "low"
    mixed = score_visit(
        _flags(("photo_reused", "warning", True), ("photo_reused", "warning", False)), RULES
    )
    assert mixed.total == 6.25 and mixed.parts == (Part("photo_reused", "warning", 2, 1, 6.25),)
    # A caseworker whose visits keep needing clearing still shows: four cleared
    # doubts make a medium visit.
    many = score_visit(
        _flags(*[(code, "warning", True) for code in ("gps_repeated", "gps_too_precise")] * 2),
        RULES,
    )
    assert many.total == 3.5 and many.band == "medium"  # (4 + 4 + 3 + 3) / 4


def test_the_bands_and_unknown_codes_and_severities() -> None:
    assert [RULES.band(t) for t in (0, 2.99, 3, 7.99, 8, 40)] == [
        "low",
        "low",
        "medium",
        "medium",
        "high",
        "high",
    ]
    assert score_visit([], RULES) == Score(0.0, "low", ())
    assert score_visit(_flags(("visit_too_short", "warning")), RULES).band == "medium"
    assert score_visit(_flags(("gps_mock", "critical")), RULES).band == "high"
    odd = score_visit(_flags(("a_code_nobody_weighed", "loud")), RULES)
    assert odd.total == RULES.default_weight == 2.0  # unknown severity: a warning


def test_every_flag_code_has_a_weight() -> None:
    assert set(FLAG_LABELS) <= set(DEFAULT_WEIGHTS)
    assert set(DEFAULT_WEIGHTS) - set(FLAG_LABELS) == {"photo_undecodable"}


def test_a_caseworker_month_from_its_visits_and_record() -> None:
    visits = [
        score_visit(_flags(("face_in_other_household", "critical")), RULES),  # 12, high
        score_visit(_flags(("visit_too_short", "warning")), RULES),  # 3
        score_visit([], RULES),
        score_visit([], RULES),
    ]
    month = score_month(visits, RULES, rejected=2, failed_back_checks=1)
    # mean 15 / 4 = 3.75; worst 0.25 x 12 = 3; high 10 x 1/4 = 2.5; record 2 x 1 + 4.
    assert month.parts == (
        Part("failed_back_checks", "", 1, 0, 4.0),
        Part("mean_visit", "", 4, 0, 3.75),
        Part("worst_visit", "", 1, 0, 3.0),
        Part("high_visits", "", 1, 0, 2.5),
        Part("rejected", "", 2, 0, 2.0),
    )
    assert month.total == 15.25 and month.band == "high"
    clean = score_month([score_visit([], RULES)] * 20, RULES)
    assert clean == Score(0.0, "low", ())
    assert score_month([], RULES) == Score(0.0, "low", ())


def test_the_record_is_capped_in_proportion() -> None:
    month = score_month([], RULES, rejected=5, failed_back_checks=5)  # 5 + 20 = 25 -> 10
    assert month.total == 10.0
    assert {p.code: p.points for p in month.parts} == {"failed_back_checks": 8.0, "rejected": 2.0}


def test_the_draw_weight_is_one_plus_both_scores() -> None:
    visit = score_visit(_flags(("photo_reused", "warning")), RULES)
    month = score_month([visit, score_visit([], RULES)], RULES)  # 2.5 + 1.25 + 0
    assert draw_weight(visit, month, RULES) == 1 + 5 + 3.75 / 2
    assert draw_weight(score_visit([], RULES), month, RULES) == 1 + 3.75 / 2
    assert draw_weight(score_visit([], RULES), None, RULES) == 1.0


# ------------------------------------------------------------------ the region file


def _default_section() -> dict[str, Any]:
    text = resources.files("server").joinpath("region_default.toml").read_text("utf-8")
    section: dict[str, Any] = tomllib.loads(text)["integrity"]["risk"]
    return section


def test_the_region_files_section_equals_the_defaults() -> None:
    assert parse_risk_rules(_default_section()) == RiskRules()
    assert parse_risk_rules({}) == RiskRules()
    heavier = parse_risk_rules({"weights": {"photo_no_exif": 4}, "high": 20})
    assert heavier.weight("photo_no_exif") == 4.0 and heavier.weight("photo_reused") == 5.0
    assert score_visit(_flags(("photo_no_exif", "warning")), heavier).band == "medium"


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"severe": 3}, "integrity.risk: unknown setting(s) severe"),
        ({"critical": -1}, "integrity.risk.critical: -1 must be a number >= 0"),
        ({"high": True}, "integrity.risk.high: True must be a number >= 0"),
        ({"record_months": 1.5}, "integrity.risk.record_months: 1.5 must be a whole number"),
        ({"record_months": 0}, "integrity.risk.record_months: must be at least 1"),
        ({"medium": 9}, "integrity.risk.medium: must be above 0 and below integrity.risk.high"),
        ({"cleared": 2}, "integrity.risk.cleared: a share, at most 1"),
        ({"weights": 3}, "integrity.risk.weights: must be a table"),
        (
            {"weights": {"photo_resued": 1}},
            "integrity.risk.weights: unknown flag code(s) photo_resued",
        ),
        ({"weights": {"photo_reused": "5"}}, "integrity.risk.weights.photo_reused: '5' must be"),
    ],
)
def test_the_parser_names_the_bad_key(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_risk_rules(section)
    assert str(caught.value).startswith(message)


def test_the_retired_supervision_weights_point_to_the_risk_section() -> None:
    with pytest.raises(SupervisionConfigError) as caught:
        parse_supervision_rules({"back_check_sample": 5, "weight_open_flag": 3})
    assert "supervision.weight_open_flag: retired" in str(caught.value)
    assert "[integrity.risk]" in str(caught.value)
    assert parse_supervision_rules({"back_check_sample": 5}).back_check_sample == 5


# ------------------------------------------------------------------ stored visits


def _flag(survey: Survey, code: str, severity: str, *, cleared: bool = False) -> None:
    survey.flags.append(
        SurveyFlag(
            code=code,
            severity=severity,
            detail="",
            cleared_at=survey.finished_at + timedelta(days=1) if cleared else None,
            clear_reason="核实无误" if cleared else None,
        )
    )


def _plant() -> dict[str, Any]:
    """caseworker_a's October: a face from another household (critical), a short visit
    with a cleared reused photo, two clean visits; caseworker_b one clean visit."""
    worker, other = factories.user("caseworker_a"), factories.user("caseworker_b")
    homes = [factories.make_household(state=CaseState.APPROVED) for _ in range(4)]
    risky = plant_visit(homes[0], worker, DAY)
    _flag(risky, "face_in_other_household", "critical")
    _flag(risky, "photo_no_exif", "info")
    short = plant_visit(homes[1], worker, DAY + timedelta(hours=1), flags=("visit_too_short",))
    _flag(short, "photo_reused", "warning", cleared=True)
    clean = [plant_visit(homes[n], worker, DAY + timedelta(hours=n)) for n in (2, 3)]
    rejected = plant_visit(
        homes[2], worker, DAY - timedelta(days=40), status=ReviewStatus.REJECTED
    )  # September: in the record, not in the month
    other_visit = plant_visit(homes[3], other, DAY + timedelta(hours=5))
    db.session.flush()
    return {
        "worker": worker.id,
        "other": other.id,
        "risky": risky.id,
        "short": short.id,
        "clean": [v.id for v in clean],
        "rejected": rejected.id,
        "other_visit": other_visit.id,
        "code": homes[0].case_code,
    }


def test_stored_visits_score_like_their_flags_in_one_query(
    app: Flask, count_queries: QueryCounter
) -> None:
    ids = _plant()
    wanted = [ids["risky"], ids["short"], *ids["clean"]]
    before = count_queries.count
    scores = visit_scores(wanted)
    assert count_queries.count - before == 1
    assert scores[ids["risky"]].total == 12.25  # 6 x 2 + 1 x 0.25
    assert scores[ids["short"]].total == 4.25  # 3 + 5 x 0.25
    assert [scores[i].total for i in ids["clean"]] == [0.0, 0.0]


def test_a_caseworker_month_from_stored_visits(app: Flask) -> None:
    ids = _plant()
    months = month_scores({ids["worker"], ids["other"]}, MONTH)
    # Four visits: 12.25, 4.25, 0, 0 -> mean 4.125; worst 3.0625 -> 3.06; one high of
    # four: 2.5; the September rejection: 1.
    assert {p.code: p.points for p in months[ids["worker"]].parts} == {
        "mean_visit": 4.12,  # round(4.125, 2): banker's rounding of a binary float
        "worst_visit": 3.06,
        "high_visits": 2.5,
        "rejected": 1.0,
    }
    assert months[ids["worker"]].band == "high"
    assert months[ids["other"]] == Score(0.0, "low", ())


def _csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text.removeprefix("\ufeff"))))


def test_the_review_list_shows_and_exports_the_risk_and_sorts_by_it(app: Flask) -> None:
    ids = _plant()
    db.session.commit()
    client = app.test_client()
    login(client, "reviewer_a")
    english = client.get(f"/console/visits?month={MONTH}&lang=en").get_data(as_text=True)
    assert ">Risk score</th>" in english and ">What made the risk</th>" in english
    assert "Same face as a member of another household: 12" in english
    assert "Visit too short for what it recorded: 3" in english
    assert "Same photo as in another household x1, 1 cleared: 1.25" in english
    chinese = client.get(f"/console/visits?month={MONTH}&lang=zh_CN").get_data(as_text=True)
    assert ">风险分</th>" in chinese and ">风险构成</th>" in chinese
    assert "与其他户成员为同一人脸：12" in chinese and "高" in chinese
    rows = _csv(
        client.get(f"/console/visits?month={MONTH}&lang=en&format=csv").get_data(as_text=True)
    )
    by_visit = {int(r["Visit"]): r for r in rows}
    assert by_visit[ids["risky"]]["Risk score"] == "12.25"
    assert by_visit[ids["risky"]]["Risk"] == "high"
    assert by_visit[ids["short"]]["Risk"] == "medium"
    assert by_visit[ids["clean"][0]]["Risk score"] == "0.0"
    riskiest = _csv(
        client.get(f"/console/visits?month={MONTH}&lang=en&format=csv&sort=risk").get_data(
            as_text=True
        )
    )
    assert [int(r["Visit"]) for r in riskiest[:2]] == [ids["risky"], ids["short"]]
    page = client.get(f"/console/visits?month={MONTH}&lang=en&sort=risk").get_data(as_text=True)
    assert page.index(f"#visit-{ids['risky']}") < page.index(f"#visit-{ids['short']}")
    assert page.index(f"#visit-{ids['short']}") < page.index(f"#visit-{ids['clean'][0]}")


def test_the_activity_table_scores_each_caseworker_month(app: Flask) -> None:
    ids = _plant()
    db.session.commit()
    client = app.test_client()
    login(client, "supervisor")
    rows = _csv(
        client.get(f"/console/activity?month={MONTH}&lang=en&format=csv").get_data(as_text=True)
    )
    mine = next(r for r in rows if r["Visits"] == "4")
    assert mine["Risk score"] == "10.68" and mine["Risk"] == "high"
    assert mine["What made the risk"].startswith("Mean over 4 visits: 4.12; Worst visit: 3.06")
    chinese = client.get(f"/console/activity?month={MONTH}&lang=zh_CN").get_data(as_text=True)
    assert "4次走访的平均分：4.12" in chinese and ">风险等级</th>" in chinese
    # A caseworker sees their own row, without a score to game.
    login(client, "caseworker_a")
    own = client.get(f"/console/activity?month={MONTH}&lang=en").get_data(as_text=True)
    assert "Risk score" not in own and "Mean over" not in own
    assert ids["worker"]


def test_the_case_page_shows_each_visits_risk_to_reviewers_only(app: Flask) -> None:
    ids = _plant()
    db.session.commit()
    client = app.test_client()
    login(client, "reviewer_a")
    page = client.get(f"/cases/{ids['code']}?lang=en").get_data(as_text=True)
    assert (
        "Risk 12.25 (high): Same face as a member of another household: 12; "
        "Photo carries no time or place: 0.25"
    ) in page
    chinese = client.get(f"/cases/{ids['code']}?lang=zh_CN").get_data(as_text=True)
    assert "风险12.25分（高）" in chinese
    login(client, "caseworker_a")
    own = client.get(f"/cases/{ids['code']}?lang=en").get_data(as_text=True)
    assert "Risk 12.25" not in own


def test_the_back_check_draw_prefers_risky_visits(app: Flask) -> None:
    """30 visits of two caseworkers, 3 of caseworker_a's with a face from another
    household; the weights as the draw computes them, then 300 seeded draws of 10: a
    critical visit is drawn far more often than a clean one, the risky caseworker's
    clean visits more often than the other's, and every kind is drawn."""
    worker, other = factories.user("caseworker_a"), factories.user("caseworker_b")
    homes = [factories.make_household(state=CaseState.APPROVED) for _ in range(6)]
    groups: dict[str, list[int]] = {"risky": [], "same_worker": [], "other_worker": []}
    for n in range(30):
        visit = plant_visit(homes[n % 6], worker if n % 2 else other, DAY + timedelta(hours=n))
        if n in (1, 3, 5):
            _flag(visit, "face_in_other_household", "critical")
            groups["risky"].append(visit.id)
        else:
            groups["same_worker" if n % 2 else "other_worker"].append(visit.id)
    db.session.flush()
    pool = [(c.survey_id, c.weight) for c in backchecks.candidates(factories.areas().league, MONTH)]
    # caseworker_a's month: mean 36 / 15 = 2.4, worst 3, high 10 x 3 / 15 = 2: 7.4.
    weights = dict(pool)
    assert {weights[i] for i in groups["risky"]} == {1 + 12 + 7.4 / 2}
    assert {weights[i] for i in groups["same_worker"]} == {1 + 7.4 / 2}
    assert {weights[i] for i in groups["other_worker"]} == {1.0}
    drawn: Counter[int] = Counter()
    for n in range(300):
        drawn.update(backchecks.weighted_sample(pool, 10, hashlib.sha256(b"%d" % n).hexdigest()))
    rate = {name: sum(drawn[i] for i in ids) / (len(ids) * 300) for name, ids in groups.items()}
    assert rate["risky"] > 0.8  # nearly always
    assert rate["risky"] > 4 * rate["other_worker"]
    assert rate["same_worker"] > 1.5 * rate["other_worker"]
    assert rate["other_worker"] > 0.03  # every visit can be checked
    # The stored draw keeps each visit's weight.
    draw, _new = backchecks.draw(factories.areas().township_a, MONTH, actor=None)
    assert db.session.scalar(select(BackCheckDraw.population)) == 30
    assert all(
        check.weight == weights[check.survey_id]
        for check in db.session.scalars(select(BackCheck).where(BackCheck.draw_id == draw.id))
    )


def test_the_review_lists_scores_cost_the_same_for_more_visits(
    app: Flask, count_queries: QueryCounter
) -> None:
    _plant()
    db.session.commit()
    client = app.test_client()
    login(client, "reviewer_a")
    url = f"/console/visits?month={MONTH}&lang=en"

    def queries(path: str) -> int:
        before = count_queries.count
        assert client.get(path).status_code == 200
        return count_queries.count - before

    few, few_sorted = queries(url), queries(url + "&sort=risk")
    home = factories.make_household(state=CaseState.APPROVED)
    for n in range(12):
        visit = plant_visit(home, factories.user("caseworker_a"), DAY + timedelta(minutes=n))
        _flag(visit, "gps_repeated", "warning")
    db.session.commit()
    assert queries(url) == few and queries(url + "&sort=risk") == few_sorted
