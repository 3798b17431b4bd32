"""Guided proof of life: the challenges confirmed one at a time, as they happen.

A guided session is a sequence of steps: ``face`` (look straight at the camera: the
attempt's own baseline), then the two challenges in the order asked. The page captures
continuously and sends each step short batches of frames; every batch gets an answer at
once (:func:`evaluate_step`): the step is ``done`` (confirmed at one frame), or it should
``continue``, with a hint in plain words ("turn a little more") and how far the movement
got (``progress``). When the last step is done, :func:`judge_session` judges every frame
of the session together, as the one-shot pipeline judges its ten: the confirmations are
replayed from the stored landmarks, and the attack checks (a second face, a still sent
again, a flat picture turned, frames of an earlier attempt) and the identity run over the
whole session. Guidance changes when a movement is looked for, never what counts as one.

Every measure and threshold is the one-shot pipeline's (``analysis.py``): the turn is the
yaw proxy's change from the face step's median, the blink an EAR dip below this step's
own median, the open mouth an MAR rise over the closed-mouth baseline; a challenge is
credited at an *onset* (its condition holds at a frame and did not at the frame before,
which may be the last frame of the step before), so a movement made before its step
began does not count. A turn is confirmed only when the frames so far also pass the
flatness test (a flat picture turned gets "turn a little more" until its time is up).

Everything here is pure: frames come in as :class:`Observation` (what detection found in
one frame); the view stores and loads them.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
from PIL import Image

from server.faces.engine import FaceShape, LandmarkFaceEngine
from server.proof_of_life.analysis import (
    LivenessThresholds,
    eye_aspect_ratio,
    landmark_motion,
    mouth_aspect_ratio,
    planar_statistics,
    yaw_proxy,
)
from server.proof_of_life.pipeline import (
    FrameRejected,
    Judgement,
    Thresholds,
    Verdict,
    choose_for_encoding,
    decode_frame,
    phash,
    select_faces,
)

__all__ = [
    "FACE_STEP",
    "HINTS",
    "GuideLimits",
    "Observation",
    "StepAnswer",
    "Track",
    "evaluate_step",
    "judge_session",
    "observe_frame",
    "pack_shape",
    "unpack_shape",
]

FACE_STEP: Final = "face"
HINTS: Final = (
    "no_face",
    "move_closer",
    "more_light",
    "only_you",
    "hold_still",
    "look_straight",
    "turn_more",
    "wrong_way",
    "open_wider",
    "blink",
)
State = Literal["continue", "done"]


@dataclass(frozen=True)
class GuideLimits:
    """What the face step asks for before the challenges start."""

    min_face_px: int = 60
    """Face box width below which the person is asked to come closer: dlib's 68 points on
    a smaller face are too coarse for the eye and mouth measures (the shared clip's faces
    are 86-104 px wide on a 640 px frame and measure well)."""
    dark_luminance: float = 50.0
    """Mean grey level (0-255) of the frames below which a batch without a face gets the
    hint "more light" instead of "no face". A dim face whose landmarks are found is used:
    light is advice, never a condition."""
    frontal_yaw: float = 0.30
    """Largest yaw proxy for "looking straight" in the face step (about 21 degrees)."""
    face_frames: int = 2
    """Frames of one, large enough, frontal face that make the face step."""
    still_yaw_spread: float = 0.25
    """Largest yaw-proxy spread over the face step's good frames ("hold still" above)."""
    blink_frames: int = 4
    """Frames of the blink step before a dip can be judged (its median is the open eye)."""
    flatness_frames: int = 12
    """At most this many frames (evenly spread, the first and last kept) go into the
    flatness test: it compares every pair, so its cost grows with the square of the count
    (12 frames: 132 pairs, about 0.03 s); the one-shot attempt's thresholds were measured
    on 10."""
    full_search_every: int = 4
    """Every this many frames the whole frame is searched for faces (a second person
    shows); in between the face is looked for around where it was last seen."""
    track_frames: int = 8
    """A face seen in the last this many frames is looked for around where it was (about
    2 s at 4 frames a second); after that the whole frame is searched, upsampled."""
    track_margin: float = 0.6
    """The crop around the last box reaches this many box widths beyond it on each side."""
    track_face_px: float = 100.0
    """A wider face's crop is shrunk so the face is this wide (HOG's cost grows with the
    pixels; it finds faces from 80 px)."""
    track_small_px: float = 90.0
    """A narrower face's crop is enlarged so the face is this wide, rather than the whole
    frame searched with an upsampled pyramid; faces in between are searched as they are
    (a resampled face places its landmarks a little differently)."""
    track_max_zoom: float = 2.5
    """A small face's crop is enlarged at most this much (a 36 px face to 90 px)."""


