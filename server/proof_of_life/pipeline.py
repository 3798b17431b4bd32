"""Judging one proof-of-life attempt: a few selfie frames, two challenges, the member's
enrolled face templates -> ``passed`` / ``failed`` / ``review`` with stable reasons.

Steps (:func:`verify_frames`):

1. **Decode** each frame (:func:`decode_frame`): JPEG or PNG only, recognised by its
   magic bytes; the pixel count read from the header and refused above
   ``max_frame_pixels`` before anything is decoded; a truncated or corrupt file is
   refused; the EXIF orientation is applied; the image is scaled down to at most
   ``max_side`` pixels (a JPEG is decoded directly at a reduced scale when it is much
   larger) and handed to dlib as C-contiguous RGB uint8.
2. **Perceptual hash** (``imagehash.phash``, 16 hex digits) of every decoded frame,
   returned in the verdict in frame order ("" for a frame that could not be decoded).
3. **Landmarks** on every frame: HOG detection without upsampling (faces from about 80
   px, 0.03 s on 640x480), then dlib's 68 points. When fewer than two thirds of the
   frames show exactly one face, the frames without any are searched again with one
   upsampling (faces from about 40 px, 3-4 times the cost). A detection lying mostly
   inside a larger one is the same face found twice; one smaller than
   ``second_face_min_area`` of the frame's largest is ignored (HOG's small false
   positives, a face on a poster far behind); a frame with one face is used, a frame
   with more is not and raises ``many_faces``.
4. **Liveness** on the used frames (:mod:`server.proof_of_life.analysis`): the same
   still sent again, a flat picture moved in front of the camera, the challenges and
   their order.
5. **Replay**: any frame whose hash is within ``replay_max_distance`` bits of a hash in
   ``seen_hashes`` (the member's earlier attempts).
6. **Identity**: 128-d encodings on the ``encode_frames`` best used frames only (largest,
   most frontal, sharpest face, eyes open; the third only when the first two disagree):
   distance to the member's templates (euclidean, as ``face_recognition.face_distance``),
   the minimum over templates per frame, the median over those frames.

Reason codes, in the order they appear in ``Verdict.reasons`` (:data:`REASONS`):

=================== =====================================================================
undecodable_frame   a frame is not a JPEG/PNG, too large, truncated or corrupt
too_few_frames      fewer frames than ``min_usable_frames`` were sent
no_face             too few frames with exactly one face remain, and some had none
many_faces          a frame shows a second real face
replayed_frames     a frame matches (perceptual hash) a frame of an earlier attempt
static_frames       the frames are one still sent again (landmarks do not move, or every
                    frame has the same hash)
planar_motion       the head "turned" but the face moved as a flat picture
challenge_not_done  a challenge asked for never happened
challenge_order     a challenge happened, but not after the one asked before it
no_template         the member has no enrolled face
face_mismatch       the face is not the member's (distance above ``review_tolerance``)
face_uncertain      the distance is between ``match_tolerance`` and ``review_tolerance``
=================== =====================================================================

Outcome: no reason -> ``passed``; ``face_uncertain`` alone -> ``review`` (a person looks);
anything else -> ``failed``.

**Face tolerances**, measured on the shared test data (face_recognition 1.3.0, dlib 20;
templates as enrollment makes them, 5-point aligned on photos scaled to 1000 px; probes
68-point aligned on frames scaled to 640 px, as here; benchmarks/liveness_rates.py):

- same person, stills against templates of the other stills: 0.10-0.43;
- different people, stills: 0.69-1.01;
- each live-clip frame (faces about 90 px wide, stage light, motion blur) against
  lin_1.png: 0.37-0.58; as the median of an attempt's chosen frames: 0.44-0.53;
- live-clip frames against the templates of the other people: 0.62-0.78 per frame,
  0.67-0.86 per attempt.

``match_tolerance`` 0.55 passes every same-person distance measured, the small live
frames included (the worst attempt: 0.53); ``review_tolerance`` 0.60
(face_recognition's own default tolerance) sits below every impostor distance measured,
live or still (the nearest: 0.62 for one frame, 0.67 for an attempt). Between the two,
a person decides (``face_uncertain``): a poor frame of the right person costs a review,
never a stopped payment; a different face is never passed, and is refused above 0.60.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

import imagehash
import numpy as np
import numpy.typing as npt
from PIL import Image

from server.faces.engine import FaceShape, LandmarkFaceEngine, default_engine
from server.images import ImageFormat, ImageRejected, downscaled_rgb
from server.proof_of_life.analysis import (
    CHALLENGES,
    LivenessThresholds,
    SequenceAnalysis,
    analyse_sequence,
    eye_aspect_ratio,
    yaw_proxy,
)
from server.proof_of_life.rules import MATCH_TOLERANCE, REVIEW_TOLERANCE, ProofOfLifeRules

__all__ = [
    "REASONS",
    "FrameRejected",
    "Judgement",
    "Measurement",
    "Outcome",
    "Thresholds",
    "Verdict",
    "choose_for_encoding",
    "decode_frame",
    "face_distance",
    "outcome_of",
    "phash",
    "record_thresholds",
    "replay_check",
    "select_faces",
    "thresholds_for",
    "verify_frames",
]

Outcome = Literal["passed", "failed", "review"]

REASONS: Final = (
    "undecodable_frame",
    "too_few_frames",
    "no_face",
    "many_faces",
    "replayed_frames",
    "static_frames",
    "planar_motion",
    "challenge_not_done",
    "challenge_order",
    "no_template",
    "face_mismatch",
    "face_uncertain",
)

_HASH_DIGITS: Final = 16


@dataclass(frozen=True)
class Thresholds:
    """Everything :func:`verify_frames` decides with; the liveness part in ``liveness``."""

    liveness: LivenessThresholds = field(default_factory=LivenessThresholds)
    match_tolerance: float = MATCH_TOLERANCE
    """Distance at or below which the face is the member's (see the module docstring)."""
    review_tolerance: float = REVIEW_TOLERANCE
    """Distance above which the face is someone else's; in between: ``review``."""
    min_usable_frames: int = 3
    """Frames with exactly one face needed to judge anything: a start and two challenges."""
    second_face_min_area: float = 0.15
    """A second detection counts as a person when its box has at least this share of the
    largest face's area. People side by side: 0.71 (group/two_people.jpg) and 1.0
    (group/obama_and_biden.jpg); at arm's length a selfie face is 200-300 px wide, so a
    face under 0.15 of it (under about 100 px) is far behind, on a poster or a screen in
    the room, or a false positive of HOG."""
    replay_max_distance: int = 1
    """Largest Hamming distance (of 64 bits) between perceptual hashes that makes a frame
    a replay. Re-encoding a frame as JPEG (quality 60-95) changes 0 bits; the closest two
    distinct frames of the live clip (one third of a second apart) differ by 2."""
    encode_frames: int = 3
    """Frames chosen for an encoding (0.1 s of CPU each). The two best are encoded; the
    third only when their distances fall on different sides of a tolerance (when they
    agree, the median of three is on their side whatever the third says)."""
    max_side: int = 640
    """Frames are scaled down to this many pixels on their longest side before detection."""
    max_frame_pixels: int = 24_000_000
    """Frames whose header claims more pixels are refused undecoded (24 MP: any phone)."""

    def __post_init__(self) -> None:
        if not 0 <= self.match_tolerance <= self.review_tolerance:
            raise ValueError("need 0 <= match_tolerance <= review_tolerance")
        if self.min_usable_frames < 2 or self.encode_frames < 1:
            raise ValueError("need min_usable_frames >= 2 and encode_frames >= 1")
        if not 0 <= self.second_face_min_area <= 1 or self.replay_max_distance < 0:
            raise ValueError("second_face_min_area must be in 0..1, replay_max_distance >= 0")
        if self.max_side < 64 or self.max_frame_pixels < 1:
            raise ValueError("max_side must be >= 64 and max_frame_pixels >= 1")


