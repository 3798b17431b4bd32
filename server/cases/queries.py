"""Read-only questions about cases, always scoped to the asking user's area."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Select, func, select
from sqlalchemy.orm import selectinload

from server.areas.models import Area, AreaLevel
from server.audit import service as audit
from server.auth.models import User
from server.auth.permissions import require_in_area, scope_to_actor
from server.cases.codes import normalize_case_code
from server.cases.models import (
    CaseState,
    Household,
    Member,
    id_number_hashes,
    phone_lookup_hashes,
)
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
    base = select(Household).join(Area, Household.village_id == Area.id)
    if state is not None:
        base = base.where(Household.state == state)
    return _page_of(scope_to_actor(base, actor), page, per_page)


def _page_of(base: Select[Household], page: int, per_page: int) -> CasePage:
    """One page of a scoped query of households (joined to their village, ``Area``),
    the most recently moved first."""
    member_count = select(func.count()).where(Member.household_id == Household.id).scalar_subquery()
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


@dataclass(frozen=True)
class CaseSearch:
    """What a staff user searches cases by: one key (a case code, an ID number, a
    phone) or filters (a village, a state). ID numbers and phones are looked up by
    their keyed hashes only."""

    case_code: str | None = None
    id_number: str | None = None
    phone: str | None = None
    village_id: int | None = None
    state: CaseState | None = None

    @property
    def personal(self) -> str | None:
        """``id_number`` or ``phone`` when the search is by one of them (audited)."""
        if self.id_number:
            return "id_number"
        if self.phone:
            return "phone"
        return None


def search_cases(actor: User, search: CaseSearch, *, page: int, per_page: int) -> CasePage:
    """Cases inside the actor's area matching ``search``; a case outside the area is
    simply not found, exactly as one that does not exist. A search by ID number or
    phone compares keyed look-up hashes (members.id_number_hash, members.phone_hash),
    never decrypted values, and leaves an audit row ``case.search`` with what it was
    by and how many cases it found, never the number searched for.
    """
    base = select(Household).join(Area, Household.village_id == Area.id)
    if search.case_code is not None:
        code = normalize_case_code(search.case_code)
        base = base.where(Household.case_code == (code or ""))
    if search.id_number:
        digests = id_number_hashes(search.id_number)
        base = base.where(
            Household.id.in_(select(Member.household_id).where(Member.id_number_hash.in_(digests)))
        )
    if search.phone:
        phone_hashes = phone_lookup_hashes(search.phone)
        base = base.where(
            Household.id.in_(select(Member.household_id).where(Member.phone_hash.in_(phone_hashes)))
        )
    if search.village_id is not None:
        base = base.where(Household.village_id == search.village_id)
    if search.state is not None:
        base = base.where(Household.state == search.state)
    result = _page_of(scope_to_actor(base, actor), page, per_page)
    if search.personal is not None:
        audit.record(
            "case.search",
            actor=actor,
            object_type="household",
            by=search.personal,
            results=result.total,
        )
        db.session.flush()
    return result


def villages_in(actor: User) -> list[Area]:
    """The villages inside the actor's area, by name (forms' choices)."""
    return list(
        db.session.scalars(
            scope_to_actor(select(Area).where(Area.level == AreaLevel.VILLAGE), actor).order_by(
                Area.name, Area.code
            )
        )
    )
