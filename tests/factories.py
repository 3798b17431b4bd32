"""Test data: a small league (2 townships, 2 villages each), a user of every role,
and households built in any state.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from sqlalchemy import select

from server.areas.models import Area, AreaLevel, build_path
from server.auth.models import Role, User
from server.auth.passwords import hash_password
from server.cases.models import CaseState, Household, Relation
from server.cases.service import NewMember, apply_for_allowance
from server.clock import utcnow
from server.extensions import db
from server.seed import id_check_digit, sync_household_classes

PASSWORD = "correct horse battery"

# code, name, level, parent code, lat, lon
AREAS = (
    ("152200", "兴安盟", AreaLevel.LEAGUE, None, 46.08, 122.05),
    ("152201", "乌兰浩特市", AreaLevel.COUNTY, "152200", 46.08, 122.05),
    ("152201100", "义勒力特镇", AreaLevel.TOWNSHIP, "152201", 46.10, 122.00),
    ("152201100201", "红旗村", AreaLevel.VILLAGE, "152201100", 46.11, 122.01),
    ("152201100202", "东升嘎查", AreaLevel.VILLAGE, "152201100", 46.12, 121.99),
    ("152201101", "葛根庙镇", AreaLevel.TOWNSHIP, "152201", 46.00, 122.20),
    ("152201101201", "新民村", AreaLevel.VILLAGE, "152201101", 46.01, 122.21),
    ("152201101202", "永丰村", AreaLevel.VILLAGE, "152201101", 45.99, 122.19),
    ("152202", "阿尔山市", AreaLevel.COUNTY, "152200", 47.18, 119.94),
)

# username, role, area code
USERS = (
    ("admin", Role.ADMIN, "152200"),
    ("supervisor", Role.SUPERVISOR, "152200"),
    ("approver", Role.COUNTY_APPROVER, "152201"),
    ("other_approver", Role.COUNTY_APPROVER, "152202"),
    ("caseworker_a", Role.CASEWORKER, "152201100"),
    ("reviewer_a", Role.TOWNSHIP_REVIEWER, "152201100"),
    ("caseworker_b", Role.CASEWORKER, "152201101"),
    ("reviewer_b", Role.TOWNSHIP_REVIEWER, "152201101"),
)


def add_area(
    by_code: dict[str, Area],
    code: str,
    name: str,
    level: AreaLevel,
    parent_code: str | None,
    lat: float,
    lon: float,
) -> Area:
    """One area under its parent (already in ``by_code``), registered in ``by_code``."""
    parent = by_code[parent_code] if parent_code else None
    area = Area(
        code=code,
        name=name,
        level=level,
        parent=parent,
        path=build_path(parent, code),
        lat=lat,
        lon=lon,
    )
    db.session.add(area)
    by_code[code] = area
    return area


def base_data() -> None:
    from flask import current_app

    sync_household_classes(current_app.config["REGION"])
    by_code: dict[str, Area] = {}
    for row in AREAS:
        add_area(by_code, *row)
    password_hash = hash_password(PASSWORD)
    for username, role, code in USERS:
        db.session.add(
            User(username=username, password_hash=password_hash, role=role, area=by_code[code])
        )


@dataclass
class Areas:
    league: Area
    county: Area
    township_a: Area
    village_a: Area
    village_a2: Area
    township_b: Area
    village_b: Area


def areas() -> Areas:
    get = {a.code: a for a in db.session.scalars(select(Area))}
    return Areas(
        get["152200"],
        get["152201"],
        get["152201100"],
        get["152201100201"],
        get["152201100202"],
        get["152201101"],
        get["152201101201"],
    )


def user(username: str) -> User:
    found = db.session.scalar(select(User).where(User.username == username))
    assert found is not None, username
    return found


_serial = itertools.count(100)


def id_number(birth: date = date(1960, 5, 17)) -> str:
    first17 = f"152201{birth:%Y%m%d}{next(_serial) % 1000:03d}"
    return first17 + id_check_digit(first17)


def make_household(
    *,
    village: Area | None = None,
    state: CaseState = CaseState.APPLIED,
    incomes: tuple[str, ...] = ("100.00", "0.00"),
    class_code: str = "A",
    conflict_of_interest: bool = False,
    head_phone: str | None = "13912345678",
) -> Household:
    """A household applied through the service, then placed directly in ``state``."""
    village = village or areas().village_a
    township = village.parent
    assert township is not None
    applicant = db.session.scalar(
        select(User).where(User.role == Role.CASEWORKER, User.area_id == township.id)
    )
    assert applicant is not None
    members = [
        NewMember(
            name="王" + "大二三四五六"[index],
            id_number=id_number(),
            birth_date=date(1960 + index * 20, 5, 17),
            relation=Relation.HEAD if index == 0 else Relation.CHILD,
            phone=head_phone if index == 0 else None,
            monthly_income=Decimal(income),
        )
        for index, income in enumerate(incomes)
    ]
    household = apply_for_allowance(
        actor=applicant,
        village=village,
        address="红旗村3组12号",
        home_lat=village.lat + 0.001,
        home_lon=village.lon + 0.001,
        class_code=class_code,
        members=members,
        conflict_of_interest=conflict_of_interest,
    )
    if state is not CaseState.APPLIED:
        household.state = state
        household.state_changed_at = utcnow()
    db.session.flush()
    return household