def thresholds_for(rules: ProofOfLifeRules) -> Thresholds:
    """The pipeline's thresholds under the region's proof-of-life rules: the face
    tolerances and the liveness thresholds come from the region file; the frame limits
    are the pipeline's own."""
    return Thresholds(
        match_tolerance=rules.match_tolerance,
        review_tolerance=rules.review_tolerance,
        liveness=rules.liveness,
    )


Measurement = float | int | str


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    reasons: tuple[str, ...]  # codes from REASONS, in that order, each at most once
    distance: float | None  # median over the chosen frames of the min over templates
    frame_hashes: list[str]  # phash hex per frame, in frame order ("" if undecodable)
    measurements: dict[str, Measurement]  # flat, JSON-ready, for the audit record


class FrameRejected(ValueError):
    """A frame that cannot be used as a picture at all."""


# --------------------------------------------------------------------------- decoding


FRAME_FORMATS: Final[tuple[ImageFormat, ...]] = ("JPEG", "PNG")


def decode_frame(
    data: bytes, *, max_side: int = 640, max_pixels: int = 24_000_000
) -> npt.NDArray[np.uint8]:
    """Oriented RGB pixels of a JPEG or PNG frame, longest side <= ``max_side``, as a
    C-contiguous uint8 H x W x 3 array (server/images.py decodes). Raises
    :class:`FrameRejected`."""
    try:
        return downscaled_rgb(
            bytes(data), max_side=max_side, max_pixels=max_pixels, formats=FRAME_FORMATS
        )
    except ImageRejected as exc:
        raise FrameRejected(exc.message) from exc


