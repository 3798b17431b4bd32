"""Proof of life: links, sessions, the verdict on submitted frames, monthly status.

Services flush, never commit (the view or command commits once per unit of work).
Month status rules (docs/proof-of-life.md):

- ``pending`` until the member passes; a failed attempt leaves it ``pending`` while
  attempts remain: an automatic check never records a month as ``failed``;
- ``passed`` on a passing attempt (this ends the month's reminders);
- ``review`` when the face match is uncertain or the month's attempts are used up:
  the caseworker gets an ``assisted_proof_of_life`` visit;
- ``failed`` and ``exempt`` only by a reviewer's decision, with a reason.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from flask import current_app
from geopy.distance import geodesic
from sqlalchemy import case, func, select, update
from sqlalchemy.orm import selectinload

from server import clock
from server.areas.models import Area
from server.audit import service as audit
from server.auth.models import User
from server.auth.permissions import (
    Capability,
    not_found,
    require,
    require_in_area,
    require_visible,
    scope_to_actor,
)
from server.cases.events import MemberLeft, member_left
from server.cases.models import Household, Member
from server.crypto import equal_secret
from server.devices.models import DeviceToken
from server.errors import DomainError, ReasonRequired, ValidationFailed
from server.extensions import db
from server.faces.engine import default_engine
from server.faces.models import FaceTemplate
from server.images import ImageRejected, check_no_trailing_data
from server.months import current_month, window
from server.proof_of_life import guided, links
from server.proof_of_life.events import MonthDecided, month_decided
from server.proof_of_life.guided import FACE_STEP, Observation, unpack_shape
from server.proof_of_life.models import (
    ContactReason,
    ContactTask,
    MonthStatus,
    Outcome,
    ProofOfLifeAttempt,
    ProofOfLifeFrame,
    ProofOfLifeMonth,
    StartedBy,
    designated,
    in_care,
)
from server.proof_of_life.pipeline import Thresholds, decode_frame, thresholds_for, verify_frames
from server.proof_of_life.pipeline import Verdict as PipelineVerdict
from server.proof_of_life.rules import ProofOfLifeRules
from server.region import region
from server.storage import BlobStore, HashingFile, blob_in_use
from server.validation import written_reason

TURNS = ("turn_left", "turn_right")
OTHERS = ("blink", "open_mouth")
CHALLENGES = TURNS + OTHERS


class LinkInvalid(DomainError):
    code = "link_invalid"
    http_status = 404


class LinkExpired(DomainError):
    code = "link_expired"
    http_status = 410


class AlreadyDone(DomainError):
    code = "already_passed"
    http_status = 409


class NotDesignated(DomainError):
    code = "not_designated"
    http_status = 409


class NotInCare(DomainError):
    """The member's household does not receive the allowance (not yet, or no longer):
    nothing to prove this month, and no link that would count it as pending."""

    code = "not_in_care"
    http_status = 409


class AttemptsExhausted(DomainError):
    code = "attempts_exhausted"
    http_status = 429


class SessionNotFound(DomainError):
    code = "session_not_found"
    http_status = 404


class SessionExpired(DomainError):
    code = "session_expired"
    http_status = 410


class SessionUsed(DomainError):
    code = "session_used"
    http_status = 409


class NonceMismatch(DomainError):
    code = "nonce_mismatch"
    http_status = 403


def rules() -> ProofOfLifeRules:
    return region().proof_of_life


def _key() -> bytes:
    return links.link_key(current_app.config["SECRET_KEY"])


def link_url(token: str) -> str:
    return f"{current_app.config['PUBLIC_BASE_URL']}/m/{token}"


# --------------------------------------------------------------------------- links


def month_record(member: Member, month: str) -> ProofOfLifeMonth:
    """The member's record for ``month``, created ``pending`` with its link on first use."""
    if not designated(member):
        raise NotDesignated("this member does not do a monthly proof of life")
    if not in_care(member.household):
        raise NotInCare(
            "this member's household does not receive the allowance: no proof of life is due",
            state=member.household.state.value,
        )
    record = db.session.scalar(
        select(ProofOfLifeMonth).where(
            ProofOfLifeMonth.member_id == member.id, ProofOfLifeMonth.month == month
        )
    )
    if record is None:
        _, closes = window(month, rules(), region().timezone)
        record = ProofOfLifeMonth(
            member_id=member.id,
            household_id=member.household_id,
            month=month,
            status=MonthStatus.PENDING,
            window_closes_at=closes,
            link_generation=1,
        )
        record.link_hash = links.token_hash(links.make_token(_key(), member.id, month, 1))
        db.session.add(record)
        db.session.flush()
    return record


def link_token(record: ProofOfLifeMonth) -> str:
    return links.make_token(_key(), record.member_id, record.month, record.link_generation)


def revoke_link(record: ProofOfLifeMonth, *, actor: User | None) -> str:
    """Invalidate the month's link and return its replacement."""
    record.link_generation += 1
    token = link_token(record)
    record.link_hash = links.token_hash(token)
    audit.record(
        "pol.link_revoked",
        actor=actor,
        object_type="pol_month",
        object_id=record.id,
        generation=record.link_generation,
    )
    db.session.flush()
    return token


def resolve_link(token: str, *, now: datetime) -> ProofOfLifeMonth:
    """The month record a link token opens; the same error for every unknown token."""
    if not links.well_formed(token):
        raise LinkInvalid("this link is not valid")
    record = db.session.scalar(
        select(ProofOfLifeMonth).where(ProofOfLifeMonth.link_hash == links.token_hash(token))
    )
    if record is None or not equal_secret(link_token(record), token):
        raise LinkInvalid("this link is not valid")
    if now >= record.window_closes_at and not _in_grace(record, now):
        raise LinkExpired("this month's proof of life has closed", month=record.month)
    return record


