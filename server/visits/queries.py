"""Which households a caseworker must visit."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import date, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, or_, select
from sqlalchemy.orm import selectinload

from server.areas.models import Area
from server.audit import service as audit
from server.auth.models import User
from server.auth.permissions import scope_to_actor
from server.cases.models import CaseState, Household
from server.cases.workflow import region
from server.extensions import db


class VisitKind(enum.StrEnum):
    INITIAL_SURVEY = "initial_survey"
    PERIODIC_REVIEW = "periodic_review"
    # A member's monthly proof of life is under review (could not pass on their phone,
    # attempts used up, or an uncertain match): a caseworker helps at home.
    ASSISTED_PROOF_OF_LIFE = "assisted_proof_of_life"


@dataclass(frozen=True)
class DueMember:
    member_id: int
    name: str
    relation: str


@dataclass(frozen=True)
class DueVisit:
    household_id: int
    case_code: str
    kind: VisitKind
    due_by: date
    village_code: str
    village: str
    address: str
    lat: float
    lon: float
    members: list[DueMember]


def _assisted_proof_of_life(actor: User) -> list[DueVisit]:
    """Households with a member whose proof of life is under review, due by the end of
    that month's window (the member's month is then settled by the visit)."""
    from server.proof_of_life.models import MonthStatus, ProofOfLifeMonth

    query = (
        select(Household, Area, func.min(ProofOfLifeMonth.window_closes_at))
        .join(Area, Household.village_id == Area.id)
        .join(ProofOfLifeMonth, ProofOfLifeMonth.household_id == Household.id)
        .where(
            ProofOfLifeMonth.status == MonthStatus.REVIEW,
            Household.state.in_([CaseState.APPROVED, CaseState.SUSPENDED]),
        )
        .group_by(Household.id, Area.id)
        .options(selectinload(Household.members))
    )
    zone = ZoneInfo(region().timezone)
    return [
        DueVisit(
            household_id=household.id,
            case_code=household.case_code,
            kind=VisitKind.ASSISTED_PROOF_OF_LIFE,
            due_by=closes.astimezone(zone).date(),
            village_code=village.code,
            village=village.name,
            address=household.address,
            lat=household.home_lat,
            lon=household.home_lon,
            members=[
                DueMember(member_id=m.id, name=m.name, relation=m.relation.value)
                for m in household.living_members
            ],
        )
        for household, village, closes in db.session.execute(scope_to_actor(query, actor)).all()
    ]


def due_visits(actor: User, *, today: date, window_days: int) -> list[DueVisit]:
    """Accepted cases to survey, and active or suspended cases whose periodic review
    falls within ``window_days`` or is overdue, in the actor's area, soonest first.
    Reading the members' names is audited (one row per call).
    """
    horizon = today + timedelta(days=window_days)
    query = (
        select(Household, Area)
        .join(Area, Household.village_id == Area.id)
        .where(
            or_(
                Household.state == CaseState.ACCEPTED,
                Household.state.in_([CaseState.APPROVED, CaseState.SUSPENDED])
                & (Household.next_review_on <= horizon),
            )
        )
        .options(selectinload(Household.members))
    )
    rows = db.session.execute(scope_to_actor(query, actor)).all()
    visits = []
    for household, village in rows:
        if household.state is CaseState.ACCEPTED or household.next_review_on is None:
            kind, due_by = VisitKind.INITIAL_SURVEY, household.review_due_on
        else:
            kind, due_by = VisitKind.PERIODIC_REVIEW, household.next_review_on
        visits.append(
            DueVisit(
                household_id=household.id,
                case_code=household.case_code,
                kind=kind,
                due_by=due_by,
                village_code=village.code,
                village=village.name,
                address=household.address,
                lat=household.home_lat,
                lon=household.home_lon,
                members=[
                    DueMember(member_id=m.id, name=m.name, relation=m.relation.value)
                    for m in household.living_members
                ],
            )
        )
    visits.extend(_assisted_proof_of_life(actor))
    visits.sort(key=lambda v: (v.due_by, v.household_id, v.kind.value))
    if visits:
        audit.record(
            "member.read_personal",
            actor=actor,
            object_type="visit_list",
            households=[v.household_id for v in visits],
        )
    return visits
