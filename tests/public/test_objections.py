"""Objections during the public notice (docs/public.md, "Objections during the public
notice"): the public form and its checks, the receipt, the reviewer's decision, what the
public case page shows, and what is never shown."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, text

from server.audit.models import AuditEntry
from server.cases.models import CaseState, Household
from server.cases.objection_models import Objection, ObjectionStatus
from server.cases.workflow import local_today, transition
from server.errors import IllegalTransition
from server.extensions import db
from tests import factories
from tests.conftest import login, make_app

REASON = "据我所知该户在城里有两套住房，户主儿子张某某开公司"
CONTACT = "李四 13800001111"


def in_notice(ends_in_days: int = 5, state: CaseState = CaseState.IN_PUBLIC_NOTICE) -> str:
    """The code of a case in ``state`` (notice ending in ``ends_in_days``), published:
    made with as many alike as the k rule needs (k = 5 in the default region)."""
    made = [factories.make_household(state=state) for _ in range(5)]
    for household in made:
        household.notice_ends_on = local_today() + timedelta(days=ends_in_days)
    code = made[0].case_code
    db.session.commit()
    return code


def case(code: str) -> Household:
    found = db.session.scalar(select(Household).where(Household.case_code == code))
    assert found is not None
    return found


def form_of(html: str) -> dict[str, str]:
    """The hidden token and the right answer of a rendered form."""
    token = re.search(r'name="token" value="([^"]+)"', html)
    question = re.search(r"(\d+)\s*(?:plus|加)\s*(\d+)", html)
    assert token and question, html
    return {"token": token.group(1), "answer": str(int(question[1]) + int(question[2]))}


def send(client: FlaskClient, code: str, **fields: str) -> Any:
    page = client.get(f"/public/cases/{code}/objection?lang=en")
    assert page.status_code == 200
    data = {**form_of(page.get_data(as_text=True)), "reason": REASON, "contact": CONTACT}
    data.update(fields)
    return client.post(f"/public/cases/{code}/objection?lang=en", data=data)


def receipt_of(answer: Any) -> str:
    found = re.search(r'id="receipt">([A-Za-z0-9_-]{24})<', answer.get_data(as_text=True))
    assert found, answer.get_data(as_text=True)
    return found.group(1)


def test_an_objection_is_received_stored_encrypted_and_audited(
    app: Flask, client: FlaskClient
) -> None:
    code = in_notice()
    answer = send(client, code)
    assert answer.status_code == 201
    assert answer.headers["Cache-Control"] == "no-store"
    assert "Set-Cookie" not in answer.headers
    receipt = receipt_of(answer)
    objection = db.session.scalar(select(Objection))
    assert objection is not None and objection.status is ObjectionStatus.OPEN
    assert objection.reason == REASON and objection.contact == CONTACT
    assert receipt not in objection.receipt_hash and len(objection.receipt_hash) == 64
    assert objection.address_hash is not None and "127.0.0.1" not in objection.address_hash
    assert objection.deadline == app.config["REGION"].calendar.add_working_days(
        local_today(), app.config["REGION"].deadlines.objection_working_days
    )
    raw = db.session.execute(text("SELECT reason, contact FROM objections")).one()
    assert REASON.encode() not in bytes(raw[0]) and b"13800001111" not in bytes(raw[1])
    rows = db.session.scalars(
        select(AuditEntry).where(AuditEntry.action == "objection.received")
    ).all()
    assert [r.object_id for r in rows] == [str(case(code).id)]
    assert rows[0].remote_addr is None and rows[0].actor_id is None
    assert REASON not in str(rows[0].details) and "13800001111" not in str(rows[0].details)

    status = client.get(f"/public/objections/{receipt}?lang=en")
    assert status.status_code == 200
    assert status.headers["Referrer-Policy"] == "no-referrer"
    assert "Being looked into" in status.get_data(as_text=True)
    assert client.get("/public/objections/" + "x" * 24).status_code == 404


def test_the_form_is_closed_outside_the_notice(client: FlaskClient) -> None:
    accepted = in_notice(state=CaseState.ACCEPTED)
    closed = client.get(f"/public/cases/{accepted}/objection?lang=en")
    assert closed.status_code == 409
    assert "not in public notice" in closed.get_data(as_text=True)
    over = in_notice(ends_in_days=-1)
    assert client.get(f"/public/cases/{over}/objection").status_code == 409
    # A form fetched while open, sent after the notice ended: refused, nothing stored.
    code = in_notice()
    data = {**form_of(client.get(f"/public/cases/{code}/objection").get_data(as_text=True))}
    case(code).notice_ends_on = local_today() - timedelta(days=1)
    db.session.commit()
    refused = client.post(f"/public/cases/{code}/objection", data={**data, "reason": REASON})
    assert refused.status_code == 409
    assert db.session.scalar(select(Objection.id)) is None
    assert client.get("/public/cases/NOPE-1/objection").status_code == 404


def test_bad_sends_keep_the_text_and_say_why(app: Flask, client: FlaskClient) -> None:
    code = in_notice()
    wrong = send(client, code, answer="999")
    assert wrong.status_code == 422
    html = wrong.get_data(as_text=True)
    assert "The answer to the question is wrong" in html
    assert REASON in html and CONTACT in html
    missing = send(client, code, reason="   ")
    assert missing.status_code == 422
    assert "Please write the reason" in missing.get_data(as_text=True)
    forged = send(client, code, token="abc.def")
    assert "not valid" in forged.get_data(as_text=True)
    chinese = client.post(
        f"/public/cases/{code}/objection",
        data={
            **form_of(client.get(f"/public/cases/{code}/objection").get_data(as_text=True)),
            "reason": "",
        },
        headers={"Accept-Language": "zh-CN"},
    )
    assert "请填写异议理由" in chinese.get_data(as_text=True)
    # An expired form: the token signed 31 minutes ago by the service's clock.
    past = datetime.now(UTC) - timedelta(minutes=31)
    app.config["DIBAO_CLOCK"] = lambda: past
    try:
        old = form_of(client.get(f"/public/cases/{code}/objection").get_data(as_text=True))
    finally:
        app.config.pop("DIBAO_CLOCK")
    expired = client.post(f"/public/cases/{code}/objection?lang=en", data={**old, "reason": REASON})
    assert expired.status_code == 422
    assert "expired" in expired.get_data(as_text=True)
    # A solved form is good once.
    good = form_of(client.get(f"/public/cases/{code}/objection").get_data(as_text=True))
    first = client.post(f"/public/cases/{code}/objection", data={**good, "reason": REASON})
    again = client.post(f"/public/cases/{code}/objection?lang=en", data={**good, "reason": REASON})
    assert (first.status_code, again.status_code) == (201, 422)
    assert "already sent" in again.get_data(as_text=True)
    assert db.session.scalar(select(db.func.count()).select_from(Objection)) == 1


def test_the_reviewer_decides_and_the_public_page_shows_only_counts(
    app: Flask, client: FlaskClient
) -> None:
    code = in_notice()
    receipt = receipt_of(send(client, code))
    page = client.get(f"/public/cases/{code}?lang=en").get_data(as_text=True)
    assert 'data-received="1"' in page and 'data-resolved="0"' in page
    # The county cannot approve while an objection is open.
    approver = factories.user("approver")
    household = case(code)
    household.notice_ends_on = local_today()
    try:
        transition(household, "approve", actor=approver)
    except IllegalTransition as exc:
        assert exc.details["action"] == "approve"
    else:
        raise AssertionError("approved with an open objection")
    db.session.rollback()

    staff = app.test_client()
    login(staff, "reviewer_a")
    worklist = staff.get("/console/worklist?lang=en").get_data(as_text=True)
    assert 'data-kind="objection"' in worklist and code in worklist
    objection = db.session.scalar(select(Objection))
    assert objection is not None
    url = f"/cases/{code}/objections/{objection.id}"
    opened = staff.get(url)
    assert opened.status_code == 200 and REASON in opened.get_data(as_text=True)
    assert db.session.scalar(select(AuditEntry.id).where(AuditEntry.action == "objection.read"))
    refused = staff.post(url, data={"outcome": "unfounded", "note": ""})
    assert refused.status_code == 422
    done = staff.post(url, data={"outcome": "resurvey", "note": "核实住房情况"})
    assert done.status_code == 303
    db.session.expire_all()
    assert case(code).state is CaseState.ACCEPTED
    decided = db.session.scalar(select(Objection))
    assert decided is not None and decided.status is ObjectionStatus.RESURVEY
    assert decided.decided_by_id == factories.user("reviewer_a").id
    actions = set(db.session.scalars(select(AuditEntry.action)))
    assert {"objection.decided", "case.return_for_resurvey"} <= actions
    assert 'data-kind="objection"' not in staff.get("/console/worklist").get_data(as_text=True)
    assert staff.post(url, data={"outcome": "unfounded", "note": "x"}).status_code == 422

    public = client.get(f"/public/cases/{code}?lang=en").get_data(as_text=True)
    assert 'data-received="1"' in public and 'data-resolved="1"' in public
    assert "All resolved" in public
    status = client.get(f"/public/objections/{receipt}?lang=en").get_data(as_text=True)
    assert "surveyed again" in status
    for shown in (public, status):
        assert REASON not in shown and "13800001111" not in shown and "核实住房" not in shown


def test_objections_are_rate_limited_per_address(databases: Any, tmp_path: Path) -> None:
    limited = make_app(
        databases.new("objection_limits"),
        tmp_path,
        RATELIMIT_ENABLED=True,
        DIBAO_OBJECTION_RATE_LIMIT="2 per hour",
        DIBAO_OBJECTION_CASE_RATE_LIMIT="1 per day",
        DIBAO_OBJECTION_RECEIPT_RATE_LIMIT="2 per minute",
    )
    from flask_migrate import upgrade

    with limited.app_context():
        upgrade(directory=limited.extensions["migrate"].directory)
        factories.base_data()
        db.session.commit()
        code = in_notice()
        db.session.remove()
        client = limited.test_client()
        statuses = [send(client, code, answer="0").status_code for _ in range(3)]
        assert statuses == [422, 422, 429]
        other = send(client, code, answer="0").status_code
        assert other == 429
        elsewhere = client.post(
            f"/public/cases/{code}/objection",
            data={"reason": REASON},
            environ_base={"REMOTE_ADDR": "10.0.0.9"},
        )
        assert elsewhere.status_code == 422
        # Per case, only objections received count: one from a third address is taken,
        # the next one to the same case (from a fourth) waits; another case is open.
        third = {"REMOTE_ADDR": "10.0.0.3"}
        page = client.get(f"/public/cases/{code}/objection", environ_base=third)
        data = {**form_of(page.get_data(as_text=True)), "reason": REASON}
        taken = client.post(f"/public/cases/{code}/objection", data=data, environ_base=third)
        assert taken.status_code == 201
        fourth = {"REMOTE_ADDR": "10.0.0.4"}
        page = client.get(f"/public/cases/{code}/objection", environ_base=fourth)
        data = {**form_of(page.get_data(as_text=True)), "reason": REASON}
        full = client.post(f"/public/cases/{code}/objection", data=data, environ_base=fourth)
        assert full.status_code == 429
        # The outcome page: guessing receipt codes is slowed down too.
        guesses = [client.get("/public/objections/" + "a" * 24) for _ in range(3)]
        assert [g.status_code for g in guesses] == [404, 404, 429]
        assert guesses[2].headers["Referrer-Policy"] == "no-referrer"


def test_overdue_objections_come_first_and_are_marked(app: Flask, client: FlaskClient) -> None:
    late, early = in_notice(), in_notice()
    send(client, late)
    send(client, early)
    overdue = db.session.scalar(
        select(Objection).join(Household).where(Household.case_code == early)
    )
    assert overdue is not None
    overdue.deadline = local_today() - timedelta(days=2)
    db.session.commit()
    staff = app.test_client()
    login(staff, "reviewer_a")
    html = staff.get("/console/worklist?lang=en").get_data(as_text=True)
    rows = re.findall(r'<tr data-kind="objection" ?(class="overdue")?>', html)
    assert rows == ['class="overdue"', ""]
    assert html.index(early) < html.index(late)
    # Another township's reviewer sees neither.
    other = app.test_client()
    login(other, "reviewer_b")
    assert 'data-kind="objection"' not in other.get("/console/worklist").get_data(as_text=True)
