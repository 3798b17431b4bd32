"""Exports of console tables (server/web/exports.py): the CSV parsed back, the Excel file
opened with openpyxl, their audit rows, and personal columns only for the roles that
read personal data."""

from __future__ import annotations

import csv
import io
from typing import Any

import openpyxl
import pytest
from flask import Flask
from flask.testing import FlaskClient
from flask_login import login_user
from sqlalchemy import select

from server.audit.models import AuditEntry
from server.auth.models import Role
from server.auth.permissions import Capability, roles_with
from server.console.tables import Column, Table
from server.extensions import db
from server.web.exports import respond
from tests import factories
from tests.conftest import login
from tests.console.planting import table_rows
from tests.console.test_exceptions import plant

HEADER = ["类型", "案件", "乡镇", "村（嘎查）", "办理期限", "已持续（天）", "说明"]


def parse_csv(data: bytes) -> list[list[str]]:
    text = data.decode("utf-8")
    assert text.startswith("\ufeff")  # the BOM: Excel then reads UTF-8
    return list(csv.reader(io.StringIO(text[1:])))


def last_export() -> AuditEntry:
    entry = db.session.scalar(
        select(AuditEntry)
        .where(AuditEntry.action == "export.downloaded")
        .order_by(AuditEntry.id.desc())
    )
    assert entry is not None
    return entry


def test_the_csv_is_the_table_with_a_header_of_labels_and_is_audited(
    app: Flask, client: FlaskClient, clock: object
) -> None:
    planted = plant()
    login(client, "approver")
    page = table_rows(client.get("/console/exceptions?kind=overdue_decision").get_data(True))
    response = client.get("/console/exceptions?kind=overdue_decision&format=csv")
    assert response.status_code == 200
    assert response.is_streamed
    assert response.mimetype == "text/csv"
    disposition = response.headers["Content-Disposition"]
    assert disposition.startswith('attachment; filename="dibao-exceptions-20261122-')
    assert response.headers["Cache-Control"] == "private, no-store"
    rows = parse_csv(response.get_data())
    assert rows[0] == HEADER
    assert [r[1] for r in rows[1:]] == [p["case_code"] for p in page]
    assert {r[1] for r in rows[1:]} == {planted.decision, planted.township_step}
    decision = next(r for r in rows[1:] if r[1] == planted.decision)
    assert decision == [
        "决定逾期",
        planted.decision,
        "义勒力特镇",
        "红旗村",
        "2026-11-19",
        "3",
        "公示中",
    ]
    entry = last_export()
    assert entry.actor_id == factories.user("approver").id
    assert (entry.object_type, entry.object_id) == ("export", "exceptions")
    assert entry.details["format"] == "csv"
    assert entry.details["filters"] == {
        "地区": "乌兰浩特市",
        "类型": "决定逾期",
        "排序方式": "办理期限 ↑",
    }
    assert entry.details["columns"] == [
        "kind_label",
        "case_code",
        "township",
        "village",
        "deadline",
        "age",
        "detail",
    ]


def test_the_excel_file_has_title_user_time_and_filters_above_the_table(
    app: Flask, client: FlaskClient, clock: object
) -> None:
    plant()
    login(client, "approver")
    response = client.get("/console/exceptions?township=152201101&format=xlsx")
    assert response.status_code == 200
    assert response.headers["Content-Disposition"].endswith('.xlsx"')
    book = openpyxl.load_workbook(io.BytesIO(response.get_data()), read_only=True)
    sheet = book["exceptions"]
    values = [tuple(row) for row in sheet.iter_rows(values_only=True)]
    book.close()
    assert values[0][0] == "异常事项：乌兰浩特市"
    # The user and the time in the region's zone (12:00 Beijing time = 04:00 UTC).
    assert values[1][:4] == ("导出人", "approver", "导出时间", "2026-11-22 12:00")
    assert values[2][:2] == ("地区", "乌兰浩特市")
    assert values[3][:2] == ("乡镇", "葛根庙镇")
    header = next(i for i, row in enumerate(values) if list(row[: len(HEADER)]) == HEADER)
    data = [row for row in values[header + 1 :] if any(row)]
    assert len(data) == 3
    assert {row[2] for row in data} == {"葛根庙镇"}
    ages = {row[0]: row[5] for row in data}
    assert ages["决定逾期"] == 5  # numbers stay numbers
    entry = last_export()
    assert entry.details["format"] == "xlsx"
    assert entry.details["filters"]["乡镇"] == "葛根庙镇"


def _export(app: Flask, username: str, fmt: str) -> tuple[list[str], Any]:
    """``respond`` on a table with a personal column, as ``username`` asking for ``fmt``:
    the header row of the file and the audit row."""
    table = Table(
        name="people",
        title="people",
        columns=[Column("case_code", "案件"), Column("name", "户主姓名", personal=True)],
        rows=[{"case_code": "AAAAA-BBBBB-C", "name": "王大"}],
        filters={"地区": "兴安盟"},
    )
    with app.test_request_context(f"/console/people?format={fmt}"):
        login_user(factories.user(username))
        response = respond(table, "console/worklist.html")
        data = response.get_data()  # type: ignore[union-attr]
    if fmt == "csv":
        header = parse_csv(data)[0]
    else:
        book = openpyxl.load_workbook(io.BytesIO(data), read_only=True)
        rows = [r for r in book["people"].iter_rows(values_only=True)]
        book.close()
        header = [str(c) for c in rows[-2] if c is not None]
        assert ("王大" in rows[-1]) == ("户主姓名" in header)
    return header, last_export()


READERS = roles_with(Capability.READ_PERSONAL_DATA)


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
@pytest.mark.parametrize(
    "username", ["caseworker_a", "reviewer_a", "approver", "supervisor", "admin"]
)
def test_personal_columns_only_for_roles_that_read_personal_data(
    app: Flask, username: str, fmt: str
) -> None:
    user = factories.user(username)
    header, entry = _export(app, username, fmt)
    reads = user.role in READERS
    assert ("户主姓名" in header) is reads
    assert entry.details["columns"] == (["case_code", "name"] if reads else ["case_code"])
    assert entry.actor_id == user.id
    # The administrator reads no personal data; the supervisor reads names (masked ID
    # numbers and phones never reach a file: no table has a column of them).
    assert reads is (user.role is not Role.ADMIN)


def test_an_unknown_format_is_a_400_that_names_the_formats(
    app: Flask, client: FlaskClient, clock: object
) -> None:
    login(client, "supervisor")
    response = client.get("/console/exceptions?format=pdf")
    assert response.status_code == 400
    assert "csv" in response.get_data(as_text=True)
    assert (
        db.session.scalar(select(AuditEntry.id).where(AuditEntry.action == "export.downloaded"))
        is None
    )
