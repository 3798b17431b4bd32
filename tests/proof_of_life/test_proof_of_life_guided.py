"""Guided proof of life over the API, judged by the real pipeline on real faces: the
member (enrolled from lin_1.png) plays the whole live clip (every frame, 29.97 fps) into
the guided steps as a phone's camera would, or a flat picture of it, or moves too little
and is told so."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image
from sqlalchemy import select

from server.audit.models import AuditEntry
from server.cases.models import CaseState
from server.extensions import db
from server.proof_of_life.models import (
    MonthStatus,
    Outcome,
    ProofOfLifeAttempt,
    ProofOfLifeFrame,
    ProofOfLifeMonth,
)
from tests.guided_client import API, Video, run_guided
from tests.pol_frames import VIDEO_FPS, canvas, still, tilted, video_frames
from tests.proof_of_life.test_proof_of_life_frames import _link, _member

CHALLENGES = ["turn_right", "open_mouth"]  # both happen in the clip, in this order


@pytest.fixture
def fixed_challenges(app: Flask) -> Iterator[None]:
    app.config["DIBAO_POL_FIXED_CHALLENGES"] = CHALLENGES
    yield
    app.config["DIBAO_POL_FIXED_CHALLENGES"] = None


@pytest.fixture(scope="module")
def member_video() -> Video:
    """The member's part of the clip (frames 82-211), from where he looks ahead."""
    return Video(video_frames()[82:212], VIDEO_FPS)


def _record(link: str) -> ProofOfLifeMonth:
    return db.session.scalars(select(ProofOfLifeMonth)).one()


@pytest.mark.slow
def test_the_clip_played_into_the_guided_steps_passes_with_every_step_confirmed(
    app: Flask, client: FlaskClient, fixed_challenges: None, member_video: Video
) -> None:
    member_id = _member(client)
    link = _link(member_id)
    run = run_guided(client, {"link_token": link}, member_video)
    assert run.errors == [] and run.abandoned is None
    assert run.verdict is not None, run.exchanges
    assert run.verdict["outcome"] == "passed", run.verdict
    names = [e.name for e in run.exchanges if e.state in ("done", "finished")]
    assert names == ["face", "turn_right", "open_mouth"]
    session = run.session
    assert [s["name"] for s in session["guided"]["steps"]] == ["face", *CHALLENGES]

    attempt = db.session.scalars(select(ProofOfLifeAttempt)).one()
    assert attempt.guided and attempt.outcome is Outcome.PASSED and attempt.step == 3
    frames = db.session.scalars(select(ProofOfLifeFrame).order_by(ProofOfLifeFrame.position))
    rows = list(frames)
    assert len(rows) == run.frames_sent
    assert [r.position for r in rows] == list(range(len(rows)))
    assert {r.step for r in rows} == {0, 1, 2}
    measured = json.loads(attempt.measurements or "{}")
    assert measured["guided"] == 1 and measured["frames_used"] >= 6
    assert measured["distance"] <= measured["t_match_tolerance"]
    assert _record(link).status is MonthStatus.PASSED
    # The session is spent: one more batch is refused.
    again = client.post(
        f"{API}/sessions/{session['session_id']}/steps/2/frames",
        data={"nonce": session["nonce"], "frames": [(io.BytesIO(b"x"), "f.jpg", "image/jpeg")]},
        content_type="multipart/form-data",
    )
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "session_used"


@pytest.mark.slow
def test_a_turn_too_small_is_told_to_turn_more_and_passes_when_it_grows(
    app: Flask, client: FlaskClient, fixed_challenges: None
) -> None:
    """He looks ahead (yaw proxy about 0.2), turns a little (to 0.0: a movement of about
    0.2, under the threshold) and back, twice; then turns fully (to -0.69) and opens his
    mouth: "turn a little more" first, then a pass."""
    frames = video_frames()
    small = list(range(86, 97)) + list(range(96, 85, -1))
    sequence = [frames[n] for n in [*range(82, 92), *small, *small, *range(86, 140)]]
    run = run_guided(client, {"link_token": _link(_member(client))}, Video(sequence, VIDEO_FPS))
    turn_hints = run.hints("turn_right")
    assert "turn_more" in turn_hints, run.exchanges
    progress = [e.progress for e in run.exchanges if e.name == "turn_right"]
    assert 0 < max(progress[:-1]) < 1  # partly there before it was confirmed
    assert run.verdict is not None and run.verdict["outcome"] == "passed", run.verdict


