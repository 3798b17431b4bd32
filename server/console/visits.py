"""The console's visit pages (issue 15, items 3 and 5): visits by review state, each
caseworker's month, the back-check sample. Counts in SQL; the medians and the shared
spots in Python over one month's visits of one area (docs/supervision.md)."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from flask import url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import ColumnElement, and_, case, exists, func, literal, select
from sqlalchemy.orm import aliased

from server.areas.models import Area
from server.auth.models import Role, User
from server.auth.permissions import Capability, can
from server.cases.models import Household
from server.console.tables import Column, Table
from server.extensions import db
from server.labels import (
    BACK_CHECK_OUTCOME_LABELS,
    FLAG_LABELS,
    REVIEW_STATUS_LABELS,
    VISIT_KIND_LABELS,
    risk_band_label,
    risk_parts_text,
)
from server.region import region
from server.visits.backchecks import FAILED_OUTCOMES, WEIGHTY_SEVERITIES, month_bounds
from server.visits.checks import distance_m
from server.visits.integrity.patterns import shared_spot_visits
from server.visits.integrity.risk import Score
from server.visits.integrity.risk_queries import BATCH, month_scores, visit_scores
from server.visits.models import (
    BackCheck,
    BackCheckDraw,
    ReviewStatus,
    Survey,
    SurveyFlag,
)

# Rows a page shows at most (the file has them all).
PAGE_ROWS = 100  # visits per page of /console/visits


def _label(table: Mapping[str, Any], code: str | None) -> str:
    return "" if code is None else str(table.get(code, code))


def _has_open_flag() -> ColumnElement[bool]:
    return exists().where(SurveyFlag.survey_id == Survey.id, SurveyFlag.cleared_at.is_(None))


def shown_status() -> ColumnElement[str]:
    """The review state a page shows, in SQL (``Survey.shown_review_status``)."""
    return case(
        (
            and_(Survey.review_status == ReviewStatus.RECEIVED, _has_open_flag()),
            literal(ReviewStatus.HAS_ISSUES.value),
        ),
        else_=Survey.review_status,
    )


def _status_filter(status: ReviewStatus) -> ColumnElement[bool]:
    if status is ReviewStatus.HAS_ISSUES:
        return (Survey.review_status == ReviewStatus.HAS_ISSUES) | and_(
            Survey.review_status == ReviewStatus.RECEIVED, _has_open_flag()
        )
    if status is ReviewStatus.RECEIVED:
        return and_(Survey.review_status == ReviewStatus.RECEIVED, ~_has_open_flag())
    return Survey.review_status == status


def _in_area(area: Area) -> ColumnElement[bool]:
    return Area.path.startswith(area.path, autoescape=True)


# ------------------------------------------------------------------ visits by review state


def review_counts(area: Area, month: str | None) -> dict[ReviewStatus, int]:
    """How many visits of the area (of the month, when given) are in each review state."""
    shown = shown_status().label("shown")
    query = (
        select(shown, func.count(Survey.id))
        .join(Household, Household.id == Survey.household_id)
        .join(Area, Area.id == Household.village_id)
        .where(_in_area(area))
        .group_by(shown)
    )
    if month:
        start, end = month_bounds(month)
        query = query.where(Survey.finished_at >= start, Survey.finished_at < end)
    counts = dict.fromkeys(ReviewStatus, 0)
    for status, count in db.session.execute(query):
        counts[ReviewStatus(status)] = count
    return counts


def _review_query(status: ReviewStatus | None, month: str | None, area: Area) -> Any:
    township = aliased(Area)
    reviewer = aliased(User)
    open_flags = (
        select(func.count(SurveyFlag.id))
        .where(SurveyFlag.survey_id == Survey.id, SurveyFlag.cleared_at.is_(None))
        .scalar_subquery()
    )
    query = (
        select(
            Survey.id,
            Survey.finished_at,
            Survey.kind,
            Survey.reviewed_at,
            Survey.review_reason,
            shown_status().label("shown"),
            open_flags.label("open_flags"),
            Household.case_code,
            Area.name.label("village"),
            township.name.label("township"),
            User.display_name,
            User.username,
            reviewer.display_name.label("reviewer_name"),
            reviewer.username.label("reviewer_login"),
        )
        .join(Household, Household.id == Survey.household_id)
        .join(Area, Area.id == Household.village_id)
        .outerjoin(township, township.id == Area.parent_id)
        .join(User, User.id == Survey.caseworker_id)
        .outerjoin(reviewer, reviewer.id == Survey.reviewed_by_id)
        .where(_in_area(area))
        .order_by(Survey.finished_at.desc(), Survey.id.desc())
    )
    if status is not None:
        query = query.where(_status_filter(status))
    if month:
        start, end = month_bounds(month)
        query = query.where(Survey.finished_at >= start, Survey.finished_at < end)
    return query


REVIEW_COLUMNS = (
    ("visit", _l("Visit"), False, None),
    ("finished_at", _l("Visit finished"), False, None),
    ("township", _l("Township"), False, None),
    ("village", _l("Village"), False, None),
    ("case", _l("Case"), False, "case_url"),
    ("kind", _l("Kind of visit"), False, None),
    ("caseworker", _l("Caseworker"), False, None),
    ("open_flags", _l("Open flags"), False, None),
    ("risk", _l("Risk score"), False, None),
    ("risk_band", _l("Risk"), False, None),
    ("risk_parts", _l("What made the risk"), False, None),
    ("status", _l("Review state"), False, None),
    ("reviewed_at", _l("Reviewed"), False, None),
    ("reviewer", _l("Reviewer"), False, None),
    # A reviewer's free text may name people.
    ("reason", _l("Reason"), True, None),
)


def _risk_cells(score: Score) -> dict[str, Any]:
    """A score as table cells: the number, the band's label, what made it."""
    return {
        "risk": score.total,
        "risk_band": risk_band_label(score.band),
        "risk_parts": risk_parts_text(score),
    }


