"""Operations on cases other than workflow moves: applications and reading
personal data (every read audited). Functions flush, never commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from sqlalchemy import select

from server.areas.models import Area, AreaLevel
from server.audit import service as audit
from server.auth.models import User
from server.auth.permissions import (
    Capability,
    require,
    require_in_area,
    require_visible,
)
from server.cases.codes import new_case_code
from server.cases.models import (
    CaseEvent,
    CaseState,
    Household,
    HouseholdClass,
    Member,
    Relation,
    id_number_hash,
    id_number_hashes,
)
from server.cases.workflow import local_today
from server.crypto import ID_NUMBER_PATTERN, id_check_digit, normalize_id_number
from server.errors import ValidationFailed
from server.extensions import db
from server.region import region


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


def check_id_number(id_number: str, birth_date: date | None = None) -> str:
    """The normalized 18-character resident ID number (GB 11643-1999), or
    ValidationFailed (field ``id_number``, ``problem``: format, checksum, birth_date)."""
    value = normalize_id_number(id_number)
    if not ID_NUMBER_PATTERN.match(value):
        raise ValidationFailed(
            "an ID number has 17 digits and a check character", field="id_number", problem="format"
        )
    if id_check_digit(value[:17]) != value[17]:
        raise ValidationFailed(
            "the ID number's check character is wrong", field="id_number", problem="checksum"
        )
    if birth_date is not None and value[6:14] != f"{birth_date:%Y%m%d}":
        raise ValidationFailed(
            "the ID number does not carry this birth date", field="id_number", problem="birth_date"
        )
    return value


def find_members_by_id_number(id_number: str) -> list[Member]:
    """Every member registered under this ID number, in any household (duplicate check).

    Matches the hash under every key of the ring: during a key rotation a member may
    still hold a hash made under an old key (docs/decisions/0010-data-key-rotation.md)."""
    hashes = id_number_hashes(id_number)
    return list(db.session.scalars(select(Member).where(Member.id_number_hash.in_(hashes))))


class MemberRegisteredElsewhere(ValidationFailed):
    """A new applicant's ID number is already registered in another open case: the
    same person may not be in two households."""

    code = "member_registered_elsewhere"


class DuplicateIdNumber(ValidationFailed):
    """The same ID number twice in one application."""

    code = "duplicate_id_number"


@dataclass(frozen=True)
class RegisteredElsewhere:
    """A new applicant (``index`` in the application's members) whose ID number is
    registered in another household whose case is open."""

    index: int
    household_id: int


def application_problems(
    village: Area,
    home_lat: float,
    home_lon: float,
    class_code: str,
    members: Sequence[NewMember],
) -> list[ValidationFailed]:
    """Every reason a new household (a tablet's, or a walk-in's at the office) cannot be
    registered as it stands, each naming its field; empty when it can. The one home of
    these rules: ``apply_for_allowance`` refuses on the first, the office's form shows
    them all beside their fields. Who the applicants are elsewhere is
    ``registered_elsewhere``.
    """
    problems: list[ValidationFailed] = []
    if village.level is not AreaLevel.VILLAGE:
        problems.append(ValidationFailed("a household belongs to a village", field="village"))
    if not -90 <= home_lat <= 90 or not -180 <= home_lon <= 180:
        problems.append(ValidationFailed("home location out of range", field="location"))
    heads = [m for m in members if m.relation is Relation.HEAD]
    if len(heads) != 1:
        problems.append(
            ValidationFailed(
                "a household needs exactly one head", field="members", heads=len(heads)
            )
        )
    if (
        db.session.scalar(select(HouseholdClass.id).where(HouseholdClass.code == class_code))
        is None
    ):
        problems.append(ValidationFailed(f"unknown class {class_code!r}", field="class"))
    seen: dict[str, int] = {}
    for index, member in enumerate(members):
        key = normalize_id_number(member.id_number)
        if key in seen:
            problems.append(
                DuplicateIdNumber(
                    f"members {seen[key]} and {index} have the same ID number",
                    field=f"members.{index}.id_number",
                    same_as=seen[key],
                )
            )
        else:
            seen[key] = index
    return problems


def registered_elsewhere(
    id_numbers: Sequence[str], household_id: int | None = None
) -> list[RegisteredElsewhere]:
    """The applicants whose ID number is already registered in another household (any
    area: the check is league-wide on purpose) whose case is not closed. A rejected or
    terminated case does not hold its members: they may apply again. By the keyed
    look-up hash, never by decrypting rows. ``household_id``: the application's own
    household, once registered.
    """
    hashes = {index: id_number_hashes(id_number) for index, id_number in enumerate(id_numbers)}
    if not hashes:
        return []
    # One query for every applicant: which open households hold each hash.
    holders: dict[str, set[int]] = {}
    for digest, other in db.session.execute(
        select(Member.id_number_hash, Household.id)
        .join(Member, Member.household_id == Household.id)
        .where(
            Member.id_number_hash.in_({d for ds in hashes.values() for d in ds}),
            Household.state.not_in([CaseState.TERMINATED, CaseState.REJECTED]),
        )
    ):
        holders.setdefault(digest, set()).add(other)
    return [
        RegisteredElsewhere(index, other)
        for index, digests in hashes.items()
        for other in sorted(set().union(*(holders.get(d, set()) for d in digests)))
        if other != household_id
    ]


class ApplicationRefused(ValidationFailed):
    """A walk-in application with problems: all of them, each naming its field."""

    code = "application_refused"

    def __init__(self, problems: Sequence[ValidationFailed]) -> None:
        super().__init__(
            "; ".join(p.message for p in problems),
            fields=[p.details.get("field") for p in problems],
        )
        self.problems = list(problems)


def check_walk_in(
    *,
    actor: User,
    village: Area,
    home: tuple[float, float] | None,
    class_code: str,
    members: Sequence[NewMember],
) -> None:
    """Raise ApplicationRefused with every problem of a walk-in application: the checks
    of a tablet's new household (``application_problems``) and, where the tablet raises
    its critical flag for an applicant already in another open case, a refusal
    (``registered_elsewhere``): no visit stands behind a walk-in, and the clerk can send
    the applicant to that case. Reads only."""
    require_in_area(actor, village, "village")
    require(actor, Capability.REGISTER_APPLICATIONS, "only township staff register applications")
    home_lat, home_lon = home if home is not None else (village.lat, village.lon)
    problems = application_problems(village, home_lat, home_lon, class_code, members)
    problems += [
        MemberRegisteredElsewhere(
            f"a member's ID number is already registered in household {found.household_id}",
            field=f"members.{found.index}.id_number",
            household_id=found.household_id,
        )
        for found in registered_elsewhere([m.id_number for m in members])
    ]
    if problems:
        raise ApplicationRefused(problems)


def register_walk_in(
    *,
    actor: User,
    village: Area,
    address: str,
    home: tuple[float, float] | None,
    class_code: str,
    members: Sequence[NewMember],
    conflict_of_interest: bool = False,
    conflict_note: str | None = None,
    special_case: bool = False,
) -> Household:
    """An application taken at the township office (docs/office.md, "Walk-in
    applications"), once ``check_walk_in`` finds nothing; it raises ApplicationRefused
    otherwise and nothing is written. ``home`` None: the office does not know the home,
    the village's centre stands in (``home_pending``) until the initial survey's GPS
    fix replaces it. The case starts applied, like every application.
    """
    check_walk_in(actor=actor, village=village, home=home, class_code=class_code, members=members)
    home_lat, home_lon = home if home is not None else (village.lat, village.lon)
    return apply_for_allowance(
        actor=actor,
        village=village,
        address=address,
        home_lat=home_lat,
        home_lon=home_lon,
        home_pending=home is None,
        class_code=class_code,
        members=members,
        conflict_of_interest=conflict_of_interest,
        conflict_note=conflict_note,
        special_case=special_case,
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
    home_pending: bool = False,
    today: date | None = None,
) -> Household:
    """Register an application (申请) taken by township staff. ``home_pending``: the
    home given is a placeholder that the initial survey's GPS fix replaces."""
    require_in_area(actor, village, "village")
    require(actor, Capability.REGISTER_APPLICATIONS, "only township staff register applications")
    problems = application_problems(village, home_lat, home_lon, class_code, members)
    if problems:
        raise problems[0]
    household_class = db.session.scalars(
        select(HouseholdClass).where(HouseholdClass.code == class_code)
    ).one()

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
        home_pending=home_pending,
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
