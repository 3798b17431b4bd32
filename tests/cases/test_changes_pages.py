"""The case page's changes section and the checkers' worklist (server/web/cases.py):
propose through the form, a refusal shown next to its field with the typed values
kept, values masked, the maker offered no approval (and refused one), the checker's
approval, the history, the re-send of the month's link, and the worklist by area."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from server.audit.models import AuditEntry
from server.cases.models import CaseChange, CaseState, ChangeStatus, Household, Member
from server.cases.workflow import allowance_for
from server.extensions import db
from server.monthly import cycle as campaign
from sms.models import MessageKind, SmsMessage
from tests import factories
from tests.conftest import login

MORNING = datetime(2026, 12, 20, 1, 0, tzinfo=UTC)


@pytest.fixture
def case(app: Flask) -> Iterator[str]:
    household = factories.make_household(state=CaseState.APPROVED)
    household.monthly_allowance = allowance_for(household).monthly_amount
    household.members[0].proof_of_life_required = True
    db.session.commit()
    yield household.case_code


def _household(code: str) -> Household:
    db.session.expire_all()
    found = db.session.scalar(select(Household).where(Household.case_code == code))
    assert found is not None
    return found


def _page(client: FlaskClient, code: str, lang: str = "en") -> str:
    response = client.get(f"/cases/{code}?lang={lang}")
    assert response.status_code == 200
    return response.get_data(as_text=True)


def _propose_phone(client: FlaskClient, code: str, phone: str = "13700001111") -> Any:
    head = _household(code).members[0]
    return client.post(
        f"/cases/{code}/changes/correct_phone",
        data={"member": str(head.id), "phone": phone, "reason": "原号码停用"},
    )


def test_propose_then_a_second_person_approves_and_the_history_shows_both(
    app: Flask, case: str
) -> None:
    maker = app.test_client()
    login(maker, "caseworker_a")
    assert _propose_phone(maker, case).status_code == 303
    page = _page(maker, case)
    assert "Waiting for a checker" in page and "原号码停用" in page
    assert "137****1111" in page and "13700001111" not in page  # masked like the members
    assert "approve-change" not in page  # the maker is offered no approval
    assert "You proposed this change" in page
    change_id = db.session.scalar(select(CaseChange.id))
    assert change_id is not None
    # ... and is refused one.
    refused = maker.post(f"/cases/{case}/changes/{change_id}/approve?lang=en", data={})
    assert refused.status_code == 303
    assert "a second person must check it" in _page(maker, case)
    db.session.expire_all()
    assert db.session.get(CaseChange, change_id).status is ChangeStatus.PENDING  # type: ignore[union-attr]

    checker = app.test_client()
    login(checker, "reviewer_a")
    page = _page(checker, case)
    assert "approve-change" in page and "reject-change" in page
    # The checker compares the full number with the papers: revealed on request, audited.
    revealed = checker.post(f"/cases/{case}/changes/{change_id}/reveal")
    assert revealed.status_code == 200 and "13700001111" in revealed.get_data(as_text=True)
    assert db.session.scalar(
        select(func.count(AuditEntry.id)).where(
            AuditEntry.action == "case_change.reveal_personal",
            AuditEntry.object_id == str(change_id),
        )
    )
    assert (
        checker.post(
            f"/cases/{case}/changes/{change_id}/approve", data={"note": "已电话核实"}
        ).status_code
        == 303
    )
    assert _household(case).members[0].phone == "13700001111"
    history = _page(checker, case, lang="zh_CN")
    assert f'data-change="{change_id}" data-status="approved"' in history
    assert "已电话核实" in history and "caseworker_a" in history and "reviewer_a" in history
    assert "变更" in history  # Chinese first


def test_a_refused_form_keeps_what_was_typed_and_says_why_next_to_the_field(
    app: Flask, client: FlaskClient, case: str
) -> None:
    login(client, "caseworker_a")
    typed = {
        "name": "王小七",
        "id_number": "152201202003091230",
        "birth_date": "2020-03-09",
        "relation": "child",
        "monthly_income": "0",
        "reason": "新生儿",
    }
    response = client.post(f"/cases/{case}/changes/add_member?lang=en", data=typed)
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert 'data-field="id_number"' in page and "check character" in page
    assert 'value="王小七"' in page and "新生儿" in page
    assert '<option value="child" selected>' in page
    assert db.session.scalar(select(func.count(CaseChange.id))) == 0

    negative = client.post(
        f"/cases/{case}/changes/change_income?lang=en",
        data={f"income_{_household(case).members[0].id}": "-5", "reason": "收入"},
    )
    assert negative.status_code == 422
    assert "cannot be negative" in negative.get_data(as_text=True)

    no_reason = _propose_phone(client, case)
    assert no_reason.status_code == 303  # with a reason it goes through
    duplicate = client.post(
        f"/cases/{case}/changes/add_member?lang=en",
        data={
            **typed,
            "id_number": _household(case).members[1].id_number,
            "birth_date": "1960-05-17",
        },
    )
    assert duplicate.status_code == 422
    assert "already registered" in duplicate.get_data(as_text=True)


def test_the_worklist_shows_the_areas_changes_not_ones_own(app: Flask, case: str) -> None:
    maker = app.test_client()
    login(maker, "reviewer_a")
    _propose_phone(maker, case)
    own = maker.get("/changes?lang=en").get_data(as_text=True)
    assert case not in own and "Nothing is waiting for you" in own

    for name, sees in (("approver", True), ("reviewer_b", False), ("other_approver", False)):
        checker = app.test_client()
        login(checker, name)
        page = checker.get("/changes?lang=en")
        assert page.status_code == 200
        assert (case in page.get_data(as_text=True)) is sees, name
    for name in ("caseworker_a", "supervisor", "admin"):
        other = app.test_client()
        login(other, name)
        assert other.get("/changes").status_code == 403, name


def test_resend_the_link_after_a_phone_correction(app: Flask, case: str) -> None:
    app.config["DIBAO_CLOCK"] = lambda: MORNING
    try:
        campaign.open_month("2026-12", now=MORNING)
        maker, checker = app.test_client(), app.test_client()
        login(maker, "caseworker_a")
        login(checker, "approver")
        _propose_phone(maker, case)
        change_id = db.session.scalar(select(CaseChange.id))
        assert change_id is not None
        checker.post(f"/cases/{case}/changes/{change_id}/approve")
        page = _page(maker, case)
        assert "resend-link" in page
        head_id = _household(case).members[0].id
        first = maker.post(f"/cases/{case}/members/{head_id}/resend-link?lang=en")
        assert first.status_code == 303
        again = maker.post(f"/cases/{case}/members/{head_id}/resend-link?lang=en")
        assert again.status_code == 303
        assert "re-sent to this member already" in _page(maker, case)
        db.session.expire_all()
        resent = db.session.scalars(
            select(SmsMessage).where(
                SmsMessage.member_id == head_id, SmsMessage.kind == MessageKind.RESEND
            )
        ).all()
        assert [m.to_phone for m in resent] == ["13700001111"]
        assert (
            db.session.scalar(
                select(func.count(AuditEntry.id)).where(AuditEntry.action == "pol.link_resent")
            )
            == 1
        )
    finally:
        app.config.pop("DIBAO_CLOCK", None)


def test_a_removed_member_is_marked_on_the_page(app: Flask, case: str) -> None:
    maker, checker = app.test_client(), app.test_client()
    login(maker, "caseworker_a")
    login(checker, "reviewer_a")
    child_id = _household(case).members[1].id
    assert (
        maker.post(
            f"/cases/{case}/changes/remove_member", data={"member": str(child_id), "reason": "迁出"}
        ).status_code
        == 303
    )
    change_id = db.session.scalar(select(CaseChange.id))
    assert change_id is not None
    checker.post(f"/cases/{case}/changes/{change_id}/approve")
    page = _page(checker, case)
    assert 'class="left"' in page and "left on" in page
    db.session.expire_all()
    assert db.session.get(Member, child_id).left_on is not None  # type: ignore[union-attr]
