"""Benchmark: how often proof of life gets it right on the shared test images.

Builds every attempt it can from tests/data/faces and runs
``server.proof_of_life.pipeline.verify_frames`` (default ``Thresholds()``) on each:

Bona fide attempts (BPCER: genuine attempts that do not pass; ``review`` is counted
apart from ``failed``): windows of the live clip, 640x480 JPEGs, whose ground truth comes
from the clip itself (turns to the person's right 092->132 and 180->204, to their left
136->160, mouth wide open at 132, speaking at 196), member template lin_1.png.

- ``genuine_mouth``: a turn and open_mouth, in the order the clip shows them, several
  start and end frames;
- ``genuine_blink``: a turn and a blink in both orders: a synthetic blink (tests/
  pol_frames.py ``blinked``, upper lids pulled 90 % of the way down) on one frame before
  or after the turn, every candidate frame in turn. The clip's faces are about 90 px
  wide (eyes 12 px): dlib follows the synthetic lid on some frames only, so this row
  measures the synthetic blink as much as the detector.

Attacks (APCER per type: attacks that pass), each against the template of the person
shown (the attacker holds the member's photo or video), challenges drawn at random
(seeded) as the server draws them, one turn and one of blink / open_mouth:

- ``static``: one still sent 10 times;
- ``print_planar``: a still moved as a flat picture in front of the camera (pinhole
  camera f = 500 px; yaw, pitch, roll, zoom ramps), 10 frames; the turn asked is the one
  the picture's yaw proxy moves towards (the attacker sees the challenge and tilts that
  way: his best case), the other challenge random;
- ``print_in_plane``: the same with roll and zoom only, no tilt;
- ``print_two_step``: the attacker's best try at both challenges with a picture: nodded
  backwards (the eyes look shorter: a fake blink) and turned, in the order asked;
- ``second_person``: group photos, and the clip with another face pasted beside the
  member's;
- ``impostor_live``: the passing genuine attempts checked against the templates of
  another person (obama, biden, alex);
- ``replay``: the passing genuine attempts sent again (the same bytes, and re-encoded at
  JPEG quality 75) with the first sending's hashes as ``seen_hashes``;
- ``wrong_order``: the passing genuine attempts with their two challenges asked the
  other way round (only where each shows once);
- ``missing_challenge``: the passing genuine attempts asked for a challenge the clip
  does not show there.

Then the measured distributions: face distances (genuine / impostor, per attempt and per
frame, stills against stills), planar residual and parallax ratio (genuine turns against
prints), EAR baselines and dips, yaw-proxy ranges, MAR rises.

    .venv/bin/python benchmarks/liveness_rates.py [--seed 7] [--quick]

A script, not a test: it prints figures and exits 0.
"""

from __future__ import annotations

import argparse
import io
import random
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.pol_frames

from server.faces.engine import FaceShape
from server.proof_of_life.analysis import yaw_proxy
from server.proof_of_life.pipeline import Thresholds, Verdict, verify_frames
from tests.pol_frames import (
    CLIP_NUMBERS,
    CachingEngine,
    canvas,
    clip_attempt,
    clip_frame,
    clip_numbers,
    jpeg,
    rgb,
    sequence,
    still,
    template,
    tilt_ramp,
    tilted,
)