def deadline(record: ProofOfLifeMonth) -> datetime:
    """Until when the month's link opens: the window's close, or for a month missed at
    the close, the end of the grace period (a pass then restores the payment)."""
    if record.status is MonthStatus.MISSED:
        return region().campaign.grace_ends(record.window_closes_at)
    return record.window_closes_at


def _in_grace(record: ProofOfLifeMonth, now: datetime) -> bool:
    return record.status is MonthStatus.MISSED and now < deadline(record)


# --------------------------------------------------------------------------- limits


def _local_day_start(now: datetime) -> datetime:
    zone = ZoneInfo(region().timezone)
    local = now.astimezone(zone)
    return datetime(local.year, local.month, local.day, tzinfo=zone).astimezone(UTC)


@dataclass(frozen=True)
class AttemptCount:
    """The recipient's own attempts in the month's window and today (one query)."""

    in_month: int
    today: int

    @property
    def left(self) -> int:
        """Attempts still allowed now: the smaller of what the day and the month allow."""
        limits = rules()
        return max(
            0,
            min(limits.attempts_per_day - self.today, limits.attempts_per_month - self.in_month),
        )

    @property
    def month_exhausted(self) -> bool:
        return self.in_month >= rules().attempts_per_month


def count_attempts(record: ProofOfLifeMonth, *, now: datetime) -> AttemptCount:
    today = case((ProofOfLifeAttempt.created_at >= _local_day_start(now), 1), else_=0)
    in_month, in_day = db.session.execute(
        select(func.count(ProofOfLifeAttempt.id), func.coalesce(func.sum(today), 0)).where(
            ProofOfLifeAttempt.month_id == record.id,
            ProofOfLifeAttempt.counts_against_limits.is_(True),
        )
    ).one()
    return AttemptCount(int(in_month or 0), int(in_day or 0))


def attempts_left(record: ProofOfLifeMonth, *, now: datetime) -> int:
    """The recipient's own attempts still allowed now (the smaller of day and month)."""
    return count_attempts(record, now=now).left


def _resolve_contact(record: ProofOfLifeMonth, now: datetime) -> None:
    """The member's contact task of the month (if any) is done: they proved life, or
    their month went to a reviewer or was decided (the caseworker has nothing left to
    reach them for)."""
    db.session.execute(
        update(ContactTask)
        .where(
            ContactTask.member_id == record.member_id,
            ContactTask.month == record.month,
            ContactTask.resolved_at.is_(None),
        )
        .values(resolved_at=now)
    )


def _to_review(record: ProofOfLifeMonth, why: str) -> None:
    if record.status in (MonthStatus.PENDING, MonthStatus.FAILED):
        record.status = MonthStatus.REVIEW
        _resolve_contact(record, clock.utcnow())
        audit.record(
            "pol.month_to_review",
            actor=None,
            object_type="pol_month",
            object_id=record.id,
            household_id=record.household_id,
            why=why,
        )


# --------------------------------------------------------------------------- sessions


@dataclass(frozen=True)
class AssistContext:
    caseworker: User
    device: DeviceToken
    lat: float
    lon: float
    accuracy_m: float | None


ASSISTED_WHAT = "member in this household"


def _require_assisting(actor: User, household: Household) -> None:
    """Area first (the same "no such member" as an unknown id), then the role."""
    require_in_area(actor, household.village, ASSISTED_WHAT)
    require(actor, Capability.ASSIST_PROOF_OF_LIFE, "only caseworkers assist a proof of life")


def assisted_month(
    actor: User, *, household_id: int, member_id: int, now: datetime
) -> ProofOfLifeMonth:
    """The month a caseworker's tablet opens an assisted session for. A member of
    another household, of a household outside the actor's area, or no member at all:
    one answer (404), given before the member's designation or month is looked at.
    """
    member = db.session.get(Member, member_id)
    if member is not None and member.household_id != household_id:
        member = None
    member = require_visible(actor, member, lambda m: m.household.village, ASSISTED_WHAT)
    _require_assisting(actor, member.household)
    return month_record(member, this_month(now))


def pick_challenges(rng: secrets.SystemRandom | Any = None) -> list[str]:
    """One head turn (the flatness test needs real rotation) and one of blink /
    open_mouth, in random order."""
    chooser = rng or secrets.SystemRandom()
    pair = [chooser.choice(TURNS), chooser.choice(OTHERS)]
    chooser.shuffle(pair)
    return pair


