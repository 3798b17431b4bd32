"""Visit integrity: photo reuse robust to crops, rotations, re-encoding and small edits
(lane B). Pure: no Flask, no database, no server.region.

Two stages (docs/field-visits.md, "Photo reuse"):

1. **Index.** Each photo keeps two 64-bit DCT perceptual hashes: of the whole picture
   (``full``) and of its centre window, 16 % trimmed off every side (``centre``). A new
   photo is hashed under each of the 8 turns and mirrors of the square (its ``full``
   hashes against the stored ``full`` ones) and, for each turn, under a grid of crop
   hypotheses (up to 16 % off one or two edges, or off all four alike): each hypothesis
   says where the old photo's centre window would lie inside the new one, and that
   window is hashed against the stored ``centre`` hashes. A crop of the old picture then
   lands within a few bits of one hypothesis, where today's single hash already drifts
   past its limit at a 5 % crop. Only the new photo's hashes are many; each stored photo
   keeps two.
2. **Verification.** Hashes alone cannot tell two similar brick houses apart (measured:
   4 bits apart). The nearest few candidates are compared with local features (OpenCV
   ORB, ratio test, RANSAC) to find the transform from the new picture to the old one;
   the count of consistent matches is not decisive (repeated brick corners of two
   different houses give dozens), so the old picture is warped onto the new one and the
   two pictures' details (band-pass, 256 px) are correlated over their overlap: the same
   picture or scene lines up everywhere, different houses only where corners coincide.
   Figures: benchmarks/photo_pairs.py.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any, Final, Literal

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image

from server.visits.checks import Flag

__all__ = [
    "CENTRE_TRIM",
    "HASH_KINDS",
    "MIN_FEATURES",
    "Candidate",
    "Features",
    "Model",
    "PhotoMatch",
    "PhotoRules",
    "Picture",
    "QueryHashes",
    "StoredHashes",
    "Verification",
    "candidates",
    "features",
    "is_near_duplicate",
    "is_reuse",
    "near_duplicate_flags",
    "nearest",
    "parse_photos_rules",
    "query_hashes",
    "reuse_flags",
    "reuse_turns",
    "same_picture",
    "same_scene",
    "stored_hashes",
    "verify",
    "verify_pair",
]

HashKind = Literal["full", "centre"]
HASH_KINDS: Final[tuple[HashKind, ...]] = ("full", "centre")
Model = Literal["similarity", "homography"]

CENTRE_TRIM: Final = 0.16
"""Share of the width (height) the stored ``centre`` window leaves off each side: the
largest crop of one edge the index is built to follow. Changing it changes every stored
``centre`` hash (re-run the backfill)."""
_CROP_STEPS: Final = (0.0, 0.04, 0.08, 0.12, CENTRE_TRIM)
"""Crop hypotheses per edge: a real crop is at most 2 % of an edge from one of them."""
_HASH_SIDE: Final = 32
_WORK_SIDE: Final = 192  # the grey copy the hashes are computed from (long side, px)
_ORB_FEATURES: Final = 500
_RATIO: Final = 0.8  # Lowe's ratio test: keep a match clearly better than the runner-up
_RANSAC_PX: Final = 6.0  # reprojection error allowed at the 640 px verification scale
_FAST_THRESHOLD: Final = 10
"""ORB's corner contrast (OpenCV's default is 20): simple scenes (a room of plain walls
and furniture) keep enough corners to be verified; the correlation, not the count of
matches, decides."""
_CHECK_SIDE: Final = 256  # the correlation's grey copy (long side, px)
_MIN_OVERLAP: Final = 0.1
"""Share of the new picture the old must cover for the correlation to be measured on
(copies measured down to 0.18 when few corners give a partial transform)."""
MIN_FEATURES: Final = 10
"""Below this many ORB keypoints in either picture (a plain wall, a dark room) local
features cannot tell: the match is left unverified."""

# The 8 turns and mirrors of a rectangle; ``new.transpose(op)`` lines the new photo up
# with the old one when its hash matched under ``op``.
_DIHEDRAL: Final[tuple[tuple[Image.Transpose | None, str], ...]] = (
    (None, ""),
    (Image.Transpose.ROTATE_90, "rotation 90"),
    (Image.Transpose.ROTATE_180, "rotation 180"),
    (Image.Transpose.ROTATE_270, "rotation 270"),
    (Image.Transpose.FLIP_LEFT_RIGHT, "mirror"),
    (Image.Transpose.FLIP_TOP_BOTTOM, "mirror, rotation 180"),
    (Image.Transpose.TRANSPOSE, "mirror, rotation 90"),
    (Image.Transpose.TRANSVERSE, "mirror, rotation 270"),
)


# --------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class PhotoRules:
    """The region file's ``[integrity.photos]`` section (defaults equal the file's)."""

    candidate_hamming: int = 14
    """A stored hash this close (of 64 bits) to one of the new photo's makes a candidate."""
    max_candidates: int = 16
    """Candidates verified per photo, nearest first (bounds the job's time)."""
    verify_side: int = 640
    """Both pictures are compared at this long side (px)."""
    reuse_min_points: int = 8
    """RANSAC inliers (similarity transform) the transform must rest on."""
    reuse_min_correlation: float = 0.8
    """Correlation of the pictures' details under that transform for "the same
    picture"."""
    near_duplicate_hamming: int = 20
    """The looser candidate radius within one caseworker's month."""
    near_duplicate_min_points: int = 8
    """RANSAC inliers (homography: the same wall shot from a step aside)."""
    near_duplicate_min_correlation: float = 0.7
    """Correlation of the details under that homography for a near-duplicate."""