@pytest.mark.slow
def test_time_up_on_a_step_is_incomplete_never_failed_and_the_step_is_kept(
    app: Flask, client: FlaskClient, fixed_challenges: None, limits: Any
) -> None:
    """A person who looks ahead but never turns: the turn step's time runs out; the
    attempt is incomplete at turn_right, the month stays pending, a retry is allowed."""
    limits(guided_step_seconds=6)
    frames = video_frames()
    still_ahead = Video([frames[n] for n in range(82, 92)], VIDEO_FPS)
    link = _link(_member(client))
    run = run_guided(client, {"link_token": link}, still_ahead)
    assert run.verdict is None and run.abandoned is not None
    assert run.abandoned["outcome"] == "incomplete"
    assert run.abandoned["stopped_step"] == "turn_right"
    assert run.abandoned["attempts_left"] == 4
    assert set(run.hints("turn_right")) <= {"turn_more", "wrong_way"}
    attempt = db.session.scalars(select(ProofOfLifeAttempt)).one()
    assert attempt.outcome is Outcome.INCOMPLETE and attempt.stopped_why == "timeout"
    assert _record(link).status is MonthStatus.PENDING
    actions = db.session.scalars(select(AuditEntry.action)).all()
    assert "pol.attempt_incomplete" in actions


@pytest.mark.slow
def test_a_flat_picture_turned_is_never_confirmed(
    app: Flask, client: FlaskClient, fixed_challenges: None, limits: Any
) -> None:
    """The member's photo held up and tilted the way asked: the face step passes (a photo
    looks ahead), the turn is never confirmed (no depth), the time runs out."""
    limits(guided_step_seconds=8)
    picture = canvas(still("lin_manuel_miranda/lin_1.png"))
    poses = [{}] * 6 + [{"yaw": -a} for a in range(5, 60, 5)] + [{"yaw": -55}] * 6
    images: list[Image.Image] = [tilted(picture, **pose) for pose in poses]
    run = run_guided(client, {"link_token": _link(_member(client))}, Video(images, 4))
    assert run.verdict is None or run.verdict["outcome"] != "passed"
    assert run.abandoned is not None and run.abandoned["stopped_step"] == "turn_right"


def test_batches_out_of_step_or_with_a_wrong_nonce_are_refused_and_change_nothing(
    app: Flask, client: FlaskClient, fixed_challenges: None, member_video: Video
) -> None:
    link = _link(_member(client))
    session = client.post(f"{API}/sessions", json={"link_token": link, "guided": True})
    body = session.get_json()
    url = f"{API}/sessions/{body['session_id']}/steps/%d/frames"
    from tests.guided_client import encode

    frame = encode(member_video.at(0), (480, 360), 70)

    def send(step: int, nonce: str, count: int = 1) -> Any:
        return client.post(
            url % step,
            data={
                "nonce": nonce,
                "frames": [(io.BytesIO(frame), f"f{i}.jpg", "image/jpeg") for i in range(count)],
            },
            content_type="multipart/form-data",
        )

    ahead = send(1, body["nonce"])
    assert ahead.status_code == 409
    assert ahead.get_json()["error"]["code"] == "step_mismatch"
    assert ahead.get_json()["error"]["details"]["current_step"] == 0
    assert send(0, "0" * 32).status_code == 403
    too_many = send(0, body["nonce"], count=9)
    assert too_many.status_code == 422
    assert db.session.scalars(select(ProofOfLifeFrame)).all() == []
    # A one-shot session takes no batches, and a guided one no one-shot frames.
    one_shot = client.post(f"{API}/sessions", json={"link_token": link}).get_json()
    assert one_shot["guided"] is None
    refused = client.post(
        f"{API}/sessions/{one_shot['session_id']}/steps/0/frames",
        data={"nonce": one_shot["nonce"], "frames": [(io.BytesIO(frame), "f.jpg", "image/jpeg")]},
        content_type="multipart/form-data",
    )
    assert refused.status_code == 409 and refused.get_json()["error"]["code"] == "not_guided"


