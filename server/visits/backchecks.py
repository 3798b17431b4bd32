"""The monthly back-check sample: visits a supervisor goes to see again, drawn at random
with more weight on doubtful visits and on caseworkers with a doubtful record, and what
the re-visit found (docs/supervision.md, "Back-checks").

The draw is reproducible: the random numbers come from a generator seeded with the
SHA-256 of ``dibao-backchecks:<month>:<area code>``, drawn in the order of the visits'
ids, so the same visits with the same weights give the same sample. It is stored
(``BackCheckDraw``, one per area and month): drawing again returns the stored sample.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from server import clock
from server.areas.models import Area
from server.audit import service as audit
from server.auth.models import User
from server.auth.permissions import Capability, require, require_visible
from server.cases.models import Household
from server.errors import IllegalTransition, ReasonRequired, ValidationFailed
from server.extensions import db
from server.months import current_month, month_span, parse_month
from server.region import region
from server.validation import written_reason
from server.visits.integrity.risk import draw_weight
from server.visits.integrity.risk_queries import FAILED_OUTCOMES as FAILED_OUTCOMES
from server.visits.integrity.risk_queries import month_scores, rules, visit_scores
from server.visits.models import BackCheck, BackCheckDraw, BackCheckOutcome, Survey

# Flags that count on the activity page ("visits flagged"): info flags (no EXIF, a kind
# that does not fit) are common and say little.
WEIGHTY_SEVERITIES = ("warning", "critical")


def month_bounds(month: str) -> tuple[datetime, datetime]:
    """[start, end) of a local month, as aware UTC datetimes."""
    return month_span(month, region().timezone)


def seed_for(month: str, area_code: str) -> str:
    return hashlib.sha256(f"dibao-backchecks:{month}:{area_code}".encode()).hexdigest()


def weighted_sample(items: Sequence[tuple[int, float]], size: int, seed: str) -> list[int]:
    """``size`` ids drawn without replacement, each with probability growing with its
    weight (Efraimidis and Spirakis, 2006: key = log(u) / weight, the largest keys win),
    reproducible for a seed; ``items`` are (id, weight > 0), taken in id order."""
    # Reproducible on purpose (seeded from the month and area), not a secret.
    generator = random.Random(int(seed, 16))  # noqa: S311
    keyed = []
    for item_id, weight in sorted(items):
        u = generator.random()
        key = math.log(u) / weight if u > 0 else -math.inf
        keyed.append((key, item_id))
    keyed.sort(reverse=True)
    return sorted(item_id for _key, item_id in keyed[: max(size, 0)])


@dataclass(frozen=True)
class Candidate:
    survey_id: int
    caseworker_id: int
    weight: float


def candidates(area: Area, month: str) -> list[Candidate]:
    """The month's visits to households of ``area`` with their weights: 1 + the visit's
    risk score + a share of its caseworker-month's (server.visits.integrity.risk.draw_weight)."""
    start, end = month_bounds(month)
    rows = db.session.execute(
        select(Survey.id, Survey.caseworker_id)
        .join(Household, Household.id == Survey.household_id)
        .join(Area, Area.id == Household.village_id)
        .where(
            Area.path.startswith(area.path, autoescape=True),
            Survey.finished_at >= start,
            Survey.finished_at < end,
        )
    ).all()
    visits = visit_scores([survey_id for survey_id, _cw in rows])
    months = month_scores({cw for _id, cw in rows}, month)
    found = rules()
    return [
        Candidate(survey_id, cw, draw_weight(visits[survey_id], months[cw], found))
        for survey_id, cw in rows
    ]


def risk_weight(survey_ids: Collection[int], month: str) -> dict[int, float]:
    """The draw weight of each visit (of any area) for ``month``'s sample."""
    found = visit_scores(survey_ids)
    owners = dict(
        db.session.execute(select(Survey.id, Survey.caseworker_id).where(Survey.id.in_(found)))
        .tuples()
        .all()
    )
    months = month_scores(set(owners.values()), month)
    found_rules = rules()
    return {
        i: draw_weight(score, months.get(owners.get(i, -1)), found_rules)
        for i, score in found.items()
    }