def start_session(
    record: ProofOfLifeMonth,
    *,
    now: datetime,
    assist: AssistContext | None = None,
    challenges: Sequence[str] | None = None,
    guided: bool = False,
) -> ProofOfLifeAttempt:
    """Open an attempt: a fresh nonce and challenge sequence, valid for a short time.
    A ``guided`` one takes its frames step by step (:func:`submit_batch`)."""
    household = db.session.get(Household, record.household_id)
    if household is None:  # pragma: no cover - foreign key
        raise SessionNotFound("no such household")
    if assist is not None:
        # Before anything about the month: a caseworker of another area must not learn
        # whether it passed or whether the member is designated.
        _require_assisting(assist.caseworker, household)
    if record.status in (MonthStatus.PASSED, MonthStatus.EXEMPT):
        raise AlreadyDone("this month's proof of life is already done", status=record.status.value)
    limits = rules()
    member = db.session.get(Member, record.member_id)
    if member is None or not designated(member):
        raise NotDesignated("this member does not do a monthly proof of life")
    flags: list[str] = []
    distance_m = None
    if assist is None:
        used = count_attempts(record, now=now)
        if used.left <= 0:
            if used.month_exhausted:
                _to_review(record, "attempts_exhausted")
            raise AttemptsExhausted(
                "no attempts left for now: try again tomorrow, or your caseworker will help",
                month=record.month,
            )
    else:
        distance_m = geodesic((assist.lat, assist.lon), (household.home_lat, household.home_lon)).m
        if distance_m > limits.assisted_far_from_home_m:
            flags.append("gps_far_from_home")
    sequence = list(challenges) if challenges is not None else pick_challenges()
    if len(sequence) != 2 or any(c not in CHALLENGES for c in sequence):
        raise ValidationFailed("challenges must be two of " + ", ".join(CHALLENGES))
    attempt = ProofOfLifeAttempt(
        session_id=secrets.token_urlsafe(18),
        month_id=record.id,
        member_id=record.member_id,
        nonce=secrets.token_hex(16),
        challenges=",".join(sequence),
        started_by=StartedBy.RECIPIENT if assist is None else StartedBy.CASEWORKER,
        assisted_by_id=assist.caseworker.id if assist else None,
        device_token_id=assist.device.id if assist else None,
        gps_lat=assist.lat if assist else None,
        gps_lon=assist.lon if assist else None,
        gps_accuracy_m=assist.accuracy_m if assist else None,
        gps_distance_m=distance_m,
        flags=",".join(flags),
        created_at=now,
        expires_at=now
        + timedelta(seconds=limits.guided_session_seconds if guided else limits.session_seconds),
        counts_against_limits=assist is None,
        guided=guided,
        step=0 if guided else None,
        guide_state=json.dumps({"confirmed": [], "baseline": {}}) if guided else None,
    )
    db.session.add(attempt)
    db.session.flush()
    audit.record(
        "pol.session_started",
        actor=assist.caseworker if assist else None,
        object_type="pol_attempt",
        object_id=attempt.id,
        household_id=record.household_id,
        started_by=attempt.started_by.value,
        device_token_id=attempt.device_token_id,
        flags=attempt.flags,
        guided=guided,
    )
    return attempt


def find_session(
    session_id: str, device: DeviceToken | None = None, *, lock: bool = False
) -> ProofOfLifeAttempt:
    """The session with this id. A recipient's session is reached by its id alone (their
    phone holds it); an assisted one belongs to the tablet that opened it, and to any
    other caller, another tablet or none, it does not exist.
    """
    query = select(ProofOfLifeAttempt).where(ProofOfLifeAttempt.session_id == session_id)
    if lock:  # one batch of a guided session at a time (PostgreSQL; SQLite serialises)
        query = query.with_for_update()
    attempt = db.session.scalar(query)
    if attempt is None or (
        attempt.device_token_id is not None
        and (device is None or device.id != attempt.device_token_id)
    ):
        raise SessionNotFound("no such session")
    return attempt


# --------------------------------------------------------------------------- verdict


@dataclass(frozen=True)
class Verdict:
    """What the verification pipeline decided (see server/proof_of_life/pipeline.py)."""

    outcome: str
    reasons: tuple[str, ...]
    distance: float | None
    frame_hashes: list[str]
    measurements: dict[str, Any]
    model_name: str
    model_version: str

    @classmethod
    def judged(cls, verdict: Any, engine: Any) -> Verdict:
        """The pipeline's verdict (``pipeline.Verdict``) with the engine that made it."""
        return cls(
            outcome=verdict.outcome,
            reasons=tuple(verdict.reasons),
            distance=verdict.distance,
            frame_hashes=list(verdict.frame_hashes),
            measurements=dict(verdict.measurements),
            model_name=engine.model_name,
            model_version=engine.model_version,
        )


def member_templates(member_id: int, model_name: str) -> list[np.ndarray]:
    rows = db.session.scalars(
        select(FaceTemplate).where(
            FaceTemplate.member_id == member_id,
            FaceTemplate.active.is_(True),
            FaceTemplate.model_name == model_name,
        )
    ).all()
    return [np.frombuffer(row.encoding, dtype=np.float64).copy() for row in rows]


def earlier_frame_hashes(member_id: int, excluding: int) -> list[str]:
    rows = db.session.scalars(
        select(ProofOfLifeAttempt.frame_hashes).where(
            ProofOfLifeAttempt.member_id == member_id,
            ProofOfLifeAttempt.id != excluding,
            ProofOfLifeAttempt.frame_hashes.is_not(None),
        )
    ).all()
    hashes: list[str] = []
    for text in rows:
        hashes.extend(json.loads(text or "[]"))
    return hashes


def require_open(attempt: ProofOfLifeAttempt, *, now: datetime) -> None:
    """Refuse a spent or expired session (before its body is even read)."""
    if attempt.submitted_at is not None:
        raise SessionUsed("this session was already used: start a new one")
    if now >= attempt.expires_at:
        raise SessionExpired("this session has expired: start a new one")


@dataclass(frozen=True)
class SubmitResult:
    attempt: ProofOfLifeAttempt
    attempts_left: int