PEOPLE = {
    "lin": ["lin_manuel_miranda/lin_1.png"],
    "obama": [
        "obama/obama_1.jpg",
        "obama/obama_2.jpg",
        "obama/obama_3.jpg",
        "obama/obama_4.jpg",
        "obama/obama_480p.jpg",
    ],
    "biden": ["biden/biden_1.jpg", "biden/biden_2.jpg"],
    "alex": ["alex_lacamoire/alex_1.jpg", "alex_lacamoire/alex_2.jpg"],
}
PRINT_STILLS = [
    ("lin", "lin_manuel_miranda/lin_1.png"),
    ("obama", "obama/obama_1.jpg"),
    ("obama", "obama/obama_2.jpg"),
    ("obama", "obama/obama_480p.jpg"),
    ("biden", "biden/biden_1.jpg"),
    ("biden", "biden/biden_2.jpg"),
    ("alex", "alex_lacamoire/alex_1.jpg"),
    ("alex", "alex_lacamoire/alex_2.jpg"),
    ("lin", "lin_manuel_miranda/live_clip/frame_100.jpg"),
    ("lin", "lin_manuel_miranda/live_clip/frame_148.jpg"),
    ("lin", "lin_manuel_miranda/live_clip/frame_180.jpg"),
]
TILTS: list[dict[str, float]] = [
    {"yaw": 25},
    {"yaw": -25},
    {"yaw": 40},
    {"yaw": -40},
    {"yaw": 50},
    {"yaw": -50},
    {"yaw": 30, "pitch": 20},
    {"yaw": -30, "roll": 15, "scale": 1.2},
    {"yaw": 45, "pitch": -20, "scale": 1.1},
    {"pitch": 35},
    {"pitch": -35, "yaw": 15},
]
IN_PLANE: list[dict[str, float]] = [
    {"roll": 20, "scale": 0.8},
    {"roll": -25, "scale": 1.25},
]
OTHERS = ("blink", "open_mouth")


@dataclass
class Attempt:
    kind: str
    label: str
    frames: list[bytes]
    challenges: list[str]
    person: str  # whose templates the attempt is checked against
    absent: tuple[str, ...] = ()  # challenges the frames do not show (ground truth)
    seen: tuple[str, ...] = ()  # hashes of earlier attempts
    reorderable: bool = True  # each challenge shows once: asking them swapped is an attack


@dataclass
class Result:
    attempt: Attempt
    verdict: Verdict


# --------------------------------------------------------------------------- attempts


def genuine_attempts(engine: CachingEngine, quick: bool) -> list[Attempt]:
    """Live-clip windows with the challenges they really show (see the docstring)."""
    out: list[Attempt] = []

    def add(
        label: str,
        numbers: Sequence[int],
        challenges: list[str],
        absent: tuple[str, ...],
        blink_at: int | None = None,
        reorderable: bool = True,
    ) -> None:
        frames = clip_attempt(engine, numbers, blink_at=blink_at)
        kind = "genuine_blink" if blink_at is not None else "genuine_mouth"
        attempt = Attempt(kind, label, frames, challenges, "lin", absent)
        attempt.reorderable = reorderable
        out.append(attempt)

    for first in (92, 96):
        for last in (132, 136):
            numbers = clip_numbers(first, last)
            add(f"R1 {first}-{last}", numbers, ["turn_right", "open_mouth"], ("turn_left", "blink"))
    for first in (124, 128):
        for last in (156, 160, 164):
            numbers = clip_numbers(first, last)
            # He speaks at 164 (the mouth opens again): no single order to swap there.
            label = f"M132+L1 {first}-{last}"
            challenges = ["open_mouth", "turn_left"]
            add(label, numbers, challenges, ("blink",), reorderable=last < 164)
    numbers = clip_numbers(180, 208)
    add("M196+R2 180-208", numbers, ["open_mouth", "turn_right"], ("turn_left", "blink"))
    blink_cases: list[tuple[str, int, int, list[str], tuple[int, ...], str]] = [
        ("R1", 92, 128, ["blink", "turn_right"], (96, 100, 104), "turn_left"),
        ("R1", 92, 136, ["turn_right", "blink"], (120, 124, 128, 132, 136), "turn_left"),
        ("L1", 140, 172, ["blink", "turn_left"], (144, 148), "turn_right"),
        ("L1", 140, 172, ["turn_left", "blink"], (156, 160, 164, 168, 172), "turn_right"),
        ("R2", 180, 208, ["blink", "turn_right"], (184, 188, 192, 196, 200), "turn_left"),
        ("R2", 176, 208, ["turn_right", "blink"], (208,), "turn_left"),
    ]
    for name, first, last, challenges, blinks, absent in blink_cases:
        for blink in blinks[:1] if quick else blinks:
            label = f"{name}+blink@{blink} {first}-{last}"
            add(label, clip_numbers(first, last), challenges, (absent,), blink)
    return out


def random_pair(rng: random.Random) -> list[str]:
    """Two challenges as the server draws them: one turn, one of blink / open_mouth."""
    pair = [rng.choice(("turn_left", "turn_right")), rng.choice(OTHERS)]
    rng.shuffle(pair)
    return pair


