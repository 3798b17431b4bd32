"""What a new user tripped over on the staff pages (issue 15, item 8; docs/supervision.md)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from flask import Flask
from flask.testing import FlaskClient
from flask_babel import refresh
from sqlalchemy import func, select

from server.audit.models import AuditEntry
from server.cases.models import CaseEvent, CaseState, Household
from server.cli import devices_list_command
from server.crypto import mask_id_number, mask_phone
from server.devices.service import issue_device_token
from server.extensions import db
from server.region import local_iso
from server.validation import MAX_REASON_LENGTH
from tests import factories
from tests.conftest import login


@pytest.mark.parametrize("state", [CaseState.TERMINATED, CaseState.REJECTED])
def test_a_closed_case_is_listed_without_an_allowance_or_a_deadline(
    app: Flask, client: FlaskClient, state: CaseState
) -> None:
    household = factories.make_household(state=state)
    household.monthly_allowance = Decimal("987.65")
    household.next_review_on = date(2031, 7, 31)
    household.decision_due_on = date(2031, 6, 30)
    code = household.case_code
    db.session.commit()
    login(client, "approver")

    page = client.get("/?lang=en").get_data(as_text=True)
    assert code in page
    assert "987.65" not in page and "2031-07-31" not in page and "2031-06-30" not in page
    detail = client.get(f"/cases/{code}?lang=en").get_data(as_text=True)
    assert "none: the case is closed" in detail
    assert "987.65" not in detail and "2031-07-31" not in detail and "2031-06-30" not in detail


def test_an_active_case_is_listed_with_its_allowance_and_next_review(
    app: Flask, client: FlaskClient
) -> None:
    household = factories.make_household(state=CaseState.APPROVED)
    household.monthly_allowance = Decimal("987.65")
    household.next_review_on = date(2031, 7, 31)
    db.session.commit()
    login(client, "approver")
    page = client.get("/?lang=en").get_data(as_text=True)
    assert "987.65" in page and "2031-07-31" in page


def test_a_reason_longer_than_the_limit_is_refused_with_nothing_written(
    app: Flask, client: FlaskClient
) -> None:
    household = factories.make_household(state=CaseState.SURVEYED)
    code, household_id = household.case_code, household.id
    db.session.commit()
    login(client, "reviewer_a")

    def events() -> int:
        return (
            db.session.scalar(select(func.count()).where(CaseEvent.household_id == household_id))
            or 0
        )

    before = events()
    too_long = "很" * (MAX_REASON_LENGTH + 1)
    answer = client.post(
        f"/cases/{code}/transitions", data={"action": "return_for_resurvey", "reason": too_long}
    )
    assert answer.status_code == 303
    page = client.get(f"/cases/{code}").get_data(as_text=True)
    assert f"理由最多 {MAX_REASON_LENGTH} 个字符，本次为 {MAX_REASON_LENGTH + 1} 个" in page
    client.post(
        f"/cases/{code}/transitions",
        data={"action": "return_for_resurvey", "reason": too_long},
        query_string={"lang": "en"},
    )
    english = client.get(f"/cases/{code}").get_data(as_text=True)
    assert f"A reason may be at most {MAX_REASON_LENGTH} characters long" in english
    state = db.session.scalar(select(Household.state).where(Household.case_code == code))
    assert state is CaseState.SURVEYED and events() == before

    at_the_limit = "很" * MAX_REASON_LENGTH
    client.post(
        f"/cases/{code}/transitions",
        data={"action": "return_for_resurvey", "reason": at_the_limit},
    )
    state = db.session.scalar(select(Household.state).where(Household.case_code == code))
    assert state is CaseState.ACCEPTED and events() == before + 1


@pytest.mark.parametrize(
    ("action", "start", "user", "end"),
    [
        ("reject", CaseState.SURVEYED, "reviewer_a", CaseState.REJECTED),
        ("terminate", CaseState.APPROVED, "approver", CaseState.TERMINATED),
    ],
)
def test_ending_a_case_asks_for_a_confirmation_first(
    app: Flask,
    client: FlaskClient,
    action: str,
    start: CaseState,
    user: str,
    end: CaseState,
) -> None:
    code = factories.make_household(state=start).case_code
    db.session.commit()
    login(client, user)

    def state() -> CaseState | None:
        return db.session.scalar(select(Household.state).where(Household.case_code == code))

    asked = client.post(
        f"/cases/{code}/transitions?lang=en", data={"action": action, "reason": "收入超标"}
    )
    assert asked.status_code == 200
    page = asked.get_data(as_text=True)
    assert 'name="confirmed" value="yes" required' in page and "收入超标" in page
    assert "I confirm this decision." in page
    assert state() is start
    # Without the checkbox (a browser that ignores "required"), still nothing happens.
    client.post(f"/cases/{code}/transitions", data={"action": action, "reason": "收入超标"})
    assert state() is start

    done = client.post(
        f"/cases/{code}/transitions",
        data={"action": action, "reason": "收入超标", "confirmed": "yes"},
    )
    assert done.status_code == 303
    assert state() is end


def test_a_refusal_the_role_may_not_make_is_not_offered_for_confirmation(
    app: Flask, client: FlaskClient
) -> None:
    code = factories.make_household(state=CaseState.SURVEYED).case_code
    db.session.commit()
    login(client, "caseworker_a")
    answer = client.post(
        f"/cases/{code}/transitions", data={"action": "reject", "reason": "收入超标"}
    )
    assert answer.status_code == 303


def test_the_case_history_shows_state_labels_not_codes(app: Flask, client: FlaskClient) -> None:
    code = factories.make_household(state=CaseState.SURVEYED).case_code
    db.session.commit()
    login(client, "reviewer_a")
    client.post(
        f"/cases/{code}/transitions", data={"action": "return_for_resurvey", "reason": "缺照片"}
    )
    page = client.get(f"/cases/{code}?lang=en").get_data(as_text=True)
    assert "Return for re-survey: Surveyed → Accepted" in page
    assert "surveyed → accepted" not in page and "— → applied" not in page
    chinese = client.get(f"/cases/{code}?lang=zh_CN").get_data(as_text=True)
    assert "surveyed" not in chinese.split('<ol class="history">')[1]


def test_lists_of_codes_are_shown_as_labels(app: Flask) -> None:
    with app.test_request_context("/?lang=en"):
        env = app.jinja_env.globals
        assert env["challenge_labels"]("turn_left,blink") == "Turn left, Blink"
        assert env["pol_stop_labels"](["no_face", "face_mismatch"]) == (
            "No face seen, Face does not match"
        )
        assert env["flag_labels"]("gps_far_from_home") == "GPS fix far from the registered home"
        assert env["payment_status_label"]("case_suspended") == "Case suspended"
    with app.test_request_context("/?lang=zh_CN"):
        refresh()  # the locale is cached per application context
        assert "turn_left" not in app.jinja_env.globals["challenge_labels"]("turn_left,blink")
        assert "、" in app.jinja_env.globals["challenge_labels"]("turn_left,blink")


def test_times_are_shown_in_the_regions_time_zone(app: Flask, client: FlaskClient) -> None:
    household = factories.make_household()
    household.events[0].at = datetime(2026, 1, 1, 20, 30, tzinfo=UTC)
    code = household.case_code
    db.session.commit()
    login(client, "reviewer_a")
    page = client.get(f"/cases/{code}").get_data(as_text=True)
    assert "<time>2026-01-02 04:30</time>" in page  # Asia/Shanghai, the default region
    assert "UTC" not in page


def test_cli_output_is_in_the_regions_time_zone(app: Flask) -> None:
    app.config["DIBAO_CLOCK"] = lambda: datetime(2026, 1, 1, 20, 30, tzinfo=UTC)
    try:
        with app.app_context():
            issue_device_token(
                username="caseworker_a",
                password=factories.PASSWORD,
                device_id="tz-test",
                device_name="tz",
            )
            db.session.commit()
            assert local_iso(datetime(2026, 1, 1, 20, 30, tzinfo=UTC)) == (
                "2026-01-02T04:30:00+08:00"
            )
        listed = app.test_cli_runner().invoke(devices_list_command, args=["--user", "caseworker_a"])
    finally:
        del app.config["DIBAO_CLOCK"]
    assert listed.exit_code == 0, listed.output
    line = next(line for line in listed.output.splitlines() if "tz-test" in line)
    assert "created 2026-01-02" in line


def _audit_count(action: str) -> int:
    return (
        db.session.scalar(
            select(func.count()).select_from(AuditEntry).where(AuditEntry.action == action)
        )
        or 0
    )


def test_masks_keep_the_ends_of_an_id_number_and_a_phone() -> None:
    assert mask_id_number("110105196005171234") == "110105********1234"
    assert mask_phone("13812345678") == "138****5678"
    assert mask_phone(None) == "" and mask_id_number("12345") == "*****"


@pytest.mark.parametrize("username", ["caseworker_a", "reviewer_a", "approver"])
def test_id_numbers_and_phones_are_masked_until_revealed_with_an_audit_row(
    app: Flask, client: FlaskClient, username: str
) -> None:
    household = factories.make_household()
    head = household.members[0]
    code, head_id, id_number = household.case_code, head.id, head.id_number
    db.session.commit()
    login(client, username)

    page = client.get(f"/cases/{code}").get_data(as_text=True)
    assert id_number not in page and "13912345678" not in page
    assert mask_id_number(id_number) in page and "139****5678" in page
    assert f"/members/{head_id}/reveal" in page
    assert _audit_count("member.reveal_personal") == 0

    revealed = client.post(f"/cases/{code}/members/{head_id}/reveal")
    assert revealed.status_code == 200
    shown = revealed.get_data(as_text=True)
    assert id_number in shown and "13912345678" in shown
    assert _audit_count("member.reveal_personal") == 1
    # The next plain read is masked again.
    assert id_number not in client.get(f"/cases/{code}").get_data(as_text=True)


@pytest.mark.parametrize("username", ["supervisor", "admin"])
def test_the_supervisor_and_the_administrator_never_see_full_values(
    app: Flask, client: FlaskClient, username: str
) -> None:
    household = factories.make_household()
    code, head_id, id_number = (
        household.case_code,
        household.members[0].id,
        (household.members[0].id_number),
    )
    db.session.commit()
    login(client, username)
    page = client.get(f"/cases/{code}").get_data(as_text=True)
    assert id_number not in page and "13912345678" not in page and "/reveal" not in page
    refused = client.post(f"/cases/{code}/members/{head_id}/reveal")
    assert refused.status_code == 403
    assert id_number not in refused.get_data(as_text=True)
    assert _audit_count("member.reveal_personal") == 0
