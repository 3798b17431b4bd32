"""Benchmark: server CPU and bytes sent per guided proof-of-life attempt, against the
one-shot attempt measured in the same run.

The real application (SQLite in a temporary folder, the real dlib engine, no cache) is
driven in this process through its HTTP API with Flask's test client:

- **one-shot** (the baseline): a session, then 10 frames of the live clip (every third
  video frame from 092, 640x480 JPEG quality 90, as the one-shot page sends them) to
  ``/frames``, challenges ``turn_right`` + ``open_mouth``;
- **guided**: ``tests/guided_client.run_guided`` plays the member's part of the whole
  clip (29.97 fps, looping as the fake camera does) into the steps face -> turn_right ->
  open_mouth, batches at the session's interval and size (640x480 JPEG quality 70), 300 ms
  per round trip, each repeat starting at another point of the clip;
- **guided, slow profile**: the same at 320x240 JPEG quality 60 (what the page switches to
  when a batch takes more than 2.5 s to upload): bytes only (the clip's faces are 43 px
  wide there, too small to judge: a phone's selfie face is 100-150 px at that size).

Server CPU is ``time.process_time`` summed over the requests of one attempt (before and
after request hooks), so the client's JPEG encoding is not counted, nor the member's
enrolment (made before the attempt starts). The process is pinned
to one core. Bytes are the frames' JPEG bytes (multipart adds about 150 bytes a frame).

    .venv/bin/python benchmarks/guided.py [--repeat 9]

A script, not a test: it prints the figures and exits 0.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.*

from flask import Flask, g
from flask_migrate import upgrade

from server import create_app
from server.cases.models import CaseState
from server.extensions import db
from server.proof_of_life import service as pol
from server.proof_of_life.models import ProofOfLifeAttempt
from tests import factories
from tests.guided_client import Video, encode, run_guided
from tests.mobile_api.test_api_devices import bearer, device_login
from tests.pol_frames import FACES, VIDEO_FPS, video_frame, video_frames
from tests.proof_of_life.test_proof_of_life_api import get_member, next_month

CHALLENGES = ["turn_right", "open_mouth"]
UPLINKS_KBIT = (20, 40, 100)  # GPRS, a poor EDGE, a fair EDGE uplink


def make_app(folder: Path) -> Flask:
    from tests.conftest import DATA_KEY

    app = create_app(
        {
            "TESTING": True,
            "DATABASE_URL": f"sqlite:///{folder}/bench.sqlite3",
            "SECRET_KEY": "bench-secret-key",
            "DIBAO_DATA_KEY": DATA_KEY,
            "DIBAO_INSTANCE_PATH": str(folder),
            "WTF_CSRF_ENABLED": False,
            "RATELIMIT_ENABLED": False,
        }
    )
    app.config["DIBAO_POL_FIXED_CHALLENGES"] = CHALLENGES
    with app.app_context():
        upgrade(directory=app.extensions["migrate"].directory)
        factories.base_data()  # the tests' areas and users
        db.session.commit()
    cpu: dict[str, float] = {"total": 0.0}

    @app.before_request
    def _start() -> None:
        g.bench_cpu = time.process_time()

    @app.teardown_request
    def _stop(_: BaseException | None) -> None:
        if "bench_cpu" in g:
            cpu["total"] += time.process_time() - g.bench_cpu

    app.extensions["bench.cpu"] = cpu
    return app


def enrolled_member(app: Flask, client: Any, photo: str = "lin_manuel_miranda/lin_1.png") -> int:
    """A designated member of a household in care, enrolled through the API from
    ``photo`` (a path under tests/data/faces)."""
    with app.test_request_context():
        household = factories.make_household(state=CaseState.APPROVED)
        head = household.members[0]
        head.proof_of_life_required = True
        member_id = head.id
        db.session.commit()
    token = device_login(client).get_json()["token"]
    made = client.post(
        f"/api/v1/members/{member_id}/face-templates",
        data={"photo": (io.BytesIO((FACES / photo).read_bytes()), "photo.jpg", "image/jpeg")},
        headers=bearer(token),
        content_type="multipart/form-data",
    )
    assert made.status_code == 201, made.get_json()
    return member_id


def link_for(app: Flask, member_id: int, month: str) -> str:
    with app.test_request_context():
        record = pol.month_record(get_member(member_id), month)
        link = pol.link_token(record)
        db.session.commit()
    return link


def new_link(app: Flask, client: Any) -> str:
    return link_for(app, enrolled_member(app, client), next_month())


def one_shot(app: Flask, client: Any, start: int) -> tuple[float, str]:
    link = new_link(app, client)
    frames = [encode(video_frame(start + 3 * i), (640, 480), 90) for i in range(10)]
    cpu = app.extensions["bench.cpu"]
    before = cpu["total"]
    session = client.post("/api/v1/proof-of-life/sessions", json={"link_token": link})
    body = session.get_json()
    assert session.status_code == 201, body
    answer = client.post(
        f"/api/v1/proof-of-life/sessions/{body['session_id']}/frames",
        data={
            "nonce": body["nonce"],
            "frames": [
                (io.BytesIO(f), f"frame_{i:02d}.jpg", "image/jpeg") for i, f in enumerate(frames)
            ],
        },
        content_type="multipart/form-data",
    )
    return cpu["total"] - before, answer.get_json().get("outcome", "?")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    frames = video_frames()
    with tempfile.TemporaryDirectory() as folder:
        app = make_app(Path(folder))
        client = app.test_client()
        # Warm-up: model loading, first queries.
        one_shot(app, client, 92)
        cpu = app.extensions["bench.cpu"]
        shots, guided, slow = [], [], []
        for repeat in range(args.repeat):
            seconds, outcome = one_shot(app, client, 92 + 2 * repeat)
            shots.append(seconds)
            print(f"one-shot  #{repeat}: {seconds:.3f} s CPU, {outcome}")
            start = 82 + 3 * repeat
            video = Video(frames[start:212], VIDEO_FPS)
            link = new_link(app, client)  # the member's enrolment is not the attempt's
            before = cpu["total"]
            run = run_guided(client, {"link_token": link}, video)
            used = cpu["total"] - before
            outcome = (run.verdict or {}).get("outcome", "incomplete")
            guided.append((used, run.bytes_sent, run.frames_sent, len(run.exchanges), outcome))
            print(
                f"guided    #{repeat}: {used:.3f} s CPU, {run.frames_sent} frames in "
                f"{len(run.exchanges)} batches, {run.bytes_sent} bytes, {outcome}"
            )
            run = run_guided(
                client,
                {"link_token": new_link(app, client)},
                video,
                size=(320, 240),
                quality=60,
            )
            slow.append((run.bytes_sent, run.frames_sent, len(run.exchanges)))
            print(f"slow      #{repeat}: {run.frames_sent} frames, {run.bytes_sent} bytes")
        with app.app_context():
            kinds = db.session.query(ProofOfLifeAttempt.guided).count()
        base = statistics.median(shots)
        cpu_guided = statistics.median(g[0] for g in guided)
        print()
        print(f"attempts recorded: {kinds}")
        print(f"one-shot server CPU per attempt, median: {base:.3f} s")
        print(
            f"guided server CPU per attempt, median:   {cpu_guided:.3f} s "
            f"({cpu_guided / base:.2f}x one-shot)"
        )
        # Each guided attempt against the one-shot measured just before it: the
        # machine's slow spells fall on both.
        paired = statistics.median(g[0] / shot for g, shot in zip(guided, shots, strict=True))
        print(f"guided / one-shot, median of the {len(shots)} pairs: {paired:.2f}x")
        per_frame = statistics.median(g[1] / g[2] for g in guided)
        print(
            "guided 640x480 q70: median "
            f"{statistics.median(g[1] for g in guided):.0f} bytes per attempt, "
            f"{statistics.median(g[2] for g in guided):.0f} frames, "
            f"{statistics.median(g[3] for g in guided):.0f} batches, {per_frame:.0f} bytes a frame"
        )
        slow_attempt = statistics.median(s[0] for s in slow)
        slow_frame = statistics.median(s[0] / s[1] for s in slow)
        print(
            f"guided 320x240 q60: median {slow_attempt:.0f} bytes per attempt, "
            f"{slow_frame:.0f} bytes a frame"
        )
        for kbit in UPLINKS_KBIT:
            rate = kbit * 1000 / 8
            batch = 3 * (per_frame + 150)
            slow_batch = 3 * (slow_frame + 150)
            print(
                f"uplink {kbit:>3} kbit/s: a 3-frame batch takes {batch / rate:.1f} s at "
                f"640x480, {slow_batch / rate:.1f} s at 320x240; a blink batch (6) "
                f"{2 * slow_batch / rate:.1f} s at 320x240"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
