"""Objections during a case's public notice: received from anyone (no login), listed
for the township reviewer, decided (unfounded, or survey again: the case goes back
through ``workflow.transition(..., "return_for_resurvey")``). Functions flush, never
commit. The rules are in docs/public.md ("Objections during the public notice") and
docs/office.md ("Objections").
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import date
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import current_app
from sqlalchemy import func, select
from sqlalchemy.orm import undefer

from server import clock
from server.audit import service as audit
from server.auth.models import User
from server.auth.permissions import Capability, not_found, require, require_in_area
from server.cases import workflow
from server.cases.models import CaseState, Household
from server.cases.objection_models import MAX_CONTACT, MAX_REASON, Objection, ObjectionStatus
from server.errors import IllegalTransition, ReasonRequired, ValidationFailed
from server.extensions import db
from server.months import local_date
from server.region import region
from server.validation import written_reason

RECEIPT_PATTERN = re.compile(r"^[A-Za-z0-9_-]{24}$")
RESURVEY_SOURCES = workflow.TRANSITIONS["return_for_resurvey"].sources


def receipt_hash(receipt: str) -> str:
    return hashlib.sha256(receipt.encode("ascii")).hexdigest()


def address_hash(address: str | None) -> str | None:
    """A keyed hash of the submitter's address (the key derived from SECRET_KEY): equal
    addresses give equal hashes, and nobody without the key learns the address."""
    if not address:
        return None
    key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"dibao objection address v1"
    ).derive(str(current_app.config["SECRET_KEY"]).encode("utf-8"))
    return hmac.new(key, address.encode("utf-8"), hashlib.sha256).hexdigest()


def open_for_objections(household: Household, today: date) -> bool:
    """In public notice and not past its last day (``notice_ends_on``)."""
    return household.state is CaseState.IN_PUBLIC_NOTICE and (
        household.notice_ends_on is None or today <= household.notice_ends_on
    )


def _text(value: str | None, limit: int, field: str) -> str | None:
    text = (value or "").strip()
    if len(text) > limit or "\x00" in text:
        raise ValidationFailed(
            f"{field} is at most {limit} characters", field=field, max_length=limit
        )
    return text or None


@dataclass(frozen=True)
class Received:
    objection: Objection
    receipt: str  # shown once to the objector, never stored


def submit(
    household: Household,
    *,
    reason: str | None,
    contact: str | None,
    nonce: str,
    address: str | None,
    today: date,
) -> Received:
    """Record an objection to ``household`` (in public notice) with its receipt code.
    ValidationFailed (field ``reason`` or ``contact``) or IllegalTransition (the notice
    is over) leave nothing written."""
    if not open_for_objections(household, today):
        raise IllegalTransition(
            "objections are taken only during the public notice", action="object"
        )
    text = _text(reason, MAX_REASON, "reason")
    if text is None:
        raise ValidationFailed("an objection needs a reason", field="reason")
    contact_text = _text(contact, MAX_CONTACT, "contact")
    receipt = secrets.token_urlsafe(18)
    objection = Objection(
        household=household,
        received_at=clock.utcnow(),
        reason=text,
        contact=contact_text,
        receipt_hash=receipt_hash(receipt),
        form_nonce=nonce,
        address_hash=address_hash(address),
        deadline=region().calendar.add_working_days(
            today, region().deadlines.objection_working_days
        ),
        status=ObjectionStatus.OPEN,
    )
    db.session.add(objection)
    db.session.flush()
    entry = audit.record(
        "objection.received",
        actor=None,
        object_type="household",
        object_id=household.id,
        objection_id=objection.id,
        deadline=objection.deadline.isoformat(),
    )
    # The objector's address is kept nowhere in clear, the audit log included (only
    # ``address_hash`` on the objection).
    entry.remote_addr = None
    return Received(objection, receipt)


def nonce_used(nonce: str) -> bool:
    return db.session.scalar(select(Objection.id).where(Objection.form_nonce == nonce)) is not None


def by_receipt(receipt: str) -> Objection | None:
    if not RECEIPT_PATTERN.match(receipt):
        return None
    return db.session.scalar(
        select(Objection).where(Objection.receipt_hash == receipt_hash(receipt))
    )


def of_case(household: Household) -> list[Objection]:
    """The case's objections, newest first (their texts not loaded)."""
    return list(
        db.session.scalars(
            select(Objection)
            .where(Objection.household_id == household.id)
            .order_by(Objection.received_at.desc(), Objection.id.desc())
        )
    )


