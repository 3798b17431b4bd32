"""Proof of life end to end over the API, judged by the real pipeline on real faces:
a member enrolled from lin_1.png sends frames of the live clip (a real head turn and
an open mouth), or a still, or the same frames again."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from server.audit.models import AuditEntry
from server.cases.models import CaseState
from server.extensions import db
from server.proof_of_life import service as pol
from server.proof_of_life.models import MonthStatus, ProofOfLifeAttempt, ProofOfLifeMonth
from tests import factories
from tests.mobile_api.test_api_devices import bearer, device_login
from tests.pol_frames import FACES, canvas, clip_frame, clip_numbers, sequence, still
from tests.proof_of_life.test_proof_of_life_api import get_member, next_month

GENUINE = ["turn_right", "open_mouth"]  # what frames 092-136 of the live clip show


@pytest.fixture(scope="module")
def genuine_frames() -> list[bytes]:
    return sequence([clip_frame(n) for n in clip_numbers(92, 136)])


@pytest.fixture
def fixed_challenges(app: Flask) -> Iterator[None]:
    app.config["DIBAO_POL_FIXED_CHALLENGES"] = GENUINE
    yield
    app.config["DIBAO_POL_FIXED_CHALLENGES"] = None


def _member(client: FlaskClient, *, enrolled: bool = True) -> int:
    household = factories.make_household(state=CaseState.APPROVED)
    head = household.members[0]
    head.proof_of_life_required = True
    member_id = head.id
    db.session.commit()
    if enrolled:
        token = device_login(client).get_json()["token"]
        made = client.post(
            f"/api/v1/members/{member_id}/face-templates",
            data={
                "photo": (
                    io.BytesIO((FACES / "lin_manuel_miranda" / "lin_1.png").read_bytes()),
                    "lin.png",
                    "image/png",
                )
            },
            headers=bearer(token),
            content_type="multipart/form-data",
        )
        assert made.status_code == 201, made.get_json()
    return member_id


def _link(member_id: int, month: str | None = None) -> str:
    record = pol.month_record(get_member(member_id), month or next_month())
    token = pol.link_token(record)
    db.session.commit()
    return token


def _attempt(client: FlaskClient, link: str, frames: list[bytes]) -> tuple[dict[str, Any], Any]:
    session = client.post("/api/v1/proof-of-life/sessions", json={"link_token": link})
    assert session.status_code == 201, session.get_json()
    body = session.get_json()
    answer = client.post(
        f"/api/v1/proof-of-life/sessions/{body['session_id']}/frames",
        data={
            "nonce": body["nonce"],
            "offsets_ms": json.dumps([i * 300 for i in range(len(frames))]),
            "frames": [(io.BytesIO(f), f"{i}.jpg", "image/jpeg") for i, f in enumerate(frames)],
        },
        content_type="multipart/form-data",
    )
    return body, answer


@pytest.mark.slow
def test_a_live_person_passes_and_everything_is_recorded(
    app: Flask, client: FlaskClient, genuine_frames: list[bytes], fixed_challenges: None
) -> None:
    member_id = _member(client)
    link = _link(member_id)
    session, answer = _attempt(client, link, genuine_frames)
    assert session["challenges"] == GENUINE
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert body["outcome"] == "passed" and body["reasons"] == []
    assert body["attempts_left"] == 4

    attempt = db.session.scalar(
        select(ProofOfLifeAttempt).where(ProofOfLifeAttempt.session_id == session["session_id"])
    )
    assert attempt is not None
    assert attempt.distance is not None and attempt.distance < 0.55
    assert attempt.model_name == "dlib_face_recognition_resnet_model_v1"
    assert attempt.model_version and "dlib" in attempt.model_version
    measurements = json.loads(attempt.measurements or "{}")
    assert measurements["challenge_1"] == "turn_right"
    assert measurements["challenge_2_status"] == "done"
    assert len(json.loads(attempt.frame_hashes or "[]")) == 12
    assert [f.position for f in attempt.frames] == list(range(12))
    assert [f.offset_ms for f in attempt.frames][:3] == [0, 300, 600]
    store = app.extensions["dibao.blobs"]
    assert all(
        store.path(f.sha256).read_bytes() == genuine_frames[f.position] for f in attempt.frames
    )
    record = db.session.get(ProofOfLifeMonth, attempt.month_id)
    assert record is not None and record.status is MonthStatus.PASSED
    judged = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "pol.frames_judged"))
    assert judged is not None and judged.details["outcome"] == "passed"
    # Nothing personal in the audit record or the measurements.
    name = get_member(member_id).name
    assert name not in json.dumps(judged.details, ensure_ascii=False)
    assert name not in (attempt.measurements or "")

    status = client.get(f"/api/v1/proof-of-life/status?link_token={link}").get_json()
    assert status["status"] == "passed"
    again = client.post("/api/v1/proof-of-life/sessions", json={"link_token": link})
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "already_passed"
    # The session is spent.
    reuse = client.post(
        f"/api/v1/proof-of-life/sessions/{session['session_id']}/frames",
        data={
            "nonce": session["nonce"],
            "frames": [(io.BytesIO(b"x"), f"{i}.jpg") for i in range(6)],
        },
        content_type="multipart/form-data",
    )
    assert reuse.status_code == 409 and reuse.get_json()["error"]["code"] == "session_used"


@pytest.mark.slow
def test_the_same_frames_sent_again_next_month_are_a_replay(
    client: FlaskClient, genuine_frames: list[bytes], fixed_challenges: None
) -> None:
    member_id = _member(client)
    _, first = _attempt(client, _link(member_id), genuine_frames)
    assert first.get_json()["outcome"] == "passed"
    later = next_month()
    year, number = int(later[:4]), int(later[5:])
    following = f"{year + (number == 12):04d}-{number % 12 + 1:02d}"
    _, replay = _attempt(client, _link(member_id, following), genuine_frames)
    body = replay.get_json()
    assert body["outcome"] == "failed" and "replayed_frames" in body["reasons"]
    assert body["attempts_left"] == 4


@pytest.mark.slow
def test_a_still_sent_again_fails_and_can_be_retried(
    client: FlaskClient, fixed_challenges: None
) -> None:
    member_id = _member(client)
    photo = canvas(still("lin_manuel_miranda/lin_1.png"))
    _, answer = _attempt(client, _link(member_id), sequence([photo] * 10))
    body = answer.get_json()
    assert body["outcome"] == "failed"
    assert "static_frames" in body["reasons"]
    assert body["attempts_left"] == 4
    record = db.session.scalar(select(ProofOfLifeMonth))
    assert record is not None and record.status is MonthStatus.PENDING  # never failed by itself


def test_a_member_nobody_enrolled_goes_to_a_person(
    client: FlaskClient, genuine_frames: list[bytes], fixed_challenges: None
) -> None:
    member_id = _member(client, enrolled=False)
    _, answer = _attempt(client, _link(member_id), genuine_frames)
    body = answer.get_json()
    assert body["outcome"] == "review" and body["reasons"] == ["no_template"]
    record = db.session.scalar(select(ProofOfLifeMonth))
    assert record is not None and record.status is MonthStatus.REVIEW


@pytest.mark.slow
def test_the_months_last_failed_attempt_is_handed_to_a_person(
    app: Flask, client: FlaskClient, fixed_challenges: None
) -> None:
    import dataclasses

    original = app.config["REGION"]
    app.config["REGION"] = dataclasses.replace(
        original, proof_of_life=dataclasses.replace(original.proof_of_life, attempts_per_month=1)
    )
    try:
        member_id = _member(client)
        photo = canvas(still("lin_manuel_miranda/lin_1.png"))
        _, answer = _attempt(client, _link(member_id), sequence([photo] * 8))
    finally:
        app.config["REGION"] = original
    body = answer.get_json()
    assert body["outcome"] == "review" and "static_frames" in body["reasons"]
    assert body["attempts_left"] == 0
    record = db.session.scalar(select(ProofOfLifeMonth))
    assert record is not None and record.status is MonthStatus.REVIEW