def _scored(rows: Iterable[Any]) -> Iterator[tuple[Any, Score]]:
    """Rows with their visits' risk scores, fetched a batch of rows at a time (a file
    of a whole area streams)."""
    batch: list[Any] = []
    for row in rows:
        batch.append(row)
        if len(batch) == BATCH:
            yield from _score_batch(batch)
            batch = []
    yield from _score_batch(batch)


def _score_batch(rows: list[Any]) -> Iterator[tuple[Any, Score]]:
    scores = visit_scores([row.id for row in rows])
    return ((row, scores[row.id]) for row in rows)


def _by_risk(query: Any, *, everything: bool, page: int) -> Iterator[tuple[Any, Score]]:
    """The rows of ``query`` riskiest first (newest first among equal scores), paged
    after the sort: the ids and their scores first, then the page's rows."""
    ids = [row.id for row in db.session.execute(query.with_only_columns(Survey.id))]
    scores = visit_scores(ids)
    ordered = sorted(ids, key=lambda i: -scores[i].total)  # stable: newest first in ties
    if not everything:
        start = (max(1, page) - 1) * PAGE_ROWS
        ordered = ordered[start : start + PAGE_ROWS]
    for offset in range(0, len(ordered), BATCH):
        batch = ordered[offset : offset + BATCH]
        found = {row.id: row for row in db.session.execute(query.where(Survey.id.in_(batch)))}
        yield from ((found[i], scores[i]) for i in batch)