def phash(rgb: npt.NDArray[np.uint8]) -> str:
    return str(imagehash.phash(Image.fromarray(rgb, "RGB")))


def _parse_hash(text: str) -> int | None:
    if not isinstance(text, str) or len(text) != _HASH_DIGITS:
        return None
    try:
        return int(text, 16)
    except ValueError:
        return None


# --------------------------------------------------------------------------- faces


def select_faces(faces: Sequence[FaceShape], min_area_ratio: float) -> list[FaceShape]:
    """The faces that count, largest first: a detection lying mostly (more than half of
    its box) inside a larger one is the same face found twice (HOG does that on a warped
    face) and is dropped; so is one whose box is under ``min_area_ratio`` of the largest
    one's area."""
    kept: list[FaceShape] = []
    for face in sorted(faces, key=lambda f: f.area, reverse=True):
        top, right, bottom, left = face.box
        duplicate = False
        for other in kept:
            o_top, o_right, o_bottom, o_left = other.box
            width = max(0, min(right, o_right) - max(left, o_left))
            height = max(0, min(bottom, o_bottom) - max(top, o_top))
            duplicate = duplicate or width * height > 0.5 * face.area
        if not duplicate:
            kept.append(face)
    if not kept:
        return []
    return [f for f in kept if f.area >= min_area_ratio * kept[0].area]


def _sharpness(rgb: npt.NDArray[np.uint8], face: FaceShape) -> float:
    """Variance of a 4-neighbour Laplacian of the grey face box: higher is sharper."""
    top, right, bottom, left = face.box
    crop = rgb[top:bottom, left:right].astype(np.float64)
    if crop.shape[0] < 3 or crop.shape[1] < 3:
        return 0.0
    grey = crop @ np.array([0.299, 0.587, 0.114])
    lap = grey[1:-1, :-2] + grey[1:-1, 2:] + grey[:-2, 1:-1] + grey[2:, 1:-1] - 4 * grey[1:-1, 1:-1]
    return float(lap.var())


@dataclass(frozen=True)
class _Used:
    position: int  # index in the frames sent
    rgb: npt.NDArray[np.uint8]
    face: FaceShape


def choose_for_encoding(
    items: Sequence[tuple[npt.NDArray[np.uint8], FaceShape]],
    count: int,
    blink_drop: float | None,
    baseline_ear: float | None = None,
) -> list[int]:
    """Indices (ascending) of the ``count`` frames most worth an encoding: largest face,
    most frontal (yaw proxy near 0), sharpest; eyes shut in a blink (EAR below the
    ``baseline_ear``, by default the frames' median, by ``blink_drop``) are avoided when
    possible (not at all when ``blink_drop`` is None)."""
    if not items:
        return []
    areas = np.array([face.area for _, face in items], dtype=np.float64)
    yaws = np.array([abs(yaw_proxy(face.landmarks)) for _, face in items])
    sharp = np.array([_sharpness(rgb, face) for rgb, face in items])
    score = (areas / max(areas.max(), 1.0)) * np.clip(1 - yaws, 0.05, 1.0)
    score = score * np.sqrt(sharp / max(float(sharp.max()), 1e-9))
    if blink_drop is not None:
        ears = np.array([eye_aspect_ratio(face.landmarks) for _, face in items])
        open_eye = float(np.median(ears)) if baseline_ear is None else baseline_ear
        shut = ears <= open_eye * (1 - blink_drop)
        if int((~shut).sum()) >= min(count, len(items)):
            score = np.where(shut, -1.0, score)
    order = sorted(range(len(items)), key=lambda i: (-score[i], i))
    return sorted(order[:count])