_FLOAT_KEYS: Final = {"reuse_min_correlation", "near_duplicate_min_correlation"}
_INT_KEYS: Final = {f.name for f in fields(PhotoRules)} - _FLOAT_KEYS


def parse_photos_rules(data: dict[str, Any]) -> PhotoRules:
    """Validate ``[integrity.photos]``; raises ValueError with the key's path."""
    where = "integrity.photos."
    unknown = set(data) - _INT_KEYS - _FLOAT_KEYS
    if unknown:
        raise ValueError(f"{where}{sorted(unknown)[0]}: unknown key")
    values: dict[str, Any] = {}
    for key in sorted(_INT_KEYS & set(data)):
        value = data[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where}{key}: must be an integer")
        values[key] = value
    for key in sorted(_FLOAT_KEYS & set(data)):
        value = data[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{where}{key}: must be a number")
        if not 0 < value < 1:
            raise ValueError(f"{where}{key}: must be between 0 and 1 (exclusive)")
        values[key] = float(value)
    rules = PhotoRules(**values)
    for key in ("candidate_hamming", "near_duplicate_hamming"):
        if not 0 <= getattr(rules, key) <= 32:
            raise ValueError(f"{where}{key}: must be between 0 and 32 bits")
    if rules.max_candidates < 1:
        raise ValueError(f"{where}max_candidates: must be at least 1")
    for key in ("reuse_min_points", "near_duplicate_min_points"):
        if getattr(rules, key) < 4:
            raise ValueError(f"{where}{key}: must be at least 4 (a transform's own points)")
    if not 128 <= rules.verify_side <= 2048:
        raise ValueError(f"{where}verify_side: must be between 128 and 2048 px")
    return rules


# --------------------------------------------------------------------------- hashes


def _dct_rows() -> npt.NDArray[np.float64]:
    n = np.arange(_HASH_SIDE)
    k = np.arange(8)[:, None]
    return np.cos(math.pi * (2 * n + 1) * k / (2 * _HASH_SIDE))


_DCT8: Final = _dct_rows()  # the 8 lowest DCT-II frequencies of a 32-sample row


def _phash(windows: npt.NDArray[np.float32]) -> npt.NDArray[np.uint64]:
    """pHash of each 32x32 window: the 8x8 lowest DCT frequencies against their median
    (imagehash's definition), as unsigned 64-bit integers."""
    low = np.einsum("kn,wnm,lm->wkl", _DCT8, windows, _DCT8).reshape(len(windows), 64)
    bits = low > np.median(low, axis=1, keepdims=True)
    return np.packbits(bits, axis=1).view(">u8").ravel().astype(np.uint64)


def _grey(img: Image.Image) -> Image.Image:
    grey = img.convert("L")
    grey.thumbnail((_WORK_SIDE, _WORK_SIDE), Image.Resampling.LANCZOS)
    return grey


def _window(grey: Image.Image, left: float, right: float, top: float, bottom: float) -> Any:
    width, height = grey.size
    box = (
        round(width * left),
        round(height * top),
        max(round(width * left) + 1, round(width * (1 - right))),
        max(round(height * top) + 1, round(height * (1 - bottom))),
    )
    side = (_HASH_SIDE, _HASH_SIDE)
    return np.asarray(grey.crop(box).resize(side, Image.Resampling.BILINEAR), dtype=np.float32)


def _signed(value: np.uint64) -> int:
    """A 64-bit hash as the signed integer a BIGINT column holds."""
    return int(np.array([value], dtype=np.uint64).view(np.int64)[0])


def stored_hashes(img: Image.Image) -> dict[HashKind, int]:
    """The hashes a photo keeps in the index (signed 64-bit, for a BIGINT column)."""
    grey = _grey(img)
    t = CENTRE_TRIM
    hashes = _phash(np.stack([_window(grey, 0, 0, 0, 0), _window(grey, t, t, t, t)]))
    return {"full": _signed(hashes[0]), "centre": _signed(hashes[1])}


def _crop_hypotheses() -> list[tuple[float, float, float, float]]:
    """(left, right, top, bottom) shares cut off: up to two edges, or all four alike."""
    found: set[tuple[float, float, float, float]] = {
        (left, right, top, bottom)
        for left, right, top, bottom in itertools.product(_CROP_STEPS, repeat=4)
        if sum(1 for side in (left, right, top, bottom) if side > 0) <= 2
    }
    found.update((s, s, s, s) for s in _CROP_STEPS)
    return sorted(found)


_HYPOTHESES: Final = _crop_hypotheses()


@dataclass(frozen=True)
class QueryHashes:
    """A new photo's hashes under every turn (``full``) and crop hypothesis (``centre``),
    each with the index of its turn in the dihedral group and whether it assumed a crop."""

    full: npt.NDArray[np.uint64]
    full_turn: npt.NDArray[np.int8]
    centre: npt.NDArray[np.uint64]
    centre_turn: npt.NDArray[np.int8]
    centre_cropped: npt.NDArray[np.bool_]

    def of_kind(
        self, kind: HashKind
    ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.int8], npt.NDArray[np.bool_]]:
        """The hashes compared with stored ``kind`` hashes, their turns and crops."""
        if kind == "full":
            return self.full, self.full_turn, np.zeros(len(self.full), dtype=np.bool_)
        return self.centre, self.centre_turn, self.centre_cropped


