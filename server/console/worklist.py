"""Everyone's worklist (待我办理): what waits on the signed-in user, soonest deadline
first. The rules (docs/supervision.md, "Worklist"):

- a case waits on a role in the states where that role makes the workflow's forward
  move (``cases.workflow.next_steps``: township review, starting the public notice,
  approval once the notice has ended, accepting an application); the survey itself is
  a visit, listed with the visits;
- a proof-of-life month under review waits on the roles that decide months;
- a caseworker's visits due are the tablet's list (``visits.queries.plan_due_visits``,
  the same rule as ``/api/v1/visits/due``, without names or addresses: nothing is
  decrypted), and their township's open contact tasks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from flask import url_for
from sqlalchemy import or_, select

from server.areas.models import Area
from server.auth.models import User
from server.auth.permissions import Capability, can
from server.cases.deadlines import decision_deadline
from server.cases.models import CaseState, Household
from server.cases.objection_models import Objection, ObjectionStatus
from server.cases.workflow import next_steps
from server.console.places import (
    Township,
    Village,
    case_url,
    live_months,
    window_last_day,
    with_place,
)
from server.extensions import db
from server.labels import (
    ACTION_LABELS,
    CONTACT_REASON_LABELS,
    POL_STATUS_LABELS,
    VISIT_KIND_LABELS,
    WORK_KIND_LABELS,
    is_chinese,
)
from server.proof_of_life.models import ContactTask, MonthStatus, ProofOfLifeMonth
from server.visits.queries import plan_due_visits

# Made by uploading the household survey (a visit): on the list as a visit due.
BY_VISIT = frozenset({"record_survey"})


@dataclass(frozen=True)
class Item:
    kind: str  # WORK_KIND_LABELS
    case_code: str
    township: str
    township_code: str
    village: str
    deadline: date | None
    what: str
    url: str | None = None  # another page than the case's (an objection's)

    def as_dict(self, today: date) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "kind_label": str(WORK_KIND_LABELS[self.kind]),
            "case_code": self.case_code,
            "case_url": self.url or case_url(self.case_code),
            "township": self.township,
            "village": self.village,
            "deadline": self.deadline,
            "days_left": (self.deadline - today).days if self.deadline else None,
            "what": self.what,
            "overdue": self.deadline is not None and self.deadline < today,
        }


def _decisions(actor: User, path: str, today: date) -> Iterable[Item]:
    steps = {s: a for s, a in next_steps(actor.role).items() if a not in BY_VISIT}
    if not steps:
        return
    deadline = decision_deadline()
    query = with_place(
        select(Household.case_code, Household.state, deadline.label("deadline")), path
    ).where(
        Household.state.in_(list(steps)),
        # Approval only once the public notice has ended (workflow._apply_effects).
        or_(
            Household.state != CaseState.IN_PUBLIC_NOTICE,
            Household.notice_ends_on.is_(None),
            Household.notice_ends_on <= today,
        ),
    )
    for code, state, due, village, township, township_code in db.session.execute(query):
        what = str(ACTION_LABELS.get(steps[state], steps[state]))
        yield Item("decision", code, township, township_code, village, due, what)


def _months_to_decide(actor: User, path: str) -> Iterable[Item]:
    if not can(actor, Capability.DECIDE_PROOF_OF_LIFE):
        return
    query = with_place(
        select(Household.case_code, ProofOfLifeMonth.month)
        .select_from(ProofOfLifeMonth)
        .join(Household, Household.id == ProofOfLifeMonth.household_id),
        path,
    ).where(ProofOfLifeMonth.status == MonthStatus.REVIEW)
    for code, month, village, township, township_code in db.session.execute(query):
        what = f"{month} {POL_STATUS_LABELS['review']}"
        yield Item(
            "pol_decision", code, township, township_code, village, window_last_day(month), what
        )


def _visits(
    actor: User, township: Area | None, today: date, now: datetime, window_days: int
) -> Iterable[Item]:
    if not can(actor, Capability.USE_TABLETS):
        return
    visits = plan_due_visits(actor, today=today, window_days=window_days, now=now).visits
    if not visits:
        return
    townships = {
        code: (name, township_code)
        for code, name, township_code in db.session.execute(
            select(Village.code, Township.name, Township.code)
            .join(Township, Township.id == Village.parent_id)
            .where(Village.code.in_({v.village_code for v in visits}))
        )
    }
    for visit in visits:
        name, code = townships.get(visit.village_code, ("", ""))
        if township is not None and code != township.code:
            continue
        what = str(VISIT_KIND_LABELS.get(visit.kind.value, visit.kind.value))
        if visit.reasons:
            reasons = ("、" if is_chinese() else ", ").join(
                str(CONTACT_REASON_LABELS.get(r, r)) for r in visit.reasons
            )
            what = f"{what}: {reasons}"
        yield Item("visit", visit.case_code, name, code, visit.village, visit.due_by, what)


def _contact_tasks(actor: User, path: str, now: datetime) -> Iterable[Item]:
    if not can(actor, Capability.ASSIST_PROOF_OF_LIFE):
        return
    months = live_months(now)
    if not months:
        return
    query = with_place(
        select(Household.case_code, ContactTask.month, ContactTask.reason)
        .select_from(ContactTask)
        .join(Household, Household.id == ContactTask.household_id),
        path,
    ).where(ContactTask.resolved_at.is_(None), ContactTask.month.in_(months))
    for code, month, reason, village, township, township_code in db.session.execute(query):
        what = f"{month} {CONTACT_REASON_LABELS.get(reason.value, reason.value)}"
        yield Item(
            "contact_task", code, township, township_code, village, window_last_day(month), what
        )


def _objections(actor: User, path: str) -> Iterable[Item]:
    """Open objections raised during the public notice, for the roles that decide them
    (docs/office.md, "Objections"): to the objection's page, by its deadline."""
    if not can(actor, Capability.DECIDE_OBJECTIONS):
        return
    query = with_place(
        select(Household.case_code, Objection.id, Objection.deadline)
        .select_from(Objection)
        .join(Household, Household.id == Objection.household_id),
        path,
    ).where(Objection.status == ObjectionStatus.OPEN)
    what = str(WORK_KIND_LABELS["objection"])
    for code, objection_id, due, village, township, township_code in db.session.execute(query):
        url = url_for("objections.objection_page", case_code=code, objection_id=objection_id)
        yield Item("objection", code, township, township_code, village, due, what, url)


def worklist(
    actor: User,
    *,
    today: date,
    now: datetime,
    window_days: int,
    township: Area | None = None,
) -> list[dict[str, Any]]:
    """What waits on ``actor`` in their area (or in ``township`` inside it), by
    deadline (none last), then case."""
    path = township.path if township is not None else actor.area.path
    items = [
        *_decisions(actor, path, today),
        *_months_to_decide(actor, path),
        *_visits(actor, township, today, now, window_days),
        *_contact_tasks(actor, path, now),
        *_objections(actor, path),
    ]
    rows = [item.as_dict(today) for item in items]
    rows.sort(key=lambda r: (r["deadline"] or date.max, r["case_code"], r["kind"]))
    return rows
