"""Operations on cases other than workflow moves: applications and reading
personal data (every read audited). Functions flush, never commit.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from sqlalchemy import select

from server.areas.models import Area, AreaLevel
from server.audit import service as audit
from server.auth.models import User
from server.auth.permissions import Capability, require, require_in_area, require_visible
from server.cases.codes import new_case_code
from server.cases.models import CaseEvent, CaseState, Household, HouseholdClass, Member, Relation
from server.cases.workflow import local_today
from server.crypto import normalize_id_number
from server.errors import ValidationFailed
from server.extensions import db
from server.region import region
from server.types import field_cipher


@dataclass(frozen=True)
class NewMember:
    name: str
    id_number: str
    birth_date: date
    relation: Relation
    phone: str | None = None
    able_to_work: bool = False
    monthly_income: Decimal = Decimal("0.00")
    proof_of_life_required: bool | None = None  # None: the head does it


def id_number_hash(id_number: str) -> str:
    return field_cipher().lookup_hash(normalize_id_number(id_number), "members.id_number")


ID_NUMBER = re.compile(r"^\d{17}[\dX]$")
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def check_id_number(id_number: str, birth_date: date | None = None) -> str:
    """The normalized 18-character resident ID number (GB 11643-1999), or
    ValidationFailed (field ``id_number``, ``problem``: format, checksum, birth_date)."""
    value = normalize_id_number(id_number)
    if not ID_NUMBER.match(value):
        raise ValidationFailed(
            "an ID number has 17 digits and a check character", field="id_number", problem="format"
        )
    total = sum(int(d) * w for d, w in zip(value[:17], _ID_WEIGHTS, strict=True))
    if "10X98765432"[total % 11] != value[17]:
        raise ValidationFailed(
            "the ID number's check character is wrong", field="id_number", problem="checksum"
        )
    if birth_date is not None and value[6:14] != f"{birth_date:%Y%m%d}":
        raise ValidationFailed(
            "the ID number does not carry this birth date", field="id_number", problem="birth_date"
        )
    return value


def find_members_by_id_number(id_number: str) -> list[Member]:
    """Every member registered under this ID number, in any household (duplicate check)."""
    return list(
        db.session.scalars(select(Member).where(Member.id_number_hash == id_number_hash(id_number)))
    )


def apply_for_allowance(
    *,
    actor: User,
    village: Area,
    address: str,
    home_lat: float,
    home_lon: float,
    class_code: str,
    members: Sequence[NewMember],
    conflict_of_interest: bool = False,
    conflict_note: str | None = None,
    special_case: bool = False,
    today: date | None = None,
) -> Household:
    """Register an application (申请) taken by township staff."""
    require_in_area(actor, village, "village")
    require(actor, Capability.REGISTER_APPLICATIONS, "only township staff register applications")
    household_class = _check_application(village, home_lat, home_lon, class_code, members)

    rules = region()
    today = today or local_today()
    working_days = (
        rules.deadlines.review_working_days_special
        if special_case
        else rules.deadlines.review_working_days
    )
    household = Household(
        case_code=new_case_code(),
        village=village,
        address=address,
        home_lat=home_lat,
        home_lon=home_lon,
        household_class=household_class,
        conflict_of_interest=conflict_of_interest,
        conflict_note=conflict_note,
        special_case=special_case,
        state=CaseState.APPLIED,
        applied_on=today,
        review_due_on=rules.calendar.add_working_days(today, working_days),
    )
    household.members.extend(_new_member(m) for m in members)
    db.session.add(household)
    db.session.add(
        CaseEvent(
            household=household,
            actor_id=actor.id,
            action="apply",
            from_state=None,
            to_state=CaseState.APPLIED.value,
        )
    )
    db.session.flush()
    audit.record("case.apply", actor=actor, object_type="household", object_id=household.id)
    return household


def _check_application(
    village: Area,
    home_lat: float,
    home_lon: float,
    class_code: str,
    members: Sequence[NewMember],
) -> HouseholdClass:
    """The application's class, once its village, location and head are valid."""
    if village.level is not AreaLevel.VILLAGE:
        raise ValidationFailed("a household belongs to a village", field="village")
    if not -90 <= home_lat <= 90 or not -180 <= home_lon <= 180:
        raise ValidationFailed("home location out of range", field="location")
    heads = [m for m in members if m.relation is Relation.HEAD]
    if len(heads) != 1:
        raise ValidationFailed("a household needs exactly one head", field="members")
    household_class = db.session.scalar(
        select(HouseholdClass).where(HouseholdClass.code == class_code)
    )
    if household_class is None:
        raise ValidationFailed(f"unknown class {class_code!r}", field="class")
    return household_class


def _new_member(m: NewMember) -> Member:
    """A member of a new application; the head proves life each month unless told."""
    return Member(
        name=m.name,
        id_number=normalize_id_number(m.id_number),
        id_number_hash=id_number_hash(m.id_number),
        phone=m.phone,
        birth_date=m.birth_date,
        relation=m.relation,
        able_to_work=m.able_to_work,
        monthly_income=m.monthly_income,
        proof_of_life_required=(
            m.relation is Relation.HEAD
            if m.proof_of_life_required is None
            else m.proof_of_life_required
        ),
    )


@dataclass(frozen=True)
class MemberDetails:
    member_id: int
    name: str
    id_number: str
    phone: str | None
    birth_date: date
    relation: Relation
    able_to_work: bool
    monthly_income: Decimal
    alive: bool
    proof_of_life_required: bool
    left_on: date | None = None  # removed from the household by an approved change

    @property
    def current(self) -> bool:
        return self.alive and self.left_on is None


def read_member_details(actor: User, household: Household) -> list[MemberDetails]:
    """Decrypted personal data of a household's members; one audit row per member read.

    Administrators manage accounts and have no need to read recipients' data.
    """
    require_in_area(actor, household.village)
    require(
        actor,
        Capability.READ_PERSONAL_DATA,
        "administrators do not read members' personal data",
    )
    details = []
    for m in household.members:
        audit.record(
            "member.read_personal",
            actor=actor,
            object_type="member",
            object_id=m.id,
            household_id=household.id,
        )
        details.append(
            MemberDetails(
                member_id=m.id,
                name=m.name,
                id_number=m.id_number,
                phone=m.phone,
                birth_date=m.birth_date,
                relation=m.relation,
                able_to_work=m.able_to_work,
                monthly_income=m.monthly_income,
                alive=m.alive,
                proof_of_life_required=m.proof_of_life_required,
                left_on=m.left_on,
            )
        )
    db.session.flush()
    return details


def reveal_member(actor: User, household: Household, member_id: int) -> int:
    """A member's full ID number and phone for the page, for a role whose work needs
    them; an audit row ``member.reveal_personal``. A member of another household is
    "no such member", like a missing one. Returns the member's id."""
    member = db.session.get(Member, member_id)
    if member is not None and member.household_id != household.id:
        member = None
    found = require_visible(actor, member, lambda m: m.household.village, "member")
    require(
        actor,
        Capability.REVEAL_PERSONAL_DATA,
        "this role sees ID numbers and phones masked",
        action="reveal_personal_data",
    )
    audit.record(
        "member.reveal_personal",
        actor=actor,
        object_type="member",
        object_id=found.id,
        household_id=household.id,
    )
    db.session.flush()
    return found.id