def _largest_face(image: Image.Image) -> FaceShape | None:
    faces = ENGINE.analyse(rgb(image)) or ENGINE.analyse(rgb(image), upsample=1)
    return max(faces, key=lambda f: f.area) if faces else None


def print_attempts(rng: random.Random, engine: CachingEngine, quick: bool) -> list[Attempt]:
    out: list[Attempt] = []
    stills = PRINT_STILLS[:3] if quick else PRINT_STILLS
    for person, path in stills:
        picture = canvas(still(path))
        for kind, poses in (("print_planar", TILTS), ("print_in_plane", IN_PLANE)):
            for pose in poses:
                images = tilt_ramp(picture, 10, **pose)
                # The attacker sees the challenge and tilts the picture the way that fakes
                # the asked turn best: the turn asked is the one its yaw proxy moves towards.
                yaws = [yaw_proxy(f.landmarks) for f in map(_largest_face, images) if f]
                moved = yaws[-1] - yaws[0] if len(yaws) >= 2 else 0.0
                pair = ["turn_left" if moved >= 0 else "turn_right", rng.choice(OTHERS)]
                rng.shuffle(pair)
                label = f"{Path(path).stem} {pose}"
                out.append(Attempt(kind, label, sequence(images), pair, person))
    return out


NOD = [{"pitch": p} for p in (0.0, 20.0, 40.0, 55.0, 40.0, 20.0, 0.0)]


def two_step_attempts(quick: bool) -> list[Attempt]:
    """The print attacker's best try at both challenges: a nod backwards (the eyes look
    shorter: a fake blink) and a turn (a yaw tilt, the way that moves the yaw proxy the
    way asked), in the order asked."""
    out: list[Attempt] = []
    stills = PRINT_STILLS[:3] if quick else PRINT_STILLS
    for person, path in stills:
        picture = canvas(still(path))
        for direction in (1.0, -1.0):
            turn_poses = [{"yaw": direction * a} for a in (10.0, 20.0, 30.0, 40.0, 50.0)]
            ends = [_largest_face(tilted(picture, **pose)) for pose in ({}, turn_poses[-2])]
            if ends[0] is None or ends[1] is None:
                continue
            moved = yaw_proxy(ends[1].landmarks) - yaw_proxy(ends[0].landmarks)
            turn = "turn_left" if moved >= 0 else "turn_right"
            for order in (["blink", turn], [turn, "blink"]):
                if order[0] == "blink":
                    poses = NOD + turn_poses
                else:
                    nod = [{"yaw": direction * 50, "pitch": p} for p in (20.0, 40.0, 55.0, 20.0)]
                    poses = [{}, *turn_poses, *nod]
                images = [tilted(picture, **pose) for pose in poses]
                label = f"{Path(path).stem} nod+turn {order}"
                out.append(Attempt("print_two_step", label, sequence(images), order, person))
    return out


def static_attempts(rng: random.Random) -> list[Attempt]:
    out = []
    for person, paths in PEOPLE.items():
        for path in paths[:2]:
            frames = [jpeg(canvas(still(path)))] * 10
            out.append(Attempt("static", Path(path).stem, frames, random_pair(rng), person))
    return out


def second_person_attempts(rng: random.Random, engine: CachingEngine) -> list[Attempt]:
    out = []
    for path, person in (("group/two_people.jpg", "lin"), ("group/obama_and_biden.jpg", "obama")):
        frames = [jpeg(canvas(still(path)))] * 10
        out.append(Attempt("second_person", path, frames, random_pair(rng), person))
    for first, last, challenges in (
        (92, 136, ["turn_right", "open_mouth"]),
        (124, 160, ["open_mouth", "turn_left"]),
    ):
        frames = clip_attempt(engine, clip_numbers(first, last), second_face=True)
        label = f"clip {first}-{last} + pasted face"
        out.append(Attempt("second_person", label, frames, challenges, "lin"))
    return out


