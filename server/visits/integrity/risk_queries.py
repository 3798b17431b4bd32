"""The risk scores of stored visits and caseworker-months (server.visits.integrity.risk
does the arithmetic; this module only fetches its inputs): the flags of many visits in
one query per batch, a caseworker's month and record in three. Used by the console's
visit pages, the case page and the back-check draw (docs/field-visits.md, "The risk
score")."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence

from sqlalchemy import func, select

from server.extensions import db
from server.months import month_after, month_span
from server.region import region
from server.visits.integrity.risk import RiskFlag, RiskRules, Score, score_month, score_visit
from server.visits.models import BackCheck, BackCheckOutcome, ReviewStatus, Survey, SurveyFlag

# Back-check outcomes that count against the caseworker (``BackCheckOutcome.failed``).
FAILED_OUTCOMES = tuple(o.value for o in BackCheckOutcome if o.failed)
# Ids per IN (...) list: well under SQLite's and PostgreSQL's parameter limits.
BATCH = 500


def rules() -> RiskRules:
    return region().integrity.risk


def _batches(ids: Iterable[int]) -> Iterable[list[int]]:
    batch: list[int] = []
    for item in ids:
        batch.append(item)
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def visit_scores(survey_ids: Collection[int]) -> dict[int, Score]:
    """Each visit's score (a visit without flags scores 0, low): its flags fetched in one
    query per BATCH visits."""
    flags: dict[int, list[RiskFlag]] = {i: [] for i in survey_ids}
    for batch in _batches(sorted(flags)):
        for survey_id, code, severity, cleared in db.session.execute(
            select(
                SurveyFlag.survey_id,
                SurveyFlag.code,
                SurveyFlag.severity,
                SurveyFlag.cleared_at.is_not(None),
            ).where(SurveyFlag.survey_id.in_(batch))
        ):
            flags[survey_id].append(RiskFlag(code, severity, bool(cleared)))
    found = rules()
    return {survey_id: score_visit(items, found) for survey_id, items in flags.items()}


def loaded_visit_scores(visits: Sequence[Survey]) -> dict[int, Score]:
    """The scores of visits whose flags are already loaded (the case page)."""
    found = rules()
    return {
        v.id: score_visit(
            (RiskFlag(f.code, f.severity, f.cleared_at is not None) for f in v.flags), found
        )
        for v in visits
    }


def _record(caseworker_ids: list[int], month: str) -> dict[int, tuple[int, int]]:
    """Each caseworker's (visits rejected, back-checks failed) over the ``record_months``
    months up to the end of ``month``."""
    zone = region().timezone
    since, _ = month_span(month_after(month, 1 - rules().record_months), zone)
    _, until = month_span(month, zone)
    rejected: dict[int, int] = defaultdict(int)
    failed: dict[int, int] = defaultdict(int)
    for caseworker_id, count in db.session.execute(
        select(Survey.caseworker_id, func.count(Survey.id))
        .where(
            Survey.caseworker_id.in_(caseworker_ids),
            Survey.review_status == ReviewStatus.REJECTED,
            Survey.finished_at >= since,
            Survey.finished_at < until,
        )
        .group_by(Survey.caseworker_id)
    ):
        rejected[caseworker_id] = count
    for caseworker_id, count in db.session.execute(
        select(Survey.caseworker_id, func.count(func.distinct(BackCheck.survey_id)))
        .join(Survey, Survey.id == BackCheck.survey_id)
        .where(
            Survey.caseworker_id.in_(caseworker_ids),
            BackCheck.outcome.in_(FAILED_OUTCOMES),
            BackCheck.recorded_at >= since,
            BackCheck.recorded_at < until,
        )
        .group_by(Survey.caseworker_id)
    ):
        failed[caseworker_id] = count
    return {cw: (rejected[cw], failed[cw]) for cw in caseworker_ids}


def month_scores(caseworker_ids: Collection[int], month: str) -> dict[int, Score]:
    """Each caseworker's month: every visit they finished in it (local time, in any
    area: the score belongs to the caseworker), and their record."""
    wanted = sorted(set(caseworker_ids))
    if not wanted:
        return {}
    start, end = month_span(month, region().timezone)
    visits: dict[int, list[int]] = defaultdict(list)
    for batch in _batches(wanted):
        for survey_id, caseworker_id in db.session.execute(
            select(Survey.id, Survey.caseworker_id).where(
                Survey.caseworker_id.in_(batch),
                Survey.finished_at >= start,
                Survey.finished_at < end,
            )
        ):
            visits[caseworker_id].append(survey_id)
    scores = visit_scores([i for ids in visits.values() for i in ids])
    found = rules()
    result = {}
    for batch in _batches(wanted):
        for cw, (rejected, failed) in _record(batch, month).items():
            result[cw] = score_month(
                [scores[i] for i in visits[cw]],
                found,
                rejected=rejected,
                failed_back_checks=failed,
            )
    return result
