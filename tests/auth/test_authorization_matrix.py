"""The authorization matrix: every role x {own area, other area, missing} x every endpoint
and page that takes an id (in its path or its body).

The rule (docs/domain-model.md, "Areas and roles"): outside the caller's area is "does
not exist". An object of another area gets exactly the answer of one that was never
there: the same status, the same body (JSON code, message and details, or the same HTML
page), the same headers and the same session afterwards, and nothing written. Inside
the area the role decides what happens.

The table ``ENDPOINTS`` is the matrix. Each endpoint lists request variants, each a
function of the target place (the objects of one village: its case, members, visit,
months, assisted session) and of the caller's own place; "missing" is the same function
applied to ``MISSING``, a place whose ids and codes do not exist. Adding an endpoint is
adding a row; ``test_every_route_with_a_parameter_is_in_the_matrix`` fails for a route
with a URL parameter that has no row (or no reasoned exemption).
"""

from __future__ import annotations

import io
import random
import re
import secrets
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any, Literal

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from werkzeug.datastructures import FileStorage
from werkzeug.test import encode_multipart

from server import clock
from server.areas.models import Area, AreaLevel
from server.auth.models import Role, User
from server.cases import changes as case_changes
from server.cases.codes import new_case_code
from server.cases.models import CaseChange, CaseState, ChangeStatus, Household
from server.cases.objection_models import Objection, ObjectionStatus
from server.crypto import id_check_digit
from server.devices.models import DeviceToken
from server.devices.service import DEVICE_ROLES, PREFIX_LENGTH, TOKEN_PREFIX, hash_token
from server.extensions import db
from server.proof_of_life import service as pol
from server.proof_of_life.models import MonthStatus, ProofOfLifeAttempt, ProofOfLifeMonth
from server.storage import blob_store
from server.visits.models import (
    BackCheck,
    BackCheckDraw,
    PhotoKind,
    ReviewStatus,
    Survey,
    SurveyFlag,
    SurveyPhoto,
    SurveyStatus,
)
from tests import factories
from tests.conftest import login
from tests.visits.test_api_surveys import jpeg, new_application, survey_json
from tests.visits.test_openrosa import OPENROSA, instance_xml

# One user of every role; the matrix fails when a role is added without one.
CALLERS: dict[Role, str] = {
    Role.CASEWORKER: "caseworker_a",
    Role.TOWNSHIP_REVIEWER: "reviewer_a",
    Role.COUNTY_APPROVER: "approver",
    Role.SUPERVISOR: "supervisor",
    Role.ADMIN: "admin",
}

# Villages outside some callers' areas: the neighbouring township (same county), a
# township of the other county, and one of another league (outside everybody's).
FOREIGN_AREAS = (
    # code, name, level, parent code, lat, lon
    ("152202100", "明水河镇", AreaLevel.TOWNSHIP, "152202", 47.10, 119.90),
    ("152202100201", "明水河村", AreaLevel.VILLAGE, "152202100", 47.11, 119.91),
    ("152500", "锡林郭勒盟", AreaLevel.LEAGUE, None, 43.93, 116.05),
    ("152501", "二连浩特市", AreaLevel.COUNTY, "152500", 43.65, 111.98),
    ("152501100", "格日勒敖都苏木", AreaLevel.TOWNSHIP, "152501", 43.60, 111.90),
    ("152501100201", "巴彦宝力格嘎查", AreaLevel.VILLAGE, "152501100", 43.61, 111.91),
)
FOREIGN_VILLAGES = ("152201101201", "152202100201", "152501100201")
OWN_VILLAGE = "152201100201"

MISSING_ID = 1_999_999_000  # inside every id column's range, never used by a test
GPS = {"lat": 46.111, "lon": 122.011, "accuracy_m": 5.0}


# ----------------------------------------------------------------------------- places


@dataclass(frozen=True)
class Place:
    """The objects of one village that the endpoints take ids of."""

    village_code: str
    case_code: str
    household_id: int
    head_id: int  # designated, this month pending, an assisted session open on it
    not_designated_id: int
    deceased_id: int  # designated, but recorded as deceased
    passed_id: int  # designated, this month already passed
    other_household_id: int
    other_head_id: int  # designated head of another household of the village
    out_of_care_household_id: int  # terminated case, designated head
    out_of_care_head_id: int
    month_id: int  # the head's month (pending)
    other_month_id: int  # the other household's month
    flag_id: int
    photo_id: int  # received (with a thumbnail)
    unreceived_photo_id: int  # announced by the manifest, never received
    client_uuid: str  # the visit
    session_id: str  # the assisted session the village's tablet opened
    survey_id: int  # the visit
    back_check_id: int  # the visit sampled for a back-check
    caseworker_id: int  # the township's caseworker, who made the visit
    change_id: int  # a pending income change the township's caseworker proposed
    objection_id: int  # an open objection to the case (issue 18)
    village_id: int = MISSING_ID + 20  # the village itself (the office's forms take it)
    head_id_number: str = ""  # the head's ID number (case search)


def _missing_case_code() -> str:
    code = new_case_code(random.Random(20261231))
    assert db.session.scalar(select(Household.id).where(Household.case_code == code)) is None
    return code


def missing_place() -> Place:
    """Well-formed ids and codes that exist nowhere."""
    return Place(
        village_code="152201100299",
        case_code=_missing_case_code(),
        household_id=MISSING_ID + 1,
        head_id=MISSING_ID + 2,
        not_designated_id=MISSING_ID + 3,
        deceased_id=MISSING_ID + 4,
        passed_id=MISSING_ID + 5,
        other_household_id=MISSING_ID + 6,
        other_head_id=MISSING_ID + 7,
        out_of_care_household_id=MISSING_ID + 8,
        out_of_care_head_id=MISSING_ID + 9,
        month_id=MISSING_ID + 10,
        other_month_id=MISSING_ID + 11,
        flag_id=MISSING_ID + 12,
        photo_id=MISSING_ID + 13,
        unreceived_photo_id=MISSING_ID + 14,
        client_uuid="6f1c3a52-0d4e-4f7a-9b8e-3c2d1e0f9a8b",
        session_id="Zm9yZ290dGVuLXNlc3Npb24",
        survey_id=MISSING_ID + 15,
        back_check_id=MISSING_ID + 16,
        caseworker_id=MISSING_ID + 17,
        change_id=MISSING_ID + 18,
        objection_id=MISSING_ID + 19,
    )


