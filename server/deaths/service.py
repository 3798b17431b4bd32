"""Checking a death-register file against the members, and applying it.

``check`` reads the database only (a dry run writes nothing: no row, no audit row).
``apply`` applies the matched rows in the actor's area in the caller's transaction:
the member deceased, proof of life exempt from the month of death, the allowance
recomputed through the workflow, a household with no living member suspended for
termination, payments after the death listed as overpayments, an import row, and an
audit row for each change. Functions flush, never commit.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import TypeVar

from sqlalchemy import ARRAY, ColumnElement, Row, String, any_, bindparam, select
from sqlalchemy.orm import InstrumentedAttribute, selectinload

from server.areas.models import Area
from server.audit import service as audit
from server.auth.models import User
from server.auth.permissions import Capability, require
from server.cases import workflow
from server.cases.models import CaseState, Household, Member, id_number_hashes
from server.cases.workflow import local_today
from server.deaths.importer import (
    DEFAULT_PROFILE,
    Candidate,
    Classification,
    Classified,
    Profile,
    RegisterRow,
    classify,
    normalize_name,
    read_register,
)
from server.deaths.models import DeathImport, Overpayment
from server.extensions import db
from server.payments.models import PaymentMonth, PaymentStatus
from server.proof_of_life import service as pol
from server.storage import blob_user

CHUNK = 1000  # ids per IN (...) query
LOOKUP_CHUNK = 5000  # ID hashes per look-up (one array parameter on PostgreSQL)

T = TypeVar("T")


def _chunks(values: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _among(column: InstrumentedAttribute[str], values: Sequence[str]) -> ColumnElement[bool]:
    """``column IN (values)``; on PostgreSQL ``= ANY(array)``: one parameter, not
    thousands, for the planner and the driver."""
    if db.session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam("among", list(values), type_=ARRAY(String)))
    return column.in_(values)


@dataclass
class Report:
    """A checked file: its hash, profile, and each row's class."""

    sha256: str
    profile: str
    classification: Classification
    case_codes: dict[int, str] = field(default_factory=dict)  # household id -> case code
    import_id: int | None = None
    overpayments: list[Overpayment] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return self.classification.counts()

    @property
    def rows(self) -> list[Classified]:
        return self.classification.rows


def death_reason(died_on: date) -> str:
    return f"death register: member died on {died_on.isoformat()}"


def check(
    data: bytes,
    *,
    actor: User | None,
    profile: Profile = DEFAULT_PROFILE,
    today: date | None = None,
) -> Report:
    """Read and classify a register file. ``actor``: the reader whose area the rows
    are scoped to (None: the whole league, for the command line). Writes nothing."""
    if actor is not None:
        require(actor, Capability.IMPORT_DEATH_REGISTER, "only a county approver imports deaths")
    rows = read_register(data, profile)
    return _classify(rows, data, profile, actor, today or local_today())


def _classify(
    rows: Sequence[RegisterRow], data: bytes, profile: Profile, actor: User | None, today: date
) -> Report:
    # Each ID number's hash under every key of the ring (a member may still hold one made
    # under an old key during a key rotation); rows are told apart by the current one.
    ring = {row.id_number: id_number_hashes(row.id_number) for row in rows}
    hashes = {id_number: digests[0] for id_number, digests in ring.items()}
    canonical = {digest: digests[0] for digests in ring.values() for digest in digests}
    found: list[Row[str, int, int, date, bool, date | None]] = []
    for chunk in _chunks(sorted(canonical), LOOKUP_CHUNK):
        found += db.session.execute(
            select(
                Member.id_number_hash,
                Member.id,
                Member.household_id,
                Member.birth_date,
                Member.alive,
                Member.died_on,
            ).where(_among(Member.id_number_hash, chunk))
        ).all()
    # The few households found: their case codes and whether they lie in the area.
    households: dict[int, tuple[str, str]] = {}
    for ids in _chunks(sorted({f[2] for f in found}), CHUNK):
        for household_id, case_code, path in db.session.execute(
            select(Household.id, Household.case_code, Area.path)
            .join(Area, Area.id == Household.village_id)
            .where(Household.id.in_(ids))
        ):
            households[household_id] = (case_code, path)
    candidates: dict[str, list[Candidate]] = defaultdict(list)
    for h, member_id, household_id, birth, alive, died_on in found:
        path = households[household_id][1]
        candidates[canonical[h]].append(
            Candidate(
                member_id=member_id,
                household_id=household_id,
                birth_date=birth,
                alive=alive,
                died_on=died_on,
                in_area=actor is None or path.startswith(actor.area.path),
            )
        )
    names = _names_of([c.member_id for cs in candidates.values() for c in cs if c.in_area])
    classification = classify(
        rows,
        candidates,
        hash_of=hashes.__getitem__,
        member_name=lambda member_id: names.get(member_id, ""),
        today=today,
    )
    codes = {
        r.member.household_id: households[r.member.household_id][0]
        for r in classification.rows
        if r.member is not None and r.in_area
    }
    return Report(
        sha256=hashlib.sha256(data).hexdigest(),
        profile=profile.name,
        classification=classification,
        case_codes=codes,
    )


def _names_of(member_ids: list[int]) -> dict[int, str]:
    """The normalized names of the members found (decrypted only for these)."""
    names: dict[int, str] = {}
    for chunk in _chunks(member_ids, CHUNK):
        for member_id, name in db.session.execute(
            select(Member.id, Member.name).where(Member.id.in_(chunk))
        ):
            names[member_id] = normalize_name(name)
    return names


