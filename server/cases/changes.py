"""Changes to a case with a maker and a checker (issue 17): add or remove a member,
correct a phone, change incomes.

Township staff (caseworker, township reviewer) propose a change in their area; it is
stored ``pending`` with the proposed values (encrypted) and a preview of the allowance
before and after, and changes nothing else. A second person approves or rejects it: a
township reviewer or a county approver of the area, never the maker (the four-eyes
rule, enforced here and by a CHECK constraint). Approval applies the change in the
same transaction, from the case as it is then: a change whose base moved (the member
left, the phone or an income changed since the proposal, the ID number was registered
meanwhile) is refused. The allowance is computed again through the workflow
(``allowance_for``) and stored on the household, so the next payroll pays it. The
maker may withdraw a pending change. Every step has its audit row; an approval has its
``case_events`` row too. Functions flush, never commit.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import select, update

from server import clock
from server.areas.models import Area
from server.audit import service as audit
from server.auth.models import User
from server.auth.permissions import (
    Capability,
    can,
    not_found,
    require,
    require_in_area,
    scope_to_actor,
)
from server.cases.events import MemberLeft, PhoneCorrected, member_left, phone_corrected
from server.cases.models import (
    CaseChange,
    CaseState,
    ChangeKind,
    ChangeStatus,
    Household,
    Member,
    Relation,
    id_number_hash,
    id_number_hashes,
)
from server.cases.service import (
    NewMember,
    _new_member,
    check_id_number,
    find_members_by_id_number,
)
from server.cases.workflow import allowance_for, local_today, record_event, schedule_review
from server.errors import DomainError, IllegalTransition, NotPermitted, ValidationFailed
from server.extensions import db, rows_changed
from server.months import current_month, month_after, window
from server.region import region
from server.validation import written_reason

PHONE = re.compile(r"^1\d{10}$")
MAX_INCOME = Decimal("1000000")
MAX_NAME_LENGTH = 50
PAID_STATES = frozenset({CaseState.APPROVED, CaseState.SUSPENDED})
CHANGE_WHAT = "change"


class BaseMoved(DomainError):
    """The case changed since the proposal in a way the change depends on."""

    code = "change_base_moved"
    http_status = 409


@dataclass(frozen=True)
class IncomeLine:
    member_id: int
    monthly_income: Decimal


# --------------------------------------------------------------------------- checks


def parse_income(text: str | None, field: str = "monthly_income") -> Decimal:
    """A monthly income typed in a form: yuan, at most two decimals, >= 0."""
    try:
        value = Decimal((text or "").strip())
    except InvalidOperation:
        value = Decimal("NaN")
    if not value.is_finite() or value != value.quantize(Decimal("0.01")):
        raise ValidationFailed("an income is an amount in yuan", field=field, problem="format")
    if value < 0:
        raise ValidationFailed("an income cannot be negative", field=field, problem="negative")
    if value > MAX_INCOME:
        raise ValidationFailed("an income this high is a typing error", field=field, problem="big")
    return value


def check_phone(phone: str | None, field: str = "phone") -> str:
    value = "".join((phone or "").split())
    if not PHONE.match(value):
        raise ValidationFailed("a mobile number has 11 digits from 1", field=field, problem="phone")
    return value


def _reason(reason: str | None, action: str) -> str:
    written = written_reason(reason, action)
    if written is None:
        raise ValidationFailed("a change needs a reason", field="reason", problem="required")
    return written


def _check_proposer(actor: User, household: Household) -> None:
    require_in_area(actor, household.village)
    require(
        actor,
        Capability.PROPOSE_CASE_CHANGES,
        "only township staff propose changes to a case",
        action="propose_change",
    )
    if household.state.closed:
        raise IllegalTransition(
            f"a case that is {household.state.value} cannot be changed",
            action="propose_change",
            state=household.state.value,
        )


def _current_member(household: Household, member_id: int, field: str = "member") -> Member:
    """A member of this household still counted (alive, not removed)."""
    for member in household.members:
        if member.id == member_id and member.current:
            return member
    raise ValidationFailed("no such member in this household", field=field, problem="member")


def _pending_elsewhere(subjects: list[str], kind: ChangeKind) -> bool:
    return (
        db.session.scalar(
            select(CaseChange.id).where(
                CaseChange.status == ChangeStatus.PENDING,
                CaseChange.kind == kind,
                CaseChange.subject.in_(subjects),
            )
        )
        is not None
    )


def _allowance_now(household: Household) -> Decimal:
    """What the case pays (or, before the county's approval, would pay) today."""
    if household.monthly_allowance is not None:
        return household.monthly_allowance
    return allowance_for(household).monthly_amount


def _propose(
    actor: User,
    household: Household,
    kind: ChangeKind,
    subject: str,
    payload: dict[str, Any],
    reason: str,
    incomes_after: Sequence[Decimal],
) -> CaseChange:
    existing = db.session.scalar(
        select(CaseChange.id).where(
            CaseChange.household_id == household.id,
            CaseChange.kind == kind,
            CaseChange.subject == subject,
            CaseChange.status == ChangeStatus.PENDING,
        )
    )
    if existing is not None:
        raise ValidationFailed(
            "a change of this kind is already waiting for a checker",
            field="kind",
            problem="pending",
            change_id=existing,
        )
    after = allowance_for(household, member_incomes=incomes_after)
    change = CaseChange(
        household=household,
        kind=kind,
        subject=subject,
        payload=json.dumps(payload, ensure_ascii=False, sort_keys=True),
        reason=reason,
        maker_id=actor.id,
        made_at=clock.utcnow(),
        status=ChangeStatus.PENDING,
        allowance_before=_allowance_now(household),
        allowance_after=after.monthly_amount,
        eligible_after=after.eligible,
    )
    db.session.add(change)
    db.session.flush()
    audit.record(
        "case_change.proposed",
        actor=actor,
        object_type="case_change",
        object_id=change.id,
        household_id=household.id,
        kind=kind.value,
    )
    return change


# --------------------------------------------------------------------------- proposals


def propose_add_member(
    actor: User, household: Household, new: NewMember, reason: str | None
) -> CaseChange:
    """A new member (born, married in, came back); checked like an application's."""
    _check_proposer(actor, household)
    written = _reason(reason, "propose_change")
    name = new.name.strip()
    if not name or len(name) > MAX_NAME_LENGTH:
        raise ValidationFailed("a member needs a name", field="name", problem="required")
    if new.birth_date > local_today():
        raise ValidationFailed("a birth date in the future", field="birth_date", problem="future")
    id_number = check_id_number(new.id_number, new.birth_date)
    if new.relation is Relation.HEAD:
        raise ValidationFailed(
            "the household has its head: name a new head when removing the old one",
            field="relation",
            problem="head",
        )
    phone = check_phone(new.phone) if new.phone else None
    if new.monthly_income < 0:
        raise ValidationFailed("an income cannot be negative", field="monthly_income")
    subject = f"id:{id_number_hash(id_number)}"
    # A pending addition may name the ID number by its hash under an older key (during a
    # key rotation): match under every key of the ring.
    subjects = [f"id:{digest}" for digest in id_number_hashes(id_number)]
    if find_members_by_id_number(id_number) or _pending_elsewhere(subjects, ChangeKind.ADD_MEMBER):
        raise ValidationFailed(
            "this ID number is already registered in the league",
            field="id_number",
            problem="duplicate",
        )
    payload = {
        "name": name,
        "id_number": id_number,
        "birth_date": new.birth_date.isoformat(),
        "relation": new.relation.value,
        "phone": phone,
        "able_to_work": new.able_to_work,
        "monthly_income": str(new.monthly_income),
        "proof_of_life_required": bool(new.proof_of_life_required),
    }
    incomes = [m.monthly_income for m in household.living_members] + [new.monthly_income]
    return _propose(actor, household, ChangeKind.ADD_MEMBER, subject, payload, written, incomes)


def propose_remove_member(
    actor: User,
    household: Household,
    member_id: int,
    reason: str | None,
    new_head_id: int | None = None,
) -> CaseChange:
    """A member who left the household (moved out, married out). The head can leave
    only with a new head named among the members who stay."""
    _check_proposer(actor, household)
    written = _reason(reason, "propose_change")
    member = _current_member(household, member_id)
    staying = [m for m in household.living_members if m.id != member.id]
    if not staying:
        raise ValidationFailed(
            "the last member cannot be removed: terminate the case instead",
            field="member",
            problem="last",
        )
    if member.relation is Relation.HEAD:
        if new_head_id is None:
            raise ValidationFailed(
                "removing the head needs a new head", field="new_head", problem="required"
            )
        if new_head_id == member.id:
            raise ValidationFailed(
                "the new head must stay in the household", field="new_head", problem="member"
            )
        _current_member(household, new_head_id, field="new_head")
    else:
        new_head_id = None
    payload = {
        "member_id": member.id,
        "name": member.name,
        "relation": member.relation.value,
        "new_head_id": new_head_id,
    }
    return _propose(
        actor,
        household,
        ChangeKind.REMOVE_MEMBER,
        f"member:{member.id}",
        payload,
        written,
        [m.monthly_income for m in staying],
    )


def propose_phone(
    actor: User, household: Household, member_id: int, phone: str | None, reason: str | None
) -> CaseChange:
    _check_proposer(actor, household)
    written = _reason(reason, "propose_change")
    member = _current_member(household, member_id)
    new = check_phone(phone)
    if new == (member.phone or ""):
        raise ValidationFailed("this is the member's phone already", field="phone", problem="same")
    payload = {
        "member_id": member.id,
        "name": member.name,
        "old_phone": member.phone,
        "new_phone": new,
    }
    return _propose(
        actor,
        household,
        ChangeKind.CORRECT_PHONE,
        f"member:{member.id}",
        payload,
        written,
        [m.monthly_income for m in household.living_members],
    )


def propose_incomes(
    actor: User, household: Household, lines: Sequence[IncomeLine], reason: str | None
) -> CaseChange:
    """New monthly incomes for one or more members (one pending income change per
    household at a time)."""
    _check_proposer(actor, household)
    written = _reason(reason, "propose_change")
    changed: dict[int, tuple[Member, Decimal]] = {}
    for line in lines:
        member = _current_member(household, line.member_id)
        if line.monthly_income < 0:
            raise ValidationFailed(
                "an income cannot be negative", field="monthly_income", problem="negative"
            )
        if line.monthly_income != member.monthly_income:
            changed[member.id] = (member, line.monthly_income)
    if not changed:
        raise ValidationFailed(
            "no income differs from what is recorded", field="monthly_income", problem="same"
        )
    payload = {
        "lines": [
            {
                "member_id": member.id,
                "name": member.name,
                "old": str(member.monthly_income),
                "new": str(new),
            }
            for member, new in changed.values()
        ]
    }
    incomes = [
        changed[m.id][1] if m.id in changed else m.monthly_income for m in household.living_members
    ]
    return _propose(
        actor, household, ChangeKind.CHANGE_INCOME, "incomes", payload, written, incomes
    )


# --------------------------------------------------------------------------- reading


def payload_of(change: CaseChange) -> dict[str, Any]:
    """The change's proposed values (decrypted: personal data; pages mask them)."""
    data: dict[str, Any] = json.loads(change.payload)
    return data


def change_of_case(actor: User, household: Household, change_id: int) -> CaseChange:
    """A change of this case, area-checked; another case's change is "no such change"."""
    require_in_area(actor, household.village)
    change = db.session.get(CaseChange, change_id)
    if change is None or change.household_id != household.id:
        raise not_found(CHANGE_WHAT)
    return change


def reveal_change(actor: User, household: Household, change_id: int) -> int:
    """A change's full ID number and phones for the page (the checker compares them
    with the household's papers), for a role whose work needs them; an audit row
    ``case_change.reveal_personal``. Returns the change's id."""
    change = change_of_case(actor, household, change_id)
    require(
        actor,
        Capability.REVEAL_PERSONAL_DATA,
        "this role sees ID numbers and phones masked",
        action="reveal_personal_data",
    )
    audit.record(
        "case_change.reveal_personal",
        actor=actor,
        object_type="case_change",
        object_id=change.id,
        household_id=household.id,
    )
    db.session.flush()
    return change.id


def history(household: Household) -> list[CaseChange]:
    """Every change of the case, newest first."""
    return list(
        db.session.scalars(
            select(CaseChange)
            .where(CaseChange.household_id == household.id)
            .order_by(CaseChange.made_at.desc(), CaseChange.id.desc())
        )
    )


def read_changes(actor: User, household: Household) -> list[tuple[CaseChange, dict[str, Any]]]:
    """The case's changes with their values, for a page (one audit row for the read)."""
    require_in_area(actor, household.village)
    require(actor, Capability.READ_PERSONAL_DATA, "this role reads no personal data")
    changes = history(household)
    if changes:
        audit.record(
            "case_change.read",
            actor=actor,
            object_type="household",
            object_id=household.id,
            changes=[c.id for c in changes],
        )
    return [(c, payload_of(c)) for c in changes]


def waiting_for(actor: User) -> list[CaseChange]:
    """The pending changes of the actor's area that the actor may check (not their own),
    oldest first."""
    require(
        actor,
        Capability.CHECK_CASE_CHANGES,
        "only township reviewers and county approvers check changes",
        action="check_change",
    )
    query = (
        select(CaseChange)
        .join(Household, Household.id == CaseChange.household_id)
        .join(Area, Area.id == Household.village_id)
        .where(CaseChange.status == ChangeStatus.PENDING, CaseChange.maker_id != actor.id)
        .order_by(CaseChange.made_at, CaseChange.id)
    )
    return list(db.session.scalars(scope_to_actor(query, actor)))


def may_check(actor: User, change: CaseChange) -> bool:
    """Whether the page offers this actor approve and reject on this change."""
    return (
        change.status is ChangeStatus.PENDING
        and change.maker_id != actor.id
        and can(actor, Capability.CHECK_CASE_CHANGES)
    )


# --------------------------------------------------------------------------- decisions


def _check_checker(actor: User, change: CaseChange, action: str) -> None:
    require_in_area(actor, change.household.village)
    require(
        actor,
        Capability.CHECK_CASE_CHANGES,
        "only township reviewers and county approvers check changes",
        action="check_change",
    )
    if change.maker_id == actor.id:
        raise NotPermitted(
            "the maker of a change cannot check it: a second person must",
            action="check_own_change",
        )
    _require_pending(change, action)


def _require_pending(change: CaseChange, action: str) -> None:
    """Pending, and claimed for this decision: a compare-and-set on the row, so that of
    two people deciding the same change at once only the first one applies it (the
    second waits for the first's row lock on PostgreSQL, then finds it decided)."""
    if change.status is ChangeStatus.PENDING:
        claimed = rows_changed(
            update(CaseChange)
            .where(CaseChange.id == change.id, CaseChange.status == ChangeStatus.PENDING)
            .values(checked_at=clock.utcnow())
            .execution_options(synchronize_session=False)
        )
        if claimed:
            return
        db.session.refresh(change)
    raise IllegalTransition(
        f"this change is {change.status.value} already",
        action=action,
        change_status=change.status.value,
    )


def reject(actor: User, change: CaseChange, note: str | None) -> CaseChange:
    _check_checker(actor, change, "reject_change")
    written = written_reason(note, "reject_change")
    if written is None:
        raise ValidationFailed("a rejection needs a note", field="note", problem="required")
    _close(change, actor, ChangeStatus.REJECTED, written)
    audit.record(
        "case_change.rejected",
        actor=actor,
        object_type="case_change",
        object_id=change.id,
        household_id=change.household_id,
        kind=change.kind.value,
    )
    db.session.flush()
    return change


def withdraw(actor: User, change: CaseChange) -> CaseChange:
    require_in_area(actor, change.household.village)
    if change.maker_id != actor.id:
        raise NotPermitted("only the maker withdraws a change", action="withdraw_change")
    _require_pending(change, "withdraw_change")
    change.status = ChangeStatus.WITHDRAWN
    change.checked_at = clock.utcnow()
    audit.record(
        "case_change.withdrawn",
        actor=actor,
        object_type="case_change",
        object_id=change.id,
        household_id=change.household_id,
        kind=change.kind.value,
    )
    db.session.flush()
    return change


def _close(change: CaseChange, actor: User, status: ChangeStatus, note: str | None) -> None:
    change.status = status
    change.checker_id = actor.id
    change.checked_at = clock.utcnow()
    change.checker_note = note


def effective_month(now: datetime) -> str:
    """The first payroll month that pays an allowance stored at ``now``: this month
    until its proof-of-life window closes (its payment row is made then, from the
    household's allowance), the next one after."""
    rules = region()
    month = current_month(now, rules.timezone)
    closes = window(month, rules.proof_of_life, rules.timezone)[1]
    return month if now < closes else month_after(month)


def approve(
    actor: User, change: CaseChange, note: str | None = None, *, today: date | None = None
) -> CaseChange:
    """Apply the change to the case as it is now, recompute and store the allowance."""
    _check_checker(actor, change, "approve_change")
    written = written_reason(note, "approve_change")
    household = change.household
    if household.state.closed:
        raise BaseMoved(
            f"the case is {household.state.value} now", action="approve_change", why="closed"
        )
    now = clock.utcnow()
    today = today or local_today()
    data = payload_of(change)
    before = _allowance_now(household)
    announce: list[Any] = []
    if change.kind is ChangeKind.ADD_MEMBER:
        _apply_add(household, data)
    elif change.kind is ChangeKind.REMOVE_MEMBER:
        announce.append(_apply_remove(household, data, actor, today, now))
    elif change.kind is ChangeKind.CORRECT_PHONE:
        announce.append(_apply_phone(household, data, now))
    else:
        _apply_incomes(household, data)
    db.session.flush()

    result = allowance_for(household)
    change.allowance_before = before
    change.allowance_after = result.monthly_amount
    change.eligible_after = result.eligible
    if household.state in PAID_STATES:
        household.monthly_allowance = result.monthly_amount
        change.effective_month = effective_month(now)
    _close(change, actor, ChangeStatus.APPROVED, written)
    record_event(
        household,
        "case_change",
        actor=actor,
        reason=change.reason,
        change_id=change.id,
        kind=change.kind.value,
        maker_id=change.maker_id,
    )
    audit.record(
        "case_change.approved",
        actor=actor,
        object_type="case_change",
        object_id=change.id,
        household_id=household.id,
        kind=change.kind.value,
        allowance_before=str(change.allowance_before),
        allowance_after=str(change.allowance_after),
        effective_month=change.effective_month,
    )
    if household.state in PAID_STATES and not result.eligible:
        # The per-capita income reaches the standard: nothing is paid and the case is
        # reviewed now (the county decides whether it ends; nothing here terminates it).
        schedule_review(
            household,
            today,
            actor=actor,
            action="review_after_change",
            reason="per-capita income reaches the standard after an approved change",
            change_id=change.id,
        )
    db.session.flush()
    for event in announce:
        if isinstance(event, MemberLeft):
            member_left.send(event)
        else:
            phone_corrected.send(event)
    db.session.flush()
    return change


def _base_moved(message: str, why: str) -> BaseMoved:
    return BaseMoved(message, action="approve_change", why=why)


def _still_member(household: Household, member_id: int) -> Member:
    for member in household.members:
        if member.id == member_id and member.current:
            return member
    raise _base_moved("the member is no longer in the household", "member_gone")


def _apply_add(household: Household, data: dict[str, Any]) -> None:
    if find_members_by_id_number(data["id_number"]):
        raise _base_moved("the ID number was registered meanwhile", "duplicate")
    if data["relation"] == Relation.HEAD.value:  # pragma: no cover - refused at proposal
        raise _base_moved("the household has its head", "head")
    household.members.append(
        _new_member(
            NewMember(
                name=data["name"],
                id_number=data["id_number"],
                birth_date=date.fromisoformat(data["birth_date"]),
                relation=Relation(data["relation"]),
                phone=data["phone"],
                able_to_work=bool(data["able_to_work"]),
                monthly_income=Decimal(data["monthly_income"]),
                proof_of_life_required=bool(data["proof_of_life_required"]),
            )
        )
    )


def _apply_remove(
    household: Household, data: dict[str, Any], actor: User, today: date, now: datetime
) -> MemberLeft:
    member = _still_member(household, int(data["member_id"]))
    if member.relation.value != data["relation"]:
        raise _base_moved("the member's relation changed since the proposal", "relation")
    if not [m for m in household.living_members if m.id != member.id]:
        raise _base_moved("the last member cannot be removed", "last")
    new_head = None
    if member.relation is Relation.HEAD:
        new_head = _still_member(household, int(data["new_head_id"]))
    was_designated = member.proof_of_life_required
    member.left_on = today
    member.proof_of_life_required = False
    if new_head is not None:
        # One head per household (a unique index): the old head's row steps down first.
        member.relation = Relation.OTHER
        db.session.flush()
        new_head.relation = Relation.HEAD
        if was_designated:
            new_head.proof_of_life_required = True
    return MemberLeft(member.id, household.id, actor.id, now)


def _apply_phone(household: Household, data: dict[str, Any], now: datetime) -> PhoneCorrected:
    member = _still_member(household, int(data["member_id"]))
    if (member.phone or None) != (data["old_phone"] or None):
        raise _base_moved("the phone changed since the proposal", "phone")
    member.phone = data["new_phone"]
    return PhoneCorrected(member.id, household.id, now)


def _apply_incomes(household: Household, data: dict[str, Any]) -> None:
    for line in data["lines"]:
        member = _still_member(household, int(line["member_id"]))
        if member.monthly_income != Decimal(line["old"]):
            raise _base_moved("an income changed since the proposal", "income")
        member.monthly_income = Decimal(line["new"])
