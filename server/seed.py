"""Realistic demo and benchmark data: one county of Xing'an League, its townships
and villages, staff for every role, and households spread over every state and
class. Deterministic for a given seed (and reference date). Households are
written with bulk INSERTs in chunks, never one ORM object per round trip.
"""

from __future__ import annotations

import math
import random
import string
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from itertools import accumulate
from typing import Any, cast

from faker.providers.person.zh_CN import Provider as ZhPerson
from faker.providers.phone_number.zh_CN import Provider as ZhPhone
from sqlalchemy import Table, func, insert, select

from server.areas.models import Area, AreaLevel, build_path
from server.audit import service as audit
from server.auth.models import Role, User
from server.auth.passwords import hash_password
from server.cases.allowance import compute_allowance
from server.cases.codes import new_case_code
from server.cases.models import CaseEvent, CaseState, Household, HouseholdClass, Member, Relation
from server.cases.workflow import add_months, first_of_next_month
from server.errors import ValidationFailed
from server.extensions import db
from server.region import RegionRules
from server.types import field_cipher

CENTER = (46.08, 122.05)  # Ulanhot, Xing'an League
LEAGUE = ("152200", "兴安盟")
COUNTY = ("152201", "乌兰浩特市")
TOWNSHIPS = (
    ("152201100", "义勒力特镇"),
    ("152201101", "葛根庙镇"),
    ("152201102", "乌兰哈达镇"),
    ("152201200", "太本站镇"),
    ("152201201", "斯力很苏木"),
)
VILLAGE_NAMES = (
    "红旗",
    "东升",
    "新民",
    "永丰",
    "胜利",
    "兴隆",
    "前进",
    "和平",
    "团结",
    "光明",
    "宝力根",
    "巴彦",
    "乌兰",
    "额尔敦",
    "哈达",
    "新立",
    "太平",
    "双井",
    "三合",
    "五道",
    "富裕",
    "长兴",
    "平安",
    "德胜",
    "联合",
    "向阳",
    "幸福",
    "永安",
    "吉祥",
    "保安",
    "金星",
    "白音",
    "查干",
    "阿拉坦",
    "敖包",
    "呼和",
    "那仁",
    "苏布",
    "海力森",
    "达尔罕",
)

# Share of cases in each state (sums to 1).
STATE_WEIGHTS = {
    CaseState.APPLIED: 0.04,
    CaseState.ACCEPTED: 0.04,
    CaseState.SURVEYED: 0.04,
    CaseState.TOWNSHIP_REVIEWED: 0.03,
    CaseState.IN_PUBLIC_NOTICE: 0.03,
    CaseState.APPROVED: 0.68,
    CaseState.SUSPENDED: 0.05,
    CaseState.TERMINATED: 0.05,
    CaseState.REJECTED: 0.04,
}
# The workflow path to each state (after "apply").
PATH_TO = {
    CaseState.APPLIED: [],
    CaseState.ACCEPTED: ["accept"],
    CaseState.SURVEYED: ["accept", "record_survey"],
    CaseState.TOWNSHIP_REVIEWED: ["accept", "record_survey", "township_review"],
    CaseState.IN_PUBLIC_NOTICE: [
        "accept",
        "record_survey",
        "township_review",
        "start_public_notice",
    ],
    CaseState.APPROVED: [
        "accept",
        "record_survey",
        "township_review",
        "start_public_notice",
        "approve",
    ],
}
TARGET_OF = {
    "accept": CaseState.ACCEPTED,
    "record_survey": CaseState.SURVEYED,
    "township_review": CaseState.TOWNSHIP_REVIEWED,
    "start_public_notice": CaseState.IN_PUBLIC_NOTICE,
    "approve": CaseState.APPROVED,
    "suspend": CaseState.SUSPENDED,
    "terminate": CaseState.TERMINATED,
    "reject": CaseState.REJECTED,
}
REASONS = {
    "reject": "家庭人均收入超过当地低保标准",
    "suspend": "本月未完成生存认证，暂停发放",
    "terminate": "家庭收入状况改善，不再符合条件",
}
MEMBER_COUNT_WEIGHTS = (22, 30, 22, 14, 8, 4)  # 1..6 members
CHUNK = 2000