def draw(area: Area, month: str, *, actor: User | None) -> tuple[BackCheckDraw, bool]:
    """The back-check sample of ``area`` for ``month``: the stored one, or a new draw
    (True) of ``back_check_sample`` visits. A month that has not begun is refused.
    ``actor`` (None from the CLI) must record back-checks and hold the area."""
    if actor is not None:
        require_visible(actor, area, lambda a: a, "area", code=area.code)
        require(
            actor,
            Capability.RECORD_BACK_CHECKS,
            "only supervisors and county approvers draw back-checks",
            action="draw_back_checks",
        )
    try:
        parse_month(month)
    except ValueError:
        raise ValidationFailed("a month such as 2026-11", field="month", month=month) from None
    if month > current_month(clock.utcnow(), region().timezone):
        raise ValidationFailed("that month has not begun", field="month", month=month)
    existing = _stored_draw(area, month)
    if existing is not None:
        return existing, False
    pool = candidates(area, month)
    seed = seed_for(month, area.code)
    chosen = set(
        weighted_sample(
            [(c.survey_id, c.weight) for c in pool], region().supervision.back_check_sample, seed
        )
    )
    now = clock.utcnow()
    record = BackCheckDraw(
        area_id=area.id,
        month=month,
        drawn_at=now,
        drawn_by_id=actor.id if actor is not None else None,
        seed=seed,
        population=len(pool),
    )
    for c in pool:
        if c.survey_id in chosen:
            record.checks.append(
                BackCheck(
                    survey_id=c.survey_id,
                    weight=c.weight,
                    sampled_at=now,
                    assigned_to_id=actor.id if actor is not None else None,
                )
            )
    try:
        with db.session.begin_nested():
            db.session.add(record)
    except IntegrityError:  # drawn at the same moment by someone else: theirs stands
        found = _stored_draw(area, month)
        if found is None:
            raise
        return found, False
    audit.record(
        "backcheck.drawn",
        actor=actor,
        object_type="back_check_draw",
        object_id=record.id,
        area=area.code,
        month=month,
        population=len(pool),
        sample=len(record.checks),
    )
    db.session.flush()
    return record, True


def _stored_draw(area: Area, month: str) -> BackCheckDraw | None:
    return db.session.scalar(
        select(BackCheckDraw).where(BackCheckDraw.area_id == area.id, BackCheckDraw.month == month)
    )


def record_outcome(
    actor: User, back_check_id: int, outcome: BackCheckOutcome | str, note: str | None
) -> BackCheck:
    """What the re-visit found; a note is needed unless it confirmed the visit. A later
    record replaces an earlier one (both stay in the audit log: ``backcheck.recorded``)."""
    check = require_visible(
        actor,
        db.session.get(BackCheck, back_check_id),
        lambda c: c.survey.household.village,
        "back-check",
    )
    require(
        actor,
        Capability.RECORD_BACK_CHECKS,
        "only supervisors and county approvers record back-checks",
        action="record_back_check",
    )
    try:
        found = BackCheckOutcome(outcome)
    except ValueError:
        raise IllegalTransition(
            f"no back-check outcome {outcome!r}", action="record_back_check"
        ) from None
    note = written_reason(note, "record_back_check")
    if found is not BackCheckOutcome.CONFIRMED and note is None:
        raise ReasonRequired(f"{found.value} needs a note", action="record_back_check")
    previous = check.outcome
    check.outcome = found.value
    check.note = note
    check.recorded_by_id = actor.id
    check.recorded_at = clock.utcnow()
    audit.record(
        "backcheck.recorded",
        actor=actor,
        object_type="back_check",
        object_id=check.id,
        survey_id=check.survey_id,
        outcome=found.value,
        previous=previous,
    )
    db.session.flush()
    return check
