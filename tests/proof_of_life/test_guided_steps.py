"""The guided steps on landmarks alone (no images): a schematic 3D head seen by a pinhole
camera (tests/pol_frames.synthetic_face) looks ahead, turns, blinks or opens its mouth;
the same frames judged batch by batch and judged again all at once (as the verdict
replays them) confirm every step at the same frame, however they were batched."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.faces.engine import FaceShape
from server.proof_of_life.analysis import LivenessThresholds
from server.proof_of_life.guided import (
    GuideLimits,
    Observation,
    evaluate_step,
    pack_shape,
    replay_steps,
    unpack_shape,
)
from server.proof_of_life.pipeline import Thresholds
from tests.pol_frames import apply_homography, plane_homography, synthetic_face

THRESHOLDS = Thresholds().liveness
LIMITS = GuideLimits()


def _shape(points: np.ndarray) -> FaceShape:
    left, top = points.min(axis=0)
    right, bottom = points.max(axis=0)
    return FaceShape(box=(int(top), int(right), int(bottom), int(left)), landmarks=points)


def _frames(poses: list[dict[str, float]], step_of: list[int]) -> list[Observation]:
    rng = np.random.default_rng(7)
    out = []
    for position, (pose, step) in enumerate(zip(poses, step_of, strict=True)):
        points = synthetic_face(**pose) + rng.normal(0, 0.3, (68, 2))
        out.append(Observation(position, step, 1, _shape(points), 120.0, f"{position:016x}"))
    return out


def _session(kind: str) -> tuple[list[str], list[Observation]]:
    """Face (4 frames), then a turn to the person's right (10), then the other challenge
    (10): each movement happens in its own step, partway through."""
    poses: list[dict[str, float]] = [{}] * 4
    poses += [{"yaw": -3.0 * i} for i in range(10)]  # to -27 degrees
    if kind == "blink":
        poses += [{"yaw": -27.0}] * 5 + [{"yaw": -27.0, "eye_open": 0.1}] + [{"yaw": -27.0}] * 4
    else:
        poses += [{"yaw": -27.0}] * 4 + [{"yaw": -27.0, "mouth_open": 14.0}] * 6
    steps = ["face", "turn_right", kind]
    return steps, _frames(poses, [0] * 4 + [1] * 10 + [2] * 10)


def _batched(
    steps: list[str], frames: list[Observation], cuts: list[int]
) -> tuple[list[int | None], list[Observation]]:
    """Judge step by step as the service does: batches end at ``cuts`` (and where a step
    is confirmed, the rest of that step's frames are never sent)."""
    confirmed: list[int | None] = []
    baseline: dict[str, float] = {}
    session: list[Observation] = []
    previous = None
    for index, name in enumerate(steps):
        mine = [o for o in frames if o.step == index]
        sent: list[Observation] = []
        answer = None
        for start, end in zip([0, *cuts], [*cuts, len(mine)], strict=False):
            batch = mine[start:end]
            if not batch:
                continue
            sent += batch
            answer = evaluate_step(
                name,
                sent,
                latest=batch,
                previous=previous,
                session=session,
                baseline=baseline,
                thresholds=THRESHOLDS,
                limits=LIMITS,
            )
            if answer.state == "done":
                break
        assert answer is not None
        confirmed.append(answer.confirmed if answer.state == "done" else None)
        if name == "face":
            baseline = answer.baseline
        session += sent
        previous = sent[-1] if sent else previous
    return confirmed, session


@pytest.mark.slow
@settings(max_examples=40, deadline=None)
@given(
    kind=st.sampled_from(["open_mouth", "blink"]),
    cuts=st.lists(st.integers(1, 9), max_size=5).map(lambda c: sorted(set(c))),
)
def test_every_step_is_confirmed_at_the_same_frame_however_it_was_batched(
    kind: str, cuts: list[int]
) -> None:
    steps, frames = _session(kind)
    batched, sent = _batched(steps, frames, cuts)
    # The verdict replays the frames that were sent: each step's up to the end of the
    # batch that confirmed it.
    replayed, _ = replay_steps(steps, sent, THRESHOLDS, LIMITS)
    assert None not in batched, batched
    assert replayed == batched


def test_a_turn_is_credited_for_the_movement_made_and_a_picture_turned_is_not() -> None:
    # Starting a little turned the other way (to the person's left), then turning right.
    poses = [{"yaw": 8.0}] * 4 + [{"yaw": 8.0 - 3.0 * i} for i in range(12)]
    frames = _frames(poses, [0] * 4 + [1] * 12)
    confirmed, _ = replay_steps(["face", "turn_right"], frames, THRESHOLDS, LIMITS)
    assert confirmed[0] == 1 and confirmed[1] is not None
    # The same head as a flat picture: landmarks of the frontal face, tilted as a plane.
    flat = synthetic_face()
    pictures = []
    for step, angle in [(0, 0.0)] * 4 + [(1, float(a)) for a in range(0, 60, 5)]:
        homography = plane_homography((640, 480), yaw=-angle)
        points = apply_homography(flat, homography)
        pictures.append(Observation(len(pictures), step, 1, _shape(points), 120.0, "0" * 16))
    confirmed, _ = replay_steps(["face", "turn_right"], pictures, THRESHOLDS, LIMITS)
    assert confirmed[0] is not None and confirmed[1] is None


def test_hints_say_what_to_do() -> None:
    ahead = _frames([{}] * 3, [1] * 3)
    baseline = {"start_yaw": 0.0, "mar_closed": 0.0}
    common = dict(previous=None, session=[], baseline=baseline, thresholds=THRESHOLDS)
    answer = evaluate_step("turn_left", ahead, latest=ahead, limits=LIMITS, **common)
    assert (answer.state, answer.hint) == ("continue", "turn_more")
    wrong = _frames([{"yaw": -20.0}] * 3, [1] * 3)
    answer = evaluate_step("turn_left", wrong, latest=wrong, limits=LIMITS, **common)
    assert answer.hint == "wrong_way"
    nobody = [Observation(0, 1, 0, None, 20.0, "")]
    answer = evaluate_step("turn_left", nobody, latest=nobody, limits=LIMITS, **common)
    assert answer.hint == "more_light"
    two = [Observation(0, 0, 2, None, 120.0, "")]
    answer = evaluate_step("face", two, latest=two, limits=LIMITS, **common)
    assert answer.hint == "only_you"
    small = [
        Observation(i, 0, 1, _shape(synthetic_face(distance=4000.0)), 120.0, "") for i in range(3)
    ]
    answer = evaluate_step("face", small, latest=small, limits=LIMITS, **common)
    assert answer.hint == "move_closer"


def test_a_stored_face_comes_back_as_it_was() -> None:
    shape = _shape(synthetic_face(yaw=10.0))
    back = unpack_shape(pack_shape(shape))
    assert back.box == shape.box
    assert np.allclose(back.landmarks, shape.landmarks, atol=1e-3)
    assert LivenessThresholds() == THRESHOLDS


@pytest.mark.slow
@settings(max_examples=25, deadline=None)
@given(
    count=st.integers(2, 9),
    seed=st.integers(0, 10_000),
    flat=st.booleans(),
)
def test_the_batched_pair_residuals_equal_the_pairwise_ones(
    count: int, seed: int, flat: bool
) -> None:
    """planar_statistics computes every pair at once (pair_matrices); pair_residuals is
    the plain per-pair arithmetic: they agree on heads and on pictures."""
    from server.proof_of_life.analysis import pair_matrices, pair_residuals

    rng = np.random.default_rng(seed)
    shapes = []
    for _ in range(count):
        yaw, pitch = rng.uniform(-35, 35), rng.uniform(-15, 15)
        if flat:
            homography = plane_homography((640, 480), yaw=yaw, pitch=pitch)
            points = apply_homography(synthetic_face(), homography)
        else:
            points = synthetic_face(yaw=yaw, pitch=pitch)
        shapes.append(points + rng.normal(0, 0.5, (68, 2)))
    h, s = pair_matrices(shapes)
    for i in range(count):
        for j in range(count):
            expected = (0.0, 0.0) if i == j else pair_residuals(shapes[j], shapes[i])
            assert np.allclose((h[i, j], s[i, j]), expected, rtol=1e-7, atol=1e-9)