def derived_attacks(genuine: list[Result]) -> list[Attempt]:
    """Impostor, replay, wrong-order and missing-challenge attacks built from the genuine
    attempts that passed (one that did not pass proves nothing as an attack)."""
    out = []
    for result in genuine:
        a, verdict = result.attempt, result.verdict
        if verdict.outcome != "passed":
            continue
        for person in ("obama", "biden", "alex"):
            label = f"{a.label} vs {person}"
            out.append(Attempt("impostor_live", label, a.frames, a.challenges, person))
        hashes = tuple(verdict.frame_hashes)
        again = Attempt("replay", f"{a.label} same bytes", a.frames, a.challenges, "lin")
        again.seen = hashes
        reencoded = [jpeg(Image.open(io.BytesIO(f)), 75) for f in a.frames]
        label = f"{a.label} re-encoded q75"
        out.append(again)
        out.append(Attempt("replay", label, reencoded, a.challenges, "lin", seen=hashes))
        if a.reorderable:
            swapped = list(reversed(a.challenges))
            out.append(Attempt("wrong_order", a.label, a.frames, swapped, "lin"))
        for missing in a.absent:
            kind = "turn_" if missing.startswith("turn_") else ""
            asked = [missing if c.startswith("turn_") == bool(kind) else c for c in a.challenges]
            label = f"{a.label} asked {asked}"
            out.append(Attempt("missing_challenge", label, a.frames, asked, "lin"))
    return out


# --------------------------------------------------------------------------- running


def run(
    attempts: Sequence[Attempt],
    templates: dict[str, list[npt.NDArray[np.float64]]],
    engine: CachingEngine,
) -> list[Result]:
    thresholds = Thresholds()
    return [
        Result(
            a,
            verify_frames(
                a.frames,
                a.challenges,
                templates[a.person],
                thresholds=thresholds,
                seen_hashes=a.seen,
                engine=engine,
            ),
        )
        for a in attempts
    ]


def _floats(results: Sequence[Result], key: str) -> list[float]:
    values = []
    for r in results:
        value = r.verdict.measurements.get(key)
        if isinstance(value, int | float):
            values.append(float(value))
    return values


def _credited(result: Result, prefix: str) -> bool:
    """Was a challenge starting with ``prefix`` ("turn_") credited ("" : the other one)?"""
    m = result.verdict.measurements
    for number in (1, 2):
        name = str(m.get(f"challenge_{number}", ""))
        turn = name.startswith("turn_")
        if name and turn == (prefix == "turn_") and m.get(f"challenge_{number}_status") == "done":
            return True
    return False


def _span(values: Sequence[float]) -> str:
    if not values:
        return "n=0"
    v = np.array(values)
    return (
        f"n={len(v):3d}  min {v.min():.3f}  p5 {np.percentile(v, 5):.3f}  "
        f"median {np.median(v):.3f}  p95 {np.percentile(v, 95):.3f}  max {v.max():.3f}"
    )


def rates_table(results: Sequence[Result]) -> None:
    by_kind: dict[str, list[Result]] = defaultdict(list)
    for r in results:
        by_kind[r.attempt.kind].append(r)
    print(
        f"{'attempts':<20} {'n':>4} {'passed':>7} {'review':>7} {'failed':>7}  {'rate':<24} reasons"
    )
    for kind, group in by_kind.items():
        outcomes = Counter(r.verdict.outcome for r in group)
        reasons = Counter(code for r in group for code in r.verdict.reasons)
        n = len(group)
        if kind.startswith("genuine"):
            not_passed = n - outcomes["passed"]
            rate = f"BPCER {not_passed / n:6.1%} ({not_passed}/{n})"
        else:
            rate = f"APCER {outcomes['passed'] / n:6.1%} ({outcomes['passed']}/{n})"
        top = ", ".join(f"{code} {count}" for code, count in reasons.most_common(4))
        print(
            f"{kind:<20} {n:>4} {outcomes['passed']:>7} {outcomes['review']:>7} "
            f"{outcomes['failed']:>7}  {rate:<24} {top}"
        )


