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
   ORB, ratio test, RANSAC): the same picture keeps hundreds of geometrically consistent
   matches, different pictures a few dozen at most.
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
    "Candidate",
    "Model",
    "PhotoMatch",
    "PhotoRules",
    "QueryHashes",
    "StoredHashes",
    "matching_points",
    "near_duplicate_flags",
    "nearest",
    "parse_photos_rules",
    "query_hashes",
    "reuse_flags",
    "stored_hashes",
]

HashKind = Literal["full", "centre"]
Model = Literal["similarity", "homography"]

CENTRE_TRIM: Final = 0.16
"""Share of the width (height) the stored ``centre`` window leaves off each side: the
largest crop of one edge the index is built to follow. Changing it changes every stored
``centre`` hash (re-run the backfill)."""
_CROP_STEPS: Final = (0.0, 0.04, 0.08, 0.12, CENTRE_TRIM)
"""Crop hypotheses per edge: a real crop is at most 2 % of an edge from one of them."""
_HASH_SIDE: Final = 32
_WORK_SIDE: Final = 192  # the grey copy the hashes are computed from (long side, px)
_ORB_FEATURES: Final = 1000
_RATIO: Final = 0.8  # Lowe's ratio test: keep a match clearly better than the runner-up
_RANSAC_PX: Final = 6.0  # reprojection error allowed at the 640 px verification scale
_MIN_FEATURES: Final = 100
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
    reuse_min_points: int = 60
    """Geometrically consistent feature matches (similarity transform) for "the same
    picture"."""
    near_duplicate_hamming: int = 20
    """The looser candidate radius within one caseworker's month."""
    near_duplicate_min_points: int = 30
    """Consistent matches (homography: the same wall shot from a step aside) for a
    near-duplicate."""


_INT_KEYS: Final = {f.name for f in fields(PhotoRules)}


def parse_photos_rules(data: dict[str, Any]) -> PhotoRules:
    """Validate ``[integrity.photos]``; raises ValueError with the key's path."""
    where = "integrity.photos."
    unknown = set(data) - _INT_KEYS
    if unknown:
        raise ValueError(f"{where}{sorted(unknown)[0]}: unknown key")
    values: dict[str, int] = {}
    for key in sorted(_INT_KEYS & set(data)):
        value = data[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where}{key}: must be an integer")
        values[key] = value
    rules = PhotoRules(**values)
    for key in ("candidate_hamming", "near_duplicate_hamming"):
        if not 0 <= getattr(rules, key) <= 32:
            raise ValueError(f"{where}{key}: must be between 0 and 32 bits")
    for key in ("max_candidates", "reuse_min_points", "near_duplicate_min_points"):
        if getattr(rules, key) < 1:
            raise ValueError(f"{where}{key}: must be at least 1")
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
    best: dict[int, Candidate] = {}
    for kind, qh, turns, cropped in (
        ("full", query.full, query.full_turn, np.zeros(len(query.full), dtype=np.bool_)),
        ("centre", query.centre, query.centre_turn, query.centre_cropped),
    ):
        mask = kinds == kind
        if not mask.any():
            continue
        kind_ids = ids[mask]
        for i, dist, which in zip(*_best(hashes[mask], qh, radius), strict=True):
            photo_id = int(kind_ids[i])
            found = Candidate(photo_id, int(dist), int(turns[which]), bool(cropped[which]))
            if photo_id not in best or found.distance < best[photo_id].distance:
                best[photo_id] = found
    return sorted(best.values(), key=lambda c: (c.distance, c.photo_id))[:limit]


# --------------------------------------------------------------------------- verification


def _features(img: Image.Image, side: int) -> tuple[npt.NDArray[np.float32], Any]:
    grey = img.convert("L")
    grey.thumbnail((side, side), Image.Resampling.LANCZOS)
    orb = cv2.ORB.create(nfeatures=_ORB_FEATURES)
    points, descriptors = orb.detectAndCompute(np.asarray(grey), None)
    return np.array([p.pt for p in points], dtype=np.float32).reshape(-1, 2), descriptors


Features = tuple[npt.NDArray[np.float32], Any]