def read(actor: User, household: Household, objection_id: int) -> Objection:
    """One objection of the case with its texts, for a role that decides objections in
    the case's area; the read is audited (the text may name people)."""
    require_in_area(actor, household.village)
    objection = db.session.scalar(
        select(Objection)
        .where(Objection.id == objection_id, Objection.household_id == household.id)
        .options(undefer(Objection.reason), undefer(Objection.contact), undefer(Objection.note))
    )
    if objection is None:
        raise not_found("objection")
    require(
        actor,
        Capability.DECIDE_OBJECTIONS,
        "only a township reviewer or a county approver reads objections",
        role=actor.role.value,
    )
    audit.record(
        "objection.read",
        actor=actor,
        object_type="household",
        object_id=household.id,
        objection_id=objection.id,
    )
    return objection


def decide(
    actor: User, objection: Objection, outcome: ObjectionStatus, note: str | None
) -> Objection:
    """Record the outcome of an open objection: ``unfounded`` (the note says why) or
    ``resurvey`` (the case goes back to the survey with the note as the reason)."""
    household = objection.household
    require_in_area(actor, household.village)
    require(
        actor,
        Capability.DECIDE_OBJECTIONS,
        "only a township reviewer or a county approver decides objections",
        role=actor.role.value,
    )
    if objection.status is not ObjectionStatus.OPEN:
        raise IllegalTransition("this objection is already decided", action="decide_objection")
    if outcome is ObjectionStatus.OPEN:
        raise ValidationFailed("choose unfounded or survey again", field="outcome")
    text = written_reason(note, "decide_objection")
    if text is None:
        raise ReasonRequired(
            "an objection's outcome needs a written note", action="decide_objection"
        )
    if outcome is ObjectionStatus.RESURVEY:
        if household.state in RESURVEY_SOURCES:
            workflow.transition(
                household,
                "return_for_resurvey",
                actor=actor,
                reason=f"objection {objection.id}: {text}",
            )
        elif household.state is not CaseState.ACCEPTED:
            raise IllegalTransition(
                f"a case that is {household.state.value} cannot go back to the survey",
                action="decide_objection",
                state=household.state.value,
            )
    objection.status = outcome
    objection.note = text
    objection.decided_by_id = actor.id
    objection.decided_at = clock.utcnow()
    audit.record(
        "objection.decided",
        actor=actor,
        object_type="household",
        object_id=household.id,
        objection_id=objection.id,
        outcome=outcome.value,
    )
    db.session.flush()
    return objection


def open_count(household: Household) -> int:
    return int(
        db.session.scalar(
            select(func.count())
            .select_from(Objection)
            .where(
                Objection.household_id == household.id,
                Objection.status == ObjectionStatus.OPEN,
            )
        )
        or 0
    )


@dataclass(frozen=True)
class PublicCounts:
    """What the public case page shows of a case's objections: counts and dates."""

    received: int
    resolved: int
    last_received_on: str
    last_resolved_on: str | None


def public_counts(timezone: str) -> dict[str, PublicCounts]:
    """Per case code with any objection: how many were received and resolved, and the
    local dates of the latest of each. No text, no author."""
    rows = db.session.execute(
        select(
            Household.case_code, Objection.status, Objection.received_at, Objection.decided_at
        ).join(Household, Household.id == Objection.household_id)
    ).all()
    found: dict[str, list[Any]] = {}
    for code, status, received_at, decided_at in rows:
        entry = found.setdefault(code, [0, 0, received_at, None])
        entry[0] += 1
        entry[2] = max(entry[2], received_at)
        if status is not ObjectionStatus.OPEN:
            entry[1] += 1
            if decided_at is not None:
                entry[3] = decided_at if entry[3] is None else max(entry[3], decided_at)
    return {
        code: PublicCounts(
            received,
            resolved,
            local_date(last_in, timezone).isoformat(),
            local_date(last_out, timezone).isoformat() if last_out is not None else None,
        )
        for code, (received, resolved, last_in, last_out) in found.items()
    }