def _choose_for_encoding(
    used: Sequence[_Used], analysis: SequenceAnalysis | None, count: int, blink_drop: float
) -> list[_Used]:
    items = [(u.rgb, u.face) for u in used]
    if analysis is None:  # nothing is known of the open eye: no frame is avoided
        return [used[i] for i in choose_for_encoding(items, count, None)]
    return [used[i] for i in choose_for_encoding(items, count, blink_drop, analysis.baseline_ear)]


def face_distance(
    chosen: Sequence[tuple[npt.NDArray[np.uint8], FaceShape]],
    templates: npt.NDArray[np.float64],
    engine: LandmarkFaceEngine,
    t: Thresholds,
) -> tuple[float, list[float]]:
    """The median over ``chosen`` frames (in order) of each frame's smallest distance to
    the templates; the third frame is encoded only when the first two fall in different
    zones (member / uncertain / someone else). Returns it and the per-frame distances."""
    per_frame: list[float] = []
    for rgb, face in chosen:
        if len(per_frame) == 2 and len({_zone(d, t) for d in per_frame}) == 1:
            break  # two in one zone: a third cannot move the median out of it
        encoding = engine.encoding(rgb, face)
        per_frame.append(float(np.min(np.linalg.norm(templates - encoding, axis=1))))
    return float(statistics.median(per_frame)), per_frame


@dataclass
class Judgement:
    """The reasons and measurements of one attempt as its checks add them, and the
    verdict they make: the parts the one-shot (:func:`verify_frames`) and the guided
    session (``guided.judge_session``) judge alike."""

    thresholds: Thresholds
    measurements: dict[str, Measurement]
    reasons: set[str] = field(default_factory=set)
    distance: float | None = None

    def flag(self, code: str, when: bool = True) -> None:
        if when:
            self.reasons.add(code)

    def frames(self, *, undecodable: int, no_face: int, many: int, used: int) -> None:
        """The frames' face counts; an undecodable frame and a second face are reasons."""
        self.measurements.update(
            frames_undecodable=undecodable,
            frames_no_face=no_face,
            frames_many_faces=many,
            frames_used=used,
        )
        self.flag("undecodable_frame", bool(undecodable))
        self.flag("many_faces", bool(many))

    def replay(self, hashes: Sequence[str], seen_hashes: Collection[str]) -> None:
        """5: a frame within a bit or so of a frame of the member's earlier attempts."""
        matches, nearest = replay_check(hashes, seen_hashes, self.thresholds.replay_max_distance)
        self.measurements["replay_matches"] = matches
        if nearest is not None:
            self.measurements["replay_nearest_bits"] = nearest
        self.flag("replayed_frames", bool(matches))

    def identity(
        self,
        chosen: Sequence[tuple[int, npt.NDArray[np.uint8], FaceShape]],
        templates: Sequence[npt.NDArray[np.float64]],
        engine: LandmarkFaceEngine,
    ) -> None:
        """6: the distance of the ``chosen`` frames (position, pixels, face; the best
        first) to the member's templates."""
        t = self.thresholds
        self.measurements["templates"] = len(templates)
        if not len(templates):
            self.flag("no_template")
            return
        if not chosen:
            return
        template_array = np.array([np.asarray(x, dtype=np.float64).ravel() for x in templates])
        distance, per_frame = face_distance(
            [(rgb, face) for _, rgb, face in chosen], template_array, engine, t
        )
        self.distance = distance
        self.measurements["distance"] = _r(distance)
        self.measurements["distance_positions"] = ",".join(
            str(position) for position, _, _ in chosen[: len(per_frame)]
        )
        self.measurements["distance_per_frame"] = _series(per_frame)
        self.flag("face_mismatch", distance > t.review_tolerance)
        self.flag("face_uncertain", t.match_tolerance < distance <= t.review_tolerance)

    def verdict(self, frame_hashes: list[str]) -> Verdict:
        record_thresholds(self.measurements, self.thresholds)
        ordered = tuple(code for code in REASONS if code in self.reasons)
        return Verdict(
            outcome=outcome_of(ordered),
            reasons=ordered,
            distance=self.distance,
            frame_hashes=frame_hashes,
            measurements=self.measurements,
        )


