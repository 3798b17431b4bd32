"""Benchmark: how often guided proof of life gets it right, bona fide and attacks.

Every attempt goes through the real application's HTTP API (Flask test client, SQLite in
a temporary folder, the real dlib engine) with ``tests/guided_client.run_guided``, which
plays a video into the guided steps as the page plays the camera (the video loops, as
Chromium's fake camera does; 300 ms per round trip). Each attempt is a new member enrolled
from the photo of the person the attacker holds (lin_1.png for the clip).

Bona fide (BPCER: attempts that do not pass at the first try; ``review`` counted apart):

- ``genuine``: the member's part of the clip (video frames 82-211), every challenge pair
  the clip shows (a turn either way and an open mouth, in both orders), from several
  starting points;
- ``genuine_modest``: a modest mover: he looks ahead, turns only part of the way (to a
  yaw change of about 0.25-0.30 from the start: frames 86 -> 100-104 and back), and
  opens his mouth as in the clip; nothing bigger ever comes;
- ``genuine_dim``: the clip at half light (gamma 1.6, levels x0.55, sensor noise);
- ``genuine_small``: the clip sent at 320x240 (the page's slow-uplink profile; his face is
  then about 43 px, below what the face step accepts: this row shows the limit).

Attacks (APCER: attacks that pass), challenges as asked:

- ``print_tilted``: lin_1.png as a flat picture, tilted towards the turn asked, up to
  25-55 degrees, and held;
- ``static``: one still sent again and again;
- ``impostor``: the clip against another person's template (obama, biden, alex);
- ``replay``: the frames of a passing attempt sent again (same bytes).

    .venv/bin/python benchmarks/guided_rates.py [--quick]

A script, not a test: it prints the figures and exits 0.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.*

from benchmarks.guided import enrolled_member, link_for, make_app
from tests.guided_client import Video, run_guided
from tests.pol_frames import VIDEO_FPS, canvas, still, tilted, video_frames
from tests.proof_of_life.test_proof_of_life_api import next_month

PHOTOS = {
    "lin": "lin_manuel_miranda/lin_1.png",
    "obama": "obama/obama_1.jpg",
    "biden": "biden/biden_1.jpg",
    "alex": "alex_lacamoire/alex_1.jpg",
}
PAIRS = (
    ["turn_right", "open_mouth"],
    ["open_mouth", "turn_right"],
    ["turn_left", "open_mouth"],
    ["open_mouth", "turn_left"],
)


@dataclass
class Row:
    kind: str
    label: str
    outcome: str  # passed, failed, review, incomplete, error
    detail: str
    frames: int


def enrolled_link(app: Any, client: Any, person: str) -> str:
    return link_for(app, enrolled_member(app, client, PHOTOS[person]), next_month())


def dim(image: Image.Image, seed: int) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    pixels = 255.0 * 0.55 * pixels**1.6
    noise = np.random.default_rng(seed).normal(0, 4.0, pixels.shape)
    return Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))


def attempt(
    app: Any,
    client: Any,
    kind: str,
    label: str,
    video: Video,
    pair: list[str],
    person: str = "lin",
    size: tuple[int, int] | None = None,
    link: str | None = None,
) -> tuple[Row, Any]:
    app.config["DIBAO_POL_FIXED_CHALLENGES"] = pair
    link = link or enrolled_link(app, client, person)
    run = run_guided(client, {"link_token": link}, video, size=size)
    if run.errors:
        last = run.exchanges[-1] if run.exchanges else None
        where = f" at {last.name} ({last.hint}, {last.progress})" if last else ""
        outcome, detail = "error", run.errors[0].get("error", {}).get("code", "?") + where
    elif run.verdict is not None:
        outcome, detail = run.verdict["outcome"], ",".join(run.verdict["reasons"])
    else:
        outcome = "incomplete"
        detail = f"time up at {(run.abandoned or {}).get('stopped_step')}"
    return Row(kind, f"{label} {pair}", outcome, detail, run.frames_sent), run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer starting points")
    args = parser.parse_args()
    started = time.perf_counter()
    frames = video_frames()
    member = frames[82:212]
    starts = (0, 14) if args.quick else (0, 7, 14, 21, 40)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as folder:
        app = make_app(Path(folder))
        client = app.test_client()
        for start in starts:
            video = Video(member[start:] + member[:start], VIDEO_FPS)
            for pair in PAIRS:
                rows.append(attempt(app, client, "genuine", f"start {82 + start}", video, pair)[0])
        modest = [frames[n] for n in [*range(82, 92), *range(86, 103), *range(103, 85, -1)]]
        mouth = [frames[n] for n in range(104, 136)]
        for pair in (["turn_right", "open_mouth"], ["open_mouth", "turn_right"]):
            video = Video(modest + mouth + modest, VIDEO_FPS)
            rows.append(attempt(app, client, "genuine_modest", "part turn", video, pair)[0])
        for start in starts[:2]:
            dimmed = [dim(f, i) for i, f in enumerate(member[start:] + member[:start])]
            video = Video(dimmed, VIDEO_FPS)
            for pair in PAIRS[:2]:
                rows.append(
                    attempt(app, client, "genuine_dim", f"start {82 + start}", video, pair)[0]
                )
        video = Video(member, VIDEO_FPS)
        rows.append(
            attempt(app, client, "genuine_small", "320x240", video, PAIRS[0], size=(320, 240))[0]
        )

        # Attacks.
        picture = canvas(still(PHOTOS["lin"]))
        for top in (25, 40, 55) if not args.quick else (40,):
            for sign, pair in (
                (-1, ["turn_right", "open_mouth"]),
                (1, ["turn_left", "open_mouth"]),
            ):
                poses = [{}] * 6 + [{"yaw": sign * a} for a in range(5, top + 1, 5)]
                poses += [{"yaw": sign * top}] * 8
                video = Video([tilted(picture, **p) for p in poses], 4)
                rows.append(attempt(app, client, "print_tilted", f"to {top} deg", video, pair)[0])
                # Swung from one side to the other: the turn measure credits the swing.
                poses = [{}] * 6 + [{"yaw": -sign * a} for a in range(5, top + 1, 5)]
                poses += [{"yaw": sign * a} for a in range(-top, top + 1, 5)]
                poses += [{"yaw": sign * top}] * 4
                video = Video([tilted(picture, **p) for p in poses], 4)
                label = f"+-{top} deg"
                rows.append(attempt(app, client, "print_swung", label, video, pair)[0])
        video = Video([picture], 1)
        rows.append(attempt(app, client, "static", "lin_1.png", video, PAIRS[0])[0])
        for person in ("obama", "biden", "alex"):
            video = Video(member, VIDEO_FPS)
            rows.append(
                attempt(app, client, "impostor", f"clip vs {person}", video, PAIRS[0], person)[0]
            )
        # The frames of a passing attempt sent again for the same member next month:
        # the same video from the same point gives the same frames, byte for byte.
        month = next_month()
        after = f"{int(month[:4]) + (month[5:] == '12'):04d}-{int(month[5:]) % 12 + 1:02d}"
        for pair in PAIRS[:2]:
            member_id = enrolled_member(app, client, PHOTOS["lin"])
            video = Video(member, VIDEO_FPS)
            first, _ = attempt(
                app,
                client,
                "replay_source",
                "clip",
                video,
                pair,
                link=link_for(app, member_id, month),
            )
            rows.append(first)
            again, _ = attempt(
                app,
                client,
                "replay",
                "clip again",
                video,
                pair,
                link=link_for(app, member_id, after),
            )
            rows.append(again)

    by_kind: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        by_kind[row.kind].append(row)
        print(f"{row.kind:15} {row.label:45} {row.outcome:10} {row.detail} ({row.frames} frames)")
    print()
    print(f"{'kind':15} {'n':>3} {'passed':>6} {'review':>6} {'other':>6}  rate")
    for kind, kind_rows in by_kind.items():
        counts = Counter(r.outcome for r in kind_rows)
        n = len(kind_rows)
        passed = counts["passed"]
        if kind.startswith("genuine"):
            rate = f"BPCER {100 * (n - passed) / n:.0f} %"
        elif kind == "replay_source":
            rate = "(sources for replay)"
        else:
            rate = f"APCER {100 * passed / n:.0f} %"
        review = counts["review"]
        print(f"{kind:15} {n:>3} {passed:>6} {review:>6} {n - passed - review:>6}  {rate}")
    stops = Counter(
        r.detail for r in rows if r.kind.startswith("genuine") and r.outcome != "passed"
    )
    print("what stopped genuine attempts:", dict(stops))
    print(f"{len(rows)} attempts in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