def submit_frames(
    attempt: ProofOfLifeAttempt,
    *,
    nonce: str,
    frames: Sequence[HashingFile],
    offsets_ms: Sequence[int] | None,
    now: datetime,
    store: BlobStore,
    verify: Callable[[Sequence[bytes], Sequence[str], int], Verdict] | None = None,
) -> SubmitResult:
    """Judge one session's frames, record everything, update the month's status."""
    require_open(attempt, now=now)
    if not equal_secret(attempt.nonce, nonce):
        raise NonceMismatch("the nonce does not belong to this session")
    limits = rules()
    if not limits.frames_min <= len(frames) <= limits.frames_max:
        raise ValidationFailed(
            f"send {limits.frames_min} to {limits.frames_max} frames, got {len(frames)}",
            field="frames",
        )
    if offsets_ms is not None and len(offsets_ms) != len(frames):
        raise ValidationFailed("offsets_ms must have one entry per frame", field="offsets_ms")

    _refuse_appended_data(frames)

    attempt.submitted_at = now
    digests = store.store_all(list(frames))
    contents = [store.path(d).read_bytes() for d in digests]
    for position, (digest, data) in enumerate(zip(digests, contents, strict=True)):
        db.session.add(
            ProofOfLifeFrame(
                attempt_id=attempt.id,
                position=position,
                sha256=digest,
                bytes=len(data),
                offset_ms=offsets_ms[position] if offsets_ms is not None else None,
            )
        )
    verdict = (verify or verify_member_frames)(contents, attempt.challenge_list, attempt.member_id)
    return _apply_verdict(attempt, verdict, now=now)


def verify_member_frames(
    contents: Sequence[bytes], challenges: Sequence[str], member_id: int
) -> Verdict:
    """The one-shot path: the pipeline on a session's frames, against the member's
    templates and earlier frames, under the region's thresholds."""
    engine = default_engine()
    verdict = verify_frames(
        contents,
        challenges,
        member_templates(member_id, engine.model_name),
        thresholds=thresholds_for(rules()),
        seen_hashes=earlier_frame_hashes(member_id, excluding=-1),
        engine=engine,
    )
    return Verdict.judged(verdict, engine)


def _refuse_appended_data(frames: Sequence[HashingFile]) -> None:
    """Refused before anything is stored or counted: a phone's canvas never appends data
    to a frame, so this is not the person's failed attempt."""
    for position, frame in enumerate(frames):
        frame.flush()
        try:
            check_no_trailing_data(frame.path)
        except ImageRejected as exc:
            error = ValidationFailed(f"frame {position}: {exc.message}", field="frames")
            error.code, error.http_status = exc.code, exc.http_status
            raise error from exc


def _apply_verdict(attempt: ProofOfLifeAttempt, verdict: Verdict, *, now: datetime) -> SubmitResult:
    """Record a judged attempt and move the month: passed, review, or (while attempts
    remain) still pending; the month's last failed attempt goes to a person."""
    record = attempt.month_record
    attempt.submitted_at = attempt.submitted_at or now
    attempt.outcome = Outcome(verdict.outcome)
    if set(verdict.reasons) == {"no_template"}:
        # Alive, but nobody enrolled this member's face: not their failure.
        attempt.outcome = Outcome.REVIEW
    attempt.reasons = ",".join(verdict.reasons)
    attempt.distance = verdict.distance
    attempt.model_name = verdict.model_name
    attempt.model_version = verdict.model_version
    attempt.measurements = json.dumps(verdict.measurements, sort_keys=True)
    attempt.frame_hashes = json.dumps(verdict.frame_hashes)
    if attempt.outcome is Outcome.FAILED:
        attempt.stopped_step = "verdict"

    if attempt.outcome is Outcome.PASSED:
        record.status = MonthStatus.PASSED
        record.passed_at = now
        _resolve_contact(record, now)
        db.session.flush()
        month_decided.send(MonthDecided(record.household_id, record.month, now))
    elif attempt.outcome is Outcome.REVIEW:
        _to_review(record, ",".join(verdict.reasons) or "review")
    if attempt.outcome is Outcome.PASSED:
        left = count_attempts(record, now=now).left if attempt.counts_against_limits else 0
    else:
        left = _after_unsuccessful(attempt, now=now)
    db.session.flush()
    audit.record(
        "pol.frames_judged",
        actor=None,
        object_type="pol_attempt",
        object_id=attempt.id,
        household_id=record.household_id,
        outcome=attempt.outcome.value,
        reasons=attempt.reasons,
        distance=verdict.distance,
        model=verdict.model_name,
        started_by=attempt.started_by.value,
        assisted_by_id=attempt.assisted_by_id,
        device_token_id=attempt.device_token_id,
        guided=attempt.guided,
    )
    return SubmitResult(attempt, left)


def _after_unsuccessful(attempt: ProofOfLifeAttempt, *, now: datetime) -> int:
    """Attempts left after an attempt that did not pass; when it was the month's last
    (failed or given up), the month goes to a person, never to "failed"."""
    record = attempt.month_record
    used = count_attempts(record, now=now)
    left = used.left if attempt.counts_against_limits else 0
    last_of_month = attempt.counts_against_limits and left == 0 and used.month_exhausted
    if last_of_month and attempt.outcome in (Outcome.FAILED, Outcome.INCOMPLETE):
        if attempt.outcome is Outcome.FAILED:
            attempt.outcome = Outcome.REVIEW
        _to_review(record, "attempts_exhausted")
    return left


# --------------------------------------------------------------------------- reviewers


MONTH_WHAT = "proof-of-life month"