def replay_check(
    hashes: Sequence[str], seen_hashes: Collection[str], max_distance: int
) -> tuple[int, int | None]:
    """How many of ``hashes`` lie within ``max_distance`` bits of a hash of an earlier
    attempt, and the nearest distance found (None when there is nothing to compare)."""
    seen = [v for v in (_parse_hash(h) for h in seen_hashes) if v is not None]
    matches, nearest = 0, None
    for text in hashes:
        value = _parse_hash(text)
        if value is None or not seen:
            continue
        bits = min((value ^ other).bit_count() for other in seen)
        nearest = bits if nearest is None else min(nearest, bits)
        matches += bits <= max_distance
    return matches, nearest


# --------------------------------------------------------------------------- verdict


def _zone(distance: float, t: Thresholds) -> int:
    """0: the member, 1: uncertain, 2: someone else."""
    return 0 if distance <= t.match_tolerance else 1 if distance <= t.review_tolerance else 2


def _r(value: float) -> float:
    return round(float(value), 4)


def _series(values: Sequence[float]) -> str:
    return ",".join(f"{v:.3f}" for v in values)


def outcome_of(reasons: Sequence[str]) -> Outcome:
    if not reasons:
        return "passed"
    if tuple(reasons) == ("face_uncertain",):
        return "review"
    return "failed"


def _engine(engine: LandmarkFaceEngine | None) -> LandmarkFaceEngine:
    if engine is not None:
        return engine
    return default_engine()


def verify_frames(
    frames: Sequence[bytes],
    challenges: Sequence[str],
    templates: Sequence[npt.NDArray[np.float64]],
    *,
    thresholds: Thresholds,
    seen_hashes: Collection[str] = (),
    engine: LandmarkFaceEngine | None = None,
    mirrored: bool = False,
) -> Verdict:
    """Judge one attempt: ``frames`` (JPEG/PNG bytes, in capture order), the
    ``challenges`` asked, in the order asked (names from
    :data:`server.proof_of_life.analysis.CHALLENGES`), and the member's 128-d
    ``templates``. ``seen_hashes``: frame hashes of the member's earlier attempts.
    ``mirrored``: the client sends mirror-image frames (left and right swap).

    Frame-count limits are the caller's; any count (0 included) gets a verdict. An
    unknown challenge name or a template that is not 128 numbers raises ``ValueError``.
    """
    unknown = [c for c in challenges if c not in CHALLENGES]
    if unknown:
        raise ValueError(f"unknown challenges: {unknown}")
    if any(np.asarray(x).size != 128 for x in templates):
        raise ValueError("templates must be 128-d encodings")
    t = thresholds
    faces_engine = _engine(engine)
    judged = Judgement(t, {"frames_received": len(frames)})

    # 1-3: decode, hash, landmarks.
    hashes, decoded = _decode_all(frames, t)
    used, no_face, many = _faces_of(decoded, faces_engine, t, judged.measurements)
    judged.frames(
        undecodable=len(frames) - len(decoded), no_face=no_face, many=many, used=len(used)
    )
    judged.measurements["used_positions"] = ",".join(str(u.position) for u in used)
    if len(frames) < t.min_usable_frames:
        judged.flag("too_few_frames")
    elif len(used) < t.min_usable_frames and no_face:
        judged.flag("no_face")

    # 4: liveness, only with enough frames to judge.
    analysis: SequenceAnalysis | None = None
    if len(used) >= t.min_usable_frames:
        analysis = analyse_sequence(
            [u.face.landmarks for u in used], challenges, t.liveness, mirrored=mirrored
        )
        _record_analysis(judged.measurements, analysis, used)
        decoded_hashes = [h for h in hashes if h]
        same_hash = len(decoded_hashes) >= 3 and len(set(decoded_hashes)) == 1
        judged.flag("static_frames", analysis.static or same_hash)
        judged.flag("planar_motion", analysis.planar_motion)
        judged.flag("challenge_not_done", bool(analysis.not_done))
        judged.flag("challenge_order", bool(analysis.out_of_order))
    judged.measurements["distinct_hashes"] = len({h for h in hashes if h})

    judged.replay(hashes, seen_hashes)
    chosen = _choose_for_encoding(used, analysis, t.encode_frames, t.liveness.blink_drop)
    judged.identity([(u.position, u.rgb, u.face) for u in chosen], templates, faces_engine)
    return judged.verdict(hashes)