@dataclass(frozen=True)
class Observation:
    """What detection found in one frame of a guided session."""

    position: int  # index in the session's frames, in arrival order
    step: int  # the step it was sent for
    faces: int  # faces that count (select_faces); -1: the frame could not be decoded
    shape: FaceShape | None  # the face, when there is exactly one
    luminance: float  # mean grey of the face box, or of the frame without one
    frame_hash: str  # perceptual hash ("" when undecodable)

    @property
    def used(self) -> bool:
        return self.faces == 1 and self.shape is not None


@dataclass(frozen=True)
class StepAnswer:
    state: State
    hint: str | None
    progress: float  # 0..1, how far the movement got towards its threshold
    confirmed: int | None  # position of the confirming frame
    baseline: dict[str, float]  # the face step's baseline (face step only)


# --------------------------------------------------------------------------- frames


def _grey_mean(rgb: npt.NDArray[np.uint8], box: tuple[int, int, int, int] | None) -> float:
    if box is not None:
        top, right, bottom, left = box
        crop = rgb[top:bottom, left:right]
        if crop.size:
            rgb = crop
    return float((rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).mean())


@dataclass(frozen=True)
class Track:
    """Where the face was last seen in a guided session."""

    box: tuple[int, int, int, int]  # top, right, bottom, left
    position: int  # the frame it was seen in


def _around(
    rgb: npt.NDArray[np.uint8], near: tuple[int, int, int, int], engine: Any, limits: GuideLimits
) -> tuple[int, FaceShape | None]:
    """How many faces HOG finds on a crop around ``near`` (a box from an earlier frame), the
    crop scaled so the face is between ``limits.track_small_px`` and
    ``limits.track_face_px`` wide (searched once more upsampled when it shows none),
    their boxes placed on the full image; landmarks only for the face when there is
    exactly one."""
    top, right, bottom, left = near
    width, height = right - left, bottom - top
    if width <= 0 or height <= 0:
        return 0, None
    margin = limits.track_margin
    y0, y1 = max(0, int(top - margin * height)), min(rgb.shape[0], int(bottom + margin * height))
    x0, x1 = max(0, int(left - margin * width)), min(rgb.shape[1], int(right + margin * width))
    crop = rgb[y0:y1, x0:x1]
    if not crop.size:
        return 0, None
    scale = 1.0
    if width > limits.track_face_px:
        scale = limits.track_face_px / width
    elif width < limits.track_small_px:
        scale = min(limits.track_max_zoom, limits.track_small_px / width)
    if scale != 1.0:
        size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
        crop = np.asarray(Image.fromarray(crop).resize(size, Image.Resampling.BILINEAR))
    crop = np.ascontiguousarray(crop)
    found = engine.detect(crop, upsample=0)
    if not found:
        # A dim or blurred face HOG misses at this size is often found at twice it
        # (the crop's upsampled search costs about a sixth of the whole frame's).
        found = engine.detect(crop, upsample=1)
    if len(found) != 1:
        return len(found), None
    c_top, c_right, c_bottom, c_left = found[0]
    box = (
        y0 + round(c_top / scale),
        min(rgb.shape[1], x0 + round(c_right / scale)),
        min(rgb.shape[0], y0 + round(c_bottom / scale)),
        x0 + round(c_left / scale),
    )
    shape: FaceShape = engine.shape_at(rgb, box)
    return 1, shape