def distributions(
    results: Sequence[Result],
    engine: CachingEngine,
    templates: dict[str, list[npt.NDArray[np.float64]]],
) -> None:
    t = Thresholds()
    genuine = [r for r in results if r.attempt.kind.startswith("genuine")]
    print("\nface distance (median of the chosen frames, min over the member's templates)")
    print("  genuine attempts           ", _span([r.verdict.distance or 0 for r in genuine]))
    per_frame = [
        float(x)
        for r in genuine
        for x in str(r.verdict.measurements.get("distance_per_frame", "")).split(",")
        if x
    ]
    print("  genuine, per chosen frame  ", _span(per_frame))
    impostor = [r for r in results if r.attempt.kind == "impostor_live"]
    print("  impostor live attempts     ", _span([r.verdict.distance or 0 for r in impostor]))
    # every live-clip frame against lin_1.png, and every still against every other still
    lin = np.array(templates["lin"])
    clip_d, clip_other = [], []
    others = np.array([e for p, es in templates.items() if p != "lin" for e in es])
    for number in CLIP_NUMBERS:
        pixels = rgb(clip_frame(number))
        faces = engine.analyse(pixels) or engine.analyse(pixels, upsample=1)
        if not faces:
            continue
        encoding = engine.encoding(pixels, max(faces, key=lambda f: f.area))
        clip_d.append(float(np.min(np.linalg.norm(lin - encoding, axis=1))))
        clip_other.append(float(np.min(np.linalg.norm(others - encoding, axis=1))))
    print("  each clip frame vs lin_1   ", _span(clip_d))
    print("  each clip frame vs others  ", _span(clip_other))
    same: list[float] = []
    diff: list[float] = []
    stills = [(p, path) for p, paths in PEOPLE.items() for path in paths]
    for person, path in stills:
        pixels = rgb(canvas(still(path)))
        faces = engine.analyse(pixels) or engine.analyse(pixels, upsample=1)
        encoding = engine.encoding(pixels, max(faces, key=lambda f: f.area))
        for other_person, other_path in stills:
            if other_path != path:
                d = float(np.linalg.norm(TEMPLATE_BY_PATH[other_path] - encoding))
                (same if other_person == person else diff).append(d)
    print("  stills vs other stills, same person ", _span(same))
    print("  stills vs other stills, different   ", _span(diff))
    print(f"  tolerances: match {t.match_tolerance}, review {t.review_tolerance}")

    live = t.liveness
    turned = [r for r in genuine if _floats([r], "yaw_range")[0] >= live.turn_min_yaw]
    prints = [r for r in results if r.attempt.kind == "print_planar"]
    tested = [r for r in prints if r.verdict.measurements.get("planar_tested") == 1]
    print("\nplanar residual (max homography RMS over frame pairs / inter-ocular distance)")
    print("  genuine, yaw range >= turn ", _span(_floats(turned, "planar_residual")))
    print("  prints, yaw range >= turn  ", _span(_floats(tested, "planar_residual")))
    print("  prints, all                ", _span(_floats(prints, "planar_residual")))
    print("parallax ratio (share of the shape change no homography explains)")
    print("  genuine, yaw range >= turn ", _span(_floats(turned, "planar_parallax")))
    print("  prints, yaw range >= turn  ", _span(_floats(tested, "planar_parallax")))
    print("  prints, all                ", _span(_floats(prints, "planar_parallax")))
    print("the same with the most three-dimensional-looking frame left out (decides)")
    print("  genuine, yaw range >= turn ", _span(_floats(turned, "planar_parallax_robust")))
    print("  prints, yaw range >= turn  ", _span(_floats(tested, "planar_parallax_robust")))
    two_step = [r for r in results if r.attempt.kind == "print_two_step"]
    tested2 = [r for r in two_step if r.verdict.measurements.get("planar_tested") == 1]
    print("  nod+turn prints, tested    ", _span(_floats(tested2, "planar_parallax_robust")))
    print(
        f"  thresholds: residual < {live.planar_max_residual} or robust parallax < "
        f"{live.planar_min_parallax} -> planar_motion, when the yaw range >= {live.turn_min_yaw}"
    )

    for kind in ("print_planar", "print_two_step"):
        group = [r for r in results if r.attempt.kind == kind]
        credited = [r for r in group if _credited(r, "turn_")]
        other = [r for r in group if _credited(r, "")]
        both = [r for r in credited if r in other]
        caught = [r for r in credited if "planar_motion" in r.verdict.reasons]
        print(
            f"  {kind}: {len(group)} attempts; credited: turn {len(credited)} "
            f"({len(caught)} of them stopped by planar_motion), blink/mouth {len(other)}, "
            f"both {len(both)}"
        )

    print("\nyaw proxy range over the attempt")
    print("  genuine                    ", _span(_floats(genuine, "yaw_range")))
    print("  prints (tilted)            ", _span(_floats(prints, "yaw_range")))
    in_plane = [r for r in results if r.attempt.kind == "print_in_plane"]
    print("  prints (in-plane only)     ", _span(_floats(in_plane, "yaw_range")))

    print("\nEAR")
    print("  genuine baseline (median)  ", _span(_floats(genuine, "baseline_ear")))
    no_blink = [r for r in genuine if "blink@" not in r.attempt.label]
    drops = [
        1 - a / b
        for a, b in zip(
            _floats(no_blink, "min_ear"), _floats(no_blink, "baseline_ear"), strict=True
        )
    ]
    print("  deepest dip, no blink asked", _span(drops))
    blinks = [r for r in genuine if "blink@" in r.attempt.label]
    synthetic = []
    for r in blinks:
        m = r.verdict.measurements
        baseline = float(m["baseline_ear"])
        ears = [float(x) for x in str(m["ear_series"]).split(",")]
        positions = [int(x) for x in str(m["used_positions"]).split(",")]
        blink_number = int(r.attempt.label.split("blink@")[1].split()[0])
        first = int(r.attempt.label.split()[-1].split("-")[0])
        wanted = clip_numbers(first, 208).index(blink_number)
        if wanted in positions:
            synthetic.append(1 - ears[positions.index(wanted)] / baseline)
    print("  synthetic blink frame's dip", _span(synthetic))
    print(f"  threshold: dip >= {live.blink_drop} of the baseline")
    print("MAR (inner lips)")
    print("  genuine baseline (p25)     ", _span(_floats(genuine, "baseline_mar")))
    rises = [
        a - b
        for a, b in zip(_floats(genuine, "max_mar"), _floats(genuine, "baseline_mar"), strict=True)
    ]
    print("  largest rise               ", _span(rises))
    print(f"  threshold: rise >= {live.mouth_open_rise}")
    statics = [r for r in results if r.attempt.kind == "static"]
    print("\nlandmark motion (largest point displacement from the first frame / inter-ocular)")
    print("  genuine                    ", _span(_floats(genuine, "static_motion")))
    print("  one still repeated         ", _span(_floats(statics, "static_motion")))