def _decode_all(
    frames: Sequence[bytes], t: Thresholds
) -> tuple[list[str], list[tuple[int, npt.NDArray[np.uint8]]]]:
    """Each frame's hash ("" when it cannot be decoded) and the decoded ones' pixels."""
    hashes: list[str] = []
    decoded: list[tuple[int, npt.NDArray[np.uint8]]] = []
    for position, data in enumerate(frames):
        try:
            rgb = decode_frame(data, max_side=t.max_side, max_pixels=t.max_frame_pixels)
        except FrameRejected:
            hashes.append("")
            continue
        hashes.append(phash(rgb))
        decoded.append((position, rgb))
    return hashes, decoded


def _faces_of(
    decoded: Sequence[tuple[int, npt.NDArray[np.uint8]]],
    engine: LandmarkFaceEngine,
    t: Thresholds,
    m: dict[str, Measurement],
) -> tuple[list[_Used], int, int]:
    """The frames with one face (and how many had none, how many more than one): HOG
    without upsampling, and once more upsampled where none was found when short of
    frames with one face."""
    found = [engine.analyse(rgb, upsample=0) for _, rgb in decoded]
    retried = 0
    if 3 * sum(len(f) == 1 for f in found) < 2 * len(found):
        # Short of frames with one face: look again, upsampled once, where none was
        # found (faces under about 80 px). Not done otherwise: it costs 3-4 times a
        # first look, and a face missed among faces found is mostly one turned away.
        for index, (_, rgb) in enumerate(decoded):
            if not found[index]:
                found[index] = engine.analyse(rgb, upsample=1)
                retried += 1
    m["frames_retried_upsampled"] = retried
    used: list[_Used] = []
    no_face = many = 0
    for (position, rgb), detections in zip(decoded, found, strict=True):
        faces = select_faces(detections, t.second_face_min_area)
        if not faces:
            no_face += 1
        elif len(faces) > 1:
            many += 1
        else:
            used.append(_Used(position, rgb, faces[0]))
    return used, no_face, many


def _record_analysis(
    m: dict[str, Measurement], analysis: SequenceAnalysis, used: Sequence[_Used]
) -> None:
    m.update(
        ear_series=_series(analysis.ear),
        mar_series=_series(analysis.mar),
        yaw_series=_series(analysis.yaw),
        baseline_ear=_r(analysis.baseline_ear),
        min_ear=_r(min(analysis.ear)),
        baseline_mar=_r(analysis.baseline_mar),
        max_mar=_r(max(analysis.mar)),
        yaw_start=_r(analysis.start_yaw),
        yaw_min=_r(min(analysis.yaw)),
        yaw_max=_r(max(analysis.yaw)),
        yaw_range=_r(analysis.yaw_range),
        static_motion=_r(analysis.motion),
        planar_tested=int(analysis.planar_tested),
        planar_residual=_r(analysis.planar.residual),
        planar_shape_change=_r(analysis.planar.shape_change),
        planar_parallax=_r(analysis.planar.parallax),
        planar_parallax_robust=_r(analysis.planar.parallax_robust),
        face_width_px=int(statistics.median(u.face.box[1] - u.face.box[3] for u in used)),
    )
    for number, result in enumerate(analysis.challenges, start=1):
        key = f"challenge_{number}"
        m[key] = result.name
        m[f"{key}_status"] = result.status
        m[f"{key}_best"] = _r(result.best)
        if result.frame is not None and result.value is not None:
            m[f"{key}_position"] = used[result.frame].position
            m[f"{key}_value"] = _r(result.value)
        if result.first_frame is not None:
            m[f"{key}_first_position"] = used[result.first_frame].position
    if analysis.blink_recovered is not None:
        m["blink_recovered"] = int(analysis.blink_recovered)


def record_thresholds(m: dict[str, Measurement], t: Thresholds) -> None:
    live = t.liveness
    values: dict[str, float] = {
        "t_match_tolerance": t.match_tolerance,
        "t_review_tolerance": t.review_tolerance,
        "t_turn_min_yaw": live.turn_min_yaw,
        "t_blink_drop": live.blink_drop,
        "t_mouth_open_rise": live.mouth_open_rise,
        "t_planar_max_residual": live.planar_max_residual,
        "t_planar_min_parallax": live.planar_min_parallax,
        "t_static_max_motion": live.static_max_motion,
    }
    for key, value in values.items():
        m[key] = value if math.isfinite(value) else str(value)
    m["t_replay_max_distance"] = t.replay_max_distance