def month_of_case(household: Household, month_id: int) -> ProofOfLifeMonth:
    """One of the case's months by id (the case itself already checked against the
    actor's area): a month of any other household is "no such month", like an unknown id.
    """
    record = db.session.get(ProofOfLifeMonth, month_id)
    if record is None or record.household_id != household.id:
        raise not_found(MONTH_WHAT)
    return record


def months_of(household: Household, limit: int = 12) -> list[ProofOfLifeMonth]:
    """The household's latest proof-of-life months, newest first, attempts loaded."""
    return list(
        db.session.scalars(
            select(ProofOfLifeMonth)
            .where(ProofOfLifeMonth.household_id == household.id)
            .order_by(ProofOfLifeMonth.month.desc(), ProofOfLifeMonth.member_id)
            .limit(limit)
            .options(selectinload(ProofOfLifeMonth.attempts))
        )
    )


def decide_month(
    record: ProofOfLifeMonth, *, actor: User, status: MonthStatus, reason: str
) -> None:
    """A reviewer's decision: exempt a member (in hospital, say), or settle a review."""
    household = db.session.get(Household, record.household_id)
    if household is None:  # pragma: no cover - foreign key
        raise SessionNotFound("no such household")
    require_in_area(actor, household.village, MONTH_WHAT)
    require(actor, Capability.DECIDE_PROOF_OF_LIFE, "only a reviewer decides a proof of life")
    written = written_reason(reason, "decide_proof_of_life")
    if written is None:
        raise ReasonRequired("a reason is required")
    if status not in record.status.decisions:
        raise ValidationFailed(
            f"a month that is {record.status.value} cannot be set to {status.value}",
            field="status",
        )
    before = record.status
    record.status = status
    record.decided_by_id = actor.id
    record.decision_reason = written
    now = clock.utcnow()
    if status is MonthStatus.PASSED:
        record.passed_at = now
    _resolve_contact(record, now)
    audit.record(
        "pol.month_decided",
        actor=actor,
        object_type="pol_month",
        object_id=record.id,
        household_id=record.household_id,
        before=before.value,
        after=status.value,
    )
    db.session.flush()
    month_decided.send(MonthDecided(record.household_id, record.month, now))


@member_left.connect
def _exempt_member_who_left(event: MemberLeft) -> None:
    """A member removed from the household proves life no more: their months still
    pending (or in review) are exempt, and the household's payment follows."""
    records = list(
        db.session.scalars(
            select(ProofOfLifeMonth).where(
                ProofOfLifeMonth.member_id == event.member_id,
                ProofOfLifeMonth.status.in_([MonthStatus.PENDING, MonthStatus.REVIEW]),
            )
        )
    )
    for record in records:
        before = record.status
        record.status = MonthStatus.EXEMPT
        record.decided_by_id = event.actor_id
        record.decision_reason = "left the household (approved case change)"
        _resolve_contact(record, event.now)
        audit.record(
            "pol.month_decided",
            actor=None,
            object_type="pol_month",
            object_id=record.id,
            household_id=record.household_id,
            before=before.value,
            after=MonthStatus.EXEMPT.value,
            why="member_left",
        )
    db.session.flush()
    for month in sorted({r.month for r in records}):
        month_decided.send(MonthDecided(event.household_id, month, event.now))


def exempt_after_deaths(
    from_months: Mapping[int, str], *, actor: User | None, reasons: Mapping[int, str]
) -> int:
    """Members recorded deceased (member id -> the month of death): their months from
    then on that are still open or blocking (pending, review, failed, missed) become
    exempt with the member's reason, and their contact tasks of those months are done;
    one audit row per month. The payment is not settled again (a death must not restore
    a suspended month: back-pay to the dead). Reads in chunks, for thousands of
    members at once. Returns how many months changed. Flushes, never commits."""
    now = clock.utcnow()
    ids = sorted(from_months)
    open_statuses = (
        MonthStatus.PENDING,
        MonthStatus.REVIEW,
        MonthStatus.FAILED,
        MonthStatus.MISSED,
    )
    changed = 0
    for start in range(0, len(ids), 1000):
        chunk = ids[start : start + 1000]
        records = db.session.scalars(
            select(ProofOfLifeMonth).where(
                ProofOfLifeMonth.member_id.in_(chunk),
                ProofOfLifeMonth.status.in_(open_statuses),
            )
        ).all()
        tasks = db.session.scalars(
            select(ContactTask).where(
                ContactTask.member_id.in_(chunk), ContactTask.resolved_at.is_(None)
            )
        ).all()
        for task in tasks:
            if task.month >= from_months[task.member_id]:
                task.resolved_at = now
        for record in records:
            if record.month < from_months[record.member_id]:
                continue
            before = record.status
            record.status = MonthStatus.EXEMPT
            record.decided_by_id = actor.id if actor is not None else None
            record.decision_reason = reasons[record.member_id]
            audit.record(
                "pol.month_decided",
                actor=actor,
                object_type="pol_month",
                object_id=record.id,
                household_id=record.household_id,
                before=before.value,
                after=MonthStatus.EXEMPT.value,
                source="death_register",
            )
            changed += 1
    db.session.flush()
    return changed


# --------------------------------------------------------------------------- retention