TEMPLATE_BY_PATH: dict[str, npt.NDArray[np.float64]] = {}
ENGINE = CachingEngine()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="fewer attempts")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    started = time.perf_counter()
    engine = ENGINE
    templates: dict[str, list[npt.NDArray[np.float64]]] = {}
    for person, paths in PEOPLE.items():
        templates[person] = []
        for path in paths:
            TEMPLATE_BY_PATH[path] = template(engine.engine, path)
            templates[person].append(TEMPLATE_BY_PATH[path])
    genuine = run(genuine_attempts(engine, args.quick), templates, engine)
    attacks = (
        static_attempts(rng)
        + print_attempts(rng, engine, args.quick)
        + two_step_attempts(args.quick)
        + second_person_attempts(rng, engine)
        + derived_attacks(genuine)
    )
    results = genuine + run(attacks, templates, engine)
    print(f"proof-of-life rates on the shared test data (seed {args.seed})\n")
    rates_table(results)
    print("\ngenuine attempts not passed:")
    for r in genuine:
        if r.verdict.outcome != "passed":
            print(f"  {r.attempt.label:<34} {r.attempt.challenges} -> {r.verdict.reasons}")
    passed = [
        r
        for r in results
        if not r.attempt.kind.startswith("genuine") and r.verdict.outcome == "passed"
    ]
    print("attacks passed:" if passed else "attacks passed: none")
    for r in passed:
        print(f"  {r.attempt.kind:<18} {r.attempt.label}  {r.attempt.challenges}")
    distributions(results, engine, templates)
    print(f"\n{len(results)} attempts, {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