def review_table(
    actor: User,
    area: Area,
    status: ReviewStatus | None,
    month: str | None,
    *,
    everything: bool,
    page: int = 1,
    sort: str | None = None,
) -> Table:
    """Visits of the area, newest first (``sort="risk"``: riskiest first), with their
    review state and risk score; ``everything`` for a file, else page ``page`` of
    PAGE_ROWS."""
    query = _review_query(status, month, area)
    if sort == "risk":
        scored = _by_risk(query, everything=everything, page=page)
    else:
        if not everything:
            query = query.limit(PAGE_ROWS).offset((max(1, page) - 1) * PAGE_ROWS)
        scored = _scored(db.session.execute(query))

    def rows() -> Iterator[dict[str, Any]]:
        for row, score in scored:
            yield {
                "visit": row.id,
                "finished_at": row.finished_at,
                "township": row.township,
                "village": row.village,
                "case": row.case_code,
                "case_url": url_for("cases.case_detail", case_code=row.case_code)
                + f"#visit-{row.id}",
                "kind": _label(VISIT_KIND_LABELS, row.kind),
                "caseworker": row.display_name or row.username,
                "open_flags": row.open_flags,
                **_risk_cells(score),
                "status": _label(REVIEW_STATUS_LABELS, row.shown),
                "reviewed_at": row.reviewed_at,
                "reviewer": row.reviewer_name or row.reviewer_login,
                "reason": row.review_reason,
            }

    filters = {_("Area"): f"{area.name} ({area.code})"}
    if status is not None:
        filters[_("Review state")] = _label(REVIEW_STATUS_LABELS, status.value)
    if month:
        filters[_("Month")] = month
    if sort == "risk":
        filters[_("Order")] = _("riskiest first")
    return Table(
        name="visits",
        title=_("Visits by review state"),
        columns=[
            Column(key, str(label), personal, link) for key, label, personal, link in REVIEW_COLUMNS
        ],
        rows=list(rows()) if not everything else rows(),
        filters=filters,
    )


# ------------------------------------------------------------------ caseworker activity


@dataclass
class Activity:
    caseworker_id: int
    caseworker: str
    township: str
    visits: int = 0
    reviews_on_time: int = 0
    reviews_late: int = 0
    median_minutes: float | None = None
    median_distance_m: float | None = None
    flagged: int = 0
    flags: str = ""
    shared_spot: int = 0
    rejected: int = 0
    back_checks_done: int = 0
    back_checks_failed: int = 0
    risk: Score | None = None

    @property
    def flagged_share(self) -> float | None:
        return round(100 * self.flagged / self.visits, 1) if self.visits else None


def activity(actor: User, area: Area, month: str) -> list[Activity]:
    """Each caseworker's month in ``area``: visits to its households finished in the
    month (local time). A caseworker without the console sees only their own row."""
    start, end = month_bounds(month)
    own_only = not can(actor, Capability.READ_CONSOLE)
    in_month = and_(_in_area(area), Survey.finished_at >= start, Survey.finished_at < end)
    if own_only:
        in_month = and_(in_month, Survey.caseworker_id == actor.id)
    month_visits = _MonthVisits(in_month)
    rows = _caseworkers(actor, area, month_visits, own_only=own_only)
    _visit_counts(rows, month_visits)
    _flag_counts(rows, month_visits)
    _back_check_counts(rows, month_visits)
    _medians_and_spots(rows, month_visits)
    if not own_only:  # the score is for reviewers and supervisors, not to be gamed
        for cw, score in month_scores(rows.keys(), month).items():
            rows[cw].risk = score
    return sorted(rows.values(), key=lambda r: (r.township, r.caseworker, r.caseworker_id))


@dataclass(frozen=True)
class _MonthVisits:
    """The month's visits to households of the area (the condition of every query)."""

    condition: ColumnElement[bool]

    def select(self, *columns: Any) -> Any:
        return (
            select(*columns)
            .select_from(Survey)
            .join(Household, Household.id == Survey.household_id)
            .join(Area, Area.id == Household.village_id)
            .where(self.condition)
        )


def _caseworkers(
    actor: User, area: Area, visits: _MonthVisits, *, own_only: bool
) -> dict[int, Activity]:
    """The area's caseworkers and whoever visited its households in the month."""
    caseworkers = select(User.id, User.display_name, User.username, Area.name).join(
        Area, Area.id == User.area_id
    )
    if own_only:
        caseworkers = caseworkers.where(User.id == actor.id)
    else:
        caseworkers = caseworkers.where(User.role == Role.CASEWORKER, _in_area(area))
    seen = visits.select(Survey.caseworker_id).distinct().subquery()
    wanted = caseworkers.union(
        select(User.id, User.display_name, User.username, Area.name)
        .join(Area, Area.id == User.area_id)
        .where(User.id.in_(select(seen.c.caseworker_id)))
    )
    return {
        user_id: Activity(user_id, display_name or username, township)
        for user_id, display_name, username, township in db.session.execute(wanted)
    }