def _points(
    new: Image.Image,
    old: Image.Image,
    turn: int,
    model: Model,
    side: int,
    known: dict[tuple[str, int], Features],
    old_key: int,
) -> int | None:
    op = _DIHEDRAL[turn][0]
    # ``known``: features already found for ``new`` (per turn) and each ``old``.
    if ("new", turn) not in known:
        known["new", turn] = _features(new if op is None else new.transpose(op), side)
    if ("old", old_key) not in known:
        known["old", old_key] = _features(old, side)
    points_a, desc_a = known["new", turn]
    points_b, desc_b = known["old", old_key]
    if desc_a is None or desc_b is None or min(len(desc_a), len(desc_b)) < _MIN_FEATURES:
        return None
    pairs = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(desc_a, desc_b, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < _RATIO * p[1].distance]
    if len(good) < 4:
        return 0
    src = points_a[[m.queryIdx for m in good]]
    dst = points_b[[m.trainIdx for m in good]]
    if model == "similarity":
        _, inliers = cv2.estimateAffinePartial2D(
            src, dst, method=cv2.RANSAC, ransacReprojThreshold=_RANSAC_PX
        )
    else:
        _, inliers = cv2.findHomography(src, dst, cv2.RANSAC, _RANSAC_PX)
    return 0 if inliers is None else int(np.count_nonzero(inliers))


def matching_points(
    new: Image.Image,
    old: Image.Image,
    turn: int,
    model: Model,
    side: int = 640,
    cache: dict[tuple[str, int], Features] | None = None,
    old_key: int = 0,
) -> int | None:
    """How many local features of ``new`` (turned by ``turn`` first: ORB is not mirror
    invariant) land where one transform of the given ``model`` maps them onto ``old``'s:
    RANSAC inliers of the ratio-tested ORB matches. A similarity (shift, scale, turn)
    for the same picture re-cut; a homography for the same flat scene re-shot. None
    when either picture has too few features to tell (a plain wall).

    The hashes' turn can be wrong for a symmetric scene (a house front and its mirror
    hash alike): the unturned picture is tried too, and the better count kept.

    ``cache``: a dict the caller keeps across the candidates of one new photo, with
    ``old_key`` naming each old picture (its photo id): every picture's features are
    then found once, not once per candidate and check."""
    known: dict[tuple[str, int], Features] = {} if cache is None else cache
    found = _points(new, old, turn, model, side, known, old_key)
    if turn != 0:
        plain = _points(new, old, 0, model, side, known, old_key)
        if plain is not None and (found is None or plain > found):
            found = plain
    return found


# --------------------------------------------------------------------------- flags


@dataclass(frozen=True)
class PhotoMatch:
    """A candidate of another household, after verification."""

    household_id: int
    candidate: Candidate
    points: int | None
    """Consistent feature matches; None when a picture could not be loaded or has too
    few features to tell."""
    identical: bool = False
    """The very same file (equal SHA-256): no verification needed."""


def _is_reuse(match: PhotoMatch, rules: PhotoRules, strict_hamming: int) -> bool:
    if match.identical:
        return True
    if match.points is None:
        # Nothing to verify with: only the old single-hash rule counts, on the plain
        # hash (the best of ~940 turned and cropped hypotheses is near some hash by
        # chance far more often than one hash is).
        candidate = match.candidate
        return (
            candidate.turn == 0 and not candidate.cropped and candidate.distance <= strict_hamming
        )
    return match.points >= rules.reuse_min_points


def _describe(match: PhotoMatch) -> str:
    if match.identical:
        return "identical file"
    points = "not verified" if match.points is None else f"{match.points} matching points"
    return f"{match.candidate.how}; hash distance {match.candidate.distance}; {points}"


def _per_household(matches: Iterable[PhotoMatch]) -> list[PhotoMatch]:
    best: dict[int, PhotoMatch] = {}
    for m in matches:
        held = best.get(m.household_id)
        if held is None or (m.identical, m.points or 0, -m.candidate.distance) > (
            held.identical,
            held.points or 0,
            -held.candidate.distance,
        ):
            best[m.household_id] = m
    return [best[h] for h in sorted(best)]


def _flags(
    code: str, matches: Iterable[PhotoMatch], min_points: int, detail: Callable[[PhotoMatch], str]
) -> list[tuple[int, Flag]]:
    """One ``code`` flag per other household among ``matches`` (already judged)."""
    return [
        (
            m.household_id,
            Flag(
                code=code,
                severity="warning",
                value=_describe(m),
                threshold=f"{min_points} matching points",
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
        (x for x in matches if _is_reuse(x, rules, strict_hamming)),
        rules.reuse_min_points,
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
        (x for x in matches if x.identical or (x.points or 0) >= rules.near_duplicate_min_points),
        rules.near_duplicate_min_points,
        lambda m: (
            f"a housing photo of this visit nearly duplicates one of household "
            f"{m.household_id}, visited by the same caseworker this month ({_describe(m)})"
        ),
    )
