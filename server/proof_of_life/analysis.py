"""Liveness geometry on 68-point face landmarks (iBUG 300-W order): pure numpy, no dlib.

Everything here takes ``(68, 2)`` float arrays of pixel coordinates (x, y) as dlib's
68-point shape predictor returns them, one per frame of an attempt, in capture order.

Measures (each a plain float per frame):

* **EAR**, the eye aspect ratio (Soukupova & Cech 2016), mean of both eyes:
  ``(|p2-p6| + |p3-p5|) / (2 |p1-p4|)`` on points 36-41 and 42-47.
* **MAR**, the inner-lip mouth aspect ratio: the three inner-lip openings (61-67, 62-66,
  63-65) over three times the inner mouth width (60-64).
* **Yaw proxy**: where the nose tip (30) falls along the line between the outer eye
  corners (36, 45), as ``2 t - 1``: 0 when it is half way, -1 at point 36, +1 at 45.
  Not a pose solver: solvePnP on a tilted print happily returns a "turned head". In a
  camera frame as captured (not mirrored), point 36 is on the image's left, so the
  proxy is **positive when the person turns to their own left** and negative when they
  turn to their own right. The page's preview is mirrored, which makes the person's
  left the screen's left, so "turn left" means the same thing to the person, to the
  preview and here. A client that mirrors the frames it sends must say so
  (``mirrored=True``: the sign is flipped).

**Planar-motion test.** A photo or a screen moved or tilted in front of the camera is a
plane: one homography maps its landmarks in one frame onto those in any other frame. A
head turning in front of the camera is not: the nose tip stands 2-4 cm in front of the
eye corners and shifts against them (parallax). For every ordered pair of frames the
rigid landmarks of one are mapped onto the other by a least-squares homography
(normalised DLT) and by a similarity (rotation, scale, shift); the RMS residuals,
divided by the inter-ocular distance (outer eye corners 36-45) of the target frame, are
``h`` (what no plane explains) and ``s`` (the shape change beyond a rigid in-plane
move). The attempt's *planar residual* is ``max h`` and its *parallax ratio* is the
least-squares slope of ``h`` on ``s`` over all pairs, ``sum(h s) / sum(s^2)``: the share
of the shape change that no plane explains, dominated by the pairs that changed most.
A real turn keeps that share (parallax grows with the turn, foreshortening only with its
square); for a plane it falls as the tilt grows, down to landmark noise. The decision
uses the smallest ratio over the attempt with one frame left out (``parallax_robust``),
so that a single frame with misplaced landmarks cannot make a picture look solid. The
residual alone separates badly on small faces (real turns 0.056-0.099, tilted prints
up to 0.046, landmark noise growing as the face shrinks); the ratio does not depend on
the face's size.

Rigid points (:data:`RIGID_POINTS`): the four eye corners (36, 39, 42, 45), the nose
bridge (27-30) and the base of the nose (31, 33, 35). They do not move with blinks,
speech or smiles, and they span the depth of the face (the nose tip is the most
forward point, the outer eye corners among the deepest that stay visible). Left out:
the eyelids, lips and chin (they move by themselves), the eyebrows (raised with the
mouth), and the jaw line, which is a silhouette that slides over the head as it turns
and is the noisiest part of dlib's shape (adding points 0 and 16 raised the residual of
warped prints more than that of real turns: 99th percentile 0.058 against 0.032).

The test only means something when the head (or the picture) turned: a still face, real
or printed, fits a homography equally well. It is applied when the yaw proxy of the
attempt spans at least ``turn_min_yaw`` (every attempt that could be credited with a
turn), and it then fails the attempt when the planar residual is below
``planar_max_residual`` or the parallax ratio below ``planar_min_parallax``.

**Challenges**, each judged against this person's own values in the same attempt (no
absolute threshold: a smiling still already has an EAR of 0.22, an open-eyed person on a
small frame 0.45):

* ``blink``: EAR at or below ``(1 - blink_drop)`` times the open-eye baseline (the
  median EAR of the attempt: a blink lasts one or two frames out of ten);
* ``turn_left`` / ``turn_right``: the yaw proxy moved from the first frame's (the page
  asks for a straight look before it starts) by ``turn_min_yaw`` or more in that
  direction;
* ``open_mouth``: MAR at least ``mouth_open_rise`` above the closed-mouth baseline (the
  25th percentile of the attempt: an open mouth is held for a while, and people talk).

Order: the first challenge is found at the first frame where its condition *starts* to
hold (it did not hold on the frame before); each next challenge at the first such onset
strictly after the previous one's frame. A held state does not count twice: a head
turned at frame 3 and still turned at frame 7 does not make a turn "after" a blink at
frame 6. A challenge whose condition never holds is ``not_done``; one that holds only
before its turn came is ``out_of_order``.

EAR and MAR are taken as dlib gives them, not corrected for the face's tilt: an affine
registration onto the first frame made the clip's EAR noisier (largest dip without a
blink 0.26 instead of 0.21) while a nodded print still faked a blink. What a print can
fake (a nod looks like a blink, a tilt like a turn) is left to the planar test, which
runs on every attempt with a turn, and every session asks for one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "CHALLENGES",
    "RIGID_POINTS",
    "ChallengeResult",
    "LivenessThresholds",
    "PlanarStats",
    "SequenceAnalysis",
    "analyse_sequence",
    "eye_aspect_ratio",
    "fit_affine",
    "fit_homography",
    "fit_similarity",
    "inter_ocular",
    "landmark_motion",
    "mouth_aspect_ratio",
    "pair_matrices",
    "pair_residuals",
    "planar_statistics",
    "transfer_rms",
    "yaw_proxy",
]

Points = npt.NDArray[np.float64]
Matrix = npt.NDArray[np.float64]

CHALLENGES: Final = ("blink", "turn_left", "turn_right", "open_mouth")
RIGID_POINTS: Final = (27, 28, 29, 30, 31, 33, 35, 36, 39, 42, 45)

_RIGHT_EYE = slice(36, 42)  # the person's right eye: the image's left in a camera frame
_LEFT_EYE = slice(42, 48)
_EPS = 1e-9


@dataclass(frozen=True)
class LivenessThresholds:
    """Liveness thresholds, each set by a stated rule from the distributions that
    ``benchmarks/liveness_rates.py`` prints (it derives every value below and says so when
    a default differs): genuine attempts built from every frame of the live clip
    (short_clip.mp4, 29.97 fps; faces about 90 px wide, inter-ocular distance 45-54 px)
    including modest movements (turns stopped after a yaw-proxy change of 0.20-0.45,
    sampled every 100, 250 or 300 ms; slow and partial synthetic blinks on upscaled
    crops; glasses, half-light, 320x240 frames) against every attack type of the
    benchmark (prints tilted, nodded, or turned by only 15-35 degrees; stills; replays;
    wrong order; missing challenges); dlib's 68 landmarks on the JPEG frames as the
    pipeline sees them. Run of 2026-12-03 (seed 7, 1554 attempts).

    Rule for the three challenges: the lowest value (0.01 steps) at which no attack of
    any type passes, every other threshold at its value here (so the order and
    missing-challenge attacks count, not only the measure's maximum), plus a margin of
    0.03 (about what re-encoding the same frames moves these measures by).
    """

    turn_min_yaw: float = 0.27
    """Yaw-proxy change from the first frame for a turn. A head model (outer eye corners
    +-45 mm, nose tip 35 mm in front of them) gives ``0.78 tan(angle)``: 0.27 is about
    19 degrees. Rule: max(lowest value with no attack passing 0.24, largest change with no
    turn made 0.21 + 0.02) + 0.03. At 0.23 a genuine window asked in the wrong order
    passes (he turns by 0.25 before opening his mouth, then on to 0.46). No turn made:
    the straight look drifts by up to 0.21, prints rotated in plane by 0.18. Genuine:
    whole turns 0.45-0.85; the held-out clip's modest turns 0.29-0.45 (issue 13) clear
    it, by little at the low end. Tilted flat pictures also reach it (dlib reads a
    squeezed face as a turned one): the planar test below runs on every attempt that
    could be credited a turn."""

    blink_drop: float = 0.24
    """EAR dip for a blink, as a share of the attempt's median: EAR <= 0.76 x median.
    Rule: lowest value with no attack passing 0.21 (below it a missing-blink attack
    passes: asked to blink and then turn, his eyes narrow by up to 0.21 as he starts to
    turn) + 0.03. So the data do not allow a lower blink threshold than before (0.25):
    the clip's own eye narrowing is as deep as dlib's reading of a partial blink.
    Synthetic blinks on upscaled crops of the clip (eyes about 38 px; upper lids 50-90 %
    down over 2-4 frames at 100 ms) dip by 0.10-0.36, median 0.20-0.29: dlib follows the
    synthetic lid on a blurred eye only part of the way, and a blink held over most of
    a short window lowers the median it is measured against. A print nodded backwards
    or tilted dips by up to 0.38 (it squeezes the eyes): a "blink" alone proves
    nothing; every session also has a turn, and the planar test stops the picture."""

    mouth_open_rise: float = 0.19
    """Inner-lip MAR rise over the closed-mouth baseline (25th percentile) for
    ``open_mouth``. Rule: lowest value with no attack passing 0.16 (below it, asked in the
    wrong order, his speaking before a turn counts as the open mouth) + 0.03. Genuine
    wide-open mouths rise by 0.35-0.42 (0.21-0.35 with glasses drawn on, 0.09-0.19 in
    half-light, 0.12-0.45 at 320x240); speech 0.1-0.39 (a mouth opened to speak is an
    open mouth)."""

    planar_max_residual: float = 0.023
    """Planar residual (max homography RMS over frame pairs, in inter-ocular distances)
    below which a turn is a flat picture. Rule: the smallest residual of the genuine
    attempts whose yaw range reaches ``turn_min_yaw`` (0.027, a 100-ms window of a turn
    stopped early) - 0.003. Prints reaching that range: 0.013-0.064, so this floor only
    stops the clean ones; the ratio below stops the rest."""

    planar_min_parallax: float = 0.60
    """Robust parallax ratio (the share of the shape change that no homography explains,
    with the most telling frame left out) below which a turn is a flat picture. Rule: the
    largest ratio of the prints whose yaw range reaches ``turn_min_yaw`` (0.589, a noisy
    still tilted 30 degrees and rolled) + 0.01. Genuine attempts with that range: from
    0.544; 8 of 162 below 0.60, from 4 windows (3 short windows of one turn, counted once
    per stop they serve; glasses drawn on).
    Under a yaw range of about 0.25 flatness cannot be judged: prints tilted by 15-20
    degrees reach 0.20-0.25 with ratios up to 0.685 (landmark noise on a still looks like
    depth) while genuine turns of that size start at 0.635. The turn threshold stays
    above that band."""

    static_max_motion: float = 0.10
    """Largest landmark displacement between any frame and the first, in inter-ocular
    distances, below which the frames are one still sent again. The same still
    re-encoded at JPEG quality 60-95 moves dlib's points by up to 0.039; the genuine
    attempts, modest ones included, by 0.29-2.6. Wide apart: kept."""

    def __post_init__(self) -> None:
        values = (
            self.turn_min_yaw,
            self.blink_drop,
            self.mouth_open_rise,
            self.planar_max_residual,
            self.planar_min_parallax,
            self.static_max_motion,
        )
        if not all(np.isfinite(v) and v >= 0 for v in values) or self.blink_drop >= 1:
            raise ValueError("liveness thresholds must be finite, >= 0, blink_drop < 1")


# --------------------------------------------------------------------------- measures


def _points(points: npt.ArrayLike) -> Points:
    array = np.asarray(points, dtype=np.float64)
    if array.shape != (68, 2):
        raise ValueError(f"expected (68, 2) landmarks, got {array.shape}")
    return array


def _dist(a: Points, b: Points) -> float:
    return float(np.hypot(*(a - b)))


def _eye_ratio(eye: Points) -> float:
    width = _dist(eye[0], eye[3])
    return (_dist(eye[1], eye[5]) + _dist(eye[2], eye[4])) / (2 * max(width, _EPS))


def eye_aspect_ratio(points: npt.ArrayLike) -> float:
    """Mean eye aspect ratio of both eyes."""
    p = _points(points)
    return (_eye_ratio(p[_RIGHT_EYE]) + _eye_ratio(p[_LEFT_EYE])) / 2


def mouth_aspect_ratio(points: npt.ArrayLike) -> float:
    """Inner-lip opening over inner-lip width (points 60-67); about 0 when closed."""
    p = _points(points)
    opening = _dist(p[61], p[67]) + _dist(p[62], p[66]) + _dist(p[63], p[65])
    return opening / (3 * max(_dist(p[60], p[64]), _EPS))


def yaw_proxy(points: npt.ArrayLike) -> float:
    """Nose tip (30) along the outer-eye-corner line (36 -> 45), as -1..1 (0: centred;
    positive: towards 45, the person turned to their own left in an unmirrored frame)."""
    p = _points(points)
    axis = p[45] - p[36]
    length2 = float(axis @ axis)
    if length2 < _EPS:
        return 0.0
    return 2 * float((p[30] - p[36]) @ axis) / length2 - 1


def inter_ocular(points: npt.ArrayLike) -> float:
    """Distance between the outer eye corners (36, 45), the unit of every residual."""
    p = _points(points)
    return _dist(p[36], p[45])


# --------------------------------------------------------------------------- fitting


def _normaliser(points: Points) -> Matrix:
    """Hartley normalisation: centroid to 0, mean distance to sqrt(2)."""
    centre = points.mean(axis=0)
    spread = float(np.mean(np.hypot(*(points - centre).T)))
    scale = np.sqrt(2) / max(spread, _EPS)
    return np.array(
        [[scale, 0, -scale * centre[0]], [0, scale, -scale * centre[1]], [0, 0, 1]],
        dtype=np.float64,
    )


def _homogeneous(points: Points) -> Points:
    return np.column_stack([points, np.ones(len(points))])


def _apply(matrix: Matrix, points: Points) -> Points:
    mapped = _homogeneous(points) @ matrix.T
    w = mapped[:, 2:3]
    w = np.where(np.abs(w) < _EPS, _EPS, w)
    return mapped[:, :2] / w


def fit_homography(src: npt.ArrayLike, dst: npt.ArrayLike) -> Matrix:
    """3x3 homography mapping ``src`` onto ``dst`` (N >= 4 points): normalised DLT, the
    least-squares solution of the algebraic system (smallest singular vector)."""
    s = np.asarray(src, dtype=np.float64)
    d = np.asarray(dst, dtype=np.float64)
    if s.shape != d.shape or s.ndim != 2 or s.shape[1] != 2 or len(s) < 4:
        raise ValueError("need two matching (N, 2) point sets with N >= 4")
    ts, td = _normaliser(s), _normaliser(d)
    sn = (_homogeneous(s) @ ts.T)[:, :2]
    dn = (_homogeneous(d) @ td.T)[:, :2]
    n = len(sn)
    a = np.zeros((2 * n, 9), dtype=np.float64)
    a[0::2, 0:2] = sn
    a[0::2, 2] = 1
    a[0::2, 6:8] = -dn[:, :1] * sn
    a[0::2, 8] = -dn[:, 0]
    a[1::2, 3:5] = sn
    a[1::2, 5] = 1
    a[1::2, 6:8] = -dn[:, 1:2] * sn
    a[1::2, 8] = -dn[:, 1]
    _, _, vt = np.linalg.svd(a)
    h: Matrix = np.linalg.inv(td) @ vt[-1].reshape(3, 3) @ ts
    return h / (h[2, 2] if abs(h[2, 2]) > _EPS else 1.0)


def fit_affine(src: npt.ArrayLike, dst: npt.ArrayLike) -> Matrix:
    """3x3 affine map (last row 0 0 1) from ``src`` onto ``dst``, least squares."""
    s = np.asarray(src, dtype=np.float64)
    d = np.asarray(dst, dtype=np.float64)
    coefficients, *_ = np.linalg.lstsq(_homogeneous(s), d, rcond=None)
    return np.vstack([coefficients.T, [0.0, 0.0, 1.0]])


def fit_similarity(src: npt.ArrayLike, dst: npt.ArrayLike) -> Matrix:
    """3x3 similarity (rotation, uniform scale, shift) from ``src`` onto ``dst``, least
    squares (Umeyama 1991, reflections excluded)."""
    s = np.asarray(src, dtype=np.float64)
    d = np.asarray(dst, dtype=np.float64)
    ms, md = s.mean(axis=0), d.mean(axis=0)
    s0, d0 = s - ms, d - md
    u, sigma, vt = np.linalg.svd(d0.T @ s0)
    sign = np.diag([1.0, 1.0 if np.linalg.det(u @ vt) >= 0 else -1.0])
    rotation = u @ sign @ vt
    scale = float(np.sum(sigma * np.diag(sign))) / max(float(np.sum(s0 * s0)), _EPS)
    matrix = np.eye(3)
    matrix[:2, :2] = scale * rotation
    matrix[:2, 2] = md - scale * rotation @ ms
    return matrix


def transfer_rms(matrix: Matrix, src: npt.ArrayLike, dst: npt.ArrayLike) -> float:
    """RMS distance between ``matrix`` applied to ``src`` and ``dst``, in pixels."""
    s = np.asarray(src, dtype=np.float64)
    d = np.asarray(dst, dtype=np.float64)
    return float(np.sqrt(np.mean(np.sum((_apply(matrix, s) - d) ** 2, axis=1))))


def pair_residuals(points: npt.ArrayLike, reference: npt.ArrayLike) -> tuple[float, float]:
    """``(h, s)``: RMS residuals of the homography and of the similarity mapping the rigid
    points of ``points`` onto ``reference``, in inter-ocular distances of ``reference``."""
    p, r = _points(points), _points(reference)
    rigid = list(RIGID_POINTS)
    src, dst = p[rigid], r[rigid]
    unit = max(inter_ocular(r), _EPS)
    h = transfer_rms(fit_homography(src, dst), src, dst) / unit
    s = transfer_rms(fit_similarity(src, dst), src, dst) / unit
    return h, s


def pair_matrices(shapes: Sequence[npt.ArrayLike]) -> tuple[Matrix, Matrix]:
    """:func:`pair_residuals` for every ordered pair at once: ``h[i, j]`` and ``s[i, j]``
    map frame ``j``'s rigid points onto frame ``i``'s (zeros on the diagonal). The same
    arithmetic as the pairwise functions, batched through numpy (one SVD call for all
    the homographies): about 20 times faster for a dozen frames."""
    rigid = list(RIGID_POINTS)
    pts = np.stack([_points(p)[rigid] for p in shapes])  # (n, m, 2)
    n, m = pts.shape[0], pts.shape[1]
    if n < 2:
        return np.zeros((n, n)), np.zeros((n, n))
    # Hartley normalisation per frame.
    centre = pts.mean(axis=1)  # (n, 2)
    spread = np.mean(np.hypot(*(pts - centre[:, None, :]).transpose(2, 0, 1)), axis=1)
    scale = np.sqrt(2) / np.maximum(spread, _EPS)
    norm = np.zeros((n, 3, 3))
    norm[:, 0, 0] = norm[:, 1, 1] = scale
    norm[:, 0, 2] = -scale * centre[:, 0]
    norm[:, 1, 2] = -scale * centre[:, 1]
    norm[:, 2, 2] = 1.0
    normed = (pts - centre[:, None, :]) * scale[:, None, None]  # (n, m, 2)
    ii, jj = np.nonzero(~np.eye(n, dtype=bool))  # i: reference (dst), j: the other (src)
    sn, dn = normed[jj], normed[ii]  # (P, m, 2)
    pairs = len(ii)
    a = np.zeros((pairs, 2 * m, 9))
    a[:, 0::2, 0:2] = sn
    a[:, 0::2, 2] = 1
    a[:, 0::2, 6:8] = -dn[:, :, :1] * sn
    a[:, 0::2, 8] = -dn[:, :, 0]
    a[:, 1::2, 3:5] = sn
    a[:, 1::2, 5] = 1
    a[:, 1::2, 6:8] = -dn[:, :, 1:2] * sn
    a[:, 1::2, 8] = -dn[:, :, 1]
    _, _, vt = np.linalg.svd(a)
    hn = vt[:, -1].reshape(pairs, 3, 3)
    hom = np.linalg.inv(norm[ii]) @ hn @ norm[jj]
    corner = hom[:, 2, 2]
    hom = hom / np.where(np.abs(corner) > _EPS, corner, 1.0)[:, None, None]
    src, dst = pts[jj], pts[ii]
    ones = np.ones((pairs, m, 1))
    mapped = np.concatenate([src, ones], axis=2) @ hom.transpose(0, 2, 1)
    w = mapped[:, :, 2:3]
    w = np.where(np.abs(w) < _EPS, _EPS, w)
    unit = np.maximum(np.hypot(*(dst[:, -1] - dst[:, -4]).T), _EPS)  # points 45 and 36
    h_rms = np.sqrt(np.mean(np.sum((mapped[:, :, :2] / w - dst) ** 2, axis=2), axis=1)) / unit
    # Similarity (Umeyama), batched.
    ms, md = src.mean(axis=1), dst.mean(axis=1)
    s0, d0 = src - ms[:, None, :], dst - md[:, None, :]
    u, sigma, vt2 = np.linalg.svd(d0.transpose(0, 2, 1) @ s0)
    det = np.linalg.det(u @ vt2)
    sign = np.where(det >= 0, 1.0, -1.0)
    d_sign = np.zeros((pairs, 2, 2))
    d_sign[:, 0, 0] = 1.0
    d_sign[:, 1, 1] = sign
    rotation = u @ d_sign @ vt2
    trace = sigma[:, 0] + sigma[:, 1] * sign
    factor = trace / np.maximum(np.sum(s0 * s0, axis=(1, 2)), _EPS)
    sim = factor[:, None, None] * rotation
    moved = src @ sim.transpose(0, 2, 1) + (md - np.einsum("pij,pj->pi", sim, ms))[:, None, :]
    s_rms = np.sqrt(np.mean(np.sum((moved - dst) ** 2, axis=2), axis=1)) / unit
    h = np.zeros((n, n))
    s = np.zeros((n, n))
    h[ii, jj] = h_rms
    s[ii, jj] = s_rms
    return h, s


@dataclass(frozen=True)
class PlanarStats:
    residual: float  # max h over ordered pairs
    shape_change: float  # max s over ordered pairs
    parallax: float  # least-squares slope of h on s over the pairs
    parallax_robust: float  # the smallest parallax with any one frame left out


def planar_statistics(shapes: Sequence[npt.ArrayLike]) -> PlanarStats:
    """Planar residual, shape change and parallax ratio over every ordered pair of frames
    (each frame in turn is the reference); zeros for fewer than two frames.

    ``parallax_robust`` is the parallax ratio recomputed with each frame left out in
    turn, the smallest of them (with three frames or more): a real turn shows in several
    frames, while one frame whose landmarks went astray (a misplaced detection) can look
    three-dimensional on its own.
    """
    points = [_points(p) for p in shapes]
    n = len(points)
    if n < 2:
        return PlanarStats(0.0, 0.0, 0.0, 0.0)
    h, s = pair_matrices(points)
    hs, ss = h * s, s * s  # zero on the diagonal
    numerator, denominator = float(hs.sum()), float(ss.sum())
    parallax = numerator / denominator if denominator > _EPS else 0.0
    robust = parallax
    if n >= 3:
        ratios = []
        for k in range(n):
            num = numerator - hs[k].sum() - hs[:, k].sum()
            den = denominator - ss[k].sum() - ss[:, k].sum()
            ratios.append(num / den if den > _EPS else 0.0)
        robust = float(min(ratios))
    return PlanarStats(float(h.max()), float(s.max()), parallax, robust)


def landmark_motion(shapes: Sequence[npt.ArrayLike]) -> float:
    """Largest displacement of any of the 68 points between any frame and the first, in
    the first frame's inter-ocular distances (image coordinates, nothing aligned)."""
    points = [_points(p) for p in shapes]
    if len(points) < 2:
        return 0.0
    first = points[0]
    unit = max(inter_ocular(first), _EPS)
    return max(float(np.max(np.hypot(*(p - first).T))) for p in points[1:]) / unit


# --------------------------------------------------------------------------- sequence

Status = Literal["done", "not_done", "out_of_order"]


@dataclass(frozen=True)
class ChallengeResult:
    name: str
    status: Status
    frame: int | None  # position in the analysed sequence where it was credited
    value: float | None  # the measure there: EAR drop, yaw change, or MAR rise
    first_frame: int | None  # first position where its condition held, in any order
    best: float  # the largest value of the measure over the attempt


@dataclass(frozen=True)
class SequenceAnalysis:
    ear: tuple[float, ...]  # EAR per frame
    mar: tuple[float, ...]  # MAR per frame
    yaw: tuple[float, ...]  # yaw proxy per frame (sign already flipped for mirrored frames)
    baseline_ear: float
    baseline_mar: float
    start_yaw: float
    yaw_range: float
    motion: float
    planar: PlanarStats
    planar_tested: bool
    static: bool
    planar_motion: bool
    blink_recovered: bool | None  # EAR back above the half-way mark after the blink
    challenges: tuple[ChallengeResult, ...]

    @property
    def not_done(self) -> bool:
        return any(c.status == "not_done" for c in self.challenges)

    @property
    def out_of_order(self) -> bool:
        return any(c.status == "out_of_order" for c in self.challenges)


def _onsets(held: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """True where a condition starts to hold (it did not on the frame before)."""
    previous = np.concatenate([[False], held[:-1]])
    onsets: npt.NDArray[np.bool_] = held & ~previous
    return onsets


def _judge_in_order(
    challenges: Sequence[str],
    measures: dict[str, npt.NDArray[np.float64]],
    limits: dict[str, float],
) -> list[ChallengeResult]:
    """Each challenge done at the first onset of its measure past its limit after the
    frame that confirmed the challenge before it; seen only earlier: out of order."""
    results: list[ChallengeResult] = []
    previous = -1
    for name in challenges:
        measure = measures[name]
        # A small tolerance keeps a value that equals its threshold on the right side.
        held = measure >= limits[name] - 1e-9
        starts = np.flatnonzero(_onsets(held))
        later = starts[starts > previous]
        first = int(starts[0]) if len(starts) else None
        best = float(measure.max())
        if len(later):
            frame = int(later[0])
            results.append(ChallengeResult(name, "done", frame, float(measure[frame]), first, best))
            previous = frame
        else:
            status: Status = "out_of_order" if first is not None else "not_done"
            results.append(ChallengeResult(name, status, None, None, first, best))
    return results


def analyse_sequence(
    shapes: Sequence[npt.ArrayLike],
    challenges: Sequence[str],
    thresholds: LivenessThresholds | None = None,
    *,
    mirrored: bool = False,
) -> SequenceAnalysis:
    """Measure one attempt's frames (landmarks in capture order) and judge the challenges,
    in the order asked. Raises ``ValueError`` on an empty sequence or an unknown
    challenge name (a bug in the caller, not a property of the attempt)."""
    t = thresholds or LivenessThresholds()
    unknown = [c for c in challenges if c not in CHALLENGES]
    if unknown:
        raise ValueError(f"unknown challenges: {unknown}")
    points = [_points(p) for p in shapes]
    if not points:
        raise ValueError("no frames to analyse")
    ear = np.array([eye_aspect_ratio(p) for p in points])
    mar = np.array([mouth_aspect_ratio(p) for p in points])
    sign = -1.0 if mirrored else 1.0
    yaw = np.array([sign * yaw_proxy(p) for p in points])

    baseline_ear = float(np.median(ear))
    baseline_mar = float(np.percentile(mar, 25))
    start_yaw = float(yaw[0])
    yaw_range = float(np.ptp(yaw))
    measures = {
        "blink": 1 - ear / max(baseline_ear, _EPS),
        "turn_left": yaw - start_yaw,
        "turn_right": start_yaw - yaw,
        "open_mouth": mar - baseline_mar,
    }
    limits = {
        "blink": t.blink_drop,
        "turn_left": t.turn_min_yaw,
        "turn_right": t.turn_min_yaw,
        "open_mouth": t.mouth_open_rise,
    }

    results = _judge_in_order(challenges, measures, limits)
    blink_recovered: bool | None = None
    blink = next((c for c in results if c.name == "blink" and c.frame is not None), None)
    if blink is not None and blink.frame is not None:
        after = ear[blink.frame + 1 :]
        blink_recovered = bool(np.any(after >= baseline_ear * (1 - t.blink_drop / 2)))

    motion = landmark_motion(points)
    planar = planar_statistics(points)
    planar_tested = len(points) >= 2 and yaw_range >= t.turn_min_yaw
    planar_motion = planar_tested and (
        planar.residual < t.planar_max_residual or planar.parallax_robust < t.planar_min_parallax
    )
    return SequenceAnalysis(
        ear=tuple(float(v) for v in ear),
        mar=tuple(float(v) for v in mar),
        yaw=tuple(float(v) for v in yaw),
        baseline_ear=baseline_ear,
        baseline_mar=baseline_mar,
        start_yaw=start_yaw,
        yaw_range=yaw_range,
        motion=motion,
        planar=planar,
        planar_tested=planar_tested,
        static=len(points) >= 2 and motion < t.static_max_motion,
        planar_motion=planar_motion,
        blink_recovered=blink_recovered,
        challenges=tuple(results),
    )
