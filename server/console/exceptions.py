"""The exceptions inbox of one jurisdiction: what is late or stuck, one SQL query per
kind (and one for the households of undelivered reminders), never a query per row.

Each row: its kind, the case, township and village, a deadline (when there is one), an
age in days (since the exception arose: the deadline passed, the flag was raised, the
month went to review, the message failed, the task was made) and what it is about.
The exact rules are in docs/supervision.md, "Exceptions".
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import select

from server.cases.deadlines import decision_deadline, decision_overdue, review_overdue
from server.cases.models import Household
from server.cases.workflow import PRE_APPROVAL
from server.console.places import (
    case_url,
    live_months,
    local_day,
    window_last_day,
    with_place,
)
from server.extensions import db
from server.labels import (
    CONTACT_REASON_LABELS,
    EXCEPTION_KIND_LABELS,
    FLAG_LABELS,
    POL_STATUS_LABELS,
    STATE_LABELS,
)
from server.monthly.notices import notifier
from server.proof_of_life.models import ContactTask, MonthStatus, ProofOfLifeMonth
from server.visits.models import Survey, SurveyFlag


class ExceptionKind(enum.StrEnum):
    OVERDUE_DECISION = "overdue_decision"
    OVERDUE_REVIEW = "overdue_review"
    OPEN_FLAG = "open_flag"
    POL_REVIEW = "pol_review"
    UNDELIVERED = "undelivered"
    CONTACT_TASK = "contact_task"


SORTS = ("deadline", "age", "kind", "township")


@dataclass(frozen=True)
class Row:
    kind: ExceptionKind
    case_code: str
    township: str
    township_code: str
    village: str
    deadline: date | None
    since: date  # when the exception arose
    detail: str

    def as_dict(self, today: date, labels: dict[str, str]) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "kind_label": labels[self.kind.value],
            "case_code": self.case_code,
            "case_url": case_url(self.case_code),
            "township": self.township,
            "village": self.village,
            "deadline": self.deadline,
            "age": max(0, (today - self.since).days),
            "detail": self.detail,
            "overdue": self.deadline is not None and self.deadline < today,
        }


def _labels(labels: Mapping[Any, Any]) -> dict[Any, str]:
    """Lazy labels translated once per list (not once per row)."""
    return {key: str(label) for key, label in labels.items()}


def _overdue_decisions(path: str, today: date, now: datetime) -> Iterable[Row]:
    # The same rule as the progress home's "overdue" numbers (server.cases.deadlines).
    query = with_place(
        select(Household.case_code, Household.state, decision_deadline().label("deadline")),
        path,
    ).where(Household.state.in_(PRE_APPROVAL), decision_overdue(today))
    states = _labels(STATE_LABELS)
    for code, state, due, village, township, township_code in db.session.execute(query):
        detail = states[state]
        yield Row(
            ExceptionKind.OVERDUE_DECISION, code, township, township_code, village, due, due, detail
        )


def _overdue_reviews(path: str, today: date, now: datetime) -> Iterable[Row]:
    query = with_place(
        select(Household.case_code, Household.state, Household.next_review_on), path
    ).where(review_overdue(today))
    states = _labels(STATE_LABELS)
    for code, state, due, village, township, township_code in db.session.execute(query):
        detail = states[state]
        yield Row(
            ExceptionKind.OVERDUE_REVIEW, code, township, township_code, village, due, due, detail
        )


def _open_flags(path: str, today: date, now: datetime) -> Iterable[Row]:
    query = with_place(
        select(Household.case_code, SurveyFlag.code, SurveyFlag.raised_at)
        .select_from(SurveyFlag)
        .join(Survey, Survey.id == SurveyFlag.survey_id)
        .join(Household, Household.id == Survey.household_id),
        path,
    ).where(SurveyFlag.cleared_at.is_(None))
    flags = _labels(FLAG_LABELS)
    for code, flag, raised, village, township, township_code in db.session.execute(query):
        detail = flags.get(flag, flag)
        yield Row(
            ExceptionKind.OPEN_FLAG,
            code,
            township,
            township_code,
            village,
            None,
            local_day(raised),
            detail,
        )


def _months_in_review(path: str, today: date, now: datetime) -> Iterable[Row]:
    query = with_place(
        select(Household.case_code, ProofOfLifeMonth.month, ProofOfLifeMonth.updated_at)
        .select_from(ProofOfLifeMonth)
        .join(Household, Household.id == ProofOfLifeMonth.household_id),
        path,
    ).where(ProofOfLifeMonth.status == MonthStatus.REVIEW)
    in_review = str(POL_STATUS_LABELS["review"])
    for code, month, changed, village, township, township_code in db.session.execute(query):
        yield Row(
            ExceptionKind.POL_REVIEW,
            code,
            township,
            township_code,
            village,
            window_last_day(month),
            local_day(changed),
            f"{month} {in_review}",
        )


def _undelivered(path: str, today: date, now: datetime) -> Iterable[Row]:
    messages = notifier().undelivered(path, live_months(now))
    if not messages:
        return
    query = with_place(select(Household.id, Household.case_code), path).where(
        Household.id.in_({m.household_id for m in messages})
    )
    places = {row[0]: row[1:] for row in db.session.execute(query)}
    reasons = _labels(CONTACT_REASON_LABELS)
    last_days = {month: window_last_day(month) for month in {m.month for m in messages}}
    for message in messages:
        if message.household_id not in places:
            continue
        code, village, township, township_code = places[message.household_id]
        yield Row(
            ExceptionKind.UNDELIVERED,
            code,
            township,
            township_code,
            village,
            last_days[message.month],
            local_day(message.at),
            f"{message.month} {reasons.get(message.status, message.status)}",
        )


def _contact_tasks(path: str, today: date, now: datetime) -> Iterable[Row]:
    months = live_months(now)
    if not months:
        return
    query = with_place(
        select(Household.case_code, ContactTask.month, ContactTask.reason, ContactTask.created_at)
        .select_from(ContactTask)
        .join(Household, Household.id == ContactTask.household_id),
        path,
    ).where(ContactTask.resolved_at.is_(None), ContactTask.month.in_(months))
    reasons = _labels(CONTACT_REASON_LABELS)
    for code, month, reason, made, village, township, township_code in db.session.execute(query):
        yield Row(
            ExceptionKind.CONTACT_TASK,
            code,
            township,
            township_code,
            village,
            window_last_day(month),
            local_day(made),
            f"{month} {reasons.get(reason.value, reason.value)}",
        )


QUERIES: dict[ExceptionKind, Callable[[str, date, datetime], Iterable[Row]]] = {
    ExceptionKind.OVERDUE_DECISION: _overdue_decisions,
    ExceptionKind.OVERDUE_REVIEW: _overdue_reviews,
    ExceptionKind.OPEN_FLAG: _open_flags,
    ExceptionKind.POL_REVIEW: _months_in_review,
    ExceptionKind.UNDELIVERED: _undelivered,
    ExceptionKind.CONTACT_TASK: _contact_tasks,
}
_ORDER = {kind: index for index, kind in enumerate(ExceptionKind)}


def exceptions(
    path: str,
    *,
    today: date,
    now: datetime,
    kind: ExceptionKind | None = None,
    sort: str = "deadline",
    descending: bool = False,
) -> list[Row]:
    """The exceptions of the villages under ``path`` (an area's, or a township's when
    the list is filtered by one), sorted by ``sort`` (one of ``SORTS``); rows without
    a deadline last when sorted by deadline, either way. Rows, not dicts: a page turns
    only the rows it shows into table rows (``Row.as_dict``)."""
    rows = [
        row
        for chosen in ([kind] if kind is not None else list(ExceptionKind))
        for row in QUERIES[chosen](path, today, now)
    ]
    keys: dict[str, Callable[[Row], Any]] = {
        "deadline": lambda r: r.deadline or date.max,
        "age": lambda r: max(0, (today - r.since).days),
        "kind": lambda r: _ORDER[r.kind],
        "township": lambda r: r.township,
    }
    # A stable order first (case, kind), then the chosen key.
    rows.sort(key=lambda r: (r.case_code, _ORDER[r.kind]))
    if sort == "deadline" and descending:
        dated = sorted((r for r in rows if r.deadline), key=keys["deadline"], reverse=True)
        return dated + [r for r in rows if not r.deadline]
    rows.sort(key=keys[sort], reverse=descending)
    return rows


def as_dicts(rows: Iterable[Row], today: date) -> list[dict[str, Any]]:
    """Table rows of ``rows`` (the kinds' labels translated once)."""
    labels = _labels(EXCEPTION_KIND_LABELS)
    return [row.as_dict(today, labels) for row in rows]