def purge_old_frames(*, now: datetime, store: BlobStore, batch: int = 500) -> int:
    """Delete the frames of attempts older than the retention period (rows and files);
    the attempts, their measurements and outcomes stay. Returns the frames deleted."""
    cutoff = now - timedelta(days=rules().frame_retention_days)
    deleted = 0
    while True:
        attempts = db.session.scalars(
            select(ProofOfLifeAttempt)
            .where(
                ProofOfLifeAttempt.created_at < cutoff,
                ProofOfLifeAttempt.frames_deleted_at.is_(None),
            )
            .limit(batch)
        ).all()
        if not attempts:
            return deleted
        for attempt in attempts:
            for frame in list(attempt.frames):
                shared = db.session.scalar(
                    select(func.count(ProofOfLifeFrame.id)).where(
                        ProofOfLifeFrame.sha256 == frame.sha256, ProofOfLifeFrame.id != frame.id
                    )
                ) or blob_in_use(frame.sha256)
                if not shared:
                    store.path(frame.sha256).unlink(missing_ok=True)
                db.session.delete(frame)
                deleted += 1
            attempt.frames_deleted_at = now
        audit.record(
            "pol.frames_purged",
            actor=None,
            object_type="pol_attempt",
            object_id=None,
            attempts=len(attempts),
            before=cutoff.isoformat(),
        )
        db.session.flush()


def this_month(now: datetime) -> str:
    return current_month(now, region().timezone)


# --------------------------------------------------------------------------- contact


def contact_task(
    *,
    member_id: int,
    household_id: int,
    month: str,
    reason: ContactReason,
    now: datetime,
    error_code: int | None = None,
) -> bool:
    """Ask the member's caseworker to reach them in person this month (at most one
    task per member and month). Returns whether a task was created."""
    exists = db.session.scalar(
        select(ContactTask.id).where(ContactTask.member_id == member_id, ContactTask.month == month)
    )
    if exists is not None:
        return False
    db.session.add(
        ContactTask(
            member_id=member_id,
            household_id=household_id,
            month=month,
            reason=reason,
            error_code=error_code,
            created_at=now,
        )
    )
    audit.record(
        "pol.contact_task",
        actor=None,
        object_type="member",
        object_id=member_id,
        household_id=household_id,
        month=month,
        reason=reason.value,
        error_code=error_code,
    )
    db.session.flush()
    return True


# --------------------------------------------------------------------------- guided


class StepMismatch(DomainError):
    """A batch for a step that is not the one expected now (a late batch for a step
    already confirmed, say): the page carries on with ``current_step``."""

    code = "step_mismatch"
    http_status = 409


class NotGuided(DomainError):
    code = "not_guided"
    http_status = 409


class TooManyFrames(DomainError):
    code = "too_many_frames"
    http_status = 422


GIVE_UP_WHY = ("timeout", "left_page")
ASSISTANCE_NEEDS = ("cannot_move", "cannot_see", "other")


def guided_steps(attempt: ProofOfLifeAttempt) -> list[str]:
    """The steps of a guided session: the face, then the challenges in the order asked."""

    return [FACE_STEP, *attempt.challenge_list]


@dataclass(frozen=True)
class BatchResult:
    attempt: ProofOfLifeAttempt
    step: int  # the step the batch was for
    name: str
    state: str  # continue, done, finished
    hint: str | None
    progress: float
    next_step: int | None
    verdict: SubmitResult | None


def _guide_state(attempt: ProofOfLifeAttempt) -> dict[str, Any]:
    state: dict[str, Any] = json.loads(attempt.guide_state or "{}")
    state.setdefault("confirmed", [])
    state.setdefault("baseline", {})
    return state


def _observations(attempt: ProofOfLifeAttempt, hashes: Sequence[str]) -> list[Any]:
    """The session's frames so far as guided.Observation, in order (the luminance of
    stored frames is not kept: only the latest batch's is used, for hints). At most
    ``guided_max_frames`` rows of 560 bytes each: re-read per batch rather than kept."""
    rows = db.session.scalars(
        select(ProofOfLifeFrame)
        .where(ProofOfLifeFrame.attempt_id == attempt.id)
        .order_by(ProofOfLifeFrame.position)
    ).all()
    out = []
    for row in rows:
        shape = unpack_shape(row.landmarks) if row.landmarks is not None else None
        frame_hash = hashes[row.position] if row.position < len(hashes) else ""
        faces = row.faces if row.faces is not None else 0
        out.append(Observation(row.position, row.step or 0, faces, shape, 255.0, frame_hash))
    return out


def submit_batch(
    attempt: ProofOfLifeAttempt,
    *,
    nonce: str,
    step: int,
    frames: Sequence[HashingFile],
    offsets_ms: Sequence[int] | None,
    now: datetime,
    store: BlobStore,
    engine: Any,
    templates: Callable[[], list[np.ndarray]],
) -> BatchResult:
    """One batch of a guided session's step: store and look at the frames, answer whether
    the step's movement has happened; after the last step, judge the whole session."""

    steps, hashes = _check_batch(attempt, nonce=nonce, step=step, frames=frames, now=now)
    if offsets_ms is not None and len(offsets_ms) != len(frames):
        raise ValidationFailed("offsets_ms must have one entry per frame", field="offsets_ms")
    _refuse_appended_data(frames)

    thresholds = thresholds_for(rules())
    guide = guided.GuideLimits()
    earlier_frames = _observations(attempt, hashes)
    latest = _observe_batch(
        attempt,
        step,
        len(hashes),
        store.store_all(list(frames)),
        offsets_ms,
        store=store,
        earlier=earlier_frames,
        observe=lambda data, position, track: guided.observe_frame(
            data,
            position=position,
            step=step,
            engine=engine,
            thresholds=thresholds,
            limits=guide,
            track=track,
        )[0],
    )
    hashes.extend(o.frame_hash for o in latest)
    attempt.frame_hashes = json.dumps(hashes)
    db.session.flush()

    observations = earlier_frames[: len(hashes) - len(latest)] + latest
    earlier = [o for o in observations if o.step < step and o.used]
    state = _guide_state(attempt)
    answer = guided.evaluate_step(
        steps[step],
        [o for o in observations if o.step == step],
        latest=latest,
        previous=earlier[-1] if earlier else None,
        session=earlier,
        baseline=state["baseline"],
        thresholds=thresholds.liveness,
        limits=guide,
    )
    if answer.state != "done":
        return BatchResult(
            attempt, step, steps[step], "continue", answer.hint, answer.progress, None, None
        )
    state["confirmed"].append(answer.confirmed)
    if steps[step] == guided.FACE_STEP:
        state["baseline"] = answer.baseline
    attempt.guide_state = json.dumps(state, sort_keys=True)
    attempt.step = step + 1
    if attempt.step < len(steps):
        db.session.flush()
        return BatchResult(attempt, step, steps[step], "done", None, 1.0, attempt.step, None)

    # The last step is confirmed: judge the whole session.
    verdict = _judge_guided(
        attempt, steps, observations, store, engine, thresholds, guide, templates()
    )
    result = _apply_verdict(attempt, Verdict.judged(verdict, engine), now=now)
    return BatchResult(attempt, step, steps[step], "finished", None, 1.0, None, result)


