"""Which households a caseworker must visit."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import Select, exists, or_, select
from sqlalchemy.orm import aliased, selectinload

from server import clock
from server.areas.models import Area
from server.audit import service as audit
from server.auth.models import User
from server.auth.permissions import scope_to_actor
from server.cases.models import CaseState, Household
from server.extensions import db
from server.proof_of_life.models import ContactTask, MonthStatus, ProofOfLifeMonth
from server.region import region
from server.visits.models import ReviewStatus, Survey


class VisitKind(enum.StrEnum):
    INITIAL_SURVEY = "initial_survey"
    PERIODIC_REVIEW = "periodic_review"
    # A member's monthly proof of life is under review (could not pass on their phone,
    # attempts used up, or an uncertain match): a caseworker helps at home.
    ASSISTED_PROOF_OF_LIFE = "assisted_proof_of_life"
    # Only on the list of visits due: a reviewer rejected one of this caseworker's
    # visits; a new visit to the household (of the rejected visit's kind) resolves it.
    REVISIT = "revisit"


@dataclass(frozen=True)
class Revisit:
    """The rejected visit a revisit item answers, and the reviewer's reason."""

    survey_id: int
    client_uuid: str
    visit_kind: str
    finished_at: datetime
    rejected_at: datetime
    reason: str


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
    # Why an assisted proof of life is due: review, missed, no_phone, opted_out, ...
    reasons: tuple[str, ...] = ()
    revisit: Revisit | None = None


def _due_visit(
    household: Household,
    village: Area,
    kind: VisitKind,
    due_by: date,
    reasons: tuple[str, ...] = (),
    revisit: Revisit | None = None,
) -> DueVisit:
    return DueVisit(
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
        reasons=reasons,
        revisit=revisit,
    )


def _assisted_proof_of_life(actor: User, *, now: datetime) -> list[DueVisit]:
    """Households where a member's monthly proof of life needs a caseworker: under
    review (due by the window's close), missed (due by the end of the grace period,
    when a pass still restores the payment), or not reachable by SMS this month (no
    phone, opted out, wrong number: due by the window's close)."""
    rules = region()
    due: dict[int, tuple[datetime, set[str]]] = {}

    def note(household_id: int, by: datetime, reason: str) -> None:
        when, reasons = due.get(household_id, (by, set()))
        due[household_id] = (min(when, by), reasons | {reason})

    for household_id, status, closes, need in db.session.execute(
        select(
            ProofOfLifeMonth.household_id,
            ProofOfLifeMonth.status,
            ProofOfLifeMonth.window_closes_at,
            ProofOfLifeMonth.assistance_need,
        ).where(
            (ProofOfLifeMonth.status == MonthStatus.REVIEW)
            | (
                (ProofOfLifeMonth.status == MonthStatus.MISSED)
                & (ProofOfLifeMonth.window_closes_at > rules.campaign.closed_since_grace_began(now))
            )
        )
    ):
        if status is MonthStatus.REVIEW:
            note(household_id, closes, "review")
            if need:  # the recipient asked for help: cannot move, cannot see, other
                note(household_id, closes, "assistance_requested")
        else:
            note(household_id, rules.campaign.grace_ends(closes), "missed")
    for household_id, reason, closes in db.session.execute(
        select(ContactTask.household_id, ContactTask.reason, ProofOfLifeMonth.window_closes_at)
        .join(
            ProofOfLifeMonth,
            (ProofOfLifeMonth.member_id == ContactTask.member_id)
            & (ProofOfLifeMonth.month == ContactTask.month),
        )
        .where(
            ContactTask.resolved_at.is_(None),
            ProofOfLifeMonth.status == MonthStatus.PENDING,
            ProofOfLifeMonth.window_closes_at > now,
        )
    ):
        note(household_id, closes, reason.value)
    if not due:
        return []
    query = (
        select(Household, Area)
        .join(Area, Household.village_id == Area.id)
        .where(
            Household.id.in_(list(due)),
            Household.state.in_([CaseState.APPROVED, CaseState.SUSPENDED]),
        )
        .options(selectinload(Household.members))
    )
    zone = ZoneInfo(rules.timezone)
    visits = []
    for household, village in db.session.execute(scope_to_actor(query, actor)).all():
        by, reasons = due[household.id]
        visits.append(
            _due_visit(
                household,
                village,
                VisitKind.ASSISTED_PROOF_OF_LIFE,
                by.astimezone(zone).date(),
                tuple(sorted(reasons)),
            )
        )
    return visits


def open_revisits(caseworker_ids: list[int] | None = None) -> Select[Survey]:
    """Rejected visits not yet answered: no visit to the same household by the same
    caseworker made and received after the rejection. ``caseworker_ids`` narrows it."""
    later = aliased(Survey)
    query = select(Survey).where(
        Survey.review_status == ReviewStatus.REJECTED,
        ~exists().where(
            later.household_id == Survey.household_id,
            later.caseworker_id == Survey.caseworker_id,
            later.id != Survey.id,
            later.received_at > Survey.reviewed_at,
            later.finished_at > Survey.reviewed_at,
        ),
    )
    if caseworker_ids is not None:
        query = query.where(Survey.caseworker_id.in_(caseworker_ids))
    return query


def _revisits(actor: User) -> list[DueVisit]:
    """The actor's own rejected visits, each due again ``revisit_days`` after the
    rejection (in the actor's area: a caseworker moved elsewhere no longer sees them)."""
    rules = region()
    zone = ZoneInfo(rules.timezone)
    rejected = open_revisits([actor.id]).subquery()
    query = (
        select(Household, Area, aliased(Survey, rejected))
        .join(rejected, rejected.c.household_id == Household.id)
        .join(Area, Household.village_id == Area.id)
        .options(selectinload(Household.members))
    )
    visits = []
    for household, village, survey in db.session.execute(scope_to_actor(query, actor)).all():
        rejected_at = survey.reviewed_at or survey.received_at  # a rejection is stamped
        visits.append(
            _due_visit(
                household,
                village,
                VisitKind.REVISIT,
                rejected_at.astimezone(zone).date()
                + timedelta(days=rules.supervision.revisit_days),
                revisit=Revisit(
                    survey_id=survey.id,
                    client_uuid=survey.client_uuid,
                    visit_kind=survey.kind,
                    finished_at=survey.finished_at,
                    rejected_at=rejected_at,
                    reason=survey.review_reason or "",
                ),
            )
        )
    return visits


def due_visits(
    actor: User,
    *,
    today: date,
    window_days: int,
    now: datetime | None = None,
    shows_names: bool = True,
) -> list[DueVisit]:
    """Accepted cases to survey, active or suspended cases whose periodic review falls
    within ``window_days`` or is overdue, households whose proof of life needs help, and
    the actor's rejected visits to make again, in the actor's area, soonest first.
    Reading the members' names is audited (one row per call); a caller that shows no
    names nor addresses (the worklist page) passes ``shows_names=False``.
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
        visits.append(_due_visit(household, village, kind, due_by))
    visits.extend(_assisted_proof_of_life(actor, now=now or clock.utcnow()))
    visits.extend(_revisits(actor))
    visits.sort(key=lambda v: (v.due_by, v.household_id, v.kind.value))
    if visits and shows_names:
        audit.record(
            "member.read_personal",
            actor=actor,
            object_type="visit_list",
            households=[v.household_id for v in visits],
        )
    return visits
