"""Proof of life: links, sessions, limits, the assisted path and reviewers' decisions.
(The verdict on frames is in tests/proof_of_life/test_proof_of_life_frames.py.)"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from flask.cli import ScriptInfo
from flask.testing import FlaskClient
from sqlalchemy import func, select, text

from server.audit.models import AuditEntry
from server.auth.models import User
from server.cases.models import CaseState, Member
from server.cli import cli
from server.errors import NotPermitted, ReasonRequired, ValidationFailed
from server.extensions import db
from server.months import current_month, window
from server.proof_of_life import service as pol
from server.proof_of_life.models import (
    MonthStatus,
    Outcome,
    ProofOfLifeAttempt,
    ProofOfLifeFrame,
    ProofOfLifeMonth,
)
from tests import factories
from tests.conftest import login
from tests.mobile_api.test_api_devices import bearer, device_login


def next_month(now: datetime | None = None) -> str:
    """A month whose window has not closed, whatever day the tests run."""
    month = current_month(now or datetime.now(UTC), "Asia/Shanghai")
    year, number = int(month[:4]), int(month[5:])
    year, number = (year + 1, 1) if number == 12 else (year, number + 1)
    return f"{year:04d}-{number:02d}"


@pytest.fixture
def member(app: Flask) -> int:
    """A designated household head (an id: objects do not outlive a request)."""
    household = factories.make_household(state=CaseState.APPROVED)
    head = household.members[0]
    head.proof_of_life_required = True
    db.session.commit()
    return head.id


def get_member(member_id: int) -> Member:
    found = db.session.get(Member, member_id)
    assert found is not None
    return found


def issue(member_id: int, month: str | None = None) -> tuple[ProofOfLifeMonth, str]:
    record = pol.month_record(get_member(member_id), month or next_month())
    token = pol.link_token(record)
    db.session.commit()
    return record, token


def reread(record: ProofOfLifeMonth) -> ProofOfLifeMonth:
    found = db.session.get(ProofOfLifeMonth, record.id)
    assert found is not None
    return found


def run_cli(app: Flask, *args: str) -> Any:
    return app.test_cli_runner().invoke(cli, list(args), obj=ScriptInfo(create_app=lambda: app))


def test_a_link_reveals_nothing_and_opens_only_its_own_month(
    app: Flask, client: FlaskClient, member: int
) -> None:
    record, token = issue(member)
    assert re.fullmatch(r"[A-Za-z0-9_-]{24}", token)
    assert str(member) not in token and record.month not in token
    # Not stored: only its hash.
    stored = db.session.execute(select(ProofOfLifeMonth.__table__)).mappings().one()
    assert token not in [str(v) for v in stored.values()]

    month = record.month
    status = client.get(f"/api/v1/proof-of-life/status?link_token={token}")
    assert status.status_code == 200
    body = status.get_json()
    assert body["month"] == month and body["status"] == "pending"
    assert body["attempts_left"] == 5
    _, closes = window(month, pol.rules(), "Asia/Shanghai")
    assert body["window_closes_at"] == closes.isoformat()

    # One changed character, a token of another format, an unknown one: the same answer.
    for bad in (token[:-1] + ("A" if token[-1] != "A" else "B"), "short", "x" * 24):
        response = client.get(f"/api/v1/proof-of-life/status?link_token={bad}")
        assert response.status_code == 404
        assert response.get_json()["error"]["code"] == "link_invalid"


def test_a_revoked_link_stops_working_and_its_replacement_works(
    client: FlaskClient, member: int
) -> None:
    record, old = issue(member)
    new = pol.revoke_link(reread(record), actor=None)
    db.session.commit()
    assert new != old
    assert client.get(f"/api/v1/proof-of-life/status?link_token={old}").status_code == 404
    assert client.get(f"/api/v1/proof-of-life/status?link_token={new}").status_code == 200


def test_a_link_expires_when_its_window_closes(client: FlaskClient, member: int) -> None:
    past = current_month(datetime.now(UTC) - timedelta(days=62), "Asia/Shanghai")
    _, token = issue(member, past)
    response = client.get(f"/api/v1/proof-of-life/status?link_token={token}")
    assert response.status_code == 410
    assert response.get_json()["error"]["code"] == "link_expired"
    page = client.get(f"/m/{token}")
    assert page.status_code == 410
    assert "本月的认证已经结束" in page.get_data(as_text=True)


def test_the_cli_prints_the_link_the_page_opens(app: Flask, member: int) -> None:
    month = next_month()
    result = run_cli(app, "proof-of-life", "link", "--member-id", str(member), "--month", month)
    assert result.exit_code == 0, result.output
    url = result.output.strip().splitlines()[-1]
    assert url.startswith(app.config["PUBLIC_BASE_URL"] + "/m/")
    # The same link every time it is asked for (the SMS and the operator agree) ...
    again = run_cli(app, "proof-of-life", "link", "--member-id", str(member), "--month", month)
    assert again.output.strip().splitlines()[-1] == url
    # ... until it is revoked.
    revoked = run_cli(
        app, "proof-of-life", "link", "--member-id", str(member), "--month", month, "--revoke"
    )
    assert revoked.exit_code == 0 and revoked.output.strip() != url
    bad = run_cli(app, "proof-of-life", "link", "--member-id", str(member), "--month", "2026-13")
    assert bad.exit_code != 0 and "not a month" in bad.output


def test_the_page_is_served_with_a_strict_policy_in_chinese_first(
    client: FlaskClient, member: int
) -> None:
    _, token = issue(member)
    page = client.get(f"/m/{token}")
    assert page.status_code == 200
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "default-src 'self'" in policy
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert page.headers["Cache-Control"] == "no-store"
    html = page.get_data(as_text=True)
    assert 'lang="zh-CN"' in html
    assert "请把脸放在框内" in html
    assert "/static/pol/pol.js" in html
    english = client.get(f"/m/{token}?lang=en").get_data(as_text=True)
    assert "Put your face in the frame" in english and 'lang="en"' in english
    invalid = client.get("/m/" + "A" * 24 + "?lang=zh_CN")  # the choice sticks: back to zh
    assert invalid.status_code == 404
    assert "链接无效" in invalid.get_data(as_text=True)


def test_a_session_has_one_turn_and_one_of_blink_or_mouth_and_counts_as_an_attempt(
    client: FlaskClient, member: int
) -> None:
    _, token = issue(member)
    seen = set()
    for _ in range(5):
        response = client.post("/api/v1/proof-of-life/sessions", json={"link_token": token})
        assert response.status_code == 201, response.get_json()
        body = response.get_json()
        turns = [c for c in body["challenges"] if c in ("turn_left", "turn_right")]
        others = [c for c in body["challenges"] if c in ("blink", "open_mouth")]
        assert len(turns) == 1 and len(others) == 1
        seen.add(tuple(body["challenges"]))
        assert len(body["nonce"]) == 32 and len(body["session_id"]) >= 24
        expires = datetime.fromisoformat(body["expires_at"])
        assert timedelta(seconds=100) < expires - datetime.now(UTC) <= timedelta(seconds=120)
        assert body["frames"] == {"min": 6, "max": 12, "max_bytes": 400000}
        assert body["capture"]["count"] == 10
    assert len(seen) > 1  # random order and choice
    # Five a day: the sixth is refused, with a clear code.
    sixth = client.post("/api/v1/proof-of-life/sessions", json={"link_token": token})
    assert sixth.status_code == 429
    assert sixth.get_json()["error"]["code"] == "attempts_exhausted"
    status = client.get(f"/api/v1/proof-of-life/status?link_token={token}").get_json()
    assert status["attempts_left"] == 0 and status["status"] == "pending"
    started = db.session.scalars(
        select(AuditEntry).where(AuditEntry.action == "pol.session_started")
    ).all()
    assert len(started) == 5 and all(e.actor_id is None for e in started)


def test_past_the_months_limit_a_person_takes_over(
    client: FlaskClient, member: int, limits: Any
) -> None:
    limits(attempts_per_month=2)
    record, token = issue(member)
    for _ in range(2):
        ok = client.post("/api/v1/proof-of-life/sessions", json={"link_token": token})
        assert ok.status_code == 201
    refused = client.post("/api/v1/proof-of-life/sessions", json={"link_token": token})
    assert refused.status_code == 429
    assert reread(record).status is MonthStatus.REVIEW


def test_no_session_for_a_month_already_passed_or_a_member_not_designated(
    client: FlaskClient, member: int
) -> None:
    record, token = issue(member)
    reread(record).status = MonthStatus.PASSED
    db.session.commit()
    done = client.post("/api/v1/proof-of-life/sessions", json={"link_token": token})
    assert done.status_code == 409 and done.get_json()["error"]["code"] == "already_passed"

    other = get_member(member).household.members[1]
    with pytest.raises(pol.NotDesignated):
        pol.month_record(other, next_month())


@pytest.mark.parametrize("state", [CaseState.SURVEYED, CaseState.SUSPENDED, CaseState.TERMINATED])
def test_no_link_for_a_member_whose_household_is_not_in_care(
    app: Flask, client: FlaskClient, state: CaseState
) -> None:
    household = factories.make_household(state=state)
    head = household.members[0]
    head.proof_of_life_required = True
    member_id, household_id = head.id, household.id
    lat, lon = household.home_lat, household.home_lon
    db.session.commit()
    with pytest.raises(pol.NotInCare):
        pol.month_record(get_member(member_id), next_month())
    printed = run_cli(app, "proof-of-life", "link", "--member-id", str(member_id))
    assert printed.exit_code != 0
    assert "household does not receive the allowance" in printed.output
    token = device_login(client).get_json()["token"]
    assisted = client.post(
        "/api/v1/proof-of-life/sessions",
        json={
            "household_id": household_id,
            "member_id": member_id,
            "gps": {"lat": lat, "lon": lon},
        },
        headers=bearer(token),
    )
    assert assisted.status_code == 409
    assert assisted.get_json()["error"]["code"] == "not_in_care"
    # Nothing that the campaign would count as pending.
    assert db.session.scalar(select(func.count()).select_from(ProofOfLifeMonth)) == 0


def test_the_cli_says_which_address_its_links_assume(app: Flask, member: int) -> None:
    default = run_cli(app, "proof-of-life", "link", "--member-id", str(member))
    assert default.exit_code == 0
    assert "PUBLIC_BASE_URL is not set" in default.output
    app.config["PUBLIC_BASE_URL"] = "https://dibao.example.gov.cn"
    try:
        chosen = run_cli(app, "proof-of-life", "link", "--member-id", str(member))
    finally:
        app.config["PUBLIC_BASE_URL"] = "http://127.0.0.1:5000"
    assert chosen.output.strip().startswith("https://dibao.example.gov.cn/m/")
    assert "PUBLIC_BASE_URL" not in chosen.output


def test_frames_are_refused_for_a_wrong_nonce_an_expired_session_or_a_bad_count(
    client: FlaskClient, member: int
) -> None:
    _, token = issue(member)
    session = client.post("/api/v1/proof-of-life/sessions", json={"link_token": token}).get_json()
    url = f"/api/v1/proof-of-life/sessions/{session['session_id']}/frames"
    frame = b"\xff\xd8 not really a jpeg \xff\xd9"

    def send(nonce: str, count: int, **extra: Any) -> Any:
        from io import BytesIO

        data: dict[str, Any] = {"nonce": nonce, **extra}
        data["frames"] = [(BytesIO(frame), f"f{i}.jpg", "image/jpeg") for i in range(count)]
        return client.post(url, data=data, content_type="multipart/form-data")

    wrong = send("0" * 32, 10)
    assert wrong.status_code == 403 and wrong.get_json()["error"]["code"] == "nonce_mismatch"
    few = send(session["nonce"], 3)
    assert few.status_code == 422 and few.get_json()["error"]["details"]["field"] == "frames"
    offsets = send(session["nonce"], 10, offsets_ms="[1, 2]")
    assert (
        offsets.status_code == 422
        and offsets.get_json()["error"]["details"]["field"] == "offsets_ms"
    )
    unexpected = send(session["nonce"], 10, selfie="x")
    assert unexpected.status_code == 422
    attempt = db.session.scalar(
        select(ProofOfLifeAttempt).where(ProofOfLifeAttempt.session_id == session["session_id"])
    )
    assert attempt is not None and attempt.submitted_at is None and not attempt.frames
    attempt.expires_at = datetime.now(UTC) - timedelta(seconds=1)
    db.session.commit()
    late = send(session["nonce"], 10)
    assert late.status_code == 410 and late.get_json()["error"]["code"] == "session_expired"
    missing = client.post(
        "/api/v1/proof-of-life/sessions/nope/frames",
        data={"nonce": "x"},
        content_type="multipart/form-data",
    )
    assert missing.status_code == 404


def test_an_assisted_session_is_started_by_a_caseworker_near_the_home(
    client: FlaskClient, member: int
) -> None:
    token = device_login(client).get_json()["token"]
    household = get_member(member).household
    household_id, lat, lon = household.id, household.home_lat, household.home_lon
    near = {"lat": lat + 0.0005, "lon": lon, "accuracy_m": 5}
    response = client.post(
        "/api/v1/proof-of-life/sessions",
        json={"household_id": household_id, "member_id": member, "gps": near},
        headers=bearer(token),
    )
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["flags"] == []
    far = {"lat": lat + 0.01, "lon": lon}
    flagged = client.post(
        "/api/v1/proof-of-life/sessions",
        json={"household_id": household_id, "member_id": member, "gps": far},
        headers=bearer(token),
    )
    assert flagged.status_code == 201
    assert flagged.get_json()["flags"] == ["gps_far_from_home"]
    attempt = db.session.scalar(
        select(ProofOfLifeAttempt).where(
            ProofOfLifeAttempt.session_id == flagged.get_json()["session_id"]
        )
    )
    assert attempt is not None
    assert attempt.started_by.value == "caseworker" and attempt.device_token_id is not None
    assert attempt.assisted_by_id == factories.user("caseworker_a").id
    assert attempt.gps_distance_m is not None and attempt.gps_distance_m > 1000
    assert not attempt.counts_against_limits

    # The frames of an assisted session come only from the tablet that started it: to
    # anyone else it does not exist.
    session = flagged.get_json()
    anonymous = client.post(
        f"/api/v1/proof-of-life/sessions/{session['session_id']}/frames",
        data={"nonce": session["nonce"]},
        content_type="multipart/form-data",
    )
    assert anonymous.status_code == 404
    assert anonymous.get_json()["error"]["code"] == "session_not_found"

    # A caseworker of another township does not see the household.
    other = device_login(client, "caseworker_b").get_json()["token"]
    outside = client.post(
        "/api/v1/proof-of-life/sessions",
        json={"household_id": household_id, "member_id": member, "gps": near},
        headers=bearer(other),
    )
    assert outside.status_code == 404


def test_reviewers_exempt_or_settle_a_month_with_a_reason(app: Flask, member: int) -> None:
    record, _ = issue(member)
    record = reread(record)
    reviewer = factories.user("reviewer_a")
    with pytest.raises(ReasonRequired):
        pol.decide_month(record, actor=reviewer, status=MonthStatus.EXEMPT, reason=" ")
    with pytest.raises(NotPermitted):
        pol.decide_month(
            record, actor=factories.user("caseworker_a"), status=MonthStatus.EXEMPT, reason="x"
        )
    with pytest.raises(ValidationFailed):
        # Only a month under review can be failed, and only by a person.
        pol.decide_month(record, actor=reviewer, status=MonthStatus.FAILED, reason="no")
    pol.decide_month(record, actor=reviewer, status=MonthStatus.EXEMPT, reason="住院治疗")
    db.session.commit()
    assert record.status is MonthStatus.EXEMPT and record.decided_by_id == reviewer.id
    raw = db.session.execute(
        text("SELECT decision_reason FROM pol_months WHERE id = :id"), {"id": record.id}
    ).scalar_one()
    assert isinstance(raw, bytes) and "住院".encode() not in raw  # encrypted at rest
    other: User = factories.user("reviewer_b")
    with pytest.raises(Exception, match=r"not found|no such"):
        pol.decide_month(record, actor=other, status=MonthStatus.PASSED, reason="x")


def test_a_month_under_review_puts_an_assisted_visit_on_the_caseworkers_tablet(
    client: FlaskClient, member: int, limits: Any
) -> None:
    record, _ = issue(member)
    record_id = record.id
    household_id = get_member(member).household_id
    token = device_login(client).get_json()["token"]

    def assisted(tablet: str) -> list[dict[str, Any]]:
        items = client.get("/api/v1/visits/due", headers=bearer(tablet)).get_json()["items"]
        return [i for i in items if i["kind"] == "assisted_proof_of_life"]

    assert assisted(token) == []
    under_review = db.session.get(ProofOfLifeMonth, record_id)
    assert under_review is not None
    under_review.status = MonthStatus.REVIEW
    closes = under_review.window_closes_at
    db.session.commit()
    [visit] = assisted(token)
    assert visit["household_id"] == household_id
    assert visit["due_by"] == closes.astimezone(ZoneInfo("Asia/Shanghai")).date().isoformat()
    assert member in [m["member_id"] for m in visit["members"]]
    other = device_login(client, "caseworker_b").get_json()["token"]
    assert assisted(other) == []


def test_a_reviewer_sees_the_attempts_on_the_case_page_and_exempts_the_month(
    client: FlaskClient, member: int
) -> None:
    record, token = issue(member)
    record_id = record.id
    case_code = get_member(member).household.case_code
    client.post("/api/v1/proof-of-life/sessions", json={"link_token": token})
    login(client, "reviewer_a")
    page = client.get(f"/cases/{case_code}").get_data(as_text=True)
    assert record.month in page and "by the recipient" not in page  # Chinese first
    decide = f"/cases/{case_code}/proof-of-life/{record_id}"
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert csrf is not None
    done = client.post(
        decide, data={"status": "exempt", "reason": "住院", "csrf_token": csrf.group(1)}
    )
    assert done.status_code == 303
    updated = db.session.get(ProofOfLifeMonth, record_id)
    assert updated is not None and updated.status is MonthStatus.EXEMPT
    # A caseworker cannot decide: the page says why and nothing changes.
    client.post("/logout", data={"csrf_token": csrf.group(1)})
    login(client, "caseworker_a")
    page = client.get(f"/cases/{case_code}").get_data(as_text=True)
    assert f"/proof-of-life/{record_id}" not in page


def test_frames_past_retention_are_deleted_and_the_results_stay(app: Flask, member: int) -> None:
    record, _ = issue(member)
    store = app.extensions["dibao.blobs"]
    now = datetime.now(UTC)
    attempts = []
    for age_days in (40, 2):
        attempt = pol.start_session(reread(record), now=now - timedelta(days=age_days))
        temp = store.new_temp()
        temp.write(f"frame of an attempt {age_days} days old".encode())
        digest = store.store(temp)
        db.session.add(ProofOfLifeFrame(attempt_id=attempt.id, position=0, sha256=digest, bytes=9))
        attempt.outcome = Outcome.FAILED
        attempts.append((attempt.id, digest))
    db.session.commit()

    result = run_cli(app, "proof-of-life", "purge-frames")
    assert result.exit_code == 0 and "deleted 1 frames" in result.output

    (old_id, old_digest), (new_id, new_digest) = attempts
    old = db.session.get(ProofOfLifeAttempt, old_id)
    new = db.session.get(ProofOfLifeAttempt, new_id)
    assert old is not None and new is not None
    assert old.frames == [] and old.frames_deleted_at is not None
    assert old.outcome is Outcome.FAILED  # the result stays
    assert not store.path(old_digest).exists()
    assert len(new.frames) == 1 and store.path(new_digest).exists()
    assert run_cli(app, "proof-of-life", "purge-frames").output.strip() == "deleted 0 frames"
