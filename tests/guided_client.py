"""A guided proof-of-life client that plays a recorded video as the page plays the camera:
for each step it takes ``batch_frames`` frames every ``interval_ms`` from the video at the
current time (the video loops, as Chromium's fake camera does), sends the batch, reads the
answer, and goes on until the step is confirmed or its time is up (then it gives up, as
the page does). Time is simulated: capturing a frame moves the clock by the step's
interval, each batch's round trip by ``latency_ms``. Used by tests and benchmarks.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from flask.testing import FlaskClient
from PIL import Image

API = "/api/v1/proof-of-life"


@dataclass
class Video:
    frames: Sequence[Image.Image]
    fps: float

    def at(self, ms: float) -> Image.Image:
        return self.frames[int(ms * self.fps / 1000) % len(self.frames)]


@dataclass
class Exchange:
    step: int
    name: str
    state: str
    hint: str | None
    progress: float
    at_ms: float
    frames: int
    bytes: int


@dataclass
class GuidedRun:
    session: dict[str, Any]
    exchanges: list[Exchange] = field(default_factory=list)
    verdict: dict[str, Any] | None = None
    abandoned: dict[str, Any] | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def bytes_sent(self) -> int:
        return sum(e.bytes for e in self.exchanges)

    @property
    def frames_sent(self) -> int:
        return sum(e.frames for e in self.exchanges)

    def hints(self, name: str | None = None) -> list[str]:
        return [e.hint for e in self.exchanges if e.hint and (name is None or e.name == name)]


def encode(image: Image.Image, size: tuple[int, int], quality: int) -> bytes:
    """The page's canvas: the camera image scaled to cover ``size``, centre-cropped."""
    scale = max(size[0] / image.width, size[1] / image.height)
    resized = image.convert("RGB").resize(
        (max(size[0], round(image.width * scale)), max(size[1], round(image.height * scale))),
        Image.Resampling.BILINEAR,
    )
    left = (resized.width - size[0]) // 2
    top = (resized.height - size[1]) // 2
    frame = resized.crop((left, top, left + size[0], top + size[1]))
    buffer = io.BytesIO()
    frame.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def run_guided(
    client: FlaskClient,
    start_body: dict[str, Any],
    video: Video,
    *,
    headers: dict[str, str] | None = None,
    latency_ms: float = 300.0,
    size: tuple[int, int] | None = None,
    quality: int = 70,
    start_ms: float = 0.0,
) -> GuidedRun:
    """Start a guided session with ``start_body`` and play ``video`` through it."""
    started = client.post(
        f"{API}/sessions", json={**start_body, "guided": True}, headers=headers or {}
    )
    assert started.status_code == 201, started.get_json()
    session = started.get_json()
    run = GuidedRun(session)
    guided = session["guided"]
    frame_size = size or (guided["frame"]["width"], guided["frame"]["height"])
    now = start_ms
    step = 0
    steps = guided["steps"]
    while step < len(steps):
        spec = steps[step]
        deadline = now + spec["seconds"] * 1000
        moved_on = False
        while now < deadline:
            images = []
            offsets = []
            for _ in range(spec["batch_frames"]):
                images.append(encode(video.at(now), frame_size, quality))
                offsets.append(int(now - start_ms))
                now += spec["interval_ms"]
            answer = client.post(
                f"{API}/sessions/{session['session_id']}/steps/{step}/frames",
                data={
                    "nonce": session["nonce"],
                    "offsets_ms": json.dumps(offsets),
                    "frames": [
                        (io.BytesIO(data), f"frame_{i:02d}.jpg", "image/jpeg")
                        for i, data in enumerate(images)
                    ],
                },
                headers=headers or {},
                content_type="multipart/form-data",
            )
            now += latency_ms
            body = answer.get_json()
            if answer.status_code != 200:
                run.errors.append({"status": answer.status_code, **body})
                return run
            run.exchanges.append(
                Exchange(
                    step,
                    body["name"],
                    body["state"],
                    body["hint"],
                    body["progress"],
                    now - start_ms,
                    len(images),
                    sum(len(d) for d in images),
                )
            )
            if body["state"] == "finished":
                run.verdict = body["verdict"]
                return run
            if body["state"] == "done":
                step = body["next_step"]
                moved_on = True
                break
        if not moved_on:
            gave_up = client.post(
                f"{API}/sessions/{session['session_id']}/abandon",
                json={"nonce": session["nonce"], "step": step, "why": "timeout"},
                headers=headers or {},
            )
            assert gave_up.status_code == 200, gave_up.get_json()
            run.abandoned = gave_up.get_json()
            return run
    return run
