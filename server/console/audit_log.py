"""The audit-log view: who did what, when, filtered by person, case, action and local
dates, newest first, scoped to an area (docs/supervision.md, "Exports and the audit
log")."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Integer, Select, and_, case, cast, func, or_, select

from server.areas.models import Area
from server.audit.models import AuditEntry
from server.auth.models import User
from server.cases.models import Household
from server.console.places import case_url
from server.extensions import db
from server.labels import (
    ACTION_LABELS,
    AUDIT_ACTION_LABELS,
    AUDIT_OBJECT_LABELS,
    ROLE_LABELS,
    audit_action_label,
)
from server.region import region

DETAILS_SHOWN = 300  # characters of a row's details on the page (the file has them all)


def about_household() -> ColumnElement[int | None]:
    """SQL: the household a row is about: its object when that is a household, else
    the ``household_id`` of its details (members, visits, months, attempts)."""
    return case(
        (AuditEntry.object_type == "household", cast(AuditEntry.object_id, Integer)),
        else_=AuditEntry.details["household_id"].as_integer(),
    )


@dataclass(frozen=True)
class AuditFilters:
    person: str | None = None  # a username
    household_id: int | None = None
    action: str | None = None  # exact, or a prefix ending in "." ("case.")
    since: date | None = None  # local dates, both included
    until: date | None = None


def _local_midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=ZoneInfo(region().timezone)).astimezone(UTC)


def _query(area: Area, filters: AuditFilters) -> Select[*tuple[Any, ...]]:
    hid = about_household()
    actors_here = (
        select(User.id)
        .join(Area, Area.id == User.area_id)
        .where(Area.path.startswith(area.path, autoescape=True))
    )
    cases_here = (
        select(Household.id)
        .join(Area, Area.id == Household.village_id)
        .where(Area.path.startswith(area.path, autoescape=True))
    )
    scope: list[ColumnElement[bool]] = [AuditEntry.actor_id.in_(actors_here), hid.in_(cases_here)]
    if area.parent_id is None:  # the whole region: its system rows too (no actor, no case)
        scope.append(and_(AuditEntry.actor_id.is_(None), hid.is_(None)))
    query = (
        select(AuditEntry, User.username, User.role, Household.case_code)
        .outerjoin(User, User.id == AuditEntry.actor_id)
        .outerjoin(Household, Household.id == hid)
        .where(or_(*scope))
    )
    if filters.person:
        query = query.where(func.lower(User.username) == filters.person.strip().lower())
    if filters.household_id is not None:
        query = query.where(hid == filters.household_id)
    if filters.action:
        wanted = filters.action.strip()
        if wanted.endswith((".", "*")):
            query = query.where(AuditEntry.action.startswith(wanted.rstrip("*"), autoescape=True))
        else:
            query = query.where(AuditEntry.action == wanted)
    if filters.since is not None:
        query = query.where(AuditEntry.at >= _local_midnight(filters.since))
    if filters.until is not None:
        query = query.where(AuditEntry.at < _local_midnight(filters.until + timedelta(days=1)))
    return query.order_by(AuditEntry.at.desc(), AuditEntry.id.desc())


def details_text(details: dict[str, Any] | None) -> str:
    """A row's details as one line of text (``key: value``), for a page or a file."""
    if not details:
        return ""
    return "; ".join(
        f"{key}: {json.dumps(value, ensure_ascii=False, default=str)}"
        for key, value in sorted(details.items())
    )


def _object(kind: str | None, ident: str | None) -> str:
    """What a row is about, by label: "案件 12"."""
    label = str(AUDIT_OBJECT_LABELS.get(kind, kind)) if kind else ""
    return f"{label} {ident or ''}".strip()


def _row(
    entry: AuditEntry, username: str | None, role: Any, case_code: str | None
) -> dict[str, Any]:
    text = details_text(entry.details)
    return {
        "at": entry.at,
        "person": username or "",
        "role": str(ROLE_LABELS[role]) if role is not None else "",
        "action": audit_action_label(entry.action),
        "action_code": entry.action,
        "object": _object(entry.object_type, entry.object_id),
        "case_code": case_code or "",
        "case_url": case_url(case_code) if case_code else None,
        "details": text,
        "details_short": text if len(text) <= DETAILS_SHOWN else text[:DETAILS_SHOWN] + "…",
        "remote_addr": entry.remote_addr or "",
    }


def audit_page(
    area: Area, filters: AuditFilters, *, page: int, per_page: int
) -> tuple[list[dict[str, Any]], bool]:
    """One page of rows, newest first, and whether there is a next page."""
    query = _query(area, filters).limit(per_page + 1).offset((page - 1) * per_page)
    rows = [_row(*found) for found in db.session.execute(query)]
    return rows[:per_page], len(rows) > per_page


def audit_rows(area: Area, filters: AuditFilters) -> Iterator[dict[str, Any]]:
    """Every matching row, newest first, fetched in batches (an export)."""
    query = _query(area, filters).execution_options(yield_per=1000)
    for found in db.session.execute(query):
        yield _row(*found)


def actions() -> list[str]:
    """The actions the filter offers: those with a label (every action the code
    writes; another one can still be asked for by ``?action=``). Not read from the log:
    a DISTINCT over millions of rows is a full scan."""
    moves = {f"case.{action}" for action in ACTION_LABELS}
    return sorted(set(AUDIT_ACTION_LABELS) | moves)
