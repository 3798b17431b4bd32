"""Benchmark: recall of planted fabricated visits and false flags on honest ones.

Builds a synthetic county in a fresh SQLite database (a temporary directory): two
townships of three villages a few km apart, households 15-400 m apart, caseworkers,
and three months of visits. Every visit is uploaded through the tablet API exactly as
a tablet does (device-token login, then one multipart POST /api/v1/surveys with the
survey JSON and its photos), with the service's clock set to a few minutes after the
visit, and Celery in eager mode (the background jobs run in the request).

Honest visits: GPS noise of real phones, durations that fit the members and photos,
routes along a day, evening visits until about 20:30, neighbours 15-30 m apart visited
back to back, the same members' portraits across months. Planted fabrications of every
kind of issue 16 (short visits, bunched photos, implausible fixes and tracks, reused
and edited photos, curbstoning from the village centre, fast legs, night visits, faces
of another person), each in variants just inside the old thresholds. The script only
observes the flags the server raises; it knows nothing of how they are computed.

    .venv/bin/python benchmarks/integrity.py [--seed 1] [--households 240]
        [--honest 300] [--planted-per-variant 5] [--kinds too_short,...] [--keep DIR]

It prints, per kind and variant, the planted visits, those caught (at least one flag
that can indicate the kind: the codes that caught them are listed) and those with any
flag at all; then the honest visits and the share flagged (warning or critical: the
false-positive rate; and with info flags too), and PASS/FAIL against the targets
(recall >= 95 % for every kind, false positives <= 2 %). A script, not a test: it exits
0 whatever the figures, non-zero only when it breaks (an upload refused, the setup).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import logging
import math
import os
import random
import secrets
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stderr
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FACES = ROOT / "tests" / "data" / "faces"
LOCAL = timezone(timedelta(hours=8))  # the region's time zone (Asia/Shanghai), no DST
PASSWORD = "integrity bench password"  # noqa: S105 (the synthetic caseworkers')
FIRST_DAY = date(2026, 8, 3)  # a Monday; three months of visits follow
HONEST_LAST_DAY = date(2026, 10, 24)
FACE_DAYS = (date(2026, 10, 26), date(2026, 10, 31))  # planted faces: after every honest visit
PHOTO_SIZE = (800, 600)  # a tablet photo scaled down: the checks look at content, not pixels
TARGET_RECALL = 0.95
TARGET_FP = 0.02
M_PER_DEG_LAT = 111_320.0

# The kinds of issue 16 and the flag codes that can indicate each: a planted visit is
# caught when at least one of its kind's codes is raised on it.
KINDS: dict[str, tuple[str, ...]] = {
    "too_short": ("visit_too_short", "photos_bunched"),
    "photos_bunched": ("photos_bunched",),
    "gps_implausible": (
        "gps_too_precise",
        "gps_at_registered_point",
        "gps_repeated",
        "gps_fix_stale",
        "track_static",
        "track_jump",
        "gps_mock",
    ),
    "photo_reused": ("photo_reused", "photo_near_duplicate"),
    "curbstoning": ("pattern_one_spot", "pattern_shared_spots"),
    "fast_legs": ("pattern_fast_legs", "impossible_travel"),
    "odd_hours": ("pattern_odd_hours",),
    "faces": ("face_in_other_household", "face_not_member"),
}


class BenchmarkError(RuntimeError):
    """The setup or an upload failed."""


# --------------------------------------------------------------------------- geometry


def offset(lat: float, lon: float, north_m: float, east_m: float) -> tuple[float, float]:
    """The point ``north_m`` and ``east_m`` metres away (a local flat approximation)."""
    return (
        lat + north_m / M_PER_DEG_LAT,
        lon + east_m / (M_PER_DEG_LAT * math.cos(math.radians(lat))),
    )


def distance_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    north = (b[0] - a[0]) * M_PER_DEG_LAT
    east = (b[1] - a[1]) * M_PER_DEG_LAT * math.cos(math.radians((a[0] + b[0]) / 2))
    return math.hypot(north, east)


def polar(
    rng: random.Random, lat: float, lon: float, low: float, high: float
) -> tuple[float, float]:
    angle = rng.uniform(0, 2 * math.pi)
    radius = rng.uniform(low, high)
    return offset(lat, lon, radius * math.cos(angle), radius * math.sin(angle))


def phone_accuracy(rng: random.Random) -> float:
    """A reported accuracy as real phones give it: mostly 4-25 m, now and then an
    indoor fix of 30-60 m."""
    if rng.random() < 0.07:
        return round(rng.uniform(30, 60), 1)
    return round(min(25.0, max(4.0, rng.lognormvariate(math.log(9), 0.45))), 1)


def noisy(rng: random.Random, point: tuple[float, float], accuracy: float) -> tuple[float, float]:
    """A fix around ``point``: Android's accuracy is the 68 % radius, i.e. 1.51 sigma of
    a circular normal error."""
    sigma = accuracy / 1.51
    lat, lon = offset(point[0], point[1], rng.gauss(0, sigma), rng.gauss(0, sigma))
    return round(lat, 7), round(lon, 7)


# --------------------------------------------------------------------------- photos


def _scene(seed: int, palette: int, size: tuple[int, int], view: int) -> Any:
    """A scene drawn from ``seed`` and ``view``: a house front seen from near or far,
    left or right (views 0 and 1), or a room (view 2). Sky, horizon, wall, brick size
    and colours, roof, door, windows, trees and yard objects all vary, so that two
    households' photos differ as much as real ones do; the village's ``palette`` gives
    its houses a common tint. Returns a PIL image a little larger than a photo (a photo
    is a jittered crop of it)."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed * 7919 + view)
    pal = random.Random(palette)
    width, height = size

    def colour(low: int = 0, high: int = 255) -> tuple[int, int, int]:
        return (rng.randint(low, high), rng.randint(low, high), rng.randint(low, high))

    image = Image.new("RGB", size, colour(120, 230))
    draw = ImageDraw.Draw(image)
    if view == 2:  # inside: walls, a floor, a kang, a cupboard, a window, things
        split = int(width * rng.uniform(0.2, 0.8))
        draw.rectangle((split, 0, width, height), fill=colour(90, 240))
        floor_y = int(height * rng.uniform(0.45, 0.8))
        draw.rectangle((0, floor_y, width, height), fill=colour(40, 160))
        for _ in range(rng.randint(4, 9)):
            x0, y0 = rng.randint(-50, width - 60), rng.randint(0, height - 60)
            x1, y1 = x0 + rng.randint(40, width // 2), y0 + rng.randint(30, height // 2)
            shape = draw.ellipse if rng.random() < 0.3 else draw.rectangle
            shape((x0, y0, x1, y1), fill=colour())
        return image
    horizon = int(height * rng.uniform(0.3, 0.7))
    sky = (
        colour(150, 250)
        if rng.random() < 0.4
        else (rng.randint(60, 130), rng.randint(110, 180), rng.randint(180, 250))
    )
    draw.rectangle((0, 0, width, horizon), fill=sky)
    for y in range(0, horizon, 8):  # the sky lightens toward the horizon
        t = y / max(1, horizon)
        draw.rectangle((0, y, width, y + 8), fill=tuple(int(c + (240 - c) * t * 0.6) for c in sky))
    draw.rectangle(
        (0, horizon, width, height),
        fill=(
            pal.randint(70, 160) + rng.randint(-30, 30),
            rng.randint(60, 140),
            rng.randint(30, 100),
        ),
    )
    # The house: near (filling the frame) or far, left, centre or right.
    scale = rng.uniform(0.35, 1.1) if view == 0 else rng.uniform(0.9, 1.6)
    wall_w, wall_h = (
        int(width * scale * rng.uniform(0.6, 0.9)),
        int(height * scale * rng.uniform(0.3, 0.5)),
    )
    wall_x0 = rng.randint(-wall_w // 3, max(-wall_w // 3 + 1, width - wall_w * 2 // 3))
    wall_y1 = min(height - 5, horizon + rng.randint(10, max(11, height - horizon - 10)))
    wall_y0 = wall_y1 - wall_h
    wall_x1 = wall_x0 + wall_w
    base = [
        min(255, max(0, c + rng.randint(-50, 50)))
        for c in (pal.randint(110, 200), pal.randint(60, 130), pal.randint(40, 110))
    ]
    draw.rectangle((wall_x0, wall_y0, wall_x1, wall_y1), fill=colour(140, 220))
    brick_w, brick_h = rng.randint(16, 48), rng.randint(7, 18)
    if rng.random() < 0.75:
        for row, y in enumerate(range(wall_y0, wall_y1, brick_h + 2)):
            shift = (row % 2) * brick_w // 2
            for x in range(wall_x0 - shift, wall_x1, brick_w + 2):
                tone = rng.randint(-25, 25)
                draw.rectangle(
                    (max(x, wall_x0), y, min(x + brick_w, wall_x1), min(y + brick_h, wall_y1)),
                    fill=tuple(min(255, max(0, c + tone)) for c in base),
                )
    else:  # a plastered wall
        draw.rectangle((wall_x0, wall_y0, wall_x1, wall_y1), fill=tuple(base))
    peak = wall_y0 - int(wall_h * rng.uniform(0.2, 0.7))
    overhang = rng.randint(10, 50)
    draw.polygon(
        [
            (wall_x0 - overhang, wall_y0),
            (wall_x0 + int(wall_w * rng.uniform(0.3, 0.7)), peak),
            (wall_x1 + overhang, wall_y0),
        ],
        fill=colour(20, 150),
    )
    for _ in range(rng.randint(1, 5)):  # a door and windows
        w, h = int(wall_w * rng.uniform(0.08, 0.2)), int(wall_h * rng.uniform(0.2, 0.6))
        x = rng.randint(wall_x0, max(wall_x0 + 1, wall_x1 - w))
        y = rng.randint(wall_y0 + 5, max(wall_y0 + 6, wall_y1 - h))
        draw.rectangle(
            (x, y, x + w, y + h),
            fill=colour(10, 200),
            outline=colour(180, 255),
            width=rng.randint(2, 6),
        )
    for _ in range(rng.randint(0, 5)):  # trees, a haystack, a fence, a tractor
        x, y = rng.randint(0, width), rng.randint(horizon - 80, height)
        r = rng.randint(20, 140)
        if rng.random() < 0.5:
            draw.rectangle((x - 5, y, x + 5, y + r * 2), fill=(70, 50, 30))
            draw.ellipse(
                (x - r, y - r, x + r, y + r),
                fill=(rng.randint(20, 80), rng.randint(70, 150), rng.randint(20, 70)),
            )
        else:
            draw.rectangle((x - r, y - r // 2, x + r, y + r // 2), fill=colour())
    return image


def render_photo(seed: int, palette: int, view: int, shot: int) -> Any:
    """One photo of a scene: the scene seen with this shot's framing (a few percent of
    shift and zoom), light and sensor noise. Two shots of one scene look alike (a house
    photographed on two visits); two scenes do not."""
    import numpy as np
    from PIL import Image, ImageEnhance

    rng = random.Random(seed * 1_000_003 + view * 101 + shot)
    big = (int(PHOTO_SIZE[0] * 1.1), int(PHOTO_SIZE[1] * 1.1))
    scene = _scene(seed, palette, big, view)
    zoom = rng.uniform(0.9, 0.97)
    crop_w, crop_h = int(big[0] * zoom), int(big[1] * zoom)
    x0 = rng.randint(0, big[0] - crop_w)
    y0 = rng.randint(0, big[1] - crop_h)
    image = scene.crop((x0, y0, x0 + crop_w, y0 + crop_h)).resize(
        PHOTO_SIZE, Image.Resampling.BILINEAR
    )
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.85, 1.15))
    # Sensor noise: a window of one shared noise field, at a random place.
    field_ = _noise_field()
    dy, dx = rng.randrange(PHOTO_SIZE[1]), rng.randrange(PHOTO_SIZE[0])
    window = field_[dy : dy + PHOTO_SIZE[1], dx : dx + PHOTO_SIZE[0], None]
    pixels = np.asarray(image, dtype=np.int16) + window
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


_NOISE: list[Any] = []


def _noise_field() -> Any:
    """Grey noise (sigma 5) twice a photo's size, made once."""
    import numpy as np

    if not _NOISE:
        shape = (PHOTO_SIZE[1] * 2, PHOTO_SIZE[0] * 2)
        _NOISE.append((np.random.default_rng(7).standard_normal(shape) * 5).astype(np.int16))
    return _NOISE[0]


def _dms(value: float) -> tuple[float, float, float]:
    value = abs(value)
    degrees = int(value)
    minutes = int((value - degrees) * 60)
    return float(degrees), float(minutes), round((value - degrees - minutes / 60) * 3600, 4)


def jpeg_with_exif(
    image: Any,
    taken_at: datetime | None,
    where: tuple[float, float] | None,
    quality: int,
    unique: str,
) -> bytes:
    """The image as a tablet camera saves it: JPEG with EXIF time taken (local time and
    offset), GPS position and camera."""
    from PIL import ExifTags, Image

    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "HUAWEI"
    exif[ExifTags.Base.Model] = "MediaPad M5"
    details = exif.get_ifd(ExifTags.IFD.Exif)
    details[ExifTags.Base.ImageUniqueID] = unique
    if taken_at is not None:
        details[ExifTags.Base.DateTimeOriginal] = taken_at.astimezone(LOCAL).strftime(
            "%Y:%m:%d %H:%M:%S"
        )
        details[ExifTags.Base.OffsetTimeOriginal] = "+08:00"
    if where is not None:
        gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
        gps[ExifTags.GPS.GPSLatitudeRef] = "N" if where[0] >= 0 else "S"
        gps[ExifTags.GPS.GPSLatitude] = _dms(where[0])
        gps[ExifTags.GPS.GPSLongitudeRef] = "E" if where[1] >= 0 else "W"
        gps[ExifTags.GPS.GPSLongitude] = _dms(where[1])
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=quality, exif=exif.tobytes())
    return out.getvalue()


def face_image(name: str) -> Any:
    """A real face photograph from tests/data/faces, at most 1600 px on its long side
    (a tablet's portrait; detection downscales to 1000 px anyway)."""
    from PIL import Image

    folder = {
        "obama": "obama",
        "biden": "biden",
        "alex": "alex_lacamoire",
        "lin": "lin_manuel_miranda",
    }
    stem = name.split("_")[0]
    path = next((FACES / folder[stem]).glob(f"{name}.*"))
    with Image.open(path) as opened:
        image = opened.convert("RGB")
    image.thumbnail((1600, 1600))
    return image


# Edits of a reused photo (another household's housing photo passed off as this one's).
def _crop(image: Any, left: float, top: float, right: float, bottom: float) -> Any:
    w, h = image.size
    return image.crop((int(w * left), int(h * top), int(w * (1 - right)), int(h * (1 - bottom))))


def _brighten(image: Any, factor: float) -> Any:
    from PIL import ImageEnhance

    return ImageEnhance.Brightness(image).enhance(factor)


def _resize(image: Any, factor: float) -> Any:
    return image.resize((int(image.size[0] * factor), int(image.size[1] * factor)))


def _mirror(image: Any) -> Any:
    from PIL import ImageOps

    return ImageOps.mirror(image)


REUSE_EDITS: dict[str, tuple[Callable[[Any, random.Random], Any], int]] = {
    # variant: (edit, JPEG quality of the re-save)
    "crop_2-4pct_one_edge": (lambda im, r: _crop(im, r.uniform(0.02, 0.04), 0, 0, 0), 88),
    "crop_5-9pct_one_edge": (lambda im, r: _crop(im, 0, 0, r.uniform(0.05, 0.09), 0), 88),
    "crop_10-15pct_one_edge": (lambda im, r: _crop(im, 0, r.uniform(0.10, 0.15), 0, 0), 88),
    "crop_5-10pct_two_edges": (
        lambda im, r: _crop(im, r.uniform(0.05, 0.1), 0, 0, r.uniform(0.05, 0.1)),
        88,
    ),
    "rotate_90": (lambda im, r: im.rotate(90 if r.random() < 0.5 else 270, expand=True), 88),
    "rotate_180": (lambda im, r: im.rotate(180), 88),
    "mirrored": (lambda im, r: _mirror(im), 88),
    "reencoded_q20-35": (lambda im, r: im, 20),
    "brightened_15-30pct": (lambda im, r: _brighten(im, r.uniform(1.15, 1.3)), 88),
    "resized_40-60pct": (lambda im, r: _resize(im, r.uniform(0.4, 0.6)), 88),
    "crop_6pct_mirrored_q50": (lambda im, r: _mirror(_crop(im, 0.06, 0, 0, 0)), 50),
}


# --------------------------------------------------------------------------- the plan


@dataclass
class Home:
    index: int
    township: int
    village: int
    lat: float
    lon: float
    members: int
    accepted: bool  # awaiting its initial survey
    scene: int
    palette: int
    household_id: int = 0
    member_ids: list[int] = field(default_factory=list)
    face: str | None = None  # the head's person, for the households with portraits

    @property
    def point(self) -> tuple[float, float]:
        return (self.lat, self.lon)


@dataclass
class Shot:
    """A photo of a visit, as a recipe: the bytes are made at upload time."""

    photo_id: str
    kind: str  # housing | member_portrait
    taken_at: datetime
    where: tuple[float, float] | None
    make: Callable[[], Any]  # -> PIL image
    quality: int = 88
    member: int | None = None  # index into the home's members (portraits)


@dataclass
class Visit:
    role: str  # honest | planted | support
    kind: str  # a KINDS key for planted visits, "" otherwise
    variant: str
    caseworker: str
    home: Home
    survey_kind: str
    started: datetime
    finished: datetime
    fix: tuple[float, float]
    accuracy: float
    fix_at: datetime
    shots: list[Shot] = field(default_factory=list)
    track: list[dict[str, Any]] = field(default_factory=list)
    client_uuid: str = ""
    flags: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class County:
    homes: list[Home]
    villages: list[tuple[int, tuple[float, float]]]  # (township, centre)
    honest_workers: list[list[str]]  # per township
    fabricators: list[list[str]]


def working_days(first: date, last: date) -> list[date]:
    days, day = [], first
    while day <= last:
        if day.weekday() < 6:
            days.append(day)
        day += timedelta(days=1)
    return days


def at(day: date, hour: float) -> datetime:
    """Local ``hour`` (fractional) of ``day``, as an aware datetime in UTC."""
    local = datetime(day.year, day.month, day.day, tzinfo=LOCAL) + timedelta(hours=hour)
    return local.astimezone(UTC)


def build_county(rng: random.Random, households: int, fabricators_per_township: int) -> County:
    """Two townships of three villages, villages 2.5-5 km apart; a village's homes in
    a ring 80-300 m around its centre and beyond, 50-400 m from one another, a quarter
    of them with a neighbour 15-30 m away."""
    villages: list[tuple[int, tuple[float, float]]] = []
    homes: list[Home] = []
    for township, centre in enumerate(((46.10, 122.00), (46.00, 122.20))):
        for index in range(3):
            angle = index * 2 * math.pi / 3 + rng.uniform(-0.3, 0.3)
            radius = rng.uniform(1500, 2800)
            villages.append(
                (
                    township,
                    offset(
                        centre[0], centre[1], radius * math.cos(angle), radius * math.sin(angle)
                    ),
                )
            )
    per_village = [
        households // len(villages) + (1 if i < households % len(villages) else 0)
        for i in range(len(villages))
    ]
    scene = 0
    for v, ((township, centre), count) in enumerate(zip(villages, per_village, strict=True)):
        points: list[tuple[float, float]] = []
        while len(points) < count:
            if len(points) < max(8, count * 2 // 5):
                candidate = polar(rng, *centre, 80, 300)
            elif points and rng.random() < 0.25:
                candidate = polar(rng, *rng.choice(points), 15, 30)  # a neighbour
            else:
                candidate = polar(rng, *rng.choice(points), 50, 400)
                if distance_m(candidate, centre) > 1200:
                    continue
            if points and min(distance_m(candidate, p) for p in points) < 14:
                continue
            points.append(candidate)
        for point in points:
            scene += 1
            homes.append(
                Home(
                    index=len(homes),
                    township=township,
                    village=v,
                    # Registered from a phone when the case was taken: 6 decimals.
                    lat=round(point[0], 6),
                    lon=round(point[1], 6),
                    members=rng.choice((1, 1, 2, 2, 2, 3, 3, 4, 5)),
                    accepted=rng.random() < 0.15,
                    scene=1000 + scene,
                    palette=v,
                )
            )
    honest = [[f"cw{t}_{i}" for i in range(3)] for t in range(2)]
    fabricators = [[f"fab{t}_{i}" for i in range(fabricators_per_township)] for t in range(2)]
    return County(homes, villages, honest, fabricators)


def honest_duration(rng: random.Random, home: Home, photos: int, survey_kind: str) -> float:
    """Minutes a real caseworker needs: a periodic review 8-40 minutes depending on the
    members and photos, an initial survey 20-90."""
    if survey_kind == "initial_survey":
        return min(90.0, max(20.0, 14 + 9 * home.members + 1.5 * photos + rng.gauss(0, 6)))
    return min(40.0, max(8.0, 5 + 3.5 * home.members + 1.2 * photos + rng.gauss(0, 3)))


def spread_times(
    rng: random.Random, start: datetime, finish: datetime, count: int
) -> list[datetime]:
    """Photo times as honest visits have them: spread over the visit, or taken in a
    walk-around of a few minutes; never two within 20 s."""
    length = (finish - start).total_seconds()
    if count == 0:
        return []
    if rng.random() < 0.4 and length > 600:
        begin = rng.uniform(60, length - 60 - count * 45)
        offsets = sorted(begin + i * rng.uniform(30, 75) for i in range(count))
    else:
        offsets = sorted(rng.uniform(45, length - 30) for _ in range(count))
        for i in range(1, count):
            offsets[i] = max(offsets[i], offsets[i - 1] + 20)
    return [start + timedelta(seconds=min(o, length - 5)) for o in offsets]


def house_shot(home: Home, view: int, shot: int) -> Callable[[], Any]:
    return lambda: render_photo(home.scene, home.palette, view, shot)


def honest_visit(
    rng: random.Random,
    role: str,
    caseworker: str,
    home: Home,
    start: datetime,
    survey_kind: str,
    shot_base: int,
) -> Visit:
    """A visit as it really happens at the home: a fix with a phone's error, photos of
    the house (each visit a new shot), spread over the visit, a track half the time."""
    photos = rng.randint(3, 6) if survey_kind == "initial_survey" else rng.randint(2, 4)
    minutes = honest_duration(rng, home, photos, survey_kind)
    finish = start + timedelta(minutes=minutes)
    accuracy = phone_accuracy(rng)
    fix = noisy(rng, home.point, accuracy)
    fix_at = start + timedelta(seconds=rng.uniform(5, 150))
    if rng.random() < 0.1:  # the app had a fix from a minute before the form opened
        fix_at = start - timedelta(seconds=rng.uniform(10, 100))
    times = spread_times(rng, start, finish, photos)
    shots = [
        Shot(
            photo_id=f"house{n + 1}",
            kind="housing",
            taken_at=t,
            where=noisy(rng, home.point, rng.uniform(5, 15)),
            make=house_shot(home, n % 3, shot_base + n),
        )
        for n, t in enumerate(times)
    ]
    visit = Visit(
        role, "", "", caseworker, home, survey_kind, start, finish, fix, accuracy, fix_at, shots
    )
    if rng.random() < 0.5:
        visit.track = walking_track(rng, home.point, start, finish)
    return visit


def walking_track(
    rng: random.Random, point: tuple[float, float], start: datetime, finish: datetime
) -> list[dict[str, Any]]:
    """A phone's track at a home: a point every 30-60 s, each with its own error and a
    slow drift (multipath indoors), the caseworker moving about the yard."""
    track, now = [], start
    drift = [0.0, 0.0]
    while now <= finish:
        accuracy = phone_accuracy(rng)
        drift = [0.8 * d + rng.gauss(0, 4) for d in drift]
        here = offset(point[0], point[1], drift[0], drift[1])
        lat, lon = noisy(rng, here, accuracy)
        track.append({"lat": lat, "lon": lon, "accuracy_m": accuracy, "at": now.isoformat()})
        now += timedelta(seconds=rng.uniform(30, 60))
    return track


@dataclass
class Planner:
    rng: random.Random
    county: County
    visits: list[Visit] = field(default_factory=list)
    visited_month: set[tuple[int, int]] = field(default_factory=set)  # (home, month)
    shot_counter: int = 0

    def next_shots(self) -> int:
        self.shot_counter += 20
        return self.shot_counter

    def revisited_after(self, home: Home, day: date) -> bool:
        """Whether an honest visit goes to ``home`` after ``day``."""
        return any(
            v.role == "honest" and v.home is home and v.finished.date() >= day for v in self.visits
        )

    def homes_in(self, village: int, *, accepted: bool | None = None) -> list[Home]:
        return [
            h
            for h in self.county.homes
            if h.village == village and (accepted is None or h.accepted == accepted)
        ]

    # ----------------------------------------------------------------- honest days

    def honest_day(
        self,
        caseworker: str,
        township: int,
        day: date,
        wanted: int,
        evening: bool,
        prefer: int | None,
    ) -> list[Visit]:
        """A caseworker's day: one or two villages, households near one another in
        route order (neighbours back to back), walking inside a village and riding a
        motorbike between villages, a lunch break; an evening day starts after 16:30
        and stops by about 20:30."""
        rng = self.rng
        villages = [v for v, (t, _) in enumerate(self.county.villages) if t == township]
        chosen = rng.sample(villages, 2 if wanted > 5 and rng.random() < 0.4 else 1)
        if prefer is not None and prefer not in chosen:
            chosen[0] = prefer
        clock = at(day, rng.uniform(16.5, 17.5) if evening else rng.uniform(8.0, 9.5))
        position = self.county.villages[chosen[0]][1]
        visits: list[Visit] = []
        per_village = [
            wanted // len(chosen) + (1 if i < wanted % len(chosen) else 0)
            for i in range(len(chosen))
        ]
        lunch_done = evening
        for village, count in zip(chosen, per_village, strict=True):
            pool = [
                h
                for h in self.homes_in(village)
                if (h.index, day.month) not in self.visited_month
                and not (h.accepted and (h.index in self.surveyed or h.index in self.reserved))
            ]
            faces_due = [h for h in pool if h.face]
            if not pool:
                continue
            seed_home = faces_due[0] if faces_due else rng.choice(pool)
            group = sorted(pool, key=lambda h: distance_m(h.point, seed_home.point))[:count]
            route: list[Home] = []
            here = position
            while group:
                nearest = min(group, key=lambda h: distance_m(here, h.point))
                group.remove(nearest)
                route.append(nearest)
                here = nearest.point
            for home in route:
                leg = distance_m(position, home.point)
                speed = 4.5 if leg < 1500 else rng.uniform(20, 35)  # km/h: walking, motorbike
                clock += timedelta(minutes=leg / 1000 / speed * 60 + rng.uniform(2, 10))
                if not lunch_done and clock > at(day, 11.8):
                    clock = max(clock, at(day, 12.0)) + timedelta(minutes=rng.uniform(50, 80))
                    lunch_done = True
                if evening and clock > at(day, 20.0):
                    return visits
                survey_kind = "initial_survey" if home.accepted else "periodic_review"
                visit = honest_visit(
                    rng, "honest", caseworker, home, clock, survey_kind, self.next_shots()
                )
                if home.face:
                    self.add_portrait(visit, self.face_sequence[home.face].pop(0))
                visits.append(visit)
                self.visited_month.add((home.index, day.month))
                if home.accepted:
                    self.surveyed.add(home.index)
                clock, position = visit.finished, home.point
        return visits

    surveyed: set[int] = field(default_factory=set)
    reserved: set[int] = field(default_factory=set)
    """Households awaiting their first survey kept for planted initial surveys: no
    honest visit surveys them first (a second initial survey would be a review)."""
    face_sequence: dict[str, list[str]] = field(default_factory=dict)
    day_end: dict[tuple[str, date], datetime] = field(default_factory=dict)

    def add_portrait(self, visit: Visit, image: str) -> None:
        """The head's portrait, early in the visit, taken where the fix is."""
        rng = self.rng
        taken = visit.started + timedelta(seconds=rng.uniform(60, 180))
        mirrored = image.endswith("~m")
        name = image.removesuffix("~m")
        make: Callable[[], Any] = (
            (lambda: _mirror(face_image(name))) if mirrored else (lambda: face_image(name))
        )
        visit.shots.insert(
            0,
            Shot(
                "portrait1",
                "member_portrait",
                taken,
                noisy(rng, visit.home.point, 8),
                make,
                90,
                member=0,
            ),
        )

    def plan_honest(self, total: int, days: list[date]) -> None:
        """Honest caseworkers' days spread over the period until ``total`` visits."""
        rng = self.rng
        slots = [
            (d, t, cw)
            for d in days
            for t, workers in enumerate(self.county.honest_workers)
            for cw in workers
        ]
        needed_days = max(1, math.ceil(total / 5.5))
        rng.shuffle(slots)
        chosen = sorted(slots[: min(len(slots), needed_days * 2)], key=lambda s: (s[0], s[2]))
        # Households with portraits get a visit in each month: their days come first.
        face_homes = [h for h in self.county.homes if h.face]
        made = evenings = 0
        for n, (day, township, caseworker) in enumerate(chosen):
            if made >= total:
                break
            due = [
                h
                for h in face_homes
                if h.township == township and (h.index, day.month) not in self.visited_month
            ]
            # About one day in ten an evening round, on until about 20:30.
            evening = evenings < (n + 5) // 10 and not due
            evenings += evening
            wanted = min(total - made, rng.randint(6, 8) if evening else rng.randint(3, 8))
            prefer = due[0].village if due else None
            day_visits = self.honest_day(caseworker, township, day, wanted, evening, prefer)
            self.visits.extend(day_visits)
            made += len(day_visits)

    # ----------------------------------------------------------------- fabricated days

    def support_then(
        self, caseworker: str, home: Home, day: date, hour: float, count: int
    ) -> tuple[list[Visit], datetime]:
        """``count`` ordinary visits before a planted one, in the planted home's
        village, ending near ``home``; returns them and when the last one ended."""
        rng = self.rng
        clock = at(day, hour)
        others = sorted(
            (
                h
                for h in self.homes_in(home.village, accepted=False)
                if h is not home and not h.face
            ),
            key=lambda h: distance_m(h.point, home.point),
        )
        visits = []
        for neighbour in others[: count * 3 : 3][:count][::-1]:
            visits.append(
                honest_visit(
                    rng,
                    "support",
                    caseworker,
                    neighbour,
                    clock,
                    "periodic_review",
                    self.next_shots(),
                )
            )
            clock = visits[-1].finished + timedelta(
                minutes=distance_m(neighbour.point, home.point) / 75 + rng.uniform(2, 8)
            )
        return visits, clock


def _spread(rng: random.Random, start: datetime, finish: datetime, count: int) -> list[datetime]:
    length = (finish - start).total_seconds()
    return [
        start + timedelta(seconds=length * (i + rng.uniform(0.2, 0.8)) / count)
        for i in range(count)
    ]


def planted_visit(
    planner: Planner, kind: str, variant: str, caseworker: str, home: Home, start: datetime
) -> Visit:
    """An ordinary-looking visit (a fresh fix near the home, a normal duration, photos
    spread), to be edited into the variant."""
    survey_kind = "initial_survey" if home.accepted else "periodic_review"
    visit = honest_visit(
        planner.rng, "planted", caseworker, home, start, survey_kind, planner.next_shots()
    )
    visit.kind, visit.variant = kind, variant
    return visit


def set_duration(
    visit: Visit, minutes: float, photos: int, rng: random.Random, where: tuple[float, float]
) -> None:
    """The visit made ``minutes`` long with ``photos`` new photos spread over it (EXIF
    positions around ``where``)."""
    visit.finished = visit.started + timedelta(minutes=minutes)
    visit.fix_at = visit.started + timedelta(seconds=rng.uniform(5, 40))
    times = _spread(rng, visit.started, visit.finished, photos)
    base = rng.randrange(10**6, 10**7)
    visit.shots = [
        Shot(
            f"house{n + 1}",
            "housing",
            t,
            noisy(rng, where, 10),
            house_shot(visit.home, n % 3, base + n),
        )
        for n, t in enumerate(times)
    ]
    visit.track = (
        walking_track(rng, visit.home.point, visit.started, visit.finished) if visit.track else []
    )


def bunch(visit: Visit, rng: random.Random, at_end: bool, span_s: float) -> None:
    length = (visit.finished - visit.started).total_seconds()
    begin = length - span_s - rng.uniform(5, 40) if at_end else rng.uniform(0.2, 0.7) * length
    count = len(visit.shots)
    for n, shot in enumerate(visit.shots):
        shot.taken_at = visit.started + timedelta(seconds=begin + span_s * n / max(1, count - 1))


# Each scenario: (kind, variant) -> a function planning it on a fabricator's day(s).
Scenario = Callable[["Planner", str, int, list[date], str], list[Visit]]


def _pick_home(
    planner: Planner,
    township: int,
    *,
    accepted: bool = False,
    members: tuple[int, ...] | None = None,
) -> Home:
    rng = planner.rng
    homes = [
        h
        for h in planner.county.homes
        if h.township == township
        and h.accepted == accepted
        and not h.face
        and (members is None or h.members in members)
    ]
    if accepted:
        homes = [
            h for h in homes if h.index in planner.reserved and h.index not in planner.surveyed
        ]
        if not homes:
            raise BenchmarkError(
                "too few households awaiting their first survey for the planted initial "
                "surveys: raise --households or lower --planted-per-variant"
            )
    if not homes:
        homes = [
            h
            for h in planner.county.homes
            if h.township == township and not h.accepted and not h.face
        ]
    home = rng.choice(homes)
    if home.accepted:
        planner.surveyed.add(home.index)
    return home


def per_visit_scenario(
    edit: Callable[[Visit, Planner], None],
    *,
    accepted: bool = False,
    members: tuple[int, ...] | None = None,
    hour: tuple[float, float] = (8.5, 14.0),
) -> Scenario:
    """A fabricator's day: an ordinary visit nearby, then the planted one."""

    def plan(
        planner: Planner, caseworker: str, township: int, days: list[date], variant: str
    ) -> list[Visit]:
        rng = planner.rng
        home = _pick_home(planner, township, accepted=accepted, members=members)
        support, clock = planner.support_then(caseworker, home, days[0], rng.uniform(*hour), 1)
        visit = planted_visit(planner, "", variant, caseworker, home, clock)
        edit(visit, planner)
        return [*support, visit]

    return plan


def _short(
    minutes: tuple[float, float], photos: tuple[int, int]
) -> Callable[[Visit, Planner], None]:
    def edit(visit: Visit, planner: Planner) -> None:
        rng = planner.rng
        set_duration(visit, rng.uniform(*minutes), rng.randint(*photos), rng, visit.home.point)

    return edit


def _bunched(at_end: bool, span: tuple[float, float]) -> Callable[[Visit, Planner], None]:
    def edit(visit: Visit, planner: Planner) -> None:
        rng = planner.rng
        set_duration(visit, rng.uniform(15, 28), rng.randint(3, 5), rng, visit.home.point)
        bunch(visit, rng, at_end, rng.uniform(*span))

    return edit


def _at_home(
    accuracy: tuple[float, float], jiggle_deg: float = 0.0
) -> Callable[[Visit, Planner], None]:
    def edit(visit: Visit, planner: Planner) -> None:
        rng = planner.rng
        visit.accuracy = (
            round(rng.uniform(*accuracy), 1) if accuracy[0] != accuracy[1] else accuracy[0]
        )
        visit.fix = (
            visit.home.lat + rng.uniform(-jiggle_deg, jiggle_deg),
            visit.home.lon + rng.uniform(-jiggle_deg, jiggle_deg),
        )

    return edit


def _stale(minutes: tuple[float, float]) -> Callable[[Visit, Planner], None]:
    def edit(visit: Visit, planner: Planner) -> None:
        visit.fix_at = visit.started - timedelta(minutes=planner.rng.uniform(*minutes))

    return edit


def _static_track(visit: Visit, planner: Planner) -> None:
    rng = planner.rng
    visit.track = []
    now = visit.started
    while now <= visit.finished:
        visit.track.append(
            {
                "lat": visit.fix[0],
                "lon": visit.fix[1],
                "accuracy_m": visit.accuracy,
                "at": now.isoformat(),
            }
        )
        now += timedelta(seconds=rng.uniform(30, 60))


def _jumping_track(visit: Visit, planner: Planner) -> None:
    rng = planner.rng
    visit.track = walking_track(rng, visit.home.point, visit.started, visit.finished)
    middle = len(visit.track) // 2
    far = polar(rng, *visit.home.point, 1500, 5000)
    for point in visit.track[middle : middle + rng.randint(1, 2)]:
        point["lat"], point["lon"] = round(far[0], 7), round(far[1], 7)


def repeated_same_home(
    planner: Planner, caseworker: str, township: int, days: list[date], variant: str
) -> list[Visit]:
    """The exact coordinates of an earlier visit to the same household (copied from
    last month's record), on a visit that is otherwise ordinary."""
    rng = planner.rng
    earlier = [
        v
        for v in planner.visits
        if v.role == "honest"
        and v.home.township == township
        and v.finished.date() < days[0] - timedelta(days=7)
        and not v.home.accepted
        and not v.home.face
    ]
    if not earlier:
        return per_visit_scenario(_at_home((1.0, 1.0)))(
            planner, caseworker, township, days, variant
        )
    source = rng.choice(earlier)
    support, clock = planner.support_then(caseworker, source.home, days[0], rng.uniform(8.5, 14), 1)
    visit = planted_visit(planner, "", variant, caseworker, source.home, clock)
    visit.fix, visit.accuracy = source.fix, source.accuracy
    return [*support, visit]


def repeated_other_home(
    planner: Planner, caseworker: str, township: int, days: list[date], variant: str
) -> list[Visit]:
    """Two households 40-300 m apart, visited the same day, with identical fixes."""
    rng = planner.rng
    first = _pick_home(planner, township)
    near = [
        h
        for h in planner.homes_in(first.village, accepted=False)
        if h is not first and 40 <= distance_m(h.point, first.point) <= 300
    ]
    second = rng.choice(near) if near else _pick_home(planner, township)
    support = honest_visit(
        rng,
        "support",
        caseworker,
        first,
        at(days[0], rng.uniform(8.5, 14)),
        "periodic_review",
        planner.next_shots(),
    )
    visit = planted_visit(
        planner,
        "",
        variant,
        caseworker,
        second,
        support.finished + timedelta(minutes=rng.uniform(5, 15)),
    )
    visit.fix, visit.accuracy = support.fix, support.accuracy
    return [support, visit]


def reused_photo(edit_name: str) -> Scenario:
    """Another household's housing photo (an honest visit's, uploaded earlier), edited,
    among the visit's own photos; EXIF time and position are made to fit the visit.
    The source household gets no honest visit afterwards: a new honest photo of it
    would rightly match the copy, a flag linking it to the fabrication that the false
    positive rate should not count."""

    def plan(
        planner: Planner, caseworker: str, township: int, days: list[date], variant: str
    ) -> list[Visit]:
        rng = planner.rng
        home = _pick_home(planner, township)
        sources = [
            v
            for v in planner.visits
            if v.role == "honest"
            and v.home is not home
            and v.finished.date() < days[0]
            and not v.home.face
            and not planner.revisited_after(v.home, days[0])
        ]
        support, clock = planner.support_then(caseworker, home, days[0], rng.uniform(8.5, 14), 1)
        visit = planted_visit(planner, "", variant, caseworker, home, clock)
        # An honest visit's photo uploaded earlier; early in the period, the photo of
        # a household the fabricator visited this morning.
        origin = rng.choice(sources) if sources else support[0]
        # The source house photographed honestly later would rightly match the copy:
        # those visits are linked to the fabrication, counted in neither group.
        for other in planner.visits:
            if other.role == "honest" and other.home is origin.home and other.started > clock:
                other.role = "linked"
        source = rng.choice([s for s in origin.shots if s.kind == "housing"])
        edit, quality = REUSE_EDITS[edit_name]
        edit_rng = random.Random(rng.randrange(2**32))
        reused = Shot(
            "house_r",
            "housing",
            visit.shots[0].taken_at + timedelta(seconds=40),
            noisy(rng, home.point, 10),
            lambda: edit(source.make(), edit_rng),
            quality,
        )
        visit.shots.insert(rng.randint(0, len(visit.shots)), reused)
        visit.shots.sort(key=lambda s: s.taken_at)
        return [*support, visit]

    return plan


def near_duplicate(
    planner: Planner, caseworker: str, township: int, days: list[date], variant: str
) -> list[Visit]:
    """A caseworker photographs one house (a new shot: other framing and light) and
    presents it as another household's, later the same month."""
    rng = planner.rng
    first = _pick_home(planner, township)
    for _ in range(20):  # a house no honest visit photographs again (see reused_photo)
        if not planner.revisited_after(first, days[0]):
            break
        first = _pick_home(planner, township)
    second = _pick_home(planner, township)
    while second is first:
        second = _pick_home(planner, township)
    day_one = at(days[0], rng.uniform(8.5, 10))
    support = honest_visit(
        rng, "support", caseworker, first, day_one, "periodic_review", planner.next_shots()
    )
    later = days[1] if len(days) > 1 else days[0]
    start = at(later, rng.uniform(13, 15)) if later == days[0] else at(later, rng.uniform(8.5, 14))
    visit = planted_visit(planner, "", variant, caseworker, second, start)
    for n, shot in enumerate(visit.shots):
        shot.make = house_shot(first, n % 3, planner.next_shots() + n)
    return [support, visit]


def curbstoning(counts: tuple[int, int], wander_m: float) -> Scenario:
    """A caseworker "visits" 4-8 households of a village from one spot near its centre
    (100-300 m from every home), with ordinary durations, one after the other."""

    def plan(
        planner: Planner, caseworker: str, township: int, days: list[date], variant: str
    ) -> list[Visit]:
        rng = planner.rng
        villages = [v for v, (t, _) in enumerate(planner.county.villages) if t == township]
        rng.shuffle(villages)
        options = []
        for village in villages:  # a village with enough homes around its centre
            spot = polar(rng, *planner.county.villages[village][1], 0, 40)
            ring = [
                h
                for h in planner.homes_in(village, accepted=False)
                if 100 <= distance_m(h.point, spot) <= 300 and not h.face
            ]
            options.append((spot, ring))
            if len(ring) >= counts[0]:
                break
        spot, homes = max(options, key=lambda option: min(len(option[1]), counts[0]))
        rng.shuffle(homes)
        homes = homes[: rng.randint(*counts)]
        clock = at(days[0], rng.uniform(8.5, 15))
        visits = []
        for home in homes:
            here = polar(rng, *spot, 0, wander_m) if wander_m else spot
            visit = planted_visit(planner, "", variant, caseworker, home, clock)
            set_duration(visit, rng.uniform(8, 18), rng.randint(2, 3), rng, here)
            visit.accuracy = phone_accuracy(rng)
            visit.fix = noisy(rng, here, min(visit.accuracy, 15))
            visit.track = (
                walking_track(rng, here, visit.started, visit.finished)
                if rng.random() < 0.5
                else []
            )
            visits.append(visit)
            clock = visit.finished + timedelta(minutes=rng.uniform(1, 6))
        return visits

    return plan


def fast_legs(legs: int, kmh: tuple[float, float], leg_m: tuple[float, float]) -> Scenario:
    """Visits one after the other whose legs imply ``kmh`` (straight line), well below
    the 120 km/h of impossible_travel; every visit after the first is planted."""

    def plan(
        planner: Planner, caseworker: str, township: int, days: list[date], variant: str
    ) -> list[Visit]:
        rng = planner.rng
        homes = [
            h
            for h in planner.county.homes
            if h.township == township and not h.accepted and not h.face
        ]
        home = rng.choice(homes)
        first = honest_visit(
            rng,
            "support",
            caseworker,
            home,
            at(days[0], rng.uniform(8.5, 12)),
            "periodic_review",
            planner.next_shots(),
        )
        visits = [first]
        for _ in range(legs):
            here = visits[-1].home
            candidates = [
                h for h in homes if leg_m[0] <= distance_m(h.point, here.point) <= leg_m[1]
            ]
            if not candidates:
                candidates = sorted(homes, key=lambda h: -distance_m(h.point, here.point))[:3]
            nxt = rng.choice(candidates)
            leg = distance_m(visits[-1].fix, nxt.point)
            gap = timedelta(hours=leg / 1000 / rng.uniform(*kmh))
            visit = planted_visit(planner, "", variant, caseworker, nxt, visits[-1].finished + gap)
            visits.append(visit)
        return visits

    return plan


def odd_hours(hours: tuple[float, float]) -> Scenario:
    """A visit at night, otherwise ordinary (alone on its day)."""

    def plan(
        planner: Planner, caseworker: str, township: int, days: list[date], variant: str
    ) -> list[Visit]:
        rng = planner.rng
        home = _pick_home(planner, township)
        start = at(days[0], rng.uniform(*hours))
        visit = planted_visit(planner, "", variant, caseworker, home, start)
        if hours[1] <= 5 and visit.finished > at(days[0], 4.98):  # just inside: ends before 05:00
            set_duration(visit, rng.uniform(8, 12), 2, rng, visit.home.point)
            shift = visit.finished - at(days[0], 4.95)
            if shift > timedelta(0):
                visit.started -= shift
                visit.finished -= shift
                visit.fix_at -= shift
                for shot in visit.shots:
                    shot.taken_at -= shift
                visit.track = []
        return [visit]

    return plan


def face_scenario(other_household: bool, images: tuple[str, ...]) -> Scenario:
    """A portrait of a known face presented as a member of another household, or a
    portrait of someone else than the household's enrolled member."""

    def plan(
        planner: Planner, caseworker: str, township: int, days: list[date], variant: str
    ) -> list[Visit]:
        rng = planner.rng
        image = rng.choice(images)
        if other_household:
            home = _pick_home(planner, township)
        else:
            owner = {"obama": "biden", "biden": "alex", "alex": "obama", "lin": "obama"}[
                image.split("_")[0]
            ]
            face_homes = [h for h in planner.county.homes if h.face == owner]
            home = face_homes[0]
            caseworker = next(w for w in planner.county.fabricators[home.township])
        # Several of these on one fabricator's day: one after the other.
        start = max(at(days[0], 8.5), planner.day_end.get((caseworker, days[0]), at(days[0], 8.5)))
        start += timedelta(minutes=rng.uniform(20, 40))
        visit = planted_visit(planner, "", variant, caseworker, home, start)
        planner.add_portrait(visit, image)
        planner.day_end[(caseworker, days[0])] = visit.finished
        return [visit]

    return plan


SCENARIOS: dict[str, dict[str, Scenario]] = {
    "too_short": {
        "1-3min_review": per_visit_scenario(_short((1, 3), (2, 3)), members=(2, 3, 4, 5)),
        "4-5min_one_member": per_visit_scenario(_short((4, 5), (2, 2)), members=(1,)),
        "5-7min_many_photos": per_visit_scenario(_short((5, 7), (8, 10))),
        "8-12min_initial_survey": per_visit_scenario(_short((8, 12), (3, 4)), accepted=True),
    },
    "photos_bunched": {
        "within_5-10s_mid_visit": per_visit_scenario(_bunched(False, (5, 10))),
        "within_15-25s_at_end": per_visit_scenario(_bunched(True, (15, 25))),
    },
    "gps_implausible": {
        "1m_at_home": per_visit_scenario(_at_home((1.0, 1.0))),
        "0.5m_at_home": per_visit_scenario(_at_home((0.5, 0.5))),
        "home_exact_5m": per_visit_scenario(_at_home((4.5, 6.0))),
        "home_to_6_decimals_5m": per_visit_scenario(_at_home((4.5, 6.0), 4e-7)),
        "repeated_same_household": repeated_same_home,
        "repeated_other_household": repeated_other_home,
        "fix_30-90min_before": per_visit_scenario(_stale((30, 90))),
        "fix_1-3days_before": per_visit_scenario(_stale((1440, 4320))),
        "track_static": per_visit_scenario(_static_track),
        "track_jump": per_visit_scenario(_jumping_track),
    },
    "photo_reused": {
        **{name: reused_photo(name) for name in REUSE_EDITS},
        "near_duplicate_same_month": near_duplicate,
    },
    "curbstoning": {
        "4-5_homes_one_spot": curbstoning((4, 5), 0),
        "6-8_homes_one_spot": curbstoning((6, 8), 0),
        "5-7_homes_spot_wander_40m": curbstoning((5, 7), 40),
    },
    "fast_legs": {
        "one_leg_90-115kmh_3-6km": fast_legs(1, (90, 115), (3000, 6000)),
        "chain_of_3_70-100kmh": fast_legs(3, (70, 100), (2500, 5000)),
        "hop_1.2-2km_in_1-1.5min": fast_legs(1, (60, 110), (1200, 2000)),
    },
    "odd_hours": {
        "23:00-23:40": odd_hours((23.0, 23.67)),
        "01:30-03:30": odd_hours((1.5, 3.5)),
        "04:15-05:00": odd_hours((4.25, 4.6)),
    },
    "faces": {
        "other_household": face_scenario(True, ("obama_4", "biden_2", "alex_2", "obama_2")),
        "other_household_mirrored": face_scenario(True, ("obama_3~m", "biden_1~m", "alex_1~m")),
        "other_household_480p": face_scenario(True, ("obama_480p",)),
        "not_member": face_scenario(False, ("lin_1", "biden_2", "alex_1", "obama_4")),
        "not_member_mirrored": face_scenario(False, ("lin_1~m", "alex_2~m")),
    },
}


def plan_county(
    seed: int, households: int, honest: int, per_variant: int, kinds: tuple[str, ...] = ()
) -> tuple[County, list[Visit]]:
    """The county and its visits; ``kinds``: plant only these kinds (all when empty)."""
    rng = random.Random(seed)
    planted_kinds = {k: v for k, v in SCENARIOS.items() if not kinds or k in kinds}
    scenarios = sum(len(v) for v in planted_kinds.values()) * per_variant
    days = working_days(FIRST_DAY, HONEST_LAST_DAY)
    fabricators = max(2, math.ceil(scenarios / (2 * len(days) * 0.6)))
    county = build_county(rng, max(households, 30), fabricators)
    planner = Planner(rng, county)
    # Three households whose head has a real face photographed each month.
    faces = {
        "obama": ["obama_1", "obama_2", "obama_3", "obama_480p"],
        "biden": ["biden_1", "biden_2", "biden_1"],
        "alex": ["alex_1", "alex_2", "alex_1"],
    }
    for person, images in faces.items():
        home = next(
            h
            for h in county.homes
            if h.township == 0 and not h.accepted and not h.face and h.village == 0
        )
        home.face = person
        planner.face_sequence[person] = list(images) + list(images)
    for township in range(2):
        waiting = [h for h in county.homes if h.township == township and h.accepted and not h.face]
        planner.reserved.update(
            h.index for h in rng.sample(waiting, min(len(waiting), per_variant))
        )
    planner.plan_honest(honest, days)

    slots: dict[str, list[date]] = {
        cw: list(days) for workers in county.fabricators for cw in workers
    }
    for workers in county.fabricators:
        for cw in workers:
            rng.shuffle(slots[cw])
    jobs = [
        (kind, variant, n)
        for kind, variants in planted_kinds.items()
        for variant in variants
        for n in range(per_variant)
    ]
    rng.shuffle(jobs)
    face_days = working_days(*FACE_DAYS)
    face_jobs = 0
    for kind, variant, _ in jobs:
        township = rng.randrange(2)
        if kind == "faces":
            caseworker = county.fabricators[township][face_jobs % len(county.fabricators[township])]
            chosen = [face_days[face_jobs % len(face_days)]]
            face_jobs += 1
        else:
            caseworker = max(county.fabricators[township], key=lambda c: len(slots[c]))
            if not slots[caseworker]:
                raise BenchmarkError("no fabricator day left: lower --planted-per-variant")
            chosen = [slots[caseworker].pop(0)]
            if variant == "near_duplicate_same_month":
                chosen = same_month(chosen, slots[caseworker])
        made = SCENARIOS[kind][variant](planner, caseworker, township, chosen, variant)
        for visit in made:
            if visit.role == "planted":
                visit.kind, visit.variant = kind, variant
        planner.visits.extend(made)
    visits = sorted(planner.visits, key=lambda v: v.finished)
    for n, visit in enumerate(visits):
        visit.client_uuid = str(
            uuid.UUID(int=random.Random(seed * 1_000_033 + n).getrandbits(128), version=4)
        )
    return county, visits


def same_month(chosen: list[date], free: list[date]) -> list[date]:
    """Two days of one month for the near-duplicate scenario (the second later)."""
    first = chosen[0]
    later = sorted(d for d in free if d.month == first.month and d > first)
    if later:
        free.remove(later[0])
        return [first, later[0]]
    return [first]


# --------------------------------------------------------------------------- the server


@dataclass
class Clock:
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __call__(self) -> datetime:
        return self.now


def make_app(folder: Path, clock: Clock) -> Any:
    os.environ.pop("CELERY_BROKER_URL", None)  # background jobs run in-process
    from server import create_app

    config = {
        "TESTING": False,
        "DATABASE_URL": f"sqlite:///{folder / 'integrity.sqlite3'}",
        "SECRET_KEY": secrets.token_hex(32),
        "DIBAO_DATA_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "DIBAO_INSTANCE_PATH": str(folder / "instance"),
        "RATELIMIT_ENABLED": False,
        "DIBAO_CLOCK": clock,
        "CELERY_BROKER_URL": None,
    }
    return create_app(config)


def build_database(app: Any, county: County, clock: Clock) -> None:
    """Areas, users and households, through the project's own service functions."""
    from flask_migrate import upgrade

    from server.areas.models import Area, AreaLevel, build_path
    from server.auth.models import Role, User
    from server.auth.passwords import hash_password
    from server.cases.models import CaseState, Relation
    from server.cases.service import NewMember, apply_for_allowance
    from server.extensions import db
    from server.seed import id_check_digit, sync_household_classes

    clock.now = at(FIRST_DAY - timedelta(days=60), 9)
    with app.app_context():
        # The migrations' own log lines (alembic configures them) are not the report.
        with redirect_stderr(io.StringIO()) as log:
            try:
                upgrade(directory=app.extensions["migrate"].directory)
            except Exception:
                sys.stderr.write(log.getvalue())
                raise
        logging.getLogger("alembic").setLevel(logging.WARNING)
        sync_household_classes(app.config["REGION"])

        def area(code: str, name: str, level: Any, parent: Any, point: tuple[float, float]) -> Any:
            found = Area(
                code=code,
                name=name,
                level=level,
                parent=parent,
                path=build_path(parent, code),
                lat=point[0],
                lon=point[1],
            )
            db.session.add(found)
            return found

        league = area("152200", "兴安盟", AreaLevel.LEAGUE, None, (46.08, 122.05))
        county_area = area("152201", "乌兰浩特市", AreaLevel.COUNTY, league, (46.05, 122.10))
        townships = [
            area(f"15220110{t}", f"镇{t}", AreaLevel.TOWNSHIP, county_area, c)
            for t, c in enumerate(((46.10, 122.00), (46.00, 122.20)))
        ]
        villages = [
            area(f"15220110{t}2{v:02d}", f"村{v}", AreaLevel.VILLAGE, townships[t], centre)
            for v, (t, centre) in enumerate(county.villages)
        ]
        password_hash = hash_password(PASSWORD)
        users = {}
        for t, township in enumerate(townships):
            for name in county.honest_workers[t] + county.fabricators[t]:
                users[name] = User(
                    username=name, password_hash=password_hash, role=Role.CASEWORKER, area=township
                )
                db.session.add(users[name])
        db.session.flush()
        serial = 0
        for home in county.homes:
            members = []
            for m in range(home.members):
                serial += 1
                birth = date(1950, 1, 1) + timedelta(days=serial * 37 % 20000)
                first17 = f"152201{birth:%Y%m%d}{serial % 1000:03d}"
                members.append(
                    NewMember(
                        name="王" + "大二三四五六七"[m],
                        id_number=first17 + id_check_digit(first17),
                        birth_date=birth,
                        relation=Relation.HEAD if m == 0 else Relation.CHILD,
                        phone=None,
                        monthly_income=Decimal("100.00"),
                    )
                )
            household = apply_for_allowance(
                actor=users[county.honest_workers[home.township][0]],
                village=villages[home.village],
                address=f"{home.index}号",
                home_lat=home.lat,
                home_lon=home.lon,
                class_code="A",
                members=members,
            )
            if home.accepted:
                from server.cases.workflow import transition

                transition(
                    household, "accept", actor=users[county.honest_workers[home.township][0]]
                )
            else:
                household.state = CaseState.APPROVED
                household.state_changed_at = clock.now
            db.session.flush()
            home.household_id = household.id
            home.member_ids = [m.id for m in household.members]
        db.session.commit()


def survey_json(visit: Visit, files: dict[str, bytes]) -> dict[str, Any]:
    home = visit.home
    body: dict[str, Any] = {
        "client_uuid": visit.client_uuid,
        "household_id": home.household_id,
        "kind": visit.survey_kind,
        "started_at": visit.started.astimezone(LOCAL).isoformat(),
        "finished_at": visit.finished.astimezone(LOCAL).isoformat(),
        "gps": {
            "lat": visit.fix[0],
            "lon": visit.fix[1],
            "accuracy_m": visit.accuracy,
            "fix_at": visit.fix_at.astimezone(LOCAL).isoformat(),
            "provider": "fused",
            "is_mock": False,
        },
        "members": [{"member_id": mid, "monthly_income": "100.00"} for mid in home.member_ids],
        "housing": {"rooms": 2, "condition": "fair"},
        "notes": "",
        "photos": [],
    }
    if visit.track:
        body["track"] = visit.track
    for shot in visit.shots:
        data = files[shot.photo_id]
        entry = {
            "photo_id": shot.photo_id,
            "kind": shot.kind,
            "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data),
            "taken_at": shot.taken_at.astimezone(LOCAL).isoformat(),
        }
        if shot.member is not None:
            entry["member_ref"] = str(home.member_ids[shot.member])
            body["members"][shot.member]["portrait_photo_id"] = shot.photo_id
        body["photos"].append(entry)
    return body


class Tablet:
    """The caseworkers' tablets: a device-token login (30 days) renewed every 25 days."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.tokens: dict[str, tuple[str, date]] = {}

    def token(self, caseworker: str, day: date) -> str:
        known = self.tokens.get(caseworker)
        if known and timedelta(0) <= day - known[1] < timedelta(days=25):
            return known[0]
        response = self.client.post(
            "/api/v1/auth/device-tokens",
            json={
                "username": caseworker,
                "password": PASSWORD,
                "device_id": f"tablet-{caseworker}",
                "device_name": "MediaPad M5",
            },
        )
        if response.status_code != 201:
            answer = response.get_data(as_text=True)[:300]
            raise BenchmarkError(f"login of {caseworker}: {response.status_code} {answer}")
        token: str = response.get_json()["token"]
        self.tokens[caseworker] = (token, day)
        return token

    def upload(self, visit: Visit, files: dict[str, bytes]) -> None:
        token = self.token(visit.caseworker, visit.finished.astimezone(LOCAL).date())
        data: dict[str, Any] = {"survey": json.dumps(survey_json(visit, files), ensure_ascii=False)}
        for photo_id, content in files.items():
            data[photo_id] = (io.BytesIO(content), f"{photo_id}.jpg", "image/jpeg")
        response = self.client.post(
            "/api/v1/surveys",
            data=data,
            headers={"Authorization": f"Bearer {token}"},
            content_type="multipart/form-data",
        )
        body = response.get_json(silent=True) or {}
        if response.status_code != 201 or body.get("status") != "complete":
            what = f"{visit.role} {visit.kind} {visit.variant}".strip()
            raise BenchmarkError(
                f"upload {visit.client_uuid} ({what}): {response.status_code} "
                f"{json.dumps(body)[:500]}"
            )


def photo_files(visit: Visit) -> dict[str, bytes]:
    files = {}
    for shot in visit.shots:
        unique = hashlib.sha256(f"{visit.client_uuid}/{shot.photo_id}".encode()).hexdigest()[:32]
        files[shot.photo_id] = jpeg_with_exif(
            shot.make(), shot.taken_at, shot.where, shot.quality, unique
        )
    return files


def run_nightly(app: Any, clock: Clock, last: datetime) -> list[str]:
    """The periodic jobs of the integrity checks (if the server schedules any: a beat
    entry naming patterns, integrity or risk), run once the night after the last visit."""
    celery = app.extensions["celery"]
    ran = []
    clock.now = (
        (last.astimezone(LOCAL) + timedelta(days=1)).replace(hour=2, minute=30).astimezone(UTC)
    )
    from server.celery_app import import_task_modules

    import_task_modules(celery)
    for entry in celery.conf.beat_schedule.values():
        name = entry["task"]
        if any(word in name for word in ("pattern", "integrity", "risk")):
            with app.app_context():
                celery.tasks[name].apply(
                    args=entry.get("args", ()), kwargs=entry.get("kwargs", {})
                ).get()
            ran.append(name)
    return ran


def collect_flags(app: Any, visits: list[Visit]) -> None:
    from sqlalchemy import select

    from server.extensions import db
    from server.visits.models import Survey, SurveyFlag

    by_uuid = {v.client_uuid: v for v in visits}
    with app.app_context():
        rows = db.session.execute(
            select(Survey.client_uuid, SurveyFlag.code, SurveyFlag.severity).join(
                SurveyFlag, SurveyFlag.survey_id == Survey.id
            )
        ).all()
        for client_uuid, code, severity in rows:
            by_uuid[client_uuid].flags.append((code, severity))


# --------------------------------------------------------------------------- report


def percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "n/a"


def _codes(counts: Counter[str]) -> str:
    return ", ".join(f"{code} {n}" for code, n in counts.most_common()) or "-"


def _row(name: str, visits: list[Visit], codes: tuple[str, ...]) -> tuple[str, int]:
    """One line of the table (planted, caught, recall, any flag, caught by) and the
    number caught."""
    caught = [v for v in visits if any(code in codes for code, _ in v.flags)]
    anyflag = sum(1 for v in visits if v.flags)
    by: Counter[str] = Counter(c for v in caught for c in {c for c, _ in v.flags if c in codes})
    recall = percent(len(caught), len(visits))
    line = f"{name:<40} {len(visits):>7} {len(caught):>6} {recall:>7} {anyflag:>8}  {_codes(by)}"
    return line, len(caught)


def report(visits: list[Visit], kinds: tuple[str, ...] = ()) -> tuple[list[str], bool]:
    """The table per kind and variant (``kinds`` only, all when empty), the honest
    visits, and the targets."""
    header = f"{'kind / variant':<40} {'planted':>7} {'caught':>6} {'recall':>7} {'any flag':>8}"
    lines = [header + "  caught by"]
    failures = []
    for kind, codes in KINDS.items():
        if kinds and kind not in kinds:
            continue
        planted = [v for v in visits if v.role == "planted" and v.kind == kind]
        line, caught = _row(kind, planted, codes)
        lines.append(line)
        for variant in SCENARIOS[kind]:
            lines.append(
                _row("  " + variant, [v for v in planted if v.variant == variant], codes)[0]
            )
        if not planted or caught / len(planted) < TARGET_RECALL:
            failures.append(f"{kind} {percent(caught, len(planted))}")
    honest = [v for v in visits if v.role == "honest"]
    serious = [v for v in honest if any(sev in ("warning", "critical") for _, sev in v.flags)]
    flagged = [v for v in honest if v.flags]
    by_serious: Counter[str] = Counter(
        c for v in serious for c, s in v.flags if s in ("warning", "critical")
    )
    by_any: Counter[str] = Counter(c for v in flagged for c, _ in v.flags)
    fp_ok = bool(honest) and len(serious) / len(honest) <= TARGET_FP
    fp = percent(len(serious), len(honest))
    recall_verdict = "PASS" if not failures else f"FAIL ({', '.join(failures)})"
    lines += [
        "",
        f"honest visits: {len(honest)}",
        f"  flagged warning or critical (false positives): {len(serious)} ({fp})  "
        f"{_codes(by_serious)}",
        f"  any flag, info included: {len(flagged)} ({percent(len(flagged), len(honest))})  "
        f"{_codes(by_any)}",
        "",
        f"target recall >= {TARGET_RECALL:.0%} for every kind: {recall_verdict}",
        f"target false positives <= {TARGET_FP:.0%} of honest visits: "
        f"{'PASS' if fp_ok else 'FAIL'} ({fp})",
    ]
    overall = not failures and fp_ok
    lines.append(f"result: {'PASS' if overall else 'FAIL'}")
    return lines, overall


@contextmanager
def workspace(keep: str | None) -> Iterator[Path]:
    if keep:
        folder = Path(keep)
        if folder.exists() and any(folder.iterdir()):
            raise BenchmarkError(f"--keep {keep}: the folder exists and is not empty")
        folder.mkdir(parents=True, exist_ok=True)
        yield folder
        return
    folder = Path(tempfile.mkdtemp(prefix="dibao_integrity_"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seed", type=int, default=1, help="the county and its visits (default 1)")
    parser.add_argument(
        "--households",
        type=int,
        default=240,
        help="households of the county (default 240, at least 30)",
    )
    parser.add_argument("--honest", type=int, default=300, help="honest visits (default 300)")
    parser.add_argument(
        "--planted-per-variant",
        type=int,
        default=5,
        help="planted scenarios per variant (default 5)",
    )
    parser.add_argument(
        "--kinds",
        default="",
        help=f"plant only these kinds, comma-separated (default all: {','.join(KINDS)}); "
        "a quicker run while working on one check, another county than the full run's",
    )
    parser.add_argument(
        "--keep", metavar="DIR", help="build the county in DIR (empty or new) and keep it"
    )
    args = parser.parse_args(argv)
    if args.households < 1 or args.honest < 1 or args.planted_per_variant < 1:
        parser.error("--households, --honest and --planted-per-variant must be at least 1")
    args.kinds = tuple(k for k in args.kinds.split(",") if k)
    unknown = [k for k in args.kinds if k not in KINDS]
    if unknown:
        parser.error(f"--kinds: unknown kind {unknown[0]!r} (known: {', '.join(KINDS)})")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.perf_counter()
    county, visits = plan_county(
        args.seed, args.households, args.honest, args.planted_per_variant, args.kinds
    )
    roles = Counter(v.role for v in visits)
    print(
        f"dibao integrity benchmark: seed {args.seed}; {len(county.homes)} households in "
        f"{len(county.villages)} villages of 2 townships "
        f"({sum(h.accepted for h in county.homes)} awaiting their first survey); "
        f"{sum(len(w) for w in county.honest_workers)} honest caseworkers, "
        f"{sum(len(w) for w in county.fabricators)} fabricating"
    )
    print(
        f"visits: {roles['honest']} honest, {roles['planted']} planted, "
        f"{roles['support'] + roles['linked']} ordinary visits on the fabricators' days or "
        f"linked to a fabrication (counted in neither); "
        f"{sum(len(v.shots) for v in visits)} photos; "
        f"{visits[0].finished.astimezone(LOCAL):%Y-%m-%d} to "
        f"{visits[-1].finished.astimezone(LOCAL):%Y-%m-%d}"
    )
    sys.stdout.flush()
    clock = Clock()
    with workspace(args.keep) as folder:
        app = make_app(folder, clock)
        build_database(app, county, clock)
        tablet = Tablet(app.test_client())
        upload_began = time.perf_counter()
        making = 0.0
        for n, visit in enumerate(visits, 1):
            made = time.perf_counter()
            files = photo_files(visit)
            making += time.perf_counter() - made
            clock.now = visit.finished + timedelta(minutes=3 + (n * 7919) % 40)
            tablet.upload(visit, files)
            if n % 100 == 0:
                print(
                    f"  uploaded {n}/{len(visits)} ({time.perf_counter() - upload_began:.0f} s)",
                    flush=True,
                )
        uploaded = time.perf_counter()
        ran = run_nightly(app, clock, visits[-1].finished)
        print(f"nightly jobs run after the last visit: {', '.join(ran) or 'none scheduled'}")
        collect_flags(app, visits)
        if args.keep:
            (folder / "visits.json").write_text(
                json.dumps([visit_record(v) for v in visits], indent=1)
            )
        with app.app_context():
            from server.extensions import db

            db.engine.dispose()
    print()
    lines, _ = report(visits, args.kinds)
    print("\n".join(lines))
    uploads = uploaded - upload_began - making
    print(
        f"runtime: {time.perf_counter() - began:.1f} s (making the photos {making:.1f} s, "
        f"uploads and the server's jobs {uploads:.1f} s)"
    )
    return 0


def visit_record(visit: Visit) -> dict[str, Any]:
    """What --keep writes beside the database: each visit's role, kind and flags."""
    return {
        "client_uuid": visit.client_uuid,
        "role": visit.role,
        "kind": visit.kind,
        "variant": visit.variant,
        "caseworker": visit.caseworker,
        "household_id": visit.home.household_id,
        "started_at": visit.started.isoformat(),
        "finished_at": visit.finished.isoformat(),
        "flags": [{"code": c, "severity": s} for c, s in visit.flags],
    }


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
