"""Read-only questions about cases, always scoped to the asking user's area."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from server.areas.models import Area
from server.auth.models import User
from server.auth.permissions import require_in_area, scope_to_actor
from server.cases.codes import normalize_case_code
from server.cases.models import CaseState, Household, Member
from server.errors import OutOfArea
from server.extensions import db


def state_counts(actor: User) -> dict[CaseState, int]:
    query = (
        select(Household.state, func.count())
        .join(Area, Household.village_id == Area.id)
        .group_by(Household.state)
    )
    counts = dict.fromkeys(CaseState, 0)
    for state, count in db.session.execute(scope_to_actor(query, actor)).all():
        counts[state] = count
    return counts


@dataclass(frozen=True)
class CaseRow:
    case_code: str
    village: str
    class_code: str
    state: CaseState
    members: int
    monthly_allowance: str | None
    conflict_of_interest: bool
    next_review_on: str | None
    decision_due_on: str | None


@dataclass(frozen=True)
class CasePage:
    rows: list[CaseRow]
    total: int
    page: int
    pages: int


def list_cases(actor: User, *, state: CaseState | None, page: int, per_page: int) -> CasePage:
    member_count = select(func.count()).where(Member.household_id == Household.id).scalar_subquery()
    base = select(Household).join(Area, Household.village_id == Area.id)
    if state is not None:
        base = base.where(Household.state == state)
    base = scope_to_actor(base, actor)
    total = db.session.scalar(select(func.count()).select_from(base.subquery())) or 0
    pages = max(1, -(-total // per_page))
    page = min(max(page, 1), pages)
    query = (
        base.add_columns(Area.name, member_count)
        .order_by(Household.state_changed_at.desc(), Household.id.desc())
        .limit(per_page)
        .offset((page - 1) * per_page)
    )
    rows = [_row(h, village_name, count) for h, village_name, count in db.session.execute(query)]
    return CasePage(rows=rows, total=total, page=page, pages=pages)


def _row(h: Household, village_name: str, count: int) -> CaseRow:
    """One line of the list; a closed case (terminated, rejected) shows no allowance
    and no deadline: neither applies any more."""
    open_case = not h.state.closed
    return CaseRow(
        case_code=h.case_code,
        village=village_name,
        class_code=h.household_class.code,
        state=h.state,
        members=count,
        monthly_allowance=(
            str(h.monthly_allowance) if open_case and h.monthly_allowance is not None else None
        ),
        conflict_of_interest=h.conflict_of_interest,
        next_review_on=h.next_review_on.isoformat() if open_case and h.next_review_on else None,
        decision_due_on=(
            h.decision_due_on.isoformat() if open_case and h.decision_due_on else None
        ),
    )


def get_case(actor: User, case_code: str) -> Household:
    """The case with this code inside the actor's area; OutOfArea (404) otherwise,
    the same answer whether the case is elsewhere or does not exist.
    """
    code = normalize_case_code(case_code)
    household = None
    if code is not None:
        household = db.session.scalar(
            select(Household)
            .where(Household.case_code == code)
            .options(selectinload(Household.events))
        )
    if household is None:
        raise OutOfArea("no such case")
    require_in_area(actor, household.village)
    return household