def apply(
    data: bytes,
    *,
    actor: User,
    profile: Profile = DEFAULT_PROFILE,
    today: date | None = None,
) -> Report:
    """Check the file again and apply its matched rows in ``actor``'s area (a county
    approver: the suspensions are theirs). Ambiguous rows are never applied. When
    nothing is left to apply (the same file again), nothing is written."""
    require(actor, Capability.IMPORT_DEATH_REGISTER, "only a county approver imports deaths")
    today = today or local_today()
    report = check(data, actor=actor, profile=profile, today=today)
    todo = report.classification.to_apply()
    if not todo:
        return report
    batch = DeathImport(
        file_sha256=report.sha256,
        profile=report.profile,
        rows=len(report.rows),
        applied=len(todo),
        counts=json.dumps(report.counts(), sort_keys=True),
        actor_id=actor.id,
    )
    db.session.add(batch)
    db.session.flush()
    deaths: dict[int, date] = {}
    for row in todo:
        if row.member is not None and row.row.died_on is not None:  # always, when matched
            deaths[row.member.member_id] = row.row.died_on
    household_ids = sorted({r.member.household_id for r in todo if r.member is not None})
    households: list[Household] = []
    paid: dict[int, list[PaymentMonth]] = defaultdict(list)
    listed_before: set[tuple[int, str]] = set()
    for chunk in _chunks(household_ids, CHUNK):
        households += db.session.scalars(
            select(Household)
            .where(Household.id.in_(chunk))
            .options(selectinload(Household.members), selectinload(Household.village))
            .order_by(Household.id)
        ).all()
        for payment in db.session.scalars(
            select(PaymentMonth)
            .where(
                PaymentMonth.household_id.in_(chunk),
                PaymentMonth.status.in_((PaymentStatus.PAYABLE, PaymentStatus.RESTORED)),
            )
            .order_by(PaymentMonth.month)
        ):
            paid[payment.household_id].append(payment)
        for household_id, month in db.session.execute(
            select(Overpayment.household_id, Overpayment.month).where(
                Overpayment.household_id.in_(chunk)
            )
        ):
            listed_before.add((household_id, month))
    pol.exempt_after_deaths(
        {m: f"{d:%Y-%m}" for m, d in deaths.items()},
        actor=actor,
        reasons={m: death_reason(d) for m, d in deaths.items()},
    )
    for household in households:
        died = {m: deaths[m.id] for m in household.members if m.id in deaths}
        report.overpayments += _apply_household(
            household, died, actor, batch, today, paid[household.id], listed_before
        )
    audit.record(
        "deaths.imported",
        actor=actor,
        object_type="death_import",
        object_id=batch.id,
        file_sha256=report.sha256,
        applied=len(todo),
        **{f"rows_{k}": v for k, v in report.counts().items()},
    )
    db.session.flush()
    report.import_id = batch.id
    return report


def _apply_household(
    household: Household,
    died: dict[Member, date],
    actor: User,
    batch: DeathImport,
    today: date,
    paid: Sequence[PaymentMonth],
    listed_before: set[tuple[int, str]],
) -> list[Overpayment]:
    designated = any(m.proof_of_life_required for m in died)
    for member, died_on in died.items():
        member.alive = False
        member.died_on = died_on
        member.proof_of_life_required = False
        audit.record(
            "member.deceased",
            actor=actor,
            object_type="member",
            object_id=member.id,
            household_id=household.id,
            death_import_id=batch.id,
        )
    first = min(died.values())
    reason = "; ".join(death_reason(d) for d in sorted(died.values()))
    living = household.living_members
    if designated and living and not any(m.proof_of_life_required for m in living):
        # Nobody proves life for the household any more: the township designates one.
        reason += "; no living member is designated for proof of life: designate one"
    result = workflow.recompute_allowance(household, actor=actor, reason=reason)
    if household.state is CaseState.APPROVED and not result.eligible:
        why = (
            "no living member is left: terminate"
            if not living
            else "no longer eligible: review, then reinstate or terminate"
        )
        workflow.transition(
            household, "suspend", actor=actor, reason=f"{reason}; {why}", today=today
        )
    # Months paid after the (first) death: the part paid above what the remaining
    # members get (all of it when nobody is left).
    member = min(died, key=lambda m: (died[m], m.id))
    keep = result.monthly_amount if living and result.eligible else Decimal("0.00")
    listed = []
    for payment in paid:
        amount = payment.amount - keep
        if payment.month <= f"{first:%Y-%m}" or amount <= 0:
            continue
        if (household.id, payment.month) in listed_before:
            continue
        over = Overpayment(
            household_id=household.id,
            member_id=member.id,
            month=payment.month,
            amount=amount,
            import_id=batch.id,
        )
        db.session.add(over)
        audit.record(
            "overpayment.listed",
            actor=actor,
            object_type="household",
            object_id=household.id,
            death_import_id=batch.id,
            month=payment.month,
            amount=str(amount),
        )
        listed.append(over)
    return listed


def overpayments_of(household: Household) -> list[Overpayment]:
    """The case page's list."""
    return list(
        db.session.scalars(
            select(Overpayment)
            .where(Overpayment.household_id == household.id)
            .order_by(Overpayment.month)
        )
    )


@blob_user
def _register_kept(sha256: str) -> bool:
    """An applied register file stays in the blob store: what the import was made from."""
    return (
        db.session.scalar(select(DeathImport.id).where(DeathImport.file_sha256 == sha256).limit(1))
        is not None
    )