def test_asking_for_help_sends_the_month_to_a_caseworker_at_once(
    app: Flask, client: FlaskClient
) -> None:
    link = _link(_member(client, enrolled=False))
    bad = client.post(f"{API}/assistance", json={"link_token": link, "need": "fly"})
    assert bad.status_code == 422
    answer = client.post(f"{API}/assistance", json={"link_token": link, "need": "cannot_move"})
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["status"] == "review"
    record = _record(link)
    assert record.status is MonthStatus.REVIEW and record.assistance_need == "cannot_move"
    status = client.get(f"{API}/status?link_token={link}").get_json()
    assert status["status"] == "review"
    # The caseworker's tablet lists the visit at once, and says why.
    from tests.mobile_api.test_api_devices import bearer, device_login

    tablet = device_login(client).get_json()["token"]
    items = client.get("/api/v1/visits/due", headers=bearer(tablet)).get_json()["items"]
    assisted = [i for i in items if i["kind"] == "assisted_proof_of_life"]
    assert len(assisted) == 1
    assert set(assisted[0]["reasons"]) == {"review", "assistance_requested"}
    unknown = client.post(f"{API}/assistance", json={"link_token": "x" * 24, "need": "other"})
    assert unknown.status_code == 404


def _attempt(record: ProofOfLifeMonth, now: Any, outcome: Outcome | None, **fields: Any) -> None:
    from server.proof_of_life import service as pol

    attempt = pol.start_session(record, now=now, guided=True, challenges=CHALLENGES)
    attempt.outcome = outcome
    attempt.submitted_at = now if outcome else None
    for name, value in fields.items():
        setattr(attempt, name, value)
    db.session.commit()


def test_the_campaign_page_shows_who_needed_more_than_one_attempt_and_what_stopped_them(
    app: Flask, client: FlaskClient
) -> None:
    from datetime import UTC, datetime, timedelta

    from server.proof_of_life import service as pol
    from tests import factories
    from tests.conftest import login
    from tests.proof_of_life.test_proof_of_life_api import get_member, next_month

    month = next_month()
    now = datetime.now(UTC)
    records = []
    for _ in range(3):
        household = factories.make_household(state=CaseState.APPROVED)
        household.members[0].proof_of_life_required = True
        db.session.commit()
        records.append(pol.month_record(get_member(household.members[0].id), month))
    db.session.commit()
    slow, quick, gone = records
    _attempt(slow, now, Outcome.INCOMPLETE, stopped_step="turn_right", stopped_why="timeout")
    _attempt(slow, now, Outcome.FAILED, reasons="challenge_not_done", stopped_step="verdict")
    _attempt(slow, now, Outcome.PASSED)
    _attempt(quick, now, Outcome.PASSED)
    _attempt(gone, now - timedelta(hours=1), None)  # the page was closed: never finished

    login(client, "supervisor")
    html = client.get(f"/campaign?month={month}").get_data(as_text=True)

    def figure(name: str) -> str:
        found = re.search(rf'data-figure="{name}">([^<]*)<', html)
        assert found, name
        return found.group(1).strip()

    assert figure("members") == "3" and figure("passed") == "2"
    assert figure("passed_first") == "1" and figure("passed_later") == "1"
    assert figure("needed_more") == "50.0 %"
    rows = dict(re.findall(r'data-stop="([a-z_]+)"><td>[^<]*</td>\s*<td>(\d+)</td>', html))
    assert rows == {"turn_right": "1", "challenge_not_done": "1", "left_page": "0"}
    assert re.search(r'data-stop="left_page"><td>[^<]*</td>\s*<td>0</td><td>1</td>', html)
