"""The death-register page end to end (upload, report, apply) and its role matrix."""

from __future__ import annotations

import io
import re

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from server.audit.models import AuditEntry
from server.auth.models import Role
from server.cases.models import CaseState, Household, Member
from server.crypto import mask_id_number
from server.deaths.models import DeathImport
from server.extensions import db
from tests import factories
from tests.conftest import login
from tests.deaths.helpers import active_case, table_counts
from tests.deaths.registers import csv_bytes, xlsx_bytes

USERS = {
    Role.ADMIN: "admin",
    Role.SUPERVISOR: "supervisor",
    Role.COUNTY_APPROVER: "approver",
    Role.CASEWORKER: "caseworker_a",
    Role.TOWNSHIP_REVIEWER: "reviewer_a",
}
TOKEN = re.compile(r'name="token" value="([^"]+)"')


def _upload(client: FlaskClient, data: bytes, name: str = "register.csv") -> tuple[int, str]:
    response = client.post(
        "/deaths/check",
        data={"file": (io.BytesIO(data), name), "profile": "default"},
        content_type="multipart/form-data",
    )
    return response.status_code, response.get_data(as_text=True)


def _member(member_id: int) -> Member:
    found = db.session.get(Member, member_id)
    assert found is not None
    return found


def _state(household_id: int) -> CaseState:
    found = db.session.get(Household, household_id)
    assert found is not None
    return found.state


def _count(page: str, name: str) -> int:
    found = re.search(rf'data-count="{name}">(\d+)<', page)
    assert found is not None, name
    return int(found.group(1))


def test_upload_report_then_apply(app: Flask, client: FlaskClient) -> None:
    family, single = active_case(), active_case(incomes=("0.00",))
    data = xlsx_bytes([family.line(), single.line(), ["440524188001010014", "赵六", "2026-01-01"]])
    head_id, id_number, name = family.head.id, family.head.id_number, family.head.name
    code, single_id = family.household.case_code, single.household.id
    single_code = single.household.case_code
    db.session.commit()
    login(client, "approver")
    assert "身份证号" in client.get("/deaths").get_data(as_text=True)

    before = {k: v for k, v in table_counts().items() if k != "audit_log"}
    status, page = _upload(client, data, "register.xlsx")
    assert status == 200, page
    assert (_count(page, "matched"), _count(page, "not_found")) == (2, 1)
    # Masked: neither the full ID number nor the full name; the case code links the case.
    assert id_number not in page and name not in page
    assert mask_id_number(id_number) in page and name[0] + "*" in page
    assert code in page
    # The check changed nothing but its own audit row (hash and counts only).
    db.session.expire_all()
    assert {k: v for k, v in table_counts().items() if k != "audit_log"} == before
    checked = db.session.scalars(
        select(AuditEntry).where(AuditEntry.action == "deaths.checked")
    ).one()
    assert id_number not in repr(checked.details) and checked.details["rows_matched"] == 2

    token = TOKEN.search(page)
    assert token is not None
    assert 'action="/deaths/apply"' in page  # the token goes in the form body, no URL
    applied = client.post("/deaths/apply", data={"token": token.group(1), "confirmed": "yes"})
    text = applied.get_data(as_text=True)
    assert applied.status_code == 200, text
    db.session.expire_all()
    assert not _member(head_id).alive and _state(single_id) is CaseState.SUSPENDED
    assert db.session.scalar(select(DeathImport.applied)) == 2
    assert "2026-05" in text  # the overpayments listed in the report
    case_page = client.get(f"/cases/{single_code}").get_data(as_text=True)
    assert "2026-05" in case_page

    again = client.post("/deaths/apply", data={"token": token.group(1), "confirmed": "yes"})
    assert _count(again.get_data(as_text=True), "already_applied") == 2
    assert len(db.session.scalars(select(DeathImport)).all()) == 1


def test_a_token_is_the_users_own_and_expires(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    family = active_case()
    data, head_id = csv_bytes([family.line()]), family.head.id
    db.session.commit()
    login(client, "approver")
    _, page = _upload(client, data)
    token = TOKEN.search(page)
    assert token is not None
    forged = client.post("/deaths/apply", data={"token": token.group(1) + "x"})
    assert forged.status_code == 422
    other = client.application.test_client()
    login(other, "other_approver")
    assert other.post("/deaths/apply", data={"token": token.group(1)}).status_code == 422
    from server.web import deaths as view

    monkeypatch.setattr(view, "TOKEN_SECONDS", -1)
    expired = client.post("/deaths/apply", data={"token": token.group(1)})
    assert expired.status_code == 422 and "30" in expired.get_data(as_text=True)
    assert _member(head_id).alive


def test_bad_files_are_refused_with_a_clear_error(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    login(client, "approver")
    status, page = _upload(client, csv_bytes([["1"]], header=("编号",)))
    assert status == 422 and "身份证号" in page
    status, page = _upload(client, b"\xff\xfe\x00\xd8")
    assert status == 422 and "GB18030" in page
    from server.web import deaths as view

    monkeypatch.setattr(view, "MAX_FILE_BYTES", 10)
    status, page = _upload(client, csv_bytes([["x", "y", "z"]]))
    assert status == 422 and "MB" in page


@pytest.mark.parametrize("role", list(USERS), ids=[r.value for r in USERS])
def test_only_the_county_approver_uses_the_page(
    app: Flask, client: FlaskClient, role: Role
) -> None:
    family = active_case()
    data, head_id = csv_bytes([family.line()]), family.head.id
    db.session.commit()
    login(client, USERS[role])
    allowed = role is Role.COUNTY_APPROVER
    assert client.get("/deaths").status_code == (200 if allowed else 403)
    status, _ = _upload(client, data)
    assert status == (200 if allowed else 403)
    assert client.post("/deaths/apply", data={"token": "x"}).status_code == (
        422 if allowed else 403
    )
    assert _member(head_id).alive


def test_rows_of_another_county_are_counted_without_details(
    app: Flask, client: FlaskClient
) -> None:
    family = active_case()
    data, code = csv_bytes([family.line()]), family.household.case_code
    masked = mask_id_number(family.head.id_number)
    db.session.commit()
    login(client, "other_approver")
    status, page = _upload(client, data)
    assert status == 200
    assert _count(page, "outside_area") == 1 and _count(page, "matched") == 0
    assert code not in page and masked not in page
    assert 'name="token"' not in page  # nothing to apply
    user = factories.user("other_approver")
    assert user.area.code == "152202"


def test_the_page_needs_a_login(client: FlaskClient) -> None:
    response = client.get("/deaths")
    assert response.status_code in (302, 401)