def _judge_guided(
    attempt: ProofOfLifeAttempt,
    steps: Sequence[str],
    observations: Sequence[Observation],
    store: BlobStore,
    engine: Any,
    thresholds: Thresholds,
    guide: guided.GuideLimits,
    templates: list[np.ndarray],
) -> PipelineVerdict:
    """The verdict on the whole guided session (the frames chosen for the identity are
    decoded again from the store)."""
    sha_by_position: dict[int, str] = {
        position: sha
        for position, sha in db.session.execute(
            select(ProofOfLifeFrame.position, ProofOfLifeFrame.sha256).where(
                ProofOfLifeFrame.attempt_id == attempt.id
            )
        )
    }

    def load_rgb(position: int) -> np.ndarray:
        return decode_frame(
            store.path(sha_by_position[position]).read_bytes(),
            max_side=thresholds.max_side,
            max_pixels=thresholds.max_frame_pixels,
        )

    return guided.judge_session(
        steps,
        observations,
        templates,
        load_rgb=load_rgb,
        thresholds=thresholds,
        limits=guide,
        seen_hashes=earlier_frame_hashes(attempt.member_id, excluding=attempt.id),
        engine=engine,
    )


def _check_batch(
    attempt: ProofOfLifeAttempt,
    *,
    nonce: str,
    step: int,
    frames: Sequence[HashingFile],
    now: datetime,
) -> tuple[list[str], list[str]]:
    """The session's steps and its frames' hashes so far, once the batch may be taken:
    the session open and guided, its nonce, the step expected now, the batch's and the
    session's frame counts."""
    require_open(attempt, now=now)
    if not attempt.guided or attempt.step is None:
        raise NotGuided("this session takes its frames at once: POST them to /frames")
    if not equal_secret(attempt.nonce, nonce):
        raise NonceMismatch("the nonce does not belong to this session")
    steps = guided_steps(attempt)
    if step != attempt.step:
        raise StepMismatch(f"step {step} is not the step expected now", current_step=attempt.step)
    limits = rules()
    if not 1 <= len(frames) <= limits.guided_batch_max:
        raise ValidationFailed(
            f"send 1 to {limits.guided_batch_max} frames in a batch, got {len(frames)}",
            field="frames",
        )
    hashes: list[str] = json.loads(attempt.frame_hashes or "[]")
    if len(hashes) + len(frames) > limits.guided_max_frames:
        raise TooManyFrames(
            f"a guided session takes at most {limits.guided_max_frames} frames",
            sent=len(hashes),
        )
    return steps, hashes


def _observe_batch(
    attempt: ProofOfLifeAttempt,
    step: int,
    first: int,
    digests: Sequence[str],
    offsets_ms: Sequence[int] | None,
    *,
    store: BlobStore,
    earlier: Sequence[Observation],
    observe: Callable[[bytes, int, Any], Observation],
) -> list[Observation]:
    """Look at each stored frame of the batch (the face followed from where it was last
    seen), and add its row with what was found; ``first`` is the batch's first position."""
    track = None
    for o in earlier:
        if o.used and o.shape is not None:
            track = guided.Track(o.shape.box, o.position)
    latest: list[Observation] = []
    for index, digest in enumerate(digests):
        data = store.path(digest).read_bytes()
        observation = observe(data, first + index, track)
        if observation.used and observation.shape is not None:
            track = guided.Track(observation.shape.box, observation.position)
        latest.append(observation)
        db.session.add(
            ProofOfLifeFrame(
                attempt_id=attempt.id,
                position=first + index,
                sha256=digest,
                bytes=len(data),
                offset_ms=offsets_ms[index] if offsets_ms is not None else None,
                step=step,
                faces=observation.faces,
                landmarks=guided.pack_shape(observation.shape) if observation.shape else None,
            )
        )
    return latest