def observe_frame(
    data: bytes,
    *,
    position: int,
    step: int,
    engine: LandmarkFaceEngine,
    thresholds: Thresholds,
    limits: GuideLimits,
    track: Track | None = None,
) -> tuple[Observation, npt.NDArray[np.uint8] | None]:
    """Decode one frame, hash it, find its faces and their landmarks.

    While the face was seen in the last ``limits.track_frames`` frames (``track``), it is
    looked for on a crop around where it was: one face there is the frame's face, none
    means none (turned away, covered: a face cannot leave the crop between two frames),
    more than one sends the frame to a whole-frame search. Every
    ``limits.full_search_every``-th frame is searched whole (HOG without upsampling), so a
    second person shows; the crop is then the fallback for a face under HOG's 80 px. With
    no recent face, the whole frame is searched, once more upsampled when nothing is
    found (faces from about 40 px)."""
    try:
        rgb = decode_frame(
            data, max_side=thresholds.max_side, max_pixels=thresholds.max_frame_pixels
        )
    except FrameRejected:
        return Observation(position, step, -1, None, 0.0, ""), None
    recent = track is not None and position - track.position <= limits.track_frames
    whole = not recent or position % limits.full_search_every == 0
    faces: list[FaceShape] = []
    if recent and track is not None and not whole:
        count, shape = _around(rgb, track.box, engine, limits)
        faces = [shape] if shape is not None else []
        whole = count > 1
    if whole:
        faces = select_faces(engine.analyse(rgb, upsample=0), thresholds.second_face_min_area)
        if not faces and recent and track is not None:
            _, shape = _around(rgb, track.box, engine, limits)
            faces = [shape] if shape is not None else []
        elif not faces:
            faces = select_faces(engine.analyse(rgb, upsample=1), thresholds.second_face_min_area)
    shape = faces[0] if len(faces) == 1 else None
    luminance = _grey_mean(rgb, shape.box if shape is not None else None)
    return Observation(position, step, len(faces), shape, luminance, phash(rgb)), rgb


def pack_shape(shape: FaceShape) -> bytes:
    """The face's 68 landmarks and its box as float32 (140 numbers, 560 bytes)."""
    values = np.concatenate([shape.landmarks.ravel(), np.asarray(shape.box, dtype=np.float64)])
    return values.astype("<f4").tobytes()


def unpack_shape(data: bytes) -> FaceShape:
    values = np.frombuffer(data, dtype="<f4").astype(np.float64)
    if values.shape != (140,):
        raise ValueError("a stored face is 140 float32 numbers")
    top, right, bottom, left = (round(float(v)) for v in values[136:])
    return FaceShape(box=(top, right, bottom, left), landmarks=values[:136].reshape(68, 2))


# --------------------------------------------------------------------------- steps


def _face_width(o: Observation) -> int:
    if o.shape is None:
        return 0
    return o.shape.box[1] - o.shape.box[3]


def _frame_hint(latest: Sequence[Observation], limits: GuideLimits) -> str | None:
    """A hint about the picture itself, from the latest batch, or None when it is fine."""
    if any(o.faces > 1 for o in latest):
        return "only_you"
    used = [o for o in latest if o.used]
    if not used:
        if latest and statistics.median(o.luminance for o in latest) < limits.dark_luminance:
            return "more_light"
        return "no_face"
    if max(_face_width(o) for o in used) < limits.min_face_px:
        return "move_closer"
    return None


def _face_step(
    frames: Sequence[Observation], latest: Sequence[Observation], limits: GuideLimits
) -> StepAnswer:
    """Done at the first frame that ends a run of ``face_frames`` good frames (one face,
    large enough, lit, looking ahead) that hold still: scanned in order, so the answer
    does not depend on how the frames were batched."""
    good: list[Observation] = []
    for o in frames:
        if o.faces > 1:
            good = []  # a second person: start again
            continue
        if not (
            o.used
            and o.shape is not None
            and _face_width(o) >= limits.min_face_px
            and abs(yaw_proxy(o.shape.landmarks)) <= limits.frontal_yaw
        ):
            continue
        good.append(o)
        run = good[-limits.face_frames :]
        if len(run) < limits.face_frames:
            continue
        yaws = [yaw_proxy(x.shape.landmarks) for x in run if x.shape is not None]
        if max(yaws) - min(yaws) > limits.still_yaw_spread:
            continue
        mars = [mouth_aspect_ratio(x.shape.landmarks) for x in run if x.shape is not None]
        baseline = {
            "start_yaw": float(statistics.median(yaws)),
            "mar_closed": float(np.percentile(mars, 25)),
        }
        return StepAnswer("done", None, 1.0, o.position, baseline)
    hint = _frame_hint(latest, limits)
    if hint is None:
        hint = "hold_still" if len(good) >= limits.face_frames else "look_straight"
    progress = min(1.0, len(good) / limits.face_frames) * 0.5
    return StepAnswer("continue", hint, progress, None, {})


