"""Measuring harness for photo reuse and near-duplicates (issue 16): the figures the
thresholds of ``[integrity.photos]`` are argued from (docs/field-visits.md, "Photo
reuse"). A script that prints figures, not a test.

Pairs (old photo, new photo), each old photo as the server keeps it (the upload, JPEG
88, indexed at 640 px; verified from its 512 px thumbnail, JPEG 80) and each new one as
a tablet sends it (JPEG at the edit's quality, read at 640 px):

- ``reuse drawn`` / ``reuse real``: one picture edited, every edit of
  benchmarks/integrity.py's REUSE_EDITS and more of our own (crops up to 16 % of one or
  two edges, quarter turns, mirror, JPEG 20-50, brightness and contrast, resizing to
  40-60 %, a sticker or text over the picture, a colour shift, combinations), on drawn
  house scenes (integrity.py's ``render_photo``) and the real photographs of
  tests/data/faces. Positives of ``photo_reused``.
- ``reshot drawn`` / ``reshot real``: one scene photographed again (``render_photo``
  with another ``shot``: framing, light and noise; a real photograph re-projected as
  from a step aside). Positives of ``photo_near_duplicate``.
- ``other drawn, same village`` / ``other drawn, other village`` / ``other brick
  houses`` / ``other real``: different scenes (negatives of both).

For each class it prints, per measure, min / median / p95 / max (p5 instead of p95 for
the positives, whose low tail matters), and the share flagged under the region's rules;
then the cost of verifying one new photo against an index of the drawn photos (median
of ``--repeat`` runs, features cache cold and warm).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/photo_pairs.py [--scenes 36] [--seed 1]
        [--quick] [--repeat 3]
"""

from __future__ import annotations

import argparse
import io
import itertools
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from integrity import REUSE_EDITS, render_photo  # type: ignore[import-not-found]  # noqa: E402
from PIL import Image, ImageDraw, ImageEnhance, ImageOps  # noqa: E402

from server.visits.integrity.photo_match import (  # noqa: E402
    Features,
    PhotoMatch,
    PhotoRules,
    Picture,
    StoredHashes,
    Verification,
    features,
    is_near_duplicate,
    is_reuse,
    nearest,
    parse_photos_rules,
    query_hashes,
    reuse_turns,
    stored_hashes,
    verify,
)
from tests.visits.photo_scenes import REAL, brick_house, load  # noqa: E402

STRICT = 6  # [visit_checks] photo_reuse_hamming
Edit = Callable[[Image.Image, random.Random], Image.Image]


def _rules() -> PhotoRules:
    import tomllib

    text = (ROOT / "server" / "region_default.toml").read_text(encoding="utf-8")
    return parse_photos_rules(tomllib.loads(text)["integrity"]["photos"])


# --------------------------------------------------------------------------- pictures


