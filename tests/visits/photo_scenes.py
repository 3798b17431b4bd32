"""Photographs and their alterations for the photo reuse tests
(tests/visits/test_integrity_photos.py): the real photographs of tests/data/faces used as
"housing photos", what a fabricator does to a reused one, and synthetic brick houses
(the honest look-alikes a caseworker photographs in one village)."""

from __future__ import annotations

import functools
import importlib.util
import io
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

FACES = Path(__file__).resolve().parents[1] / "data" / "faces"
INTEGRITY_SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "integrity.py"

# Real scenes, each a different photograph.
REAL = {
    "obama_1": FACES / "obama" / "obama_1.jpg",
    "obama_2": FACES / "obama" / "obama_2.jpg",
    "obama_3": FACES / "obama" / "obama_3.jpg",
    "biden_1": FACES / "biden" / "biden_1.jpg",
    "biden_2": FACES / "biden" / "biden_2.jpg",
    "alex_1": FACES / "alex_lacamoire" / "alex_1.jpg",
    "alex_2": FACES / "alex_lacamoire" / "alex_2.jpg",
    "obama_and_biden": FACES / "group" / "obama_and_biden.jpg",
}
# Files of tests/data/faces cut from one photograph (not different pictures): obama_4,
# biden_1 and two_people are crops of one picture; obama_480p and obama_partial_face of
# obama_1's. They are kept out of the negatives above (only biden_1 and obama_1 are in).


@functools.cache
def load(name: str, side: int = 1280) -> Image.Image:
    """A real photograph at most ``side`` px long (cached: never change it in place)."""
    img = Image.open(REAL[name]).convert("RGB")
    img.thumbnail((side, side), Image.Resampling.LANCZOS)
    return img


def crop(
    img: Image.Image, left: float = 0, right: float = 0, top: float = 0, bottom: float = 0
) -> Image.Image:
    w, h = img.size
    return img.crop(
        (round(w * left), round(h * top), round(w * (1 - right)), round(h * (1 - bottom)))
    )


def reencode(img: Image.Image, quality: int = 40) -> Image.Image:
    out = io.BytesIO()
    img.save(out, "JPEG", quality=quality)
    out.seek(0)
    return Image.open(out).convert("RGB")


def covered(img: Image.Image, share: float = 0.05) -> Image.Image:
    """A filled rectangle over ``share`` of the picture (a sticker, a scribble)."""
    img = img.copy()
    w, h = img.size
    side = share**0.5
    x, y = w * 0.55, h * 0.3
    ImageDraw.Draw(img).rectangle((x, y, x + w * side, y + h * side), fill=(205, 40, 35))
    return img


ALTERATIONS: dict[str, Callable[[Image.Image], Image.Image]] = {}
for share in (0.02, 0.05, 0.10, 0.15):
    pct = round(share * 100)
    ALTERATIONS[f"crop {pct}% right"] = lambda im, s=share: crop(im, right=s)
    ALTERATIONS[f"crop {pct}% top"] = lambda im, s=share: crop(im, top=s)
    ALTERATIONS[f"crop {pct}% left+bottom"] = lambda im, s=share: crop(im, left=s, bottom=s)
    ALTERATIONS[f"crop {pct}% right+top"] = lambda im, s=share: crop(im, right=s, top=s)