def _onset(held: Sequence[bool], before: bool) -> int | None:
    """Index of the first frame where the condition starts to hold."""
    previous = before
    for index, value in enumerate(held):
        if value and not previous:
            return index
        previous = value
    return None


def evaluate_step(
    name: str,
    frames: Sequence[Observation],
    *,
    latest: Sequence[Observation],
    previous: Observation | None,
    session: Sequence[Observation],
    baseline: dict[str, float],
    thresholds: LivenessThresholds,
    limits: GuideLimits,
) -> StepAnswer:
    """Judge one step on all the frames sent for it so far (``frames``, in order).

    ``latest``: the batch just received (for hints about the picture); ``previous``: the
    last used frame of the step before (a condition already holding there is no onset);
    ``session``: every used frame of the session up to this step's last (for the turn's
    flatness test); ``baseline``: what the face step measured.
    """
    if name == FACE_STEP:
        return _face_step(frames, latest, limits)
    judge = _CHALLENGE_STEPS.get(name)
    if judge is None:
        raise ValueError(f"unknown step {name!r}")
    used = [o for o in frames if o.used and o.shape is not None]
    step = _Step(
        name=name,
        used=used,
        shapes=[o.shape.landmarks for o in used if o.shape is not None],
        latest=latest,
        picture_hint=_frame_hint(latest, limits),
        before=previous.shape.landmarks if previous is not None and previous.shape else None,
        session=[o.shape.landmarks for o in session if o.shape is not None],
        baseline=baseline,
        thresholds=thresholds,
        limits=limits,
    )
    return judge(step)


@dataclass(frozen=True)
class _Step:
    """What a challenge step is judged on."""

    name: str
    used: Sequence[Observation]  # the step's frames with one face, in order
    shapes: Sequence[npt.NDArray[np.float64]]  # their landmarks
    latest: Sequence[Observation]  # the batch just received
    picture_hint: str | None  # what the latest batch's picture needs, if anything
    before: npt.NDArray[np.float64] | None  # the step before's last face
    session: Sequence[npt.NDArray[np.float64]]  # every used face before this step
    baseline: dict[str, float]
    thresholds: LivenessThresholds
    limits: GuideLimits

    def done(self, index: int) -> StepAnswer:
        return StepAnswer("done", None, 1.0, self.used[index].position, {})

    def more(self, hint: str, progress: float) -> StepAnswer:
        return StepAnswer("continue", self.picture_hint or hint, progress, None, {})