def query_hashes(img: Image.Image) -> QueryHashes:
    """Hash the new photo under the 8 turns and mirrors, and under every crop hypothesis
    of each: where the old photo's centre window would lie if the new one were the old
    one cut by ``(left, right, top, bottom)``. About 0.1 s for ~900 windows."""
    grey0 = _grey(img)
    t = CENTRE_TRIM
    full, windows, turns, cropped = [], [], [], []
    for turn, (op, _) in enumerate(_DIHEDRAL):
        grey = grey0 if op is None else grey0.transpose(op)
        full.append(_window(grey, 0, 0, 0, 0))
        for left, right, top, bottom in _HYPOTHESES:
            across, down = 1 - left - right, 1 - top - bottom
            windows.append(
                _window(
                    grey,
                    (t - left) / across,
                    (t - right) / across,
                    (t - top) / down,
                    (t - bottom) / down,
                )
            )
            turns.append(turn)
            cropped.append(left + right + top + bottom > 0)
    return QueryHashes(
        full=_phash(np.stack(full)),
        full_turn=np.arange(len(_DIHEDRAL), dtype=np.int8),
        centre=_phash(np.stack(windows)),
        centre_turn=np.array(turns, dtype=np.int8),
        centre_cropped=np.array(cropped, dtype=np.bool_),
    )


@dataclass(frozen=True)
class StoredHashes:
    """Index rows: the photo each hash belongs to, its kind and the signed hash."""

    photo_ids: Sequence[int]
    kinds: Sequence[str]
    hashes: Sequence[int]


@dataclass(frozen=True)
class Candidate:
    """A stored photo whose hash is near one of the new photo's."""

    photo_id: int
    distance: int
    turn: int
    """Index into the dihedral group: ``new.transpose`` by it lines the pictures up."""
    cropped: bool

    @property
    def how(self) -> str:
        """What the hashes say was done to the picture ("rotation 90, crop")."""
        parts = [_DIHEDRAL[self.turn][1], "crop" if self.cropped else ""]
        return ", ".join(p for p in parts if p) or "same framing"