def abandon(attempt: ProofOfLifeAttempt, *, nonce: str, why: str, now: datetime) -> int:
    """A guided attempt given up before its verdict (a step's time ran out, the page was
    left): recorded as ``incomplete`` with the step that stopped the person, never as a
    failure. Returns the attempts left."""
    if attempt.submitted_at is not None:
        raise SessionUsed("this session was already used: start a new one")
    if not attempt.guided or attempt.step is None:
        raise NotGuided("only a guided session can be given up")
    if not equal_secret(attempt.nonce, nonce):
        raise NonceMismatch("the nonce does not belong to this session")
    if why not in GIVE_UP_WHY:
        raise ValidationFailed("why must be one of " + ", ".join(GIVE_UP_WHY), field="why")
    steps = guided_steps(attempt)
    attempt.submitted_at = now
    attempt.outcome = Outcome.INCOMPLETE
    attempt.stopped_step = steps[min(attempt.step, len(steps) - 1)]
    attempt.stopped_why = why
    left = _after_unsuccessful(attempt, now=now)
    db.session.flush()
    audit.record(
        "pol.attempt_incomplete",
        actor=None,
        object_type="pol_attempt",
        object_id=attempt.id,
        household_id=attempt.month_record.household_id,
        stopped_step=attempt.stopped_step,
        why=why,
        started_by=attempt.started_by.value,
    )
    return left


def request_assistance(record: ProofOfLifeMonth, *, need: str, now: datetime) -> None:
    """The recipient cannot do the movements (or see the screen): the month goes to a
    person at once, and the caseworker's tablet lists an assisted visit."""
    if need not in ASSISTANCE_NEEDS:
        raise ValidationFailed("need must be one of " + ", ".join(ASSISTANCE_NEEDS), field="need")
    if record.status in (MonthStatus.PASSED, MonthStatus.EXEMPT):
        raise AlreadyDone("this month's proof of life is already done", status=record.status.value)
    record.assistance_need = need
    _to_review(record, f"assistance_{need}")
    db.session.flush()
    audit.record(
        "pol.assistance_requested",
        actor=None,
        object_type="pol_month",
        object_id=record.id,
        household_id=record.household_id,
        need=need,
        at=now.isoformat(),
    )


# --------------------------------------------------------------------------- exclusion


@dataclass(frozen=True)
class AttemptFigures:
    """How a month's recipients fared with their own attempts (assisted ones left out),
    inside the viewer's area: who needed more than one try, and what stopped the tries
    that did not pass (docs/proof-of-life.md, "Exclusion made visible")."""

    members: int  # recipients with at least one attempt
    passed: int  # ... who passed by their own attempts
    passed_first: int  # ... at the first attempt
    passed_second: int
    passed_later: int  # at the third or a later attempt
    stops_then_passed: dict[str, int]  # what stopped the failed tries of those who passed
    stops_not_passed: dict[str, int]  # ... of those who have not passed (yet)

    @property
    def stop_keys(self) -> list[str]:
        """Every stop seen, the most frequent first."""
        totals = dict(self.stops_then_passed)
        for key, count in self.stops_not_passed.items():
            totals[key] = totals.get(key, 0) + count
        return sorted(totals, key=lambda k: (-totals[k], k))

    @property
    def needed_more_share(self) -> float | None:
        """Share of those who passed who needed more than one attempt."""
        return (self.passed - self.passed_first) / self.passed if self.passed else None


def _stop_key(
    outcome: Outcome | None, reasons: str, stopped: str | None, expired: bool
) -> str | None:
    if outcome is Outcome.INCOMPLETE:
        return stopped if stopped else "left_page"
    if outcome in (Outcome.FAILED, Outcome.REVIEW):
        return reasons.split(",")[0] if reasons else "face_uncertain"
    if outcome is None and expired:
        return "left_page"  # a session never finished nor given up: the page was closed
    return None


def attempt_figures(month: str, actor: User, *, now: datetime) -> AttemptFigures:
    query = (
        select(
            ProofOfLifeAttempt.member_id,
            ProofOfLifeAttempt.id,
            ProofOfLifeAttempt.outcome,
            ProofOfLifeAttempt.reasons,
            ProofOfLifeAttempt.stopped_step,
            ProofOfLifeAttempt.expires_at,
        )
        .join(ProofOfLifeMonth, ProofOfLifeMonth.id == ProofOfLifeAttempt.month_id)
        .join(Household, Household.id == ProofOfLifeMonth.household_id)
        .join(Area, Area.id == Household.village_id)
        .where(
            ProofOfLifeMonth.month == month,
            ProofOfLifeAttempt.started_by == StartedBy.RECIPIENT,
        )
        .order_by(ProofOfLifeAttempt.member_id, ProofOfLifeAttempt.id)
    )
    per_member: dict[int, list[tuple[Outcome | None, str | None]]] = {}
    for member_id, _, outcome, reasons, stopped, expires in db.session.execute(
        scope_to_actor(query, actor)
    ):
        key = _stop_key(outcome, reasons or "", stopped, expires <= now)
        per_member.setdefault(member_id, []).append((outcome, key))
    passed = first = second = later = 0
    then_passed: dict[str, int] = {}
    not_passed: dict[str, int] = {}
    for tries in per_member.values():
        index = next((i for i, (o, _) in enumerate(tries) if o is Outcome.PASSED), None)
        stops = [k for _, k in (tries if index is None else tries[:index]) if k]
        into = not_passed if index is None else then_passed
        for key in stops:
            into[key] = into.get(key, 0) + 1
        if index is None:
            continue
        passed += 1
        first += index == 0
        second += index == 1
        later += index >= 2
    return AttemptFigures(
        members=len(per_member),
        passed=passed,
        passed_first=first,
        passed_second=second,
        passed_later=later,
        stops_then_passed=dict(sorted(then_passed.items(), key=lambda kv: -kv[1])),
        stops_not_passed=dict(sorted(not_passed.items(), key=lambda kv: -kv[1])),
    )