def jpeg_bytes(img: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    img.convert("RGB").save(out, "JPEG", quality=quality)
    return out.getvalue()


def decode(data: bytes, side: int) -> Image.Image:
    img = Image.open(io.BytesIO(data)).convert("RGB")
    img.thumbnail((side, side), Image.Resampling.LANCZOS)
    return img


@dataclass
class Stored:
    """An old photo as the server keeps it."""

    upload: Image.Image  # decoded upload (what an edit starts from)
    picture: Image.Image  # at the verification side (hashed)
    thumbnail: bytes  # the 512 px JPEG 80 verification reads

    @classmethod
    def of(cls, img: Image.Image, side: int) -> Stored:
        upload = decode(jpeg_bytes(img, 88), 4096)
        thumb = upload.copy()
        thumb.thumbnail((512, 512), Image.Resampling.LANCZOS)
        return cls(upload, decode(jpeg_bytes(upload, 88), side), jpeg_bytes(thumb, 80))


def _crop(img: Image.Image, left: float, top: float, right: float, bottom: float) -> Image.Image:
    w, h = img.size
    return img.crop((int(w * left), int(h * top), int(w * (1 - right)), int(h * (1 - bottom))))


def _one_edge(r: random.Random, low: float, high: float) -> tuple[float, float, float, float]:
    edges = [0.0, 0.0, 0.0, 0.0]
    edges[r.randrange(4)] = r.uniform(low, high)
    return (edges[0], edges[1], edges[2], edges[3])


def _two_edges(r: random.Random, low: float, high: float) -> tuple[float, float, float, float]:
    edges = [0.0, 0.0, 0.0, 0.0]
    horizontal, vertical = r.choice((0, 2)), r.choice((1, 3))
    edges[horizontal], edges[vertical] = r.uniform(low, high), r.uniform(low, high)
    return (edges[0], edges[1], edges[2], edges[3])


def _sticker(img: Image.Image, r: random.Random) -> Image.Image:
    """A filled rectangle over 3-6 % of the picture and a line of text."""
    img = img.copy()
    w, h = img.size
    side = r.uniform(0.03, 0.06) ** 0.5
    x, y = r.uniform(0, 1 - side) * w, r.uniform(0, 1 - side) * h
    draw = ImageDraw.Draw(img)
    draw.rectangle((x, y, x + w * side, y + h * side), fill=(205, 40, 35))
    draw.text((w * 0.05, h * 0.9), "2026-10-12 10:41 household visit", fill=(255, 255, 0))
    return img


def _text(img: Image.Image, r: random.Random) -> Image.Image:
    """A caption in two places (a date stamp, a name)."""
    img = img.copy()
    draw = ImageDraw.Draw(img)
    w, h = img.size
    for _ in range(2):
        draw.text(
            (r.uniform(0, 0.6) * w, r.uniform(0, 0.9) * h), "ZHANG 2026/10/12", fill=(255, 255, 255)
        )
    return img


def _colour(img: Image.Image, r: random.Random) -> Image.Image:
    """A slight colour shift (warmer or cooler) and saturation change."""
    pixels = np.asarray(img, dtype=np.float32)
    shift = np.array([r.uniform(-15, 15), r.uniform(-8, 8), r.uniform(-15, 15)])
    out = Image.fromarray(np.clip(pixels + shift, 0, 255).astype(np.uint8))
    return ImageEnhance.Color(out).enhance(r.uniform(0.8, 1.25))


def _contrast(img: Image.Image, r: random.Random) -> Image.Image:
    img = ImageEnhance.Contrast(img).enhance(r.uniform(0.75, 1.3))
    return ImageEnhance.Brightness(img).enhance(r.uniform(0.8, 1.25))


OWN_EDITS: dict[str, tuple[Edit, int]] = {
    "crop_16pct_one_edge": (lambda im, r: _crop(im, *_one_edge(r, 0.155, 0.16)), 88),
    "crop_8-16pct_two_edges": (lambda im, r: _crop(im, *_two_edges(r, 0.08, 0.16)), 88),
    "crop_4pct_all_edges": (lambda im, r: _crop(im, 0.04, 0.04, 0.04, 0.04), 88),
    "rotate_270": (lambda im, r: im.transpose(Image.Transpose.ROTATE_270), 88),
    "mirror_top_bottom": (lambda im, r: im.transpose(Image.Transpose.FLIP_TOP_BOTTOM), 88),
    "jpeg_q20-50": (lambda im, r: im, 35),
    "contrast_brightness": (_contrast, 85),
    "resized_40pct_q50": (lambda im, r: im.resize((int(im.width * 0.4), int(im.height * 0.4))), 50),
    "sticker_and_text": (_sticker, 85),
    "text": (_text, 85),
    "colour_shift": (_colour, 85),
    "crop_12pct_rotate_90_q40": (
        lambda im, r: _crop(im, *_one_edge(r, 0.1, 0.14)).transpose(Image.Transpose.ROTATE_90),
        40,
    ),
    "crop_8pct_mirror_bright": (
        lambda im, r: ImageEnhance.Brightness(
            ImageOps.mirror(_crop(im, *_one_edge(r, 0.06, 0.1)))
        ).enhance(1.2),
        70,
    ),
}
EDITS: dict[str, tuple[Edit, int]] = {**REUSE_EDITS, **OWN_EDITS}


def reshot_real(img: Image.Image, r: random.Random) -> Image.Image:
    """A real photograph re-projected as from a step aside (one side 4-10 % narrower,
    the far side cut), other light and fresh sensor noise."""
    w, h = img.size
    step = r.uniform(0.04, 0.10)
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    dst = np.float32([[0, 0], [w, h * step], [w, h * (1 - step)], [0, h]])
    warped = cv2.warpPerspective(
        np.asarray(img),
        cv2.getPerspectiveTransform(src, dst),
        (w, h),
        borderMode=cv2.BORDER_REFLECT,
    )
    lit = ImageEnhance.Brightness(Image.fromarray(warped)).enhance(r.uniform(0.85, 1.15))
    lit = _crop(lit, 0, 0, step, 0)
    noise = np.random.default_rng(r.randrange(2**32)).normal(0, 5, (lit.height, lit.width, 3))
    return Image.fromarray(np.clip(np.asarray(lit) + noise, 0, 255).astype(np.uint8))


# --------------------------------------------------------------------------- measuring


@dataclass
class Pair:
    klass: str
    label: str
    distance: int | None  # nearest hash distance (None: beyond 32 bits)
    turn: int
    cropped: bool
    reuse: Verification | None
    near: Verification | None


def measure(
    klass: str, label: str, old: Stored, new: Image.Image, quality: int, rules: PhotoRules
) -> Pair:
    """The pipeline on one pair, every candidate verified whatever its hash distance
    (the negatives' measures are then a worst case: production verifies only the
    nearest ``max_candidates`` within the radius)."""
    new_picture = decode(jpeg_bytes(new, quality), rules.verify_side)
    hashes = stored_hashes(old.picture)
    rows = StoredHashes([1] * len(hashes), list(hashes), list(hashes.values()))
    found = nearest(query_hashes(new_picture), rows, 32, 1)
    candidate = found[0] if found else None
    old_features = features(decode(old.thumbnail, rules.verify_side), rules.verify_side)
    picture = Picture(new_picture, rules.verify_side)
    turn = candidate.turn if candidate else 0
    reuse = verify(picture, old_features, reuse_turns(turn), "similarity")
    near = verify(picture, old_features, (0,), "homography")
    return Pair(
        klass,
        label,
        candidate.distance if candidate else None,
        turn,
        bool(candidate and candidate.cropped),
        reuse,
        near,
    )


def drawn_scenes(count: int, seed: int) -> list[tuple[int, int, int]]:
    """(scene seed, village palette, view): three villages, views 0-2 (house fronts near
    and far, a room)."""
    return [
        (seed * 10_000 + 1001 + i, i % 3, i % 3 if i % 9 < 6 else 2 - i % 3) for i in range(count)
    ]


def collect(args: argparse.Namespace, rules: PhotoRules) -> list[Pair]:
    rng = random.Random(args.seed)
    pairs: list[Pair] = []
    scenes = drawn_scenes(args.scenes, args.seed)
    drawn = {s: Stored.of(render_photo(s[0], s[1], s[2], 0), rules.verify_side) for s in scenes}
    real_names = list(REAL)
    real = {n: Stored.of(load(n, 1600), rules.verify_side) for n in real_names}
    bricks = {b: Stored.of(brick_house(b), rules.verify_side) for b in range(args.bricks)}
    edits = list(EDITS.items())
    for old, (name, (edit, quality)) in itertools.product(drawn.values(), edits):
        r = random.Random(rng.randrange(2**32))
        pairs.append(measure("reuse drawn", name, old, edit(old.upload, r), quality, rules))
    for old, (name, (edit, quality)) in itertools.product(real.values(), edits):
        r = random.Random(rng.randrange(2**32))
        pairs.append(measure("reuse real", name, old, edit(old.upload, r), quality, rules))
    for scene, old in drawn.items():
        for shot in range(1, 1 + args.shots):
            new = render_photo(scene[0], scene[1], scene[2], shot)
            pairs.append(measure("reshot drawn", f"view {scene[2]}", old, new, 88, rules))
    for old in real.values():
        r = random.Random(rng.randrange(2**32))
        pairs.append(
            measure("reshot real", "step aside", old, reshot_real(old.upload, r), 88, rules)
        )
    for a, b in itertools.permutations(scenes, 2):
        if rng.random() > args.negatives:
            continue
        klass = "other drawn, same village" if a[1] == b[1] else "other drawn, other village"
        new = render_photo(b[0], b[1], b[2], 1)
        pairs.append(measure(klass, f"views {a[2]}-{b[2]}", drawn[a], new, 88, rules))
    for a, b in itertools.permutations(bricks, 2):
        pairs.append(measure("other brick houses", "", bricks[a], bricks[b].upload, 88, rules))
    for a, b in itertools.permutations(real_names, 2):
        pairs.append(measure("other real", "", real[a], real[b].upload, 88, rules))
    return pairs


# --------------------------------------------------------------------------- printing


def _spread(values: list[float], low_tail: bool) -> str:
    if not values:
        return "-"
    values = sorted(values)
    tail = (
        values[int(0.05 * (len(values) - 1))]
        if low_tail
        else values[int(0.95 * (len(values) - 1) + 0.5)]
    )
    fmt = (lambda v: f"{v:.2f}") if any(v != int(v) for v in values) else (lambda v: f"{v:.0f}")
    return f"{fmt(values[0])} / {fmt(statistics.median(values))} / {fmt(tail)} / {fmt(values[-1])}"


def _flagged(pair: Pair, rules: PhotoRules) -> tuple[bool, bool]:
    """(photo_reused, photo_near_duplicate) as the server would judge the pair alone."""
    from server.visits.integrity.photo_match import Candidate

    if pair.distance is None:
        return False, False
    candidate = Candidate(1, pair.distance, pair.turn, pair.cropped)
    reuse = pair.distance <= rules.candidate_hamming and is_reuse(
        PhotoMatch(1, candidate, pair.reuse), rules, STRICT
    )
    near = (
        not reuse
        and pair.distance <= rules.near_duplicate_hamming
        and is_near_duplicate(PhotoMatch(1, candidate, pair.near), rules)
    )
    return reuse, near


def report(pairs: list[Pair], rules: PhotoRules) -> None:
    classes = list(dict.fromkeys(p.klass for p in pairs))
    print("min / median / p5 (positives) or p95 (negatives) / max; n = pairs")
    print("reuse: similarity, the hash's turn then plain and mirrored; near: homography, unturned")
    print()
    for klass in classes:
        group = [p for p in pairs if p.klass == klass]
        positive = klass.startswith(("reuse", "reshot"))
        flags = [_flagged(p, rules) for p in group]
        print(f"== {klass}  (n={len(group)})")
        dist = [float(p.distance) for p in group if p.distance is not None]
        beyond = len(group) - len(dist)
        print(f"   hash distance           {_spread(dist, positive)}   beyond 32 bits: {beyond}")
        reuse_radius, near_radius = rules.candidate_hamming, rules.near_duplicate_hamming
        print(
            f"   candidates              reuse (<= {reuse_radius}): "
            f"{sum(d <= reuse_radius for d in dist)}   near (<= {near_radius}): "
            f"{sum(d <= near_radius for d in dist)}"
        )
        for model in ("reuse", "near"):
            found = [getattr(p, model) for p in group]
            known = [v for v in found if v is not None]
            print(f"   {model}: unverifiable (too few features) {len(found) - len(known)}")
            sane = [v for v in known if v.sane]
            print(f"     sane transform       {len(sane)} of {len(known)}")
            for measure_ in ("points", "correlation", "overlap", "scale"):
                values = [float(getattr(v, measure_)) for v in known]
                print(f"     {measure_:<20} {_spread(values, positive)}")
            values = [v.correlation for v in sane]
            print(f"     correlation if sane  {_spread(values, positive)}")
        reuse_n = sum(r for r, _ in flags)
        near_n = sum(n for _, n in flags)
        either = sum(r or n for r, n in flags)
        print(
            f"   flagged: photo_reused {reuse_n} ({100 * reuse_n / len(group):.1f} %), "
            f"photo_near_duplicate {near_n} ({100 * near_n / len(group):.1f} %), "
            f"either {either} ({100 * either / len(group):.1f} %)"
        )
        if positive:
            missed = _counts(p.label for p, f in zip(group, flags, strict=True) if not any(f))
            if missed:
                print(f"   missed: {dict(missed)}")
        else:
            worst = sorted(
                (p for p in group if p.near is not None),
                key=lambda p: -p.near.correlation,  # type: ignore[union-attr]
            )[:3]
            for p in worst:
                print(f"   highest near correlation: {p.label} {p.distance} bits {p.near}")
        print()


def _counts(items: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return counts


# --------------------------------------------------------------------------- cost


def timing(args: argparse.Namespace, rules: PhotoRules) -> None:
    """Verification of one new photo as ``integrity_flags`` does it: the nearest
    candidates among the drawn photos (all of one caseworker's month: the
    near-duplicate radius finds many), each old thumbnail decoded and its features
    found (cold) or taken from the features cache (warm)."""
    scenes = drawn_scenes(args.scenes, args.seed)
    stored = {
        i: Stored.of(render_photo(s[0], s[1], s[2], 0), rules.verify_side)
        for i, s in enumerate(scenes)
    }
    rows_ids, kinds, values = [], [], []
    for i, s in stored.items():
        for kind, value in stored_hashes(s.picture).items():
            rows_ids.append(i)
            kinds.append(kind)
            values.append(value)
    rows = StoredHashes(rows_ids, kinds, values)
    news = [
        decode(jpeg_bytes(render_photo(s[0], s[1], s[2], 5), 88), rules.verify_side)
        for s in scenes[:12]
    ]
    cache: dict[int, Features] = {}

    def one(new: Image.Image, warm: bool) -> float:
        start = time.perf_counter()
        query = query_hashes(new)
        picture = Picture(new, rules.verify_side)
        if not warm:
            cache.clear()
        for radius, model in (
            (rules.candidate_hamming, "similarity"),
            (rules.near_duplicate_hamming, "homography"),
        ):
            for c in nearest(query, rows, radius, rules.max_candidates):
                if c.photo_id not in cache:
                    cache[c.photo_id] = features(
                        decode(stored[c.photo_id].thumbnail, rules.verify_side), rules.verify_side
                    )
                turns = reuse_turns(c.turn) if model == "similarity" else (0,)
                verify(picture, cache[c.photo_id], turns, model)  # type: ignore[arg-type]
        return time.perf_counter() - start

    for warm in (False, True):
        runs = []
        for _ in range(args.repeat):
            if warm:
                for new in news:
                    one(new, warm=True)  # fill the cache
            runs.append(statistics.median(one(new, warm) for new in news))
        label = "warm features cache" if warm else "cold (every candidate decoded)"
        print(
            f"verification per new photo, {label}: median {1000 * statistics.median(runs):.0f} ms "
            f"(runs: {', '.join(f'{1000 * r:.0f}' for r in runs)}; {len(stored)} stored photos)"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenes", type=int, default=36, help="drawn scenes (default 36)")
    parser.add_argument("--shots", type=int, default=3, help="re-shots per drawn scene")
    parser.add_argument("--bricks", type=int, default=8, help="brick houses (tests' look-alikes)")
    parser.add_argument("--negatives", type=float, default=1.0, help="share of drawn pairs kept")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3, help="timing runs")
    parser.add_argument("--quick", action="store_true", help="12 scenes, fewer pairs")
    parser.add_argument("--no-timing", action="store_true", help="pairs only")
    parser.add_argument("--timing-only", action="store_true", help="the cost only")
    parser.add_argument("--dump", type=Path, help="write every pair's measures (JSON lines)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a rule of [integrity.photos] (to measure another setting)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.scenes, args.bricks, args.negatives, args.repeat = 12, 4, 1.0, 1
    rules = _rules()
    if args.set:
        import dataclasses

        changes = {
            k: type(getattr(rules, k))(v) for k, v in (item.split("=", 1) for item in args.set)
        }
        rules = dataclasses.replace(rules, **changes)
    print(f"rules: {rules}")
    if args.timing_only:
        timing(args, rules)
        return 0
    started = time.perf_counter()
    pairs = collect(args, rules)
    print(f"{len(pairs)} pairs measured in {time.perf_counter() - started:.0f} s\n")
    if args.dump:
        import dataclasses
        import json

        with args.dump.open("w", encoding="utf-8") as out:
            for pair in pairs:
                out.write(json.dumps(dataclasses.asdict(pair)) + "\n")
    report(pairs, rules)
    if not args.no_timing:
        timing(args, rules)
    return 0


if __name__ == "__main__":
    sys.exit(main())