def _visit_counts(rows: dict[int, Activity], visits: _MonthVisits) -> None:
    for cw, count, on_time, late, rejected in db.session.execute(
        visits.select(
            Survey.caseworker_id,
            func.count(Survey.id),
            func.count(case((Survey.review_on_time.is_(True), Survey.id))),
            func.count(case((Survey.review_on_time.is_(False), Survey.id))),
            func.count(case((Survey.review_status == ReviewStatus.REJECTED, Survey.id))),
        ).group_by(Survey.caseworker_id)
    ):
        row = rows[cw]
        row.visits, row.reviews_on_time, row.reviews_late = count, on_time, late
        row.rejected = rejected


def _flag_counts(rows: dict[int, Activity], visits: _MonthVisits) -> None:
    weighty = SurveyFlag.severity.in_(WEIGHTY_SEVERITIES)
    flagged_visits = func.count(func.distinct(Survey.id))
    for cw, flagged in db.session.execute(
        visits.select(Survey.caseworker_id, flagged_visits)
        .join(SurveyFlag, SurveyFlag.survey_id == Survey.id)
        .where(weighty)
        .group_by(Survey.caseworker_id)
    ):
        rows[cw].flagged = flagged
    by_code: dict[int, list[tuple[str, int]]] = defaultdict(list)
    for cw, code, count in db.session.execute(
        visits.select(Survey.caseworker_id, SurveyFlag.code, flagged_visits)
        .join(SurveyFlag, SurveyFlag.survey_id == Survey.id)
        .where(weighty)
        .group_by(Survey.caseworker_id, SurveyFlag.code)
        .order_by(Survey.caseworker_id, flagged_visits.desc(), SurveyFlag.code)
    ):
        by_code[cw].append((code, count))
    for cw, codes in by_code.items():
        rows[cw].flags = "; ".join(f"{_label(FLAG_LABELS, c)} {n}" for c, n in codes)


def _back_check_counts(rows: dict[int, Activity], visits: _MonthVisits) -> None:
    done = case((BackCheck.outcome.is_not(None), BackCheck.survey_id))
    failed = case((BackCheck.outcome.in_(FAILED_OUTCOMES), BackCheck.survey_id))
    for cw, done_count, failed_count in db.session.execute(
        visits.select(
            Survey.caseworker_id,
            func.count(func.distinct(done)),
            func.count(func.distinct(failed)),
        )
        .join(BackCheck, BackCheck.survey_id == Survey.id)
        .group_by(Survey.caseworker_id)
    ):
        rows[cw].back_checks_done, rows[cw].back_checks_failed = done_count, failed_count


def _medians_and_spots(rows: dict[int, Activity], visits: _MonthVisits) -> None:
    """Medians and shared spots: this month's visits of the area, in Python."""
    durations: dict[int, list[float]] = defaultdict(list)
    distances: dict[int, list[float]] = defaultdict(list)
    points = []
    owner = {}
    for (
        visit_id,
        cw,
        household_id,
        started,
        finished,
        lat,
        lon,
        home_lat,
        home_lon,
    ) in db.session.execute(
        visits.select(
            Survey.id,
            Survey.caseworker_id,
            Survey.household_id,
            Survey.started_at,
            Survey.finished_at,
            Survey.gps_lat,
            Survey.gps_lon,
            Household.home_lat,
            Household.home_lon,
        )
    ):
        seconds = (finished - started).total_seconds()
        if seconds >= 0:
            durations[cw].append(seconds / 60)
        distances[cw].append(distance_m(lat, lon, home_lat, home_lon))
        points.append((visit_id, household_id, lat, lon))
        owner[visit_id] = cw
    for visit_id in shared_spot_visits(points, region().supervision.shared_spot_m):
        rows[owner[visit_id]].shared_spot += 1
    for cw, row in rows.items():
        if durations[cw]:
            row.median_minutes = round(statistics.median(durations[cw]), 1)
        if distances[cw]:
            row.median_distance_m = round(statistics.median(distances[cw]))


