"""Benchmark: CPU time of one proof-of-life attempt, against a naive pipeline.

An attempt is 10 frames of the live clip (lin_manuel_miranda/live_clip, 640x360 video
frames letterboxed to 640x480 and stored as JPEG quality 90, as a phone page sends
them); the windows start at frames 092, 096, ... 172 in turn, so each repeat judges
another attempt. Both pipelines run in this process on one CPU (the process is pinned
to one core), with the same frames:

- ``verify_frames`` (server/proof_of_life/pipeline.py) with the default ``Thresholds()``,
  the real ``DlibFaceEngine`` (no cache), challenges ``turn_right`` + ``open_mouth``,
  the member template of lin_1.png: decode, hash, HOG + 68 landmarks on every frame,
  liveness geometry, 3 encodings;
- naive: decode each frame with Pillow, then ``face_recognition.face_locations`` (HOG,
  one upsampling, its default) and ``face_recognition.face_encodings`` on every frame.

Each is timed with ``time.process_time`` (CPU of the whole process) after one untimed
warm-up (model loading); the script prints every run, then the medians, the ratio
(target: verify_frames <= 0.35 x naive, and <= 1 s), the CPU spent inside the engine
(detection + landmarks, and encodings) and the process's peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``).

    .venv/bin/python benchmarks/proof_of_life.py [--repeat 5]

A script, not a test: it exits 0 whether or not a target is met.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.pol_frames

from server.faces.engine import DlibFaceEngine, FaceShape
from server.proof_of_life.pipeline import Thresholds, verify_frames
from tests.pol_frames import CLIP_NUMBERS, clip_frame, jpeg, template

FRAMES = 10
TARGET_RATIO = 0.35
TARGET_CPU_S = 1.0


class TimedEngine:
    """The real engine, adding up the CPU time spent in it (no caching)."""

    def __init__(self, engine: DlibFaceEngine) -> None:
        self.engine = engine
        self.model_name = engine.model_name
        self.model_version = engine.model_version
        self.analyse_s = 0.0
        self.encoding_s = 0.0
        self.analyse_calls = 0
        self.encoding_calls = 0

    def analyse(self, rgb: npt.NDArray[np.uint8], *, upsample: int = 0) -> list[FaceShape]:
        started = time.process_time()
        try:
            return self.engine.analyse(rgb, upsample=upsample)
        finally:
            self.analyse_s += time.process_time() - started
            self.analyse_calls += 1

    def detect(
        self, rgb: npt.NDArray[np.uint8], *, upsample: int = 0
    ) -> list[tuple[int, int, int, int]]:
        started = time.process_time()
        try:
            return self.engine.detect(rgb, upsample=upsample)
        finally:
            self.analyse_s += time.process_time() - started
            self.analyse_calls += 1

    def shape_at(self, rgb: npt.NDArray[np.uint8], box: tuple[int, int, int, int]) -> FaceShape:
        started = time.process_time()
        try:
            return self.engine.shape_at(rgb, box)
        finally:
            self.analyse_s += time.process_time() - started

    def encoding(self, rgb: npt.NDArray[np.uint8], face: FaceShape) -> npt.NDArray[np.float64]:
        started = time.process_time()
        try:
            return self.engine.encoding(rgb, face)
        finally:
            self.encoding_s += time.process_time() - started
            self.encoding_calls += 1


def naive(frames: list[bytes]) -> int:
    import face_recognition

    found = 0
    for data in frames:
        with Image.open(io.BytesIO(data)) as img:
            pixels = np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))
        boxes = face_recognition.face_locations(pixels)
        found += len(face_recognition.face_encodings(pixels, boxes))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed attempts per pipeline")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"

    engine = DlibFaceEngine()
    timed = TimedEngine(engine)
    member = [template(engine, "lin_manuel_miranda/lin_1.png")]
    starts = range(0, len(CLIP_NUMBERS) - FRAMES + 1, 1)
    windows = [[jpeg(clip_frame(n)) for n in CLIP_NUMBERS[s : s + FRAMES]] for s in starts]
    size = Image.open(io.BytesIO(windows[0][0])).size
    kib = statistics.mean(len(f) for w in windows for f in w) / 1024
    print(
        f"attempt: {FRAMES} frames of {size[0]}x{size[1]} JPEG (mean {kib:.0f} KiB), "
        f"{cores} core(s), --repeat {args.repeat}"
    )
    thresholds = Thresholds()
    challenges = ["turn_right", "open_mouth"]

    def ours(frames: list[bytes]) -> str:
        verdict = verify_frames(frames, challenges, member, thresholds=thresholds, engine=timed)
        return f"{verdict.outcome} {','.join(verdict.reasons) or '-'}"

    ours(windows[0])  # warm-up: models, first allocations
    naive(windows[0])
    timed.analyse_s = timed.encoding_s = 0.0
    timed.analyse_calls = timed.encoding_calls = 0

    mine_cpu, mine_wall, naive_cpu, naive_wall = [], [], [], []
    print(f"{'run':>4} {'window':>8} {'verify_frames':>14} {'naive':>8}  verdict")
    for run in range(args.repeat):
        frames = windows[run % len(windows)]
        first = CLIP_NUMBERS[run % len(windows)]
        wall, cpu = time.perf_counter(), time.process_time()
        verdict = ours(frames)
        mine_cpu.append(time.process_time() - cpu)
        mine_wall.append(time.perf_counter() - wall)
        wall, cpu = time.perf_counter(), time.process_time()
        found = naive(frames)
        naive_cpu.append(time.process_time() - cpu)
        naive_wall.append(time.perf_counter() - wall)
        print(
            f"{run + 1:>4} {first:>4}-{first + 4 * (FRAMES - 1):<3} {mine_cpu[-1]:>12.3f} s "
            f"{naive_cpu[-1]:>6.3f} s  {verdict} (naive found {found} faces)"
        )
    mine, base = statistics.median(mine_cpu), statistics.median(naive_cpu)
    ratio = mine / base
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print()
    print(f"verify_frames  median CPU {mine:.3f} s  (wall {statistics.median(mine_wall):.3f} s)")
    print(f"naive          median CPU {base:.3f} s  (wall {statistics.median(naive_wall):.3f} s)")
    print(
        f"ratio          {ratio:.2f} x naive  (target <= {TARGET_RATIO}: "
        f"{'met' if ratio <= TARGET_RATIO else 'NOT met'}; <= {TARGET_CPU_S} s: "
        f"{'met' if mine <= TARGET_CPU_S else 'NOT met'})"
    )
    runs = args.repeat
    print(
        f"inside the engine, per attempt: detection + landmarks "
        f"{timed.analyse_s / runs:.3f} s ({timed.analyse_calls / runs:.1f} calls), "
        f"encodings {timed.encoding_s / runs:.3f} s ({timed.encoding_calls / runs:.1f} calls); "
        f"the rest (decode, hash, geometry) "
        f"{mine - (timed.analyse_s + timed.encoding_s) / runs:.3f} s"
    )
    print(f"peak RSS       {rss_mb:.0f} MB (the whole process, both pipelines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