def _add_foreign_areas() -> None:
    by_code = {a.code: a for a in db.session.scalars(select(Area))}
    for code, name, level, parent_code, lat, lon in FOREIGN_AREAS:
        area = factories.add_area(by_code, code, name, level, parent_code, lat, lon)
        if level is AreaLevel.TOWNSHIP:
            db.session.add(
                User(
                    username=f"caseworker_{code}",
                    password_hash="!",  # never logs in: its tablet token is made below
                    role=Role.CASEWORKER,
                    area=area,
                )
            )
    db.session.flush()


def _tablet(user: User) -> tuple[str, DeviceToken]:
    """A device token for ``user`` made directly, whatever the role (a caseworker
    promoted since keeps one until it expires: the API must refuse it)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    record = DeviceToken(
        user=user,
        device_id=f"matrix-{user.username}",
        device_name="matrix",
        token_hash=hash_token(token),
        token_prefix=token[:PREFIX_LENGTH],
        expires_at=clock.utcnow() + timedelta(days=1),
    )
    db.session.add(record)
    db.session.flush()
    return token, record


def _stored_jpeg(seed: int) -> tuple[str, int]:
    data = jpeg(seed, size=(120, 90))
    store = blob_store()
    with store.new_temp() as temp:
        temp.write(data)
        digest = store.store(temp)
    return digest, len(data)


def build_place(village: Area, tablet: DeviceToken) -> Place:
    now = clock.utcnow()
    month = pol.this_month(now)
    household = factories.make_household(
        village=village, state=CaseState.APPROVED, incomes=("100.00", "0.00", "0.00", "0.00")
    )
    head, not_designated, deceased, passed = household.members
    for member in (head, deceased, passed):
        member.proof_of_life_required = True
    other = factories.make_household(village=village, state=CaseState.APPROVED)
    other.members[0].proof_of_life_required = True
    out_of_care = factories.make_household(village=village, state=CaseState.TERMINATED)
    out_of_care.members[0].proof_of_life_required = True
    db.session.flush()

    record = pol.month_record(head, month)
    pol.month_record(passed, month).status = MonthStatus.PASSED
    other_record = pol.month_record(other.members[0], month)
    deceased.alive = False
    attempt = pol.start_session(
        record,
        now=now,
        assist=pol.AssistContext(
            caseworker=tablet.user,
            device=tablet,
            lat=household.home_lat,
            lon=household.home_lon,
            accuracy_m=5.0,
        ),
    )

    received, size = _stored_jpeg(1)
    survey = Survey(
        client_uuid=str(uuid.uuid4()),
        content_hash="0" * 64,
        household_id=household.id,
        caseworker_id=tablet.user_id,
        device_token_id=tablet.id,
        kind="periodic_review",
        status=SurveyStatus.AWAITING_PHOTOS,
        started_at=now - timedelta(hours=1),
        finished_at=now - timedelta(minutes=30),
        gps_lat=household.home_lat + 0.02,
        gps_lon=household.home_lon,
        payload="{}",
    )
    survey.photos = [
        SurveyPhoto(
            photo_id="house",
            kind=PhotoKind.HOUSING,
            sha256=received,
            bytes=size,
            received_at=now,
            content_type="image/jpeg",
            thumbnail_sha256=received,
        ),
        SurveyPhoto(
            photo_id="later", kind=PhotoKind.HOUSING, sha256="a" * 64, bytes=1000, received_at=None
        ),
    ]
    survey.flags = [
        SurveyFlag(code="gps_far_from_home", severity="warning", detail="2.2 km from home")
    ]
    db.session.add(survey)
    draw = BackCheckDraw(area_id=village.id, month=month, seed="0" * 64, population=1)
    draw.checks.append(BackCheck(survey=survey, weight=1.0))
    db.session.add(draw)
    db.session.flush()
    change = case_changes.propose_incomes(
        tablet.user, household, [case_changes.IncomeLine(head.id, Decimal("150.00"))], "务工收入"
    )
    objection = Objection(
        household=household,
        reason="该户有车",
        receipt_hash=secrets.token_hex(32),
        form_nonce=secrets.token_hex(16),
        deadline=now.date() + timedelta(days=7),
    )
    db.session.add(objection)
    db.session.flush()
    return Place(
        village_code=village.code,
        village_id=village.id,
        head_id_number=head.id_number,
        case_code=household.case_code,
        household_id=household.id,
        head_id=head.id,
        not_designated_id=not_designated.id,
        deceased_id=deceased.id,
        passed_id=passed.id,
        other_household_id=other.id,
        other_head_id=other.members[0].id,
        out_of_care_household_id=out_of_care.id,
        out_of_care_head_id=out_of_care.members[0].id,
        month_id=record.id,
        other_month_id=other_record.id,
        flag_id=survey.flags[0].id,
        photo_id=survey.photos[0].id,
        unreceived_photo_id=survey.photos[1].id,
        client_uuid=survey.client_uuid,
        session_id=attempt.session_id,
        survey_id=survey.id,
        back_check_id=draw.checks[0].id,
        caseworker_id=tablet.user_id,
        change_id=change.id,
        objection_id=objection.id,
    )


@dataclass
class World:
    role: Role
    caller: User
    token: str  # the caller's tablet token (refused unless the caller is a caseworker)
    own: Place
    foreign: dict[str, Place]  # by village code, only villages outside the caller's area
    missing: Place


def build_world(role: Role) -> World:
    _add_foreign_areas()
    areas = {a.code: a for a in db.session.scalars(select(Area))}
    caller = factories.user(CALLERS[role])
    assert caller.role is role
    tablets: dict[str, tuple[str, DeviceToken]] = {}

    def township_tablet(village: Area) -> DeviceToken:
        township = village.parent
        assert township is not None
        if township.code not in tablets:
            if caller.role is Role.CASEWORKER and caller.area_id == township.id:
                tablets[township.code] = _tablet(caller)
            else:
                worker = db.session.scalar(
                    select(User).where(User.role == Role.CASEWORKER, User.area_id == township.id)
                )
                assert worker is not None
                tablets[township.code] = _tablet(worker)
        return tablets[township.code][1]

    own_village = areas[OWN_VILLAGE]
    assert caller.area.contains(own_village)
    own = build_place(own_village, township_tablet(own_village))
    foreign = {
        code: build_place(areas[code], township_tablet(areas[code]))
        for code in FOREIGN_VILLAGES
        if not caller.area.contains(areas[code])
    }
    assert foreign, "every caller needs at least one village outside its area"
    own_township = own_village.parent
    assert own_township is not None
    token = tablets[own_township.code][0] if role is Role.CASEWORKER else _tablet(caller)[0]
    world = World(role, caller, token, own, foreign, missing_place())
    db.session.commit()
    return world


# ----------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class Call:
    method: str
    url: str
    json: Any = None
    data: Any = None
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


Answer = tuple[int, str | None]  # status, and the JSON error code when it matters
Expect = Callable[[Role], Answer]


def everyone(status: int, code: str | None = None) -> Expect:
    return lambda role: (status, code)


def only(roles: set[Role], status: int, otherwise: int) -> Expect:
    return lambda role: (status, None) if role in roles else (otherwise, None)


@dataclass(frozen=True)
class Variant:
    name: str
    # (target place, caller's own place) -> the request; called with the target being
    # each foreign place, the missing one, and the caller's own place.
    call: Callable[[Place, Place], Call]
    # The answer on the caller's own place, by role (on the tablet routes a role without
    # tablets gets 401 whatever it says); None: not asserted here (another test owns
    # that behaviour), only other area == missing is.
    own: Expect | None
    # Checked after the own-place request: what the role's request changed.
    effect: Callable[[Place, Role], None] | None = None


# page: a logged-in browser; tablet: the JSON API with a device token; openrosa: ODK
# Collect's XML protocol with a device token.
Audience = Literal["page", "tablet", "openrosa"]


@dataclass(frozen=True)
class Endpoint:
    name: str  # the Flask endpoint (stable when a URL converter changes)
    audience: Audience
    variants: tuple[Variant, ...]


# ---- effects on the caller's own place


def _flag_cleared_by_reviewers(place: Place, role: Role) -> None:
    flag = db.session.get(SurveyFlag, place.flag_id)
    assert flag is not None
    assert (flag.cleared_at is not None) == (role in {Role.TOWNSHIP_REVIEWER, Role.COUNTY_APPROVER})


def _month_exempted_by_reviewers(place: Place, role: Role) -> None:
    record = db.session.get(ProofOfLifeMonth, place.month_id)
    assert record is not None
    # docs/domain-model.md: the administrator makes no case decisions (issue 14).
    reviewers = {Role.TOWNSHIP_REVIEWER, Role.COUNTY_APPROVER}
    assert (record.status is MonthStatus.EXEMPT) == (role in reviewers)


def _visit_rejected_by_reviewers(place: Place, role: Role) -> None:
    survey = db.session.get(Survey, place.survey_id)
    assert survey is not None
    reviewers = {Role.TOWNSHIP_REVIEWER, Role.COUNTY_APPROVER}
    assert (survey.review_status is ReviewStatus.REJECTED) == (role in reviewers)


def _back_check_recorded_by_supervisors(place: Place, role: Role) -> None:
    check = db.session.get(BackCheck, place.back_check_id)
    assert check is not None
    recorders = {Role.COUNTY_APPROVER, Role.SUPERVISOR}
    assert (check.outcome == "confirmed") == (role in recorders)


def _change_decided_by(roles: set[Role], status: ChangeStatus) -> Callable[[Place, Role], None]:
    def effect(place: Place, role: Role) -> None:
        change = db.session.get(CaseChange, place.change_id)
        assert change is not None
        assert change.status is (status if role in roles else ChangeStatus.PENDING), role

    return effect


def _objection_decided_by_deciders(place: Place, role: Role) -> None:
    objection = db.session.get(Objection, place.objection_id)
    assert objection is not None
    expected = ObjectionStatus.UNFOUNDED if role in DECIDERS else ObjectionStatus.OPEN
    assert objection.status is expected, role


def _change(case_code: str, change_id: int, decision: str) -> Call:
    return Call(
        "POST", f"/cases/{case_code}/changes/{change_id}/{decision}", data={"note": "已核实"}
    )


def _review(case_code: str, survey_id: int) -> Call:
    return Call(
        "POST",
        f"/cases/{case_code}/visits/{survey_id}/review",
        data={"status": "rejected", "reason": "照片与该户不符"},
    )


def _suspended_by_the_county(place: Place, role: Role) -> None:
    household = db.session.get(Household, place.household_id)
    assert household is not None
    assert (household.state is CaseState.SUSPENDED) == (role is Role.COUNTY_APPROVER)


# ---- the tablet's requests


def _assist(household_id: int, member_id: int) -> Call:
    return Call(
        "POST",
        "/api/v1/proof-of-life/sessions",
        json={"household_id": household_id, "member_id": member_id, "gps": GPS},
    )


def _enroll(member_id: int) -> Call:
    return Call(
        "POST",
        f"/api/v1/members/{member_id}/face-templates",
        data={"photo": (io.BytesIO(b"not a photo"), "face.jpg", "image/jpeg")},
        content_type="multipart/form-data",
    )


def _frames(session_id: str) -> Call:
    return Call(
        "POST",
        f"/api/v1/proof-of-life/sessions/{session_id}/frames",
        data={"nonce": "0" * 32},
        content_type="multipart/form-data",
    )


def _batch(session_id: str) -> Call:
    return Call(
        "POST",
        f"/api/v1/proof-of-life/sessions/{session_id}/steps/0/frames",
        data={"nonce": "0" * 32},
        content_type="multipart/form-data",
    )


def _abandon(session_id: str) -> Call:
    return Call(
        "POST",
        f"/api/v1/proof-of-life/sessions/{session_id}/abandon",
        json={"nonce": "0" * 32, "step": 0, "why": "timeout"},
    )


def _visit(household_id: int) -> Call:
    return Call("POST", "/api/v1/surveys", json=survey_json(household_id, {}))


def _application(village_code: str) -> Call:
    return Call("POST", "/api/v1/surveys", json=new_application(village_code=village_code))


def _odk(household_id: int) -> Call:
    xml = instance_xml(household_id, uuid.uuid4())
    part = FileStorage(io.BytesIO(xml), "instance.xml", content_type="text/xml")
    boundary, body = encode_multipart({"xml_submission_file": part})
    return Call(
        "POST",
        "/openrosa/submission",
        data=body,
        content_type=f"multipart/form-data; boundary={boundary}",
        headers=OPENROSA,
    )


def _clear(case_code: str, flag_id: int) -> Call:
    return Call("POST", f"/cases/{case_code}/flags/{flag_id}/clear", data={"reason": "已电话核实"})


def _decide(case_code: str, month_id: int, status: str = "exempt") -> Call:
    return Call(
        "POST",
        f"/cases/{case_code}/proof-of-life/{month_id}",
        data={"status": status, "reason": "住院治疗"},
    )


def _walk_in(village_id: int) -> Call:
    """A walk-in application at the office (the same ID numbers every time: a foreign
    village's answer must equal a missing one's, typed values shown back included)."""
    first17 = "15220119770707999"
    return Call(
        "POST",
        "/office/applications/new",
        data={
            "action": "submit",
            "rows": "1",
            "village": str(village_id),
            "address": "红旗村1组1号",
            "class": "A",
            "m-0-name": "周玉兰",
            "m-0-id_number": first17 + id_check_digit(first17),
            "m-0-relation": "head",
        },
    )


def _transition(case_code: str, action: str) -> Call:
    return Call(
        "POST", f"/cases/{case_code}/transitions", data={"action": action, "reason": "外出务工"}
    )


def _tablet_of(user_id: int) -> int:
    """The id of a tablet login of ``user_id`` (an id that exists nowhere if none)."""
    found = db.session.scalar(select(DeviceToken.id).where(DeviceToken.user_id == user_id))
    return found if found is not None else MISSING_ID + 18


ALL_BUT_ADMIN = set(Role) - {Role.ADMIN}
# docs/domain-model.md: full ID numbers and phones for the roles whose work needs them.
REVEALERS = {Role.CASEWORKER, Role.TOWNSHIP_REVIEWER, Role.COUNTY_APPROVER}
CONSOLE_READERS = {Role.TOWNSHIP_REVIEWER, Role.COUNTY_APPROVER, Role.SUPERVISOR}
REGISTERERS = {Role.CASEWORKER, Role.TOWNSHIP_REVIEWER}
# Changes to a case (server/cases/changes.py): proposed by township staff, checked by a
# township reviewer or the county approver (never the maker).
TOWNSHIP_STAFF = {Role.CASEWORKER, Role.TOWNSHIP_REVIEWER}
CHECKERS = {Role.TOWNSHIP_REVIEWER, Role.COUNTY_APPROVER}
DECIDERS = {Role.TOWNSHIP_REVIEWER, Role.COUNTY_APPROVER}  # objections (issue 18)

ENDPOINTS: tuple[Endpoint, ...] = (
    # ------------------------------------------------------------------ staff pages
    Endpoint(
        "objections.objection_page",
        "page",
        (
            Variant(
                "an objection to its case",
                lambda t, o: Call("GET", f"/cases/{t.case_code}/objections/{t.objection_id}"),
                only(DECIDERS, 200, 403),
            ),
            Variant(
                "through the caller's case",
                lambda t, o: Call("GET", f"/cases/{o.case_code}/objections/{t.objection_id}"),
                only(DECIDERS, 200, 403),
            ),
        ),
    ),
    Endpoint(
        "objections.decide_objection",
        "page",
        (
            Variant(
                "unfounded, with a note",
                lambda t, o: Call(
                    "POST",
                    f"/cases/{t.case_code}/objections/{t.objection_id}",
                    data={"outcome": "unfounded", "note": "经核实不属实"},
                ),
                only(DECIDERS, 303, 403),
                _objection_decided_by_deciders,
            ),
        ),
    ),
    Endpoint(
        "office.walk_in_submit",
        "page",
        (
            Variant(
                "an application in its village",
                lambda t, o: _walk_in(t.village_id),
                only(REGISTERERS, 303, 403),
            ),
        ),
    ),
    Endpoint(
        "cases.case_detail",
        "page",
        (
            Variant(
                "its case",
                # The administrator reads the page without personal data (issue 15).
                lambda t, o: Call("GET", f"/cases/{t.case_code}"),
                everyone(200),
            ),
            Variant(
                "case code typed in lower case",
                lambda t, o: Call("GET", f"/cases/{t.case_code.lower()}"),
                everyone(200),
            ),
        ),
    ),
    Endpoint(
        "cases.reveal_member",
        "page",
        (
            Variant(
                "a member of its case",
                lambda t, o: Call("POST", f"/cases/{t.case_code}/members/{t.head_id}/reveal"),
                only(REVEALERS, 200, 403),
            ),
            Variant(
                "another household's member through its case",
                lambda t, o: Call("POST", f"/cases/{t.case_code}/members/{t.other_head_id}/reveal"),
                everyone(404),
            ),
            Variant(
                "through the caller's case",
                lambda t, o: Call("POST", f"/cases/{o.case_code}/members/{t.head_id}/reveal"),
                only(REVEALERS, 200, 403),
            ),
        ),
    ),
    Endpoint(
        "cases.propose_change",
        "page",
        (
            Variant(
                "a phone of its case",
                lambda t, o: Call(
                    "POST",
                    f"/cases/{t.case_code}/changes/correct_phone",
                    data={"member": str(t.head_id), "phone": "13700001111", "reason": "换号"},
                ),
                only(TOWNSHIP_STAFF, 303, 403),
            ),
        ),
    ),
    Endpoint(
        "cases.reveal_change",
        "page",
        (
            Variant(
                "a change of its case",
                lambda t, o: Call("POST", f"/cases/{t.case_code}/changes/{t.change_id}/reveal"),
                only(REVEALERS, 200, 403),
            ),
            Variant(
                "through the caller's case",
                lambda t, o: Call("POST", f"/cases/{o.case_code}/changes/{t.change_id}/reveal"),
                only(REVEALERS, 200, 403),
            ),
        ),
    ),
    Endpoint(
        "cases.approve_change",
        "page",
        (
            Variant(
                "a change of its case",
                lambda t, o: _change(t.case_code, t.change_id, "approve"),
                everyone(303),
                _change_decided_by(CHECKERS, ChangeStatus.APPROVED),
            ),
            Variant(
                "through the caller's case",
                lambda t, o: _change(o.case_code, t.change_id, "approve"),
                everyone(303),
            ),
        ),
    ),
    Endpoint(
        "cases.reject_change",
        "page",
        (
            Variant(
                "a change of its case",
                lambda t, o: _change(t.case_code, t.change_id, "reject"),
                everyone(303),
                _change_decided_by(CHECKERS, ChangeStatus.REJECTED),
            ),
            Variant(
                "through the caller's case",
                lambda t, o: _change(o.case_code, t.change_id, "reject"),
                everyone(303),
            ),
        ),
    ),
    Endpoint(
        "cases.withdraw_change",
        "page",
        (
            Variant(
                "a change of its case",
                lambda t, o: _change(t.case_code, t.change_id, "withdraw"),
                everyone(303),
                # The township's caseworker proposed it: only they withdraw it.
                _change_decided_by({Role.CASEWORKER}, ChangeStatus.WITHDRAWN),
            ),
        ),
    ),
    Endpoint(
        "cases.resend_link",
        "page",
        (
            Variant(
                "a member of its case",
                lambda t, o: Call("POST", f"/cases/{t.case_code}/members/{t.head_id}/resend-link"),
                # Refusals (a role, a closed window) are said on the case page.
                everyone(303),
            ),
            Variant(
                "another household's member through its case",
                lambda t, o: Call(
                    "POST", f"/cases/{t.case_code}/members/{t.other_head_id}/resend-link"
                ),
                everyone(404),
            ),
        ),
    ),
    Endpoint(
        "cases.clear_flag",
        "page",
        (
            Variant(
                "a flag of its case",
                lambda t, o: _clear(t.case_code, t.flag_id),
                everyone(303),
                _flag_cleared_by_reviewers,
            ),
            Variant(
                "through the caller's case",
                lambda t, o: _clear(o.case_code, t.flag_id),
                everyone(303),
            ),
            Variant(
                "the caller's flag through its case",
                lambda t, o: _clear(t.case_code, o.flag_id),
                everyone(303),
            ),
        ),
    ),
    Endpoint(
        "cases.review_visit",
        "page",
        (
            Variant(
                "a visit of its case",
                lambda t, o: _review(t.case_code, t.survey_id),
                everyone(303),
                _visit_rejected_by_reviewers,
            ),
            Variant(
                "through the caller's case",
                lambda t, o: _review(o.case_code, t.survey_id),
                everyone(303),
            ),
            Variant(
                "the caller's visit through its case",
                lambda t, o: _review(t.case_code, o.survey_id),
                everyone(303),
            ),
        ),
    ),
    Endpoint(
        "console_visits.record_back_check",
        "page",
        (
            Variant(
                "a sampled visit",
                lambda t, o: Call(
                    "POST", f"/console/backchecks/{t.back_check_id}", data={"outcome": "confirmed"}
                ),
                everyone(303),
                _back_check_recorded_by_supervisors,
            ),
        ),
    ),
    Endpoint(
        "cases.decide_proof_of_life",
        "page",
        (
            Variant(
                "a month of its case",
                lambda t, o: _decide(t.case_code, t.month_id),
                everyone(303),
                _month_exempted_by_reviewers,
            ),
            Variant(
                "another household's month through its case",
                lambda t, o: _decide(t.case_code, t.other_month_id),
                everyone(404),
            ),
            Variant(
                "through the caller's case",
                lambda t, o: _decide(o.case_code, t.month_id),
                everyone(303),
            ),
            Variant(
                "an unknown status",
                lambda t, o: _decide(t.case_code, t.month_id, status="bogus"),
                everyone(400),
            ),
        ),
    ),
    Endpoint(
        "cases.case_transition",
        "page",
        (
            Variant(
                "suspend",
                lambda t, o: _transition(t.case_code, "suspend"),
                everyone(303),
                _suspended_by_the_county,
            ),
            Variant(
                "an unknown action", lambda t, o: _transition(t.case_code, "vanish"), everyone(303)
            ),
        ),
    ),
    Endpoint(
        "cases.photo",
        "page",
        (
            Variant(
                "a received photo",
                lambda t, o: Call("GET", f"/photos/{t.photo_id}"),
                only(ALL_BUT_ADMIN, 200, 403),
            ),
            Variant(
                "its thumbnail",
                lambda t, o: Call("GET", f"/photos/{t.photo_id}?size=thumb"),
                only(ALL_BUT_ADMIN, 200, 403),
            ),
            Variant(
                "a photo never received",
                lambda t, o: Call("GET", f"/photos/{t.unreceived_photo_id}"),
                everyone(404),
            ),
        ),
    ),
    # ------------------------------------------------------------------ the maps
    Endpoint(
        "console_maps.caseworker_day",
        "page",
        (
            # The caseworker opens their own day; the console's readers anyone's.
            Variant(
                "the day of the village's caseworker",
                lambda t, o: Call("GET", f"/console/maps/caseworker/{t.caseworker_id}/2026-11-10"),
                only(ALL_BUT_ADMIN, 200, 403),
            ),
        ),
    ),
    Endpoint(
        "console_maps.township_month",
        "page",
        (
            Variant(
                "its village's month",
                lambda t, o: Call("GET", f"/console/maps/township/{t.village_code}/2026-11"),
                only(CONSOLE_READERS, 200, 403),
            ),
        ),
    ),
    Endpoint(
        "console_maps.household",
        "page",
        (
            Variant(
                "its case's visits",
                lambda t, o: Call("GET", f"/console/maps/household/{t.case_code}"),
                only(ALL_BUT_ADMIN, 200, 403),
            ),
        ),
    ),
    # ------------------------------------------------------------------ the tablet API
    Endpoint(
        "api.get_survey",
        "tablet",
        (
            # Any visit of the township, whoever uploaded it: its caseworkers share cases.
            Variant(
                "a visit",
                lambda t, o: Call("GET", f"/api/v1/surveys/{t.client_uuid}"),
                everyone(200),
            ),
        ),
    ),
    Endpoint(
        "api.put_survey_photo",
        "tablet",
        (
            Variant(
                "an announced photo, other bytes",
                lambda t, o: Call(
                    "PUT", f"/api/v1/surveys/{t.client_uuid}/photos/later", data=b"x"
                ),
                everyone(422, "sha256_mismatch"),
            ),
            Variant(
                "a photo the visit never announced",
                lambda t, o: Call("PUT", f"/api/v1/surveys/{t.client_uuid}/photos/nope", data=b"x"),
                everyone(422, "photo_not_in_manifest"),
            ),
            Variant(
                "a malformed photo id",
                lambda t, o: Call(
                    "PUT", f"/api/v1/surveys/{t.client_uuid}/photos/p.jpg", data=b"x"
                ),
                everyone(422, "validation_failed"),
            ),
        ),
    ),
    Endpoint(
        "api.enroll_face",
        "tablet",
        (
            Variant("a living member", lambda t, o: _enroll(t.head_id), everyone(415)),
            Variant(
                "a member not designated", lambda t, o: _enroll(t.not_designated_id), everyone(415)
            ),
            Variant("a deceased member", lambda t, o: _enroll(t.deceased_id), everyone(422)),
        ),
    ),
    Endpoint(
        "pol_api.start_session",
        "tablet",
        (
            Variant(
                "a designated member",
                lambda t, o: _assist(t.household_id, t.head_id),
                everyone(201),
            ),
            Variant(
                "a member of another household",
                lambda t, o: _assist(t.household_id, t.other_head_id),
                everyone(404, "not_found"),
            ),
            Variant(
                "a member not designated",
                lambda t, o: _assist(t.household_id, t.not_designated_id),
                everyone(409, "not_designated"),
            ),
            Variant(
                "a deceased member",
                lambda t, o: _assist(t.household_id, t.deceased_id),
                everyone(409, "not_designated"),
            ),
            Variant(
                "a month already passed",
                lambda t, o: _assist(t.household_id, t.passed_id),
                everyone(409, "already_passed"),
            ),
            # Whether a case out of care may be assisted is decided elsewhere (issue 12,
            # section 3); here only that another area's looks like a missing one.
            Variant(
                "a household out of care",
                lambda t, o: _assist(t.out_of_care_household_id, t.out_of_care_head_id),
                None,
            ),
            Variant(
                "the caller's household, its member",
                lambda t, o: _assist(o.household_id, t.head_id),
                everyone(201),
            ),
            Variant(
                "its household, the caller's member",
                lambda t, o: _assist(t.household_id, o.head_id),
                everyone(201),
            ),
        ),
    ),
    Endpoint(
        "pol_api.submit_frames",
        "tablet",
        (
            # The caller's own session: past the look-up, refused for its nonce.
            Variant(
                "an assisted session",
                lambda t, o: _frames(t.session_id),
                everyone(403, "nonce_mismatch"),
            ),
        ),
    ),
    # The same one-shot session: past the look-up, it takes no guided batch.
    Endpoint(
        "pol_api.submit_batch",
        "tablet",
        (
            Variant(
                "an assisted session",
                lambda t, o: _batch(t.session_id),
                everyone(409, "not_guided"),
            ),
        ),
    ),
    Endpoint(
        "pol_api.abandon_session",
        "tablet",
        (
            Variant(
                "an assisted session",
                lambda t, o: _abandon(t.session_id),
                everyone(409, "not_guided"),
            ),
        ),
    ),
    Endpoint(
        "api.create_survey",
        "tablet",
        (
            Variant("a visit to a household", lambda t, o: _visit(t.household_id), everyone(201)),
            Variant(
                "a new application in a village",
                lambda t, o: _application(t.village_code),
                everyone(201),
            ),
        ),
    ),
    Endpoint(
        "openrosa.submission",
        "openrosa",
        (Variant("a visit to a household", lambda t, o: _odk(t.household_id), everyone(201)),),
    ),
    # ------------------------------------------------------------------ admin pages
    Endpoint(
        "admin.user_page",
        "page",
        (
            Variant(
                "the township's caseworker's account",
                lambda t, o: Call("GET", f"/admin/users/{t.caseworker_id}"),
                only({Role.ADMIN}, 200, 403),
            ),
        ),
    ),
    Endpoint(
        "admin.change_role",
        "page",
        (
            Variant(
                "make the caseworker a township reviewer",
                lambda t, o: Call(
                    "POST",
                    f"/admin/users/{t.caseworker_id}/role",
                    data={"role": "township_reviewer", "area": "152201100"},
                ),
                only({Role.ADMIN}, 303, 403),
            ),
        ),
    ),
    Endpoint(
        "admin.set_active",
        "page",
        (
            Variant(
                "deactivate the caseworker",
                lambda t, o: Call(
                    "POST", f"/admin/users/{t.caseworker_id}/active", data={"active": "no"}
                ),
                only({Role.ADMIN}, 303, 403),
            ),
        ),
    ),
    Endpoint(
        "admin.password_link",
        "page",
        (
            Variant(
                "a one-time password link for the caseworker",
                lambda t, o: Call("POST", f"/admin/users/{t.caseworker_id}/password-link"),
                only({Role.ADMIN}, 200, 403),
            ),
        ),
    ),
    Endpoint(
        "admin.revoke_tablet",
        "page",
        (
            Variant(
                "revoke the caseworker's tablet",
                lambda t, o: Call("POST", f"/admin/tablets/{_tablet_of(t.caseworker_id)}/revoke"),
                only({Role.ADMIN}, 303, 403),
            ),
        ),
    ),
)

# Routes with a URL parameter that are not about an area's objects, and why.
NOT_AREA_SCOPED = {
    "public.case_page": "the public notice (公示): published for everyone, no login",
    "public.api_case": "the public notice's JSON: published for everyone, no login",
    "public.figures_page": "the half-yearly figures (公示): aggregates for everyone, no login",
    "public.figures_csv": "the half-yearly figures as CSV: aggregates for everyone, no login",
    "public.figures_xlsx": "the half-yearly figures as xlsx: aggregates for everyone, no login",
    "public.api_figures": "the half-yearly figures as JSON: aggregates for everyone, no login",
    "public.objection_form": "anyone may object to a case in public notice, no login",
    "public.send_objection": "anyone may object to a case in public notice, no login",
    "public.objection_status": "the objector's receipt code is the capability, not an id",
    "public.notice_pdf": "a notice-board notice (公示): published for everyone, no login",
    "public.figures_pdf": "a notice-board notice of figures: published for everyone, no login",
    "pol_page.mobile_page": "the recipient's link: the token is the capability, not an id",
    "auth.set_password": "the one-time password link: the signed token is the capability",
    "openrosa.form_download": "blank form definitions, the same for every caseworker",
    "openrosa.form_manifest": "the form's media: the caller's own visits due, takes no area id",
    "openrosa.form_media": "the form's media: the caller's own visits due, takes no area id",
    "openrosa.elsewhere": "any other address under /openrosa: an OpenRosa 404, takes no id",
    "static": "static files",
}


# ----------------------------------------------------------------------------- sending


def _send(client: FlaskClient, world: World, audience: Audience, call: Call) -> Any:
    headers = dict(call.headers)
    if audience != "page":
        headers["Authorization"] = f"Bearer {world.token}"
    return client.open(
        call.url,
        method=call.method,
        json=call.json,
        data=call.data,
        content_type=call.content_type,
        headers=headers,
    )


VOLATILE_HEADERS = {"date", "set-cookie", "content-length"}
CSRF = re.compile(r'name="csrf_token" value="[^"]*"')
# A Digest challenge carries a fresh server nonce in every answer.
NONCE = re.compile(r'nonce="[^"]*"')


def _answer(client: FlaskClient, response: Any) -> tuple[Any, ...]:
    """What a caller can observe of a response, per-request values normalized (and the
    session it leaves behind, where a flashed message would show)."""
    headers = sorted(
        (k.lower(), NONCE.sub('nonce=""', v))
        for k, v in response.headers.items()
        if k.lower() not in VOLATILE_HEADERS
    )
    if response.is_json:
        body: Any = response.get_json()
    else:
        body = CSRF.sub('name="csrf_token" value=""', response.get_data(as_text=True))
    response.close()
    with client.session_transaction() as session:
        after = {k: v for k, v in session.items() if k != "csrf_token"}
    return response.status_code, headers, body, after


def _row_counts() -> dict[str, int]:
    return {
        table.name: db.session.scalar(select(func.count()).select_from(table)) or 0
        for table in db.metadata.sorted_tables
    }


def _expected_status(endpoint: Endpoint, role: Role, expect: Answer) -> Answer:
    if endpoint.audience != "page" and role not in DEVICE_ROLES:
        # No tablet access at all (the OpenRosa answer is XML: no code to compare).
        return 401, "invalid_token" if endpoint.audience == "tablet" else None
    return expect


@pytest.fixture
def world(app: Flask, request: pytest.FixtureRequest) -> Iterator[World]:
    yield build_world(request.param)


ROLE_IDS = [role.value for role in CALLERS]


@pytest.mark.slow
@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=[e.name for e in ENDPOINTS])
@pytest.mark.parametrize("world", list(CALLERS), ids=ROLE_IDS, indirect=True)
def test_another_area_looks_missing_and_the_own_area_follows_the_role(
    app: Flask, world: World, endpoint: Endpoint
) -> None:
    client = app.test_client()
    if endpoint.audience == "page":
        assert login(client, CALLERS[world.role]).status_code == 302

    def ask(target: Place, variant: Variant) -> Any:
        return _send(client, world, endpoint.audience, variant.call(target, world.own))

    before = _row_counts()
    for variant in endpoint.variants:
        missing = _answer(client, ask(world.missing, variant))
        assert missing[0] in (401, 404), (variant.name, missing)
        for code, place in world.foreign.items():
            other = _answer(client, ask(place, variant))
            assert other == missing, f"{variant.name}: village {code} answers unlike a missing one"
    assert _row_counts() == before, "a request about another area or nothing wrote something"

    for variant in endpoint.variants:
        with ask(world.own, variant) as response:
            if variant.own is not None:
                status, code = _expected_status(endpoint, world.role, variant.own(world.role))
                text = response.get_data()[:300]
                assert response.status_code == status, (variant.name, text)
                if code is not None:
                    assert response.get_json()["error"]["code"] == code, variant.name
        if variant.effect is not None:
            db.session.expire_all()
            variant.effect(world.own, world.role)


def test_every_route_with_a_parameter_is_in_the_matrix(app: Flask) -> None:
    with_parameters = {rule.endpoint for rule in app.url_map.iter_rules() if rule.arguments}
    in_matrix = {e.name for e in ENDPOINTS}
    missing = with_parameters - in_matrix - set(NOT_AREA_SCOPED)
    assert not missing, (
        f"add these routes to ENDPOINTS (or NOT_AREA_SCOPED, with a reason): {missing}"
    )
    known = {rule.endpoint for rule in app.url_map.iter_rules()}
    assert in_matrix | set(NOT_AREA_SCOPED) <= known, "the matrix names routes that are gone"
    assert set(CALLERS) == set(Role), "every role needs a caller in the matrix"


@pytest.mark.slow
@pytest.mark.parametrize("world", list(CALLERS), ids=ROLE_IDS, indirect=True)
def test_lists_show_nothing_of_another_area(app: Flask, world: World) -> None:
    """The pages without an id list only the caller's area: the home page's cases, the
    campaign page's townships, the tablet's visits due."""
    foreign_codes = {place.case_code for place in world.foreign.values()}
    foreign_townships = {
        area.parent.name
        for area in db.session.scalars(select(Area).where(Area.code.in_(world.foreign)))
        if area.parent is not None
    }
    client = app.test_client()
    login(client, CALLERS[world.role])
    home = client.get("/?state=approved").get_data(as_text=True)
    assert world.own.case_code in home
    assert not [code for code in foreign_codes if code in home]
    # Case search (docs/office.md): by state, by another area's village, by its code,
    # by its head's ID number: nothing of another area, as if it did not exist.
    found = client.get("/office/search?state=approved").get_data(as_text=True)
    assert world.own.case_code in found
    for place in world.foreign.values():
        by_number = client.post(
            "/office/search", data={"by": "id_number", "value": place.head_id_number}
        )
        if world.role is Role.ADMIN:  # reads no personal data
            assert by_number.status_code == 403
            by_number = client.get("/office/search")
        for answer in (
            client.get(f"/office/search?village={place.village_id}"),
            client.post("/office/search", data={"by": "case_code", "value": place.case_code}),
            by_number,
        ):
            # The results (the form shows a typed case code back).
            listed = answer.get_data(as_text=True).partition('class="cases results"')[2]
            assert answer.status_code == 200 and not [c for c in foreign_codes if c in listed]
    campaign = client.get("/campaign").get_data(as_text=True)
    assert "义勒力特镇" in campaign  # the caller's own township has a month this month
    assert not [name for name in foreign_townships if name in campaign]
    if world.role in DEVICE_ROLES:
        # Every place's head under review: each township's caseworker has a visit due.
        for place in (world.own, *world.foreign.values()):
            record = db.session.get(ProofOfLifeMonth, place.month_id)
            assert record is not None
            record.status = MonthStatus.REVIEW
        db.session.commit()
        due = client.get("/api/v1/visits/due", headers={"Authorization": f"Bearer {world.token}"})
        households = {item["household_id"] for item in due.get_json()["items"]}
        assert world.own.household_id in households
        assert not households & {place.household_id for place in world.foreign.values()}


def test_the_rule_holds_in_the_services_before_any_role_or_state_check(app: Flask) -> None:
    """Called directly (by the CLI, a task, a future view), the services put the area
    first too: another area's month, member or session is "no such", not "not allowed"
    nor "already passed", even for a role that may not act."""
    from server.errors import OutOfArea
    from server.visits.faces import member_to_enroll

    world = build_world(Role.CASEWORKER)
    place = next(iter(world.foreign.values()))
    reviewer = factories.user("reviewer_a")
    now = clock.utcnow()
    for member_id in (place.head_id, place.passed_id, place.not_designated_id, place.deceased_id):
        with pytest.raises(OutOfArea) as caught:
            pol.assisted_month(
                reviewer, household_id=place.household_id, member_id=member_id, now=now
            )
        assert (caught.value.message, caught.value.details) == (
            "no such member in this household",
            {},
        )
        with pytest.raises(OutOfArea):
            member_to_enroll(reviewer, member_id)
    record = db.session.get(ProofOfLifeMonth, place.month_id)
    assert record is not None
    with pytest.raises(OutOfArea):
        pol.decide_month(
            record, actor=factories.user("caseworker_a"), status=MonthStatus.EXEMPT, reason="x"
        )
    passed = db.session.scalar(
        select(ProofOfLifeMonth).where(ProofOfLifeMonth.member_id == place.passed_id)
    )
    assert passed is not None
    tablet = db.session.scalar(select(DeviceToken).where(DeviceToken.user_id == world.caller.id))
    assert tablet is not None
    with pytest.raises(OutOfArea):
        pol.start_session(
            passed,
            now=now,
            assist=pol.AssistContext(world.caller, tablet, GPS["lat"], GPS["lon"], None),
        )
    # The session exists, but only the tablet that opened it reaches it.
    with pytest.raises(pol.SessionNotFound):
        pol.find_session(place.session_id, tablet)
    with pytest.raises(pol.SessionNotFound):
        pol.find_session(place.session_id, None)
    attempt = db.session.scalar(
        select(ProofOfLifeAttempt).where(ProofOfLifeAttempt.session_id == place.session_id)
    )
    assert attempt is not None and attempt.device_token_id is not None
    opener = db.session.get(DeviceToken, attempt.device_token_id)
    assert pol.find_session(place.session_id, opener) is attempt


def test_a_client_uuid_taken_in_another_area_is_a_conflict_not_a_404(app: Flask) -> None:
    """A visit's uuid is unique over the whole service: reusing one taken in another
    township answers exactly like reusing a colleague's (409), on the JSON API and on
    OpenRosa, never "no such survey" (which would tell where it lies)."""
    world = build_world(Role.CASEWORKER)
    own_survey = db.session.scalar(
        select(Survey).where(Survey.client_uuid == world.own.client_uuid)
    )
    assert own_survey is not None
    colleague = User(
        username="caseworker_a2",
        password_hash="!",
        role=Role.CASEWORKER,
        area_id=world.caller.area_id,
    )
    db.session.add(colleague)
    db.session.flush()
    own_survey.caseworker_id = colleague.id
    db.session.commit()
    client = app.test_client()
    auth = {"Authorization": f"Bearer {world.token}"}

    def reuse(client_uuid: str) -> tuple[Any, ...]:
        body = survey_json(world.own.household_id, {}, client_uuid=client_uuid)
        api = client.post("/api/v1/surveys", json=body, headers=auth)
        error = api.get_json()["error"]
        xml = instance_xml(world.own.household_id, uuid.UUID(client_uuid))
        part = FileStorage(io.BytesIO(xml), "instance.xml", content_type="text/xml")
        boundary, multipart = encode_multipart({"xml_submission_file": part})
        odk = client.post(
            "/openrosa/submission",
            data=multipart,
            content_type=f"multipart/form-data; boundary={boundary}",
            headers={**auth, **OPENROSA},
        )
        return api.status_code, error["code"], error["message"], odk.status_code, odk.data

    colleagues = reuse(world.own.client_uuid)
    assert colleagues[:2] == (409, "client_uuid_conflict") and colleagues[3] == 409
    for place in world.foreign.values():
        assert reuse(place.client_uuid) == colleagues