def _turn_step(step: _Step) -> StepAnswer:
    t = step.thresholds
    sign = 1.0 if step.name == "turn_left" else -1.0
    start = step.baseline["start_yaw"]

    def change(points: npt.NDArray[np.float64]) -> float:
        return sign * (yaw_proxy(points) - start)

    # The movement made in the direction asked: each frame against the farthest the
    # head had been the other way (the face step's look ahead, or later), so that a
    # head that starts a little turned, or swings back from the other side, is
    # credited with the turn it makes, never with where it happens to be.
    values = []
    low = 0.0
    for points in step.shapes:
        here = change(points)
        low = min(low, here)
        values.append(here - low)
    best = max(values, default=0.0)
    progress = min(1.0, max(0.0, best / t.turn_min_yaw))
    # Confirmed at the first frame past the threshold whose frames so far are not a
    # flat picture turned; tested again only where the turn grew (a real head gains
    # depth as it turns on; a picture does not): the same answer however the frames
    # were batched, at a bounded cost.
    tested = -1.0
    for index, value in enumerate(values):
        if value < t.turn_min_yaw - 1e-9 or value < tested + 0.02:
            continue
        tested = value
        frames_so_far = [*step.session, *step.shapes[: index + 1]]
        planar = planar_statistics(_spread(frames_so_far, step.limits.flatness_frames))
        if not (
            planar.residual < t.planar_max_residual
            or planar.parallax_robust < t.planar_min_parallax
        ):
            return step.done(index)
    if tested >= 0:
        progress = min(progress, 0.9)
    latest_values = [change(o.shape.landmarks) for o in step.latest if o.used and o.shape]
    if latest_values and min(latest_values) <= -t.turn_min_yaw / 2:
        return StepAnswer("continue", "wrong_way", progress, None, {})
    return step.more("turn_more", progress)


def _blink_step(step: _Step) -> StepAnswer:
    t = step.thresholds
    # Each frame against the median of the step's frames up to it (the open eye: a
    # blink is a frame or two): the first onset does not depend on later frames.
    ears = [eye_aspect_ratio(p) for p in step.shapes]
    dips = [
        1 - e / max(float(statistics.median(ears[: i + 1])), 1e-9)
        if i + 1 >= step.limits.blink_frames
        else 0.0
        for i, e in enumerate(ears)
    ]
    held = [d >= t.blink_drop - 1e-9 for d in dips]
    # The frame before the step is not compared: its eye is not this step's baseline.
    onset = _onset(held, False)
    if onset is not None:
        return step.done(onset)
    return step.more("blink", min(1.0, max(0.0, max(dips, default=0.0) / t.blink_drop)))


def _mouth_step(step: _Step) -> StepAnswer:
    t = step.thresholds
    mars = [mouth_aspect_ratio(p) for p in step.shapes]
    closed_before = step.baseline["mar_closed"]

    def closed(upto: int) -> float:
        return min(closed_before, float(np.percentile(mars[: upto + 1], 25)))

    rises = [m - closed(i) for i, m in enumerate(mars)]
    held = [r >= t.mouth_open_rise - 1e-9 for r in rises]
    before = (
        step.before is not None
        and mouth_aspect_ratio(step.before) - closed_before >= t.mouth_open_rise
    )
    onset = _onset(held, before)
    if onset is not None:
        return step.done(onset)
    progress = min(1.0, max(0.0, max(rises, default=0.0) / t.mouth_open_rise))
    return step.more("open_wider", progress)


_CHALLENGE_STEPS: Final[dict[str, Callable[[_Step], StepAnswer]]] = {
    "turn_left": _turn_step,
    "turn_right": _turn_step,
    "blink": _blink_step,
    "open_mouth": _mouth_step,
}


def _spread(items: Sequence[npt.NDArray[np.float64]], count: int) -> list[npt.NDArray[np.float64]]:
    """At most ``count`` items evenly spread, the first and the last always kept."""
    if len(items) <= count:
        return list(items)
    picks = np.unique(np.rint(np.linspace(0, len(items) - 1, count)).astype(int))
    return [items[i] for i in picks]


# --------------------------------------------------------------------------- verdict


def replay_steps(
    steps: Sequence[str],
    observations: Sequence[Observation],
    thresholds: LivenessThresholds,
    limits: GuideLimits,
) -> tuple[list[int | None], dict[str, float]]:
    """Judge every step again on the stored frames, batch boundaries ignored (a step is
    judged on all its frames): the position that confirmed each step, or None."""
    confirmed: list[int | None] = []
    baseline: dict[str, float] = {}
    previous: Observation | None = None
    session: list[Observation] = []
    for index, name in enumerate(steps):
        frames = [o for o in observations if o.step == index]
        if name != FACE_STEP and not baseline:
            confirmed.append(None)
            continue
        answer = evaluate_step(
            name,
            frames,
            latest=frames[-1:],
            previous=previous,
            session=session,
            baseline=baseline,
            thresholds=thresholds,
            limits=limits,
        )
        if name == FACE_STEP and answer.state == "done":
            baseline = answer.baseline
        confirmed.append(answer.confirmed if answer.state == "done" else None)
        used = [o for o in frames if o.used]
        session.extend(used)
        previous = used[-1] if used else previous
    return confirmed, baseline