@dataclass
class SeedReport:
    areas: list[dict[str, Any]] = field(default_factory=list)
    users: list[dict[str, Any]] = field(default_factory=list)
    households: int = 0

    def as_json(self) -> dict[str, Any]:
        return {"areas": self.areas, "users": self.users, "households": self.households}


def sync_household_classes(rules: RegionRules) -> dict[str, HouseholdClass]:
    """Make the class table match the region file (insert or update by code)."""
    existing = {c.code: c for c in db.session.scalars(select(HouseholdClass))}
    for rule in rules.classes:
        row = existing.get(rule.code) or HouseholdClass(code=rule.code)
        row.name, row.name_en = rule.name, rule.name_en
        row.review_interval_months = rule.review_interval_months
        row.monthly_standard, row.fixed_monthly = rule.monthly_standard, rule.fixed_monthly
        db.session.add(row)
        existing[rule.code] = row
    db.session.flush()
    return existing


def id_check_digit(first17: str) -> str:
    """GB 11643-1999 check character of an 18-digit resident ID number."""
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    total = sum(int(d) * w for d, w in zip(first17, weights, strict=True))
    return "10X98765432"[total % 11]


class _People:
    """Names, ID numbers and phones from Faker's zh_CN tables, drawn with our RNG
    (Faker's own per-call machinery is ten times slower at this volume).
    """

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.last_names = list(ZhPerson.last_names.keys())
        self.last_cum = list(accumulate(ZhPerson.last_names.values()))
        self.first_names = list(ZhPerson.first_names)
        self.phone_prefixes = [str(p) for p in ZhPhone.phonenumber_prefixes]
        self.serials: set[str] = set()

    def name(self, surname: str | None = None) -> str:
        surname = surname or self.rng.choices(self.last_names, cum_weights=self.last_cum)[0]
        return surname + self.rng.choice(self.first_names)

    def id_number(self, birth: date, male: bool) -> str:
        while True:
            seq = self.rng.randrange(0, 500) * 2 + (1 if male else 0)
            first17 = f"{COUNTY[0]}{birth:%Y%m%d}{seq:03d}"
            if first17 not in self.serials:
                self.serials.add(first17)
                return first17 + id_check_digit(first17)

    def phone(self) -> str:
        return self.rng.choice(self.phone_prefixes) + f"{self.rng.randrange(10**8):08d}"


def _offset(lat: float, lon: float, rng: random.Random, max_m: float) -> tuple[float, float]:
    """A point uniformly within ``max_m`` metres of (lat, lon)."""
    distance = max_m * math.sqrt(rng.random())
    bearing = rng.uniform(0, 2 * math.pi)
    dlat = distance * math.cos(bearing) / 111_320
    dlon = distance * math.sin(bearing) / (111_320 * math.cos(math.radians(lat)))
    return round(lat + dlat, 6), round(lon + dlon, 6)


def _password(rng: random.Random) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(rng.choice(alphabet) for _ in range(14))