def _best(
    stored: npt.NDArray[np.uint64], query: npt.NDArray[np.uint64], radius: int
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """The stored hashes within ``radius`` of any query hash: their positions, smallest
    distances and the query hash that gave it. One pass over the stored hashes per query
    hash (XOR and popcount, ~3 ms per million), then the few found are looked at again."""
    nearest_bits = np.full(len(stored), 64, dtype=np.uint8)
    for value in query:
        np.minimum(nearest_bits, np.bitwise_count(stored ^ value), out=nearest_bits)
    found = np.flatnonzero(nearest_bits <= radius)
    table = np.bitwise_count(stored[found, None] ^ query[None, :])
    return found, table.min(axis=1).astype(np.intp), table.argmin(axis=1)


def nearest(query: QueryHashes, rows: StoredHashes, radius: int, limit: int) -> list[Candidate]:
    """The stored photos within ``radius`` bits of the new one (any kind of hash), each
    once at its smallest distance, nearest first, at most ``limit`` of them.

    Cost: ~900 query hashes against each stored ``centre`` hash, 8 against each ``full``
    one: about 3 s for 1M stored photos on one core (docs/field-visits.md).
    """
    ids = np.asarray(rows.photo_ids, dtype=np.int64)
    kinds = np.asarray(rows.kinds)
    hashes = np.asarray(rows.hashes, dtype=np.int64).view(np.uint64)
    found: dict[HashKind, tuple[npt.NDArray[np.int64], npt.NDArray[np.uint64]]] = {}
    for kind in HASH_KINDS:
        mask = kinds == kind
        kind_hashes = hashes[mask]
        near = _best(kind_hashes, query.of_kind(kind)[0], radius)[0]
        found[kind] = (ids[mask][near], kind_hashes[near])
    return candidates(query, found, limit)


def candidates(
    query: QueryHashes,
    found: dict[HashKind, tuple[npt.NDArray[np.int64], npt.NDArray[np.uint64]]],
    limit: int,
) -> list[Candidate]:
    """The candidates of :func:`nearest` from the stored hashes found near the query,
    per kind (photo ids, hashes; every hash within the radius and perhaps some
    farther): each photo once at its smallest distance (its ``full`` hash's on a tie),
    under the first query hash that gives it, nearest first, at most ``limit``. The
    resident index (server/visits/photo_hash_index.py) ends with it too: its
    candidates are the linear scan's."""
    best: dict[int, Candidate] = {}
    for kind in HASH_KINDS:
        if kind not in found or len(found[kind][0]) == 0:
            continue
        photo_ids, stored = found[kind]
        qh, turns, cropped = query.of_kind(kind)
        table = np.bitwise_count(stored[:, None] ^ qh[None, :])
        for photo_id, dist, which in zip(
            photo_ids.tolist(),
            table.min(axis=1).tolist(),
            table.argmin(axis=1).tolist(),
            strict=True,
        ):
            here = Candidate(int(photo_id), int(dist), int(turns[which]), bool(cropped[which]))
            if photo_id not in best or here.distance < best[photo_id].distance:
                best[photo_id] = here
    return sorted(best.values(), key=lambda c: (c.distance, c.photo_id))[:limit]


# --------------------------------------------------------------------------- verification


@dataclass(frozen=True, eq=False)
class Features:
    """What verification needs of one picture (as turned): its ORB keypoints and
    descriptors at the verification side, and a grey copy 256 px long for the
    correlation. About 90 kB: cheap to keep for the stored photos seen recently."""

    points: npt.NDArray[np.float32]
    descriptors: Any
    """ORB's binary descriptors (N x 32 bytes), None when it found no corner."""
    grey: Any
    """uint8, 256 px long."""
    to_grey: npt.NDArray[np.float64]
    """3x3: keypoint (feature picture) pixel coordinates to ``grey``'s."""

    @property
    def count(self) -> int:
        return 0 if self.descriptors is None else len(self.descriptors)


def features(img: Image.Image, side: int, turn: int = 0) -> Features:
    """The features of ``img`` turned by ``turn`` (an index into the dihedral group),
    found at most ``side`` px long."""
    op = _DIHEDRAL[turn][0]
    grey = img.convert("L")
    if op is not None:
        grey = grey.transpose(op)
    # Both pictures at the same size: a smaller one (a copy shrunk, a 512 px thumbnail)
    # is enlarged, so that ORB finds its corners at the other's scales.
    grey = grey.resize(
        (
            max(1, round(grey.width * side / max(grey.size))),
            max(1, round(grey.height * side / max(grey.size))),
        ),
        Image.Resampling.LANCZOS,
    )
    pixels = np.asarray(grey)
    orb = cv2.ORB.create(nfeatures=_ORB_FEATURES, fastThreshold=_FAST_THRESHOLD)
    points, descriptors = orb.detectAndCompute(pixels, None)
    height, width = pixels.shape
    f = _CHECK_SIDE / max(width, height)
    size = (max(16, round(width * f)), max(16, round(height * f)))
    fx, fy = size[0] / width, size[1] / height
    return Features(
        np.array([p.pt for p in points], dtype=np.float32).reshape(-1, 2),
        descriptors,
        cv2.resize(pixels, size, interpolation=cv2.INTER_AREA),
        np.array([[fx, 0, 0.5 * fx - 0.5], [0, fy, 0.5 * fy - 0.5], [0, 0, 1]]),
    )


class Picture:
    """A new photo's features under each turn, found when first asked for (the
    candidates of one photo share them)."""

    def __init__(self, img: Image.Image, side: int) -> None:
        self.img = img
        self.side = side
        self._turned: dict[int, Features] = {}

    def turned(self, turn: int) -> Features:
        if turn not in self._turned:
            self._turned[turn] = features(self.img, self.side, turn)
        return self._turned[turn]


@dataclass(frozen=True)
class Verification:
    """How well the best transform found lines the new picture up with the old one."""

    turn: int
    """The turn undone before matching (ORB follows turns, not mirrors)."""
    points: int
    """RANSAC inliers among the ratio-tested ORB matches: the transform's support."""
    correlation: float
    """Normalized cross-correlation of the pictures' details (grey, 256 px, band-pass:
    edges and textures of 2-8 px) over the overlap, the old picture warped onto the new
    by the transform. The same picture lines up everywhere (copies: 0.66-1.00, 5 % tail
    0.97); different houses whose brick corners happen to fit one transform line up only
    there (0.43 at most; benchmarks/photo_pairs.py)."""
    overlap: float
    """Share of the new picture the old one covers under the transform."""
    scale: float
    """Linear scale of the transform: old picture px per new picture px."""
    sane: bool
    """A plausible view change: orientation kept, scale within 1/4-4, perspective
    changing the scale across the frame by less than half, an overlap of 10 % or more."""

    @property
    def how(self) -> str:
        return _DIHEDRAL[self.turn][1]


def _band(grey: Any) -> Any:
    """The details of a grey picture: a difference of Gaussians (sigma 1 and 4 px)."""
    img = grey.astype(np.float32)
    return cv2.GaussianBlur(img, (0, 0), 1.0) - cv2.GaussianBlur(img, (0, 0), 4.0)


def _correlation(new: Features, old: Features, m: npt.NDArray[np.float64]) -> tuple[float, float]:
    """(correlation, overlap) of ``new`` and ``old`` warped onto it by ``m`` (new keypoint
    px to old keypoint px), over the overlap's inside (1 px off its border)."""
    ms = old.to_grey @ m @ np.linalg.inv(new.to_grey)
    height, width = new.grey.shape
    inverse = cv2.WARP_INVERSE_MAP
    warped = cv2.warpPerspective(
        _band(old.grey), ms, (width, height), flags=cv2.INTER_LINEAR | inverse
    )
    inside = cv2.warpPerspective(
        np.ones(old.grey.shape, np.uint8), ms, (width, height), flags=cv2.INTER_NEAREST | inverse
    )
    mask = cv2.erode(inside, np.ones((3, 3), np.uint8)) > 0
    overlap = float(mask.mean())
    if mask.sum() < 256:
        return 0.0, overlap
    a = _band(new.grey)[mask]
    b = warped[mask]
    a -= a.mean()
    b -= b.mean()
    norm = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return (float((a * b).sum()) / norm if norm > 1e-6 else 0.0), overlap


def _plausible(m: npt.NDArray[np.float64], width: float, height: float) -> tuple[bool, float]:
    """(plausible, linear scale) of ``m`` for a ``width`` x ``height`` new picture: its
    corners map to a convex quadrilateral of the same orientation, the scale is within
    1/4-4 and the perspective changes it across the frame by less than half."""
    corners = np.array([[0, 0, 1], [width, 0, 1], [width, height, 1], [0, height, 1]])
    mapped = corners @ m.T
    if np.any(mapped[:, 2] <= 1e-9):
        return False, 0.0
    quad = mapped[:, :2] / mapped[:, 2:]
    edges = np.roll(quad, -1, axis=0) - quad
    turns = edges[:, 0] * np.roll(edges[:, 1], -1) - edges[:, 1] * np.roll(edges[:, 0], -1)
    area = 0.5 * float(
        np.sum(quad[:, 0] * np.roll(quad[:, 1], -1) - np.roll(quad[:, 0], -1) * quad[:, 1])
    )
    scale = math.sqrt(max(area, 0.0) / (width * height))
    w = mapped[:, 2]
    return bool(np.all(turns > 0) and 0.25 <= scale <= 4 and w.max() / w.min() < 1.5), scale


def _compare(new: Features, old: Features, model: Model, turn: int) -> Verification | None:
    if min(new.count, old.count) < MIN_FEATURES:
        return None
    pairs = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(new.descriptors, old.descriptors, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < _RATIO * p[1].distance]
    nothing = Verification(turn, 0, 0.0, 0.0, 0.0, False)
    if len(good) < 4:
        return nothing
    src = new.points[[m.queryIdx for m in good]]
    dst = old.points[[m.trainIdx for m in good]]
    if model == "similarity":
        affine, inliers = cv2.estimateAffinePartial2D(
            src, dst, method=cv2.RANSAC, ransacReprojThreshold=_RANSAC_PX
        )
        m = None if affine is None else np.vstack([affine, [0.0, 0.0, 1.0]])
    else:
        m, inliers = cv2.findHomography(src, dst, cv2.RANSAC, _RANSAC_PX)
    if m is None or inliers is None:
        return nothing
    height, width = new.grey.shape
    corner = np.linalg.inv(new.to_grey) @ np.array([width - 0.5, height - 0.5, 1.0])
    plausible, scale = _plausible(m, float(corner[0]), float(corner[1]))
    correlation, overlap = _correlation(new, old, m)
    return Verification(
        turn,
        int(np.count_nonzero(inliers)),
        correlation,
        overlap,
        scale,
        plausible and overlap >= _MIN_OVERLAP,
    )


def verify(
    new: Picture,
    old: Features,
    turns: Iterable[int],
    model: Model,
    decisive: Callable[[Verification], bool] | None = None,
) -> Verification | None:
    """The best transform of the given ``model`` between ``new`` (turned by each of
    ``turns`` in turn) and ``old``: sane first, then the highest correlation. Stops at a
    ``decisive`` one. None when either picture has too few features to tell."""
    best: Verification | None = None
    for turn in dict.fromkeys(turns):
        found = _compare(new.turned(turn), old, model, turn)
        if found is None:
            continue
        if best is None or (found.sane, found.correlation) > (best.sane, best.correlation):
            best = found
        if decisive is not None and decisive(found):
            break
    return best


def reuse_turns(turn: int) -> tuple[int, int]:
    """The turns a reuse candidate is verified under: the hashes' first, then the
    other side of the mirror. ORB follows any turn but no mirror, and a symmetric scene
    (a house front) can hash closest under its mirror image."""
    return (turn, 4 if turn < 4 else 0)


def verify_pair(
    new: Image.Image, old: Image.Image, turns: Iterable[int], model: Model, side: int = 640
) -> Verification | None:
    """:func:`verify` for two pictures (tests, the benchmarks)."""
    return verify(Picture(new, side), features(old, side), turns, model)


# --------------------------------------------------------------------------- flags


@dataclass(frozen=True)
class PhotoMatch:
    """A candidate of another household, after verification."""

    household_id: int
    candidate: Candidate
    verification: Verification | None
    """None when a picture could not be loaded or has too few features to tell."""
    identical: bool = False
    """The very same file (equal SHA-256): no verification needed."""


def is_reuse(match: PhotoMatch, rules: PhotoRules, strict_hamming: int) -> bool:
    """See :func:`reuse_flags`."""
    if match.identical:
        return True
    v = match.verification
    if v is None:
        # Nothing to verify with: only the old single-hash rule counts, on the plain
        # hash (the best of ~940 turned and cropped hypotheses is near some hash by
        # chance far more often than one hash is).
        candidate = match.candidate
        return (
            candidate.turn == 0 and not candidate.cropped and candidate.distance <= strict_hamming
        )
    return same_picture(v, rules)


def same_picture(v: Verification, rules: PhotoRules) -> bool:
    """A verified transform says "the same picture": sane, resting on enough points,
    and the details correlate under it."""
    return (
        v.sane
        and v.points >= rules.reuse_min_points
        and v.correlation >= rules.reuse_min_correlation
    )


def same_scene(v: Verification, rules: PhotoRules) -> bool:
    """A verified homography says "the same scene re-shot"."""
    return (
        v.sane
        and v.points >= rules.near_duplicate_min_points
        and v.correlation >= rules.near_duplicate_min_correlation
    )


def is_near_duplicate(match: PhotoMatch, rules: PhotoRules) -> bool:
    """Only identical files and verified matches count."""
    v = match.verification
    return match.identical or (v is not None and same_scene(v, rules))


def _describe(match: PhotoMatch) -> str:
    if match.identical:
        return "identical file"
    v = match.verification
    if v is None:
        return f"{match.candidate.how}; hash distance {match.candidate.distance}; not verified"
    parts = [
        v.how,
        f"hash distance {match.candidate.distance}",
        f"{v.points} matching points",
        f"correlation {v.correlation:.2f}",
    ]
    return "; ".join(p for p in parts if p)


def _rank(m: PhotoMatch) -> tuple[bool, float, int, int]:
    v = m.verification
    return (
        m.identical,
        -1.0 if v is None else v.correlation,
        0 if v is None else v.points,
        -m.candidate.distance,
    )


def _per_household(matches: Iterable[PhotoMatch]) -> list[PhotoMatch]:
    best: dict[int, PhotoMatch] = {}
    for m in matches:
        held = best.get(m.household_id)
        if held is None or _rank(m) > _rank(held):
            best[m.household_id] = m
    return [best[h] for h in sorted(best)]


def _flags(
    code: str, matches: Iterable[PhotoMatch], threshold: str, detail: Callable[[PhotoMatch], str]
) -> list[tuple[int, Flag]]:
    """One ``code`` flag per other household among ``matches`` (already judged)."""
    return [
        (
            m.household_id,
            Flag(
                code=code,
                severity="warning",
                value=_describe(m),
                threshold=threshold,
                detail=detail(m),
            ),
        )
        for m in _per_household(matches)
    ]


def reuse_flags(
    matches: Iterable[PhotoMatch], rules: PhotoRules, strict_hamming: int
) -> list[tuple[int, Flag]]:
    """``photo_reused``: the same picture (re-cut, turned, re-encoded or touched up) as a
    photo of another household, one flag per household. ``strict_hamming`` is
    ``[visit_checks] photo_reuse_hamming``: a match that cannot be verified (too few
    features, a picture that does not load) counts only when the plain hash is within
    it. Returns (household id, flag) pairs."""
    return _flags(
        "photo_reused",
        (x for x in matches if is_reuse(x, rules, strict_hamming)),
        f"{rules.reuse_min_points} matching points; correlation {rules.reuse_min_correlation:.2f}",
        lambda m: (
            f"a photo of this visit is the same picture as a photo of household "
            f"{m.household_id} ({_describe(m)})"
        ),
    )


def near_duplicate_flags(
    matches: Iterable[PhotoMatch], rules: PhotoRules
) -> list[tuple[int, Flag]]:
    """``photo_near_duplicate``: a housing photo nearly identical to one of another
    household visited by the same caseworker in the same month (the same wall re-shot,
    or the same photo edited), one flag per household. Only verified matches count.
    Returns (household id, flag) pairs."""
    return _flags(
        "photo_near_duplicate",
        (x for x in matches if is_near_duplicate(x, rules)),
        f"{rules.near_duplicate_min_points} matching points; "
        f"correlation {rules.near_duplicate_min_correlation:.2f}",
        lambda m: (
            f"a housing photo of this visit nearly duplicates one of household "
            f"{m.household_id}, visited by the same caseworker this month ({_describe(m)})"
        ),
    )