def judge_session(
    steps: Sequence[str],
    observations: Sequence[Observation],
    templates: Sequence[npt.NDArray[np.float64]],
    *,
    load_rgb: Callable[[int], npt.NDArray[np.uint8]],
    thresholds: Thresholds,
    limits: GuideLimits,
    seen_hashes: Collection[str] = (),
    engine: LandmarkFaceEngine,
) -> Verdict:
    """The verdict on a guided session whose steps were all confirmed: the same reason
    codes and outcome rule as :func:`server.proof_of_life.pipeline.verify_frames`.

    ``load_rgb(position)`` decodes a stored frame again (only the two or three chosen for
    the identity encoding are).
    """
    t = thresholds
    live = t.liveness
    judged = Judgement(t, {"guided": 1, "frames_received": len(observations)})
    m = judged.measurements
    used = [o for o in observations if o.used and o.shape is not None]
    judged.frames(
        undecodable=sum(o.faces < 0 for o in observations),
        no_face=sum(o.faces == 0 for o in observations),
        many=sum(o.faces > 1 for o in observations),
        used=len(used),
    )
    judged.flag("no_face", len(used) < t.min_usable_frames)

    confirmed, baseline = replay_steps(steps, observations, live, limits)
    for index, (name, position) in enumerate(zip(steps, confirmed, strict=True)):
        m[f"step_{index}"] = name
        judged.flag("challenge_not_done", position is None)
        if position is not None:
            m[f"step_{index}_position"] = position
    if baseline:
        m["yaw_start"] = round(baseline["start_yaw"], 4)

    shapes = [o.shape.landmarks for o in used if o.shape is not None]
    if len(shapes) >= 2:
        motion = landmark_motion(shapes)
        planar = planar_statistics(_spread(shapes, limits.flatness_frames))
        yaws = [yaw_proxy(p) for p in shapes]
        yaw_range = max(yaws) - min(yaws)
        m.update(
            static_motion=round(motion, 4),
            yaw_range=round(yaw_range, 4),
            planar_residual=round(planar.residual, 4),
            planar_parallax=round(planar.parallax, 4),
            planar_parallax_robust=round(planar.parallax_robust, 4),
        )
        hashes = [o.frame_hash for o in observations if o.frame_hash]
        judged.flag(
            "static_frames",
            motion < live.static_max_motion or (len(hashes) >= 3 and len(set(hashes)) == 1),
        )
        judged.flag(
            "planar_motion",
            yaw_range >= live.turn_min_yaw
            and (
                planar.residual < live.planar_max_residual
                or planar.parallax_robust < live.planar_min_parallax
            ),
        )

    frame_hashes = [o.frame_hash for o in observations]
    judged.replay(frame_hashes, seen_hashes)
    chosen: list[tuple[int, npt.NDArray[np.uint8], FaceShape]] = []
    if len(templates) and used:
        candidates = [o for o in _identity_candidates(used) if o.shape is not None]
        items = [(load_rgb(o.position), o.shape) for o in candidates if o.shape is not None]
        indices = choose_for_encoding(items, t.encode_frames, live.blink_drop)
        chosen = [(candidates[i].position, *items[i]) for i in indices]
    judged.identity(chosen, templates, engine)
    return judged.verdict(frame_hashes)


def _identity_candidates(used: Sequence[Observation], count: int = 8) -> list[Observation]:
    """The frames worth decoding again for the identity: the largest, most frontal faces
    (decoding all of a long session would cost more than the encodings)."""

    def score(o: Observation) -> float:
        if o.shape is None:
            return 0.0
        return o.shape.area * max(0.05, 1 - abs(yaw_proxy(o.shape.landmarks)))

    best = sorted(used, key=lambda o: (-score(o), o.position))[:count]
    return sorted(best, key=lambda o: o.position)