def seed_database(
    *, households: int, seed: int, rules: RegionRules, today: date, hash_passwords: bool = True
) -> SeedReport:
    """Fill an empty database. Flushes; the caller commits. Raises ValidationFailed
    if the database already holds areas.
    """
    if households < 0:
        raise ValidationFailed("--households must not be negative", field="households")
    if db.session.scalar(select(func.count()).select_from(Area)):
        raise ValidationFailed(
            "the database already holds areas; seed only into an empty database", field="database"
        )
    rng = random.Random(seed)
    report = SeedReport()
    classes = sync_household_classes(rules)

    league = _add_area(report, LEAGUE, AreaLevel.LEAGUE, None, CENTER)
    county = _add_area(report, COUNTY, AreaLevel.COUNTY, league, CENTER)
    villages: list[Area] = []
    townships: list[Area] = []
    village_names = list(VILLAGE_NAMES)
    rng.shuffle(village_names)
    for t_index, (code, name) in enumerate(TOWNSHIPS):
        t_center = _offset(*CENTER, rng, 25_000)
        township = _add_area(report, (code, name), AreaLevel.TOWNSHIP, county, t_center)
        townships.append(township)
        for v_index in range(8):
            v_name = village_names[(t_index * 8 + v_index) % len(village_names)]
            suffix = "嘎查" if rng.random() < 0.4 else "村"
            village = _add_area(
                report,
                (f"{code}{201 + v_index:03d}", v_name + suffix),
                AreaLevel.VILLAGE,
                township,
                _offset(*t_center, rng, 6_000),
            )
            villages.append(village)
    db.session.flush()

    users_by_area = _add_users(report, rng, league, county, townships, hash_passwords)
    db.session.flush()

    _add_households(households, rng, rules, today, villages, classes, users_by_area, county)
    report.households = households
    audit.record("seed", actor=None, households=households, seed=seed)
    db.session.flush()
    return report


def _add_area(
    report: SeedReport,
    code_name: tuple[str, str],
    level: AreaLevel,
    parent: Area | None,
    center: tuple[float, float],
) -> Area:
    code, name = code_name
    area = Area(
        code=code,
        name=name,
        level=level,
        parent=parent,
        path=build_path(parent, code),
        lat=center[0],
        lon=center[1],
    )
    db.session.add(area)
    report.areas.append(
        {
            "code": code,
            "name": name,
            "level": level.value,
            "parent": parent.code if parent else None,
        }
    )
    return area


def _add_users(
    report: SeedReport,
    rng: random.Random,
    league: Area,
    county: Area,
    townships: list[Area],
    hash_passwords: bool,
) -> dict[tuple[str, Role], User]:
    plan: list[tuple[str, Role, Area]] = [
        ("admin", Role.ADMIN, league),
        ("supervisor", Role.SUPERVISOR, league),
        ("county_supervisor", Role.SUPERVISOR, county),
        ("approver", Role.COUNTY_APPROVER, county),
    ]
    for index, township in enumerate(townships, start=1):
        plan.append((f"caseworker{index}", Role.CASEWORKER, township))
        plan.append((f"reviewer{index}", Role.TOWNSHIP_REVIEWER, township))
    by_area: dict[tuple[str, Role], User] = {}
    for username, role, area in plan:
        password = _password(rng)
        user = User(
            username=username,
            # Without hashing (benchmarks only) nobody can log in: "!" never verifies.
            password_hash=hash_password(password) if hash_passwords else "!",
            role=role,
            area=area,
        )
        db.session.add(user)
        by_area[(area.code, role)] = user
        report.users.append(
            {"username": username, "password": password, "role": role.value, "area": area.code}
        )
    return by_area


def _chunks(total: int) -> Iterator[int]:
    done = 0
    while done < total:
        size = min(CHUNK, total - done)
        yield size
        done += size


def _add_households(
    total: int,
    rng: random.Random,
    rules: RegionRules,
    today: date,
    villages: list[Area],
    classes: dict[str, HouseholdClass],
    users: dict[tuple[str, Role], User],
    county: Area,
) -> None:
    cipher = field_cipher()
    people = _People(rng)
    states = list(STATE_WEIGHTS)
    state_cum = list(accumulate(STATE_WEIGHTS.values()))
    class_codes = [rule.code for rule in rules.classes]
    approver = users[(county.code, Role.COUNTY_APPROVER)]
    village_staff = {
        v.id: (
            users[(v.parent.code, Role.CASEWORKER)],
            users[(v.parent.code, Role.TOWNSHIP_REVIEWER)],
        )
        for v in villages
        if v.parent is not None
    }
    codes: set[str] = set()
    household_table = cast(Table, Household.__table__)
    for size in _chunks(total):
        rows: list[dict[str, Any]] = []
        pending: list[tuple[list[dict[str, Any]], list[dict[str, Any]]]] = []
        for _ in range(size):
            village = rng.choice(villages)
            state = rng.choices(states, cum_weights=state_cum)[0]
            class_code = rng.choice(class_codes)
            household, members, events = _one_household(
                rng,
                people,
                rules,
                today,
                village,
                classes[class_code],
                state,
                village_staff[village.id],
                approver,
                codes,
            )
            rows.append(household)
            pending.append((members, events))
        ids = (
            db.session.execute(
                insert(household_table).returning(
                    household_table.c.id, sort_by_parameter_order=True
                ),
                rows,
            )
            .scalars()
            .all()
        )
        member_rows: list[dict[str, Any]] = []
        event_rows: list[dict[str, Any]] = []
        for household_id, (members, events) in zip(ids, pending, strict=True):
            for m in members:
                m["household_id"] = household_id
                m["id_number_hash"] = cipher.lookup_hash(m["id_number"], "members.id_number")
            for e in events:
                e["household_id"] = household_id
            member_rows.extend(members)
            event_rows.extend(events)
        db.session.execute(insert(cast(Table, Member.__table__)), member_rows)
        db.session.execute(insert(cast(Table, CaseEvent.__table__)), event_rows)


