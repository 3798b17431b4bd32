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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from flask import current_app
from geopy.distance import geodesic
from sqlalchemy import case, func, select
from sqlalchemy.orm import selectinload

from server import clock
from server.audit import service as audit
from server.auth.models import Role, User
from server.auth.permissions import require_in_area
from server.cases.models import Household, Member
from server.cases.workflow import region
from server.devices.models import DeviceToken
from server.errors import DomainError, NotPermitted, ReasonRequired, ValidationFailed
from server.extensions import db
from server.faces.models import FaceTemplate
from server.payments import service as payments
from server.proof_of_life import links
from server.proof_of_life.models import (
    ContactReason,
    ContactTask,
    MonthStatus,
    Outcome,
    ProofOfLifeAttempt,
    ProofOfLifeFrame,
    ProofOfLifeMonth,
    StartedBy,
)
from server.proof_of_life.rules import ProofOfLifeRules, current_month, window
from server.storage import BlobStore, HashingFile

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
    if not member.alive or not member.proof_of_life_required:
        raise NotDesignated("this member does not do a monthly proof of life")
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
    if record is None or not secrets.compare_digest(link_token(record), token):
        raise LinkInvalid("this link is not valid")
    if now >= record.window_closes_at and not _in_grace(record, now):
        raise LinkExpired("this month's proof of life has closed", month=record.month)
    return record


def deadline(record: ProofOfLifeMonth) -> datetime:
    """Until when the month's link opens: the window's close, or for a month missed at
    the close, the end of the grace period (a pass then restores the payment)."""
    if record.status is MonthStatus.MISSED:
        return record.window_closes_at + timedelta(days=region().campaign.grace_days)
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


def _to_review(record: ProofOfLifeMonth, why: str) -> None:
    if record.status in (MonthStatus.PENDING, MonthStatus.FAILED):
        record.status = MonthStatus.REVIEW
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
) -> ProofOfLifeAttempt:
    """Open an attempt: a fresh nonce and challenge sequence, valid for a short time."""
    if record.status in (MonthStatus.PASSED, MonthStatus.EXEMPT):
        raise AlreadyDone("this month's proof of life is already done", status=record.status.value)
    limits = rules()
    member = db.session.get(Member, record.member_id)
    if member is None or not member.alive or not member.proof_of_life_required:
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
        household = db.session.get(Household, record.household_id)
        if household is None:  # pragma: no cover - foreign key
            raise SessionNotFound("no such household")
        if assist.caseworker.role is not Role.CASEWORKER:
            raise NotPermitted("only caseworkers assist a proof of life")
        require_in_area(assist.caseworker, household.village, what="household")
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
        expires_at=now + timedelta(seconds=limits.session_seconds),
        counts_against_limits=assist is None,
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
    )
    return attempt


def find_session(session_id: str) -> ProofOfLifeAttempt:
    attempt = db.session.scalar(
        select(ProofOfLifeAttempt).where(ProofOfLifeAttempt.session_id == session_id)
    )
    if attempt is None:
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
    verify: Callable[[Sequence[bytes], Sequence[str], int], Verdict],
) -> SubmitResult:
    """Judge one session's frames, record everything, update the month's status."""
    require_open(attempt, now=now)
    # As bytes: compare_digest refuses str with non-ASCII characters (a TypeError, a 500).
    if not secrets.compare_digest(attempt.nonce.encode(), nonce.encode()):
        raise NonceMismatch("the nonce does not belong to this session")
    limits = rules()
    if not limits.frames_min <= len(frames) <= limits.frames_max:
        raise ValidationFailed(
            f"send {limits.frames_min} to {limits.frames_max} frames, got {len(frames)}",
            field="frames",
        )
    if offsets_ms is not None and len(offsets_ms) != len(frames):
        raise ValidationFailed("offsets_ms must have one entry per frame", field="offsets_ms")

    record = attempt.month_record
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
    verdict = verify(contents, attempt.challenge_list, attempt.member_id)
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

    if attempt.outcome is Outcome.PASSED:
        record.status = MonthStatus.PASSED
        record.passed_at = now
        db.session.flush()
        payments.settle(record.household_id, record.month, now=now)
    elif attempt.outcome is Outcome.REVIEW:
        _to_review(record, ",".join(verdict.reasons) or "review")
    used = count_attempts(record, now=now)
    left = used.left if attempt.counts_against_limits else 0
    last_of_month = attempt.counts_against_limits and left == 0 and used.month_exhausted
    if attempt.outcome is Outcome.FAILED and last_of_month:
        # The last attempt of the month: a person decides, not the machine.
        attempt.outcome = Outcome.REVIEW
        _to_review(record, "attempts_exhausted")
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
    )
    return SubmitResult(attempt, left)


# --------------------------------------------------------------------------- reviewers

REVIEWER_ROLES = (Role.TOWNSHIP_REVIEWER, Role.COUNTY_APPROVER, Role.ADMIN)


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
    if actor.role not in REVIEWER_ROLES:
        raise NotPermitted("only a reviewer decides a proof of life")
    household = db.session.get(Household, record.household_id)
    if household is None:  # pragma: no cover - foreign key
        raise SessionNotFound("no such household")
    require_in_area(actor, household.village, what="household")
    if not reason.strip():
        raise ReasonRequired("a reason is required")
    allowed = {
        MonthStatus.EXEMPT: (
            MonthStatus.PENDING,
            MonthStatus.REVIEW,
            MonthStatus.FAILED,
            MonthStatus.MISSED,
        ),
        MonthStatus.PASSED: (MonthStatus.REVIEW, MonthStatus.FAILED, MonthStatus.MISSED),
        MonthStatus.FAILED: (MonthStatus.REVIEW,),
    }
    if status not in allowed or record.status not in allowed[status]:
        raise ValidationFailed(
            f"a month that is {record.status.value} cannot be set to {status.value}",
            field="status",
        )
    before = record.status
    record.status = status
    record.decided_by_id = actor.id
    record.decision_reason = reason.strip()
    now = clock.utcnow()
    if status is MonthStatus.PASSED:
        record.passed_at = now
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
    payments.settle(record.household_id, record.month, now=now)


# --------------------------------------------------------------------------- retention


def purge_old_frames(*, now: datetime, store: BlobStore, batch: int = 500) -> int:
    """Delete the frames of attempts older than the retention period (rows and files);
    the attempts, their measurements and outcomes stay. Returns the frames deleted."""
    from server.visits.models import SurveyPhoto

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
                ) or db.session.scalar(
                    select(func.count(SurveyPhoto.id)).where(SurveyPhoto.sha256 == frame.sha256)
                )
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