ALTERATIONS.update(
    {
        "rotation 90": lambda im: im.transpose(Image.Transpose.ROTATE_90),
        "rotation 180": lambda im: im.transpose(Image.Transpose.ROTATE_180),
        "rotation 270": lambda im: im.transpose(Image.Transpose.ROTATE_270),
        "mirror": lambda im: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        "jpeg quality 40": reencode,
        "brightness +10%": lambda im: ImageEnhance.Brightness(im).enhance(1.10),
        "rectangle over 5%": covered,
        "resized to half": lambda im: im.resize((im.width // 2, im.height // 2)),
        "crop 10% left+top, rotation 270, jpeg 40": lambda im: reencode(
            crop(im, left=0.1, top=0.1).transpose(Image.Transpose.ROTATE_270)
        ),
        "crop 5% right, mirror, brightness +10%": lambda im: ImageEnhance.Brightness(
            crop(im, right=0.05).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        ).enhance(1.10),
    }
)


def brick_house(seed: int, size: tuple[int, int] = (960, 720)) -> Image.Image:
    """A village brick house (sky, roof, brick wall with a door and two windows, ground),
    every brick's colour, the layout and the light drawn from ``seed``: houses that look
    alike the way a village's houses do."""
    rng = np.random.default_rng(seed)
    w, h = size
    img = Image.new("RGB", size)
    draw = ImageDraw.Draw(img)
    sky = int(rng.integers(150, 210))
    for y in range(h):
        draw.line([(0, y), (w, y)], fill=(sky - y // 8, sky - y // 12, 235 - y // 10))
    ground = int(h * rng.uniform(0.78, 0.86))
    draw.rectangle([0, ground, w, h], fill=tuple(int(c) for c in rng.integers(90, 140, 3)))
    top = int(h * rng.uniform(0.22, 0.32))
    left = int(w * rng.uniform(0.05, 0.12))
    right = w - int(w * rng.uniform(0.05, 0.12))
    brick_w, brick_h = int(rng.integers(38, 46)), int(rng.integers(15, 19))
    base = np.array([150, 70, 50]) + rng.integers(-15, 15, 3)
    draw.rectangle([left, top, right, ground], fill=(170, 165, 150))
    for row, y in enumerate(range(top, ground, brick_h)):
        offset = (brick_w // 2) * (row % 2) + int(rng.integers(-2, 3))
        for x in range(left - offset, right, brick_w):
            colour = tuple(int(v) for v in np.clip(base + rng.integers(-25, 25, 3), 0, 255))
            x0, x1 = max(x + 2, left), min(x + brick_w - 1, right)
            if x1 > x0 and y + 2 < ground:
                draw.rectangle([x0, y + 2, x1, min(y + brick_h - 1, ground)], fill=colour)
    peak = int(top - h * rng.uniform(0.12, 0.18))
    roof = tuple(int(c) for c in rng.integers(40, 90, 3))
    draw.polygon([(left - 30, top), (right + 30, top), ((left + right) // 2, peak)], fill=roof)
    door = int(rng.uniform(left + 60, right - 160))
    draw.rectangle(
        [door, ground - 230, door + 100, ground],
        fill=tuple(int(c) for c in rng.integers(60, 120, 3)),
    )
    for _ in range(2):
        wx = int(rng.uniform(left + 20, right - 140))
        wy = int(rng.uniform(top + 30, ground - 300))
        draw.rectangle(
            [wx, wy, wx + 120, wy + 100], fill=(200, 220, 235), outline=(240, 240, 240), width=6
        )
        draw.line([(wx + 60, wy), (wx + 60, wy + 100)], fill=(240, 240, 240), width=5)
    return _sensor_noise(img, rng).filter(ImageFilter.GaussianBlur(0.8))


def _sensor_noise(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    pixels = np.asarray(img).astype(np.int16) + rng.normal(0, 6, (img.height, img.width, 3)).astype(
        np.int16
    )
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def reshot(img: Image.Image, seed: int = 0, step: float = 0.06) -> Image.Image:
    """The same scene photographed again from a step aside: a perspective change (one
    side of the picture ``step`` narrower), other light and fresh sensor noise."""
    w, h = img.size
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    dst = np.float32([[0, 0], [w, h * step], [w, h * (1 - step)], [0, h]])
    warped = cv2.warpPerspective(
        np.asarray(img),
        cv2.getPerspectiveTransform(src, dst),
        (w, h),
        borderMode=cv2.BORDER_REFLECT,
    )
    lit = ImageEnhance.Brightness(Image.fromarray(warped)).enhance(0.9)
    return _sensor_noise(crop(lit, right=step), np.random.default_rng(1000 + seed))


@functools.cache
def _integrity_script() -> Any:
    spec = importlib.util.spec_from_file_location("integrity_bench", INTEGRITY_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def village_photo(scene: int, palette: int, view: int, shot: int = 0) -> Image.Image:
    """A photo of a drawn village scene as benchmarks/integrity.py makes them (its
    ``render_photo``): a house front near or far (views 0, 1) or a room (view 2), the
    village's ``palette`` shared by its houses; another ``shot`` is the same scene
    photographed again (framing, light, noise). Rooms are simple pictures: few corners
    for local features."""
    image: Image.Image = _integrity_script().render_photo(scene, palette, view, shot)
    return image