def _one_household(
    rng: random.Random,
    people: _People,
    rules: RegionRules,
    today: date,
    village: Area,
    household_class: HouseholdClass,
    state: CaseState,
    staff: tuple[User, User],
    approver: User,
    codes: set[str],
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    caseworker, reviewer = staff
    size = rng.choices(range(1, 7), weights=MEMBER_COUNT_WEIGHTS)[0]
    members = _members(rng, people, size, today, household_class)

    # Pending cases applied recently; decided ones up to three years ago.
    if state in (
        CaseState.APPLIED,
        CaseState.ACCEPTED,
        CaseState.SURVEYED,
        CaseState.TOWNSHIP_REVIEWED,
        CaseState.IN_PUBLIC_NOTICE,
    ):
        applied_on = today - timedelta(days=rng.randrange(0, 35))
    else:
        applied_on = today - timedelta(days=rng.randrange(40, 3 * 365))
    steps = _steps_to(state, rng)
    events: list[dict[str, Any]] = []
    day = applied_on
    actions = ["apply", *steps]
    previous: CaseState | None = None
    household: dict[str, Any] = {}
    for action in actions:
        target = CaseState.APPLIED if action == "apply" else TARGET_OF[action]
        if action != "apply":
            day = min(day + timedelta(days=rng.randrange(1, 6)), today)
        if action == "start_public_notice":
            household["notice_ends_on"] = day + timedelta(days=rules.deadlines.public_notice_days)
            household["decision_due_on"] = rules.calendar.add_working_days(
                household["notice_ends_on"], rules.deadlines.county_decision_working_days
            )
            if target is not state:  # moved on: the notice ran its course
                day = min(household["notice_ends_on"], today)
        actor = {
            "apply": caseworker,
            "accept": caseworker,
            "record_survey": caseworker,
            "township_review": reviewer,
            "start_public_notice": reviewer,
        }.get(action, approver)
        events.append(
            {
                "at": datetime.combine(day, time(1 + rng.randrange(9), rng.randrange(60)), UTC),
                "actor_id": actor.id,
                "action": action,
                "from_state": previous.value if previous else None,
                "to_state": target.value,
                "reason": REASONS.get(action),
            }
        )
        if action == "approve":
            household["approved_on"] = day
        previous = target

    incomes = [m["monthly_income"] for m in members]
    result = compute_allowance(
        method=rules.allowance_method,
        monthly_standard=household_class.monthly_standard,
        fixed_monthly=household_class.fixed_monthly,
        minimum_monthly=rules.minimum_monthly,
        member_incomes=incomes,
    )
    approved_on: date | None = household.get("approved_on")
    next_review_on = last_reviewed_on = None
    if approved_on is not None:
        interval = household_class.review_interval_months
        last_reviewed_on = approved_on
        while add_months(last_reviewed_on, interval) <= today - timedelta(
            days=rng.randrange(0, 60)
        ):
            last_reviewed_on = add_months(last_reviewed_on, interval)
        next_review_on = add_months(last_reviewed_on, interval)

    code = new_case_code(rng)
    while code in codes:
        code = new_case_code(rng)
    codes.add(code)
    home_lat, home_lon = _offset(village.lat, village.lon, rng, 2_000)
    household.update(
        {
            "case_code": code,
            "village_id": village.id,
            "home_lat": home_lat,
            "home_lon": home_lon,
            "address": f"{village.name}{rng.randrange(1, 9)}组{rng.randrange(1, 120)}号",
            "class_id": household_class.id,
            "monthly_allowance": result.monthly_amount if approved_on and result.eligible else None,
            "conflict_of_interest": rng.random() < 0.02,
            "conflict_note": None,
            "state": state.value,
            "special_case": False,
            "applied_on": applied_on,
            "review_due_on": rules.calendar.add_working_days(
                applied_on, rules.deadlines.review_working_days
            ),
            "payment_starts_on": first_of_next_month(approved_on) if approved_on else None,
            "last_reviewed_on": last_reviewed_on,
            "next_review_on": next_review_on
            if state in (CaseState.APPROVED, CaseState.SUSPENDED)
            else None,
            "state_changed_at": events[-1]["at"],
            "created_at": events[0]["at"],
        }
    )
    household.setdefault("notice_ends_on", None)
    household.setdefault("decision_due_on", None)
    household.setdefault("approved_on", None)
    return household, members, events


def _steps_to(state: CaseState, rng: random.Random) -> list[str]:
    if state in PATH_TO:
        return list(PATH_TO[state])
    if state is CaseState.REJECTED:
        return [*PATH_TO[CaseState.IN_PUBLIC_NOTICE][: rng.randrange(0, 5)], "reject"]
    if state is CaseState.SUSPENDED:
        return [*PATH_TO[CaseState.APPROVED], "suspend"]
    # Terminated: from active, sometimes after a suspension.
    tail = ["suspend", "terminate"] if rng.random() < 0.5 else ["terminate"]
    return [*PATH_TO[CaseState.APPROVED], *tail]


def _members(
    rng: random.Random, people: _People, size: int, today: date, household_class: HouseholdClass
) -> list[dict[str, Any]]:
    standard = household_class.monthly_standard
    head_age = rng.randrange(28, 88)
    surname = None
    plan: list[tuple[Relation, int]] = [(Relation.HEAD, head_age)]
    if size > 1 and head_age > 25:
        plan.append((Relation.SPOUSE, max(20, head_age + rng.randrange(-6, 6))))
    while len(plan) < size:
        if head_age > 60 and rng.random() < 0.4:
            plan.append((Relation.GRANDCHILD, rng.randrange(1, 18)))
        elif head_age < 50 and rng.random() < 0.2:
            plan.append((Relation.PARENT, min(95, head_age + rng.randrange(22, 32))))
        else:
            plan.append((Relation.CHILD, max(0, head_age - rng.randrange(20, 35))))
    rows = []
    for relation, age in plan:
        birth = today - timedelta(days=age * 365 + rng.randrange(365))
        male = rng.random() < 0.5
        name = people.name(surname if relation in (Relation.CHILD, Relation.GRANDCHILD) else None)
        if relation is Relation.HEAD:
            surname = name[0]
        able = 18 <= age < 60 and rng.random() < 0.45
        income = (
            Decimal(rng.randrange(0, int(standard * 60))) / 100
            if able
            else Decimal(rng.randrange(0, 12000)) / 100
        )
        rows.append(
            {
                "name": name,
                "id_number": people.id_number(birth, male),
                "phone": people.phone()
                if age >= 16 and (relation is Relation.HEAD or rng.random() < 0.6)
                else None,
                "birth_date": birth,
                "relation": relation.value,
                "able_to_work": able,
                "monthly_income": income.quantize(Decimal("0.01")),
                "alive": True,
                "died_on": None,
                "proof_of_life_required": relation is Relation.HEAD,
                "created_at": datetime.combine(today, time(0), UTC),
            }
        )
    return rows
