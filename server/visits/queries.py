"""Which households a caseworker must visit."""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, cast
from zoneinfo import ZoneInfo

from flask import current_app
from sqlalchemy import (
    ColumnElement,
    Integer,
    LargeBinary,
    Select,
    String,
    bindparam,
    exists,
    or_,
    select,
    text,
    type_coerce,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import aliased

from server import clock
from server.areas.models import Area
from server.audit import service as audit
from server.auth.models import User
from server.auth.permissions import scope_to_actor
from server.cases.models import CaseState, Household, Member
from server.extensions import db
from server.proof_of_life.models import ContactTask, MonthStatus, ProofOfLifeMonth
from server.region import region
from server.types import field_cipher
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


@dataclass(frozen=True)
class PlannedVisit:
    """A visit due without its personal data (address, members' names): what the
    plan reads, no field decrypted."""

    household_id: int
    case_code: str
    kind: VisitKind
    due_by: date
    village_code: str
    village: str
    lat: float
    lon: float
    reasons: tuple[str, ...] = ()
    revisit: Revisit | None = None

    def key(self) -> tuple[object, ...]:
        """Everything of the visit its rendering shows, for the stamp."""
        revisit = self.revisit
        return (
            self.household_id,
            self.case_code,
            self.kind.value,
            self.due_by.isoformat(),
            self.village_code,
            self.village,
            self.lat,
            self.lon,
            self.reasons,
            None
            if revisit is None
            else (
                revisit.survey_id,
                revisit.client_uuid,
                revisit.visit_kind,
                revisit.finished_at.isoformat(),
                revisit.rejected_at.isoformat(),
                revisit.reason,
            ),
        )


@dataclass(frozen=True)
class DuePlan:
    """Which visits are due to an actor, soonest first, without personal data."""

    actor_id: int
    visits: list[PlannedVisit]

    @property
    def household_ids(self) -> list[int]:
        return sorted({v.household_id for v in self.visits})


# The columns of a planned visit's household and village (nothing encrypted).
_PLACE = (
    Household.id,
    Household.case_code,
    Household.home_lat,
    Household.home_lon,
    Area.code,
    Area.name,
)


def _planned(
    place: Sequence[Any],
    kind: VisitKind,
    due_by: date,
    reasons: tuple[str, ...] = (),
    revisit: Revisit | None = None,
) -> PlannedVisit:
    household_id, case_code, lat, lon, village_code, village = place
    return PlannedVisit(
        household_id=household_id,
        case_code=case_code,
        kind=kind,
        due_by=due_by,
        village_code=village_code,
        village=village,
        lat=lat,
        lon=lon,
        reasons=reasons,
        revisit=revisit,
    )


def _assisted_proof_of_life(actor: User, *, now: datetime) -> list[PlannedVisit]:
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
        select(*_PLACE)
        .join(Area, Household.village_id == Area.id)
        .where(
            Household.id.in_(list(due)),
            Household.state.in_([CaseState.APPROVED, CaseState.SUSPENDED]),
        )
    )
    zone = ZoneInfo(rules.timezone)
    visits = []
    for place in db.session.execute(scope_to_actor(query, actor)).all():
        by, reasons = due[place[0]]
        visits.append(
            _planned(
                place,
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


def _revisits(actor: User) -> list[PlannedVisit]:
    """The actor's own rejected visits, each due again ``revisit_days`` after the
    rejection (in the actor's area: a caseworker moved elsewhere no longer sees them)."""
    rules = region()
    zone = ZoneInfo(rules.timezone)
    rejected = open_revisits([actor.id]).subquery()
    query = (
        select(
            *_PLACE,
            rejected.c.id,
            rejected.c.client_uuid,
            rejected.c.kind,
            rejected.c.finished_at,
            rejected.c.reviewed_at,
            rejected.c.received_at,
            rejected.c.review_reason,
        )
        .join(rejected, rejected.c.household_id == Household.id)
        .join(Area, Household.village_id == Area.id)
    )
    visits = []
    for row in db.session.execute(scope_to_actor(query, actor)).all():
        place = row[: len(_PLACE)]
        survey_id, client_uuid, kind, finished_at, reviewed_at, received_at, reason = row[
            len(_PLACE) :
        ]
        rejected_at = reviewed_at or received_at  # a rejection is stamped
        visits.append(
            _planned(
                place,
                VisitKind.REVISIT,
                rejected_at.astimezone(zone).date()
                + timedelta(days=rules.supervision.revisit_days),
                revisit=Revisit(
                    survey_id=survey_id,
                    client_uuid=client_uuid,
                    visit_kind=kind,
                    finished_at=finished_at,
                    rejected_at=rejected_at,
                    reason=reason or "",
                ),
            )
        )
    return visits


def plan_due_visits(
    actor: User, *, today: date, window_days: int, now: datetime | None = None
) -> DuePlan:
    """Accepted cases to survey, active or suspended cases whose periodic review falls
    within ``window_days`` or is overdue, households whose proof of life needs help, and
    the actor's rejected visits to make again, in the actor's area, soonest first:
    which visits are due, read without decrypting anything (see :func:`render_due_visits`).
    """
    horizon = today + timedelta(days=window_days)
    query = (
        select(*_PLACE, Household.state, Household.next_review_on, Household.review_due_on)
        .join(Area, Household.village_id == Area.id)
        .where(
            or_(
                Household.state == CaseState.ACCEPTED,
                Household.state.in_([CaseState.APPROVED, CaseState.SUSPENDED])
                & (Household.next_review_on <= horizon),
            )
        )
    )
    visits = []
    for row in db.session.execute(scope_to_actor(query, actor)).all():
        place = row[: len(_PLACE)]
        state, next_review_on, review_due_on = cast(
            tuple[CaseState, date | None, date], row[len(_PLACE) :]
        )
        if state is CaseState.ACCEPTED or next_review_on is None:
            visits.append(_planned(place, VisitKind.INITIAL_SURVEY, review_due_on))
        else:
            visits.append(_planned(place, VisitKind.PERIODIC_REVIEW, next_review_on))
    visits.extend(_assisted_proof_of_life(actor, now=now or clock.utcnow()))
    visits.extend(_revisits(actor))
    visits.sort(key=lambda v: (v.due_by, v.household_id, v.kind.value))
    return DuePlan(actor_id=actor.id, visits=visits)


# Households per statement where a list of ids is bound one parameter each (SQLite
# allows 32,766 parameters per statement).
_ID_CHUNK = 10_000


def _chunks(ids: list[int]) -> Iterator[list[int]]:
    for start in range(0, len(ids), _ID_CHUNK):
        yield ids[start : start + _ID_CHUNK]


def _current_member() -> ColumnElement[bool]:
    """``Member.current`` in SQL: alive and still in the household."""
    return Member.alive.is_(True) & Member.left_on.is_(None)


def render_due_visits(plan: DuePlan) -> list[DueVisit]:
    """The plan's visits with their personal data: one decryption per household
    (the address) and per current member (the name), nothing else."""
    ids = plan.household_ids
    addresses: dict[int, str] = {}
    members: dict[int, list[DueMember]] = {household_id: [] for household_id in ids}
    for chunk in _chunks(ids):
        for household_id, address in db.session.execute(
            select(Household.id, Household.address).where(Household.id.in_(chunk))
        ):
            addresses[household_id] = address
        for household_id, member_id, name, relation in db.session.execute(
            select(Member.household_id, Member.id, Member.name, Member.relation)
            .where(Member.household_id.in_(chunk), _current_member())
            .order_by(Member.household_id, Member.id)
        ):
            members[household_id].append(DueMember(member_id, name, relation.value))
    return [
        DueVisit(
            household_id=v.household_id,
            case_code=v.case_code,
            kind=v.kind,
            due_by=v.due_by,
            village_code=v.village_code,
            village=v.village,
            address=addresses[v.household_id],
            lat=v.lat,
            lon=v.lon,
            members=list(members[v.household_id]),
            reasons=v.reasons,
            revisit=v.revisit,
        )
        for v in plan.visits
    ]


def record_names_read(actor: User, visits: Sequence[DueVisit]) -> None:
    """Audit a list of visits due shown with its names (one row per list)."""
    if visits:
        audit.record(
            "member.read_personal",
            actor=actor,
            object_type="visit_list",
            households=[v.household_id for v in visits],
        )


# ---------------------------------------------------------------- the list's version stamp

_STAMP_VERSION = "dibao due visits stamp v1"

_PG_PERSONAL_DIGEST = text(
    """
    SELECT encode(sha256(convert_to(
        coalesce((SELECT string_agg(h.id::text || ':' || coalesce(md5(h.address), '-'),
                                    ',' ORDER BY h.id)
                  FROM households h WHERE h.id = ANY(:ids)), '')
        || '|' ||
        coalesce((SELECT string_agg(m.id::text || ':' || m.household_id::text || ':'
                                    || m.relation || ':' || coalesce(md5(m.name), '-'),
                                    ',' ORDER BY m.id)
                  FROM members m
                  WHERE m.household_id = ANY(:ids) AND m.alive AND m.left_on IS NULL), ''),
        'UTF8')), 'hex')
    """
).bindparams(bindparam("ids", type_=ARRAY(Integer)))


def _personal_digest(ids: list[int]) -> bytes:
    """A digest of the stored (encrypted) personal data the plan's rendering would
    decrypt: the households' addresses and their current members' names and relations.
    Any change re-encrypts a value (a fresh nonce), so it changes the digest; nothing
    is decrypted. On PostgreSQL one statement computes it and no row leaves the
    database; elsewhere the rows stream, in order, into SHA-256."""
    if db.session.get_bind().dialect.name == "postgresql":
        value = db.session.scalar(_PG_PERSONAL_DIGEST, {"ids": ids})
        return str(value).encode("ascii")
    digest = hashlib.sha256()
    for chunk in _chunks(ids):
        for household_id, address in db.session.execute(
            select(Household.id, type_coerce(Household.address, LargeBinary))
            .where(Household.id.in_(chunk))
            .order_by(Household.id)
        ):
            address = address or b""
            digest.update(b"h%d:%d:%s," % (household_id, len(address), address))
    digest.update(b"|")
    for chunk in _chunks(ids):
        for member_id, household_id, relation, name in db.session.execute(
            select(
                Member.id,
                Member.household_id,
                type_coerce(Member.relation, String),
                type_coerce(Member.name, LargeBinary),
            )
            .where(Member.household_id.in_(chunk), _current_member())
            .order_by(Member.household_id, Member.id)
        ):
            name = name or b""
            digest.update(b"m%d:%d:%s:" % (member_id, household_id, relation.encode("utf-8")))
            digest.update(b"%d:%s," % (len(name), name))
    return digest.hexdigest().encode("ascii")


def due_visits_stamp(plan: DuePlan, caseworker: User, *, schema: str = "") -> str:
    """The version of the list the plan renders to, for the caseworker (an ETag's
    opaque value, 32 hex digits): it changes whenever the rendered list could (a visit
    due or no longer due, its kind, day, household, village or revisit; an address,
    name or relation; the caseworker's area; the data key; ``schema``, the answer's
    format) and differs between caseworkers. Keyed with the app's secret, so it
    cannot be guessed or computed from the data. Nothing personal is decrypted."""
    if plan.actor_id != caseworker.id:
        raise ValueError("the plan was made for another user")
    content = hashlib.sha256()
    for part in (
        _STAMP_VERSION,
        schema,
        caseworker.id,
        caseworker.area_id,
        caseworker.area.path,
        field_cipher().current_key_id,
    ):
        content.update(repr(part).encode("utf-8") + b"\x00")
    for visit in plan.visits:
        content.update(repr(visit.key()).encode("utf-8") + b"\n")
    content.update(_personal_digest(plan.household_ids))
    secret = str(current_app.config["SECRET_KEY"]).encode("utf-8")
    key = hmac.new(secret, _STAMP_VERSION.encode("ascii"), hashlib.sha256).digest()
    return hmac.new(key, content.digest(), hashlib.sha256).hexdigest()[:32]


def due_visits(
    actor: User,
    *,
    today: date,
    window_days: int,
    now: datetime | None = None,
    shows_names: bool = True,
) -> list[DueVisit]:
    """The visits due (:func:`plan_due_visits`) with their addresses and members.
    Reading the members' names is audited (one row per call); a caller that shows no
    names nor addresses (the worklist page) passes ``shows_names=False``.
    """
    visits = render_due_visits(
        plan_due_visits(actor, today=today, window_days=window_days, now=now)
    )
    if shows_names:
        record_names_read(actor, visits)
    return visits