ACTIVITY_COLUMNS = (
    ("caseworker", _l("Caseworker")),
    ("township", _l("Township")),
    ("visits", _l("Visits")),
    ("reviews_on_time", _l("Periodic reviews on time")),
    ("reviews_late", _l("Periodic reviews late")),
    ("median_minutes", _l("Median visit length (min)")),
    ("median_distance_m", _l("Median distance from home (m)")),
    ("flagged_share", _l("Visits flagged (%)")),
    ("flags", _l("Flags (visits)")),
    ("shared_spot", _l("Visits from a shared spot")),
    ("rejected", _l("Visits rejected")),
    ("back_checks_done", _l("Back-checks done")),
    ("back_checks_failed", _l("Back-checks failed")),
)


ACTIVITY_RISK_COLUMNS = (
    ("risk", _l("Risk score")),
    ("risk_band", _l("Risk")),
    ("risk_parts", _l("What made the risk")),
)


def activity_table(actor: User, area: Area, month: str) -> Table:
    """Each caseworker's month; for console readers with the caseworker-month's risk
    score (the caseworker's visits of the month in any area, and their record)."""
    found = activity(actor, area, month)
    scored = can(actor, Capability.READ_CONSOLE)
    columns = ACTIVITY_COLUMNS + (ACTIVITY_RISK_COLUMNS if scored else ())
    rows = []
    for row in found:
        cells = {key: getattr(row, key) for key, _label in ACTIVITY_COLUMNS}
        if scored and row.risk is not None:
            cells.update(_risk_cells(row.risk))
        rows.append(cells)
    return Table(
        name="activity",
        title=_("Caseworker activity"),
        columns=[Column(key, str(label)) for key, label in columns],
        rows=rows,
        filters={_("Area"): f"{area.name} ({area.code})", _("Month"): month},
    )


# ------------------------------------------------------------------ back-checks


def back_check_draws(area: Area, month: str) -> list[BackCheckDraw]:
    """The month's draws for this area and the areas around it that hold its visits."""
    return list(
        db.session.scalars(
            select(BackCheckDraw)
            .join(Area, Area.id == BackCheckDraw.area_id)
            .where(BackCheckDraw.month == month, _in_area(area))
            .order_by(Area.path)
        )
    )


def back_checks(area: Area, month: str) -> list[BackCheck]:
    """The month's sampled visits to households of the area (from any draw)."""
    village = aliased(Area)
    return list(
        db.session.scalars(
            select(BackCheck)
            .join(BackCheckDraw, BackCheckDraw.id == BackCheck.draw_id)
            .join(Survey, Survey.id == BackCheck.survey_id)
            .join(Household, Household.id == Survey.household_id)
            .join(village, village.id == Household.village_id)
            .where(
                BackCheckDraw.month == month,
                village.path.startswith(area.path, autoescape=True),
            )
            .order_by(BackCheck.weight.desc(), BackCheck.id)
        )
    )


def back_check_table(area: Area, month: str) -> Table:
    checks = back_checks(area, month)
    rows = []
    for check in checks:
        survey = check.survey
        rows.append(
            {
                "id": check.id,
                "visit": survey.id,
                "finished_at": survey.finished_at,
                "village": survey.household.village.name,
                "case": survey.household.case_code,
                "case_url": url_for("cases.case_detail", case_code=survey.household.case_code)
                + f"#visit-{survey.id}",
                "caseworker": survey.caseworker.label,
                "weight": round(check.weight, 2),
                "assigned_to": check.assigned_to.label if check.assigned_to else None,
                "outcome": _label(BACK_CHECK_OUTCOME_LABELS, check.outcome),
                "outcome_code": check.outcome,
                "note": check.note,
                "recorded_by": check.recorded_by.label if check.recorded_by else None,
                "recorded_at": check.recorded_at,
            }
        )
    return Table(
        name="backchecks",
        title=_("Back-check sample"),
        columns=[
            Column("visit", _("Visit")),
            Column("finished_at", _("Visit finished")),
            Column("village", _("Village")),
            Column("case", _("Case"), link="case_url"),
            Column("caseworker", _("Caseworker")),
            Column("weight", _("Weight")),
            Column("assigned_to", _("Assigned to")),
            Column("outcome", _("Outcome")),
            Column("note", _("Note"), personal=True),
            Column("recorded_by", _("Recorded by")),
            Column("recorded_at", _("Recorded")),
        ],
        rows=rows,
        filters={_("Area"): f"{area.name} ({area.code})", _("Month"): month},
    )
