"""Checks and derived images for household-visit photos uploaded from tablets.

Every photo a caseworker uploads (member portraits, housing photos) is evidence, so
this module is strict about what it accepts and careful with what it decodes:

* the format is identified from the bytes (magic numbers), never from the file name;
  JPEG, PNG and HEIC/HEIF (through ``pillow-heif``) are accepted, anything else is a
  ``415 unsupported_media_type``;
* the pixel count is read from the header and checked against ``max_pixels`` *before*
  any pixel is decoded (``413 image_too_large``), independently of Pillow's global
  ``Image.MAX_IMAGE_PIXELS``, which this module never changes;
* the image is then fully decoded, and a truncated or corrupt file is a
  ``422 corrupt_image`` (truncated images are never accepted);
* a JPEG or PNG must end where its image ends: anything appended (an HTML page, a ZIP
  archive) is a ``422 trailing_data``, so a stored photo is nothing but a photo (the
  extra images a JPEG's MPF segment announces, such as an Ultra HDR gain map, and a
  Samsung camera's own trailer, are part of it);
* the EXIF orientation is applied before anything is measured, hashed or scaled.

Pure module: no Flask, no database. Callers map :class:`PhotoRejected` to a response.
"""

from __future__ import annotations

import math
import mmap
import os
import re
import struct
import uuid
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo

import imagehash
import numpy as np
import numpy.typing as npt
import pillow_heif
from PIL import ExifTags, Image, ImageFile, ImageOps

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_TZ",
    "PhotoFormat",
    "PhotoInfo",
    "PhotoRejected",
    "check_no_trailing_data",
    "check_photo_file",
    "downscaled_rgb",
    "inspect_photo",
    "make_thumbnail",
    "sniff_content_type",
]

# HEIF through Pillow. Embedded HEIF thumbnails are switched off: Pillow's ``draft``
# would otherwise decode the file's own thumbnail, which need not show the same
# picture as the primary image (a classic way to smuggle a different face past a check).
pillow_heif.register_heif_opener(thumbnails=False)

PhotoFormat = Literal["JPEG", "PNG", "HEIF"]

DEFAULT_MAX_PIXELS: Final = 40_000_000
DEFAULT_TZ: Final = "Asia/Shanghai"
THUMBNAIL_QUALITY: Final = 80

_SNIFF_BYTES: Final = 64
_PNG_MAGIC: Final = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC: Final = b"\xff\xd8\xff"
# ISO-BMFF brands of HEVC-coded HEIF ("HEIC"). The generic brands mif1/msf1 alone are
# not enough: AVIF files carry them too.
_HEIC_BRANDS: Final = frozenset(
    {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"}
)

# Errors Pillow and its plugins raise for files that are not what their header says.
# (RuntimeError: libheif, through pillow-heif.)
_DECODE_ERRORS: Final = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    RuntimeError,
    struct.error,
    IndexError,
)
_RGB_MODES: Final = frozenset({"RGB", "RGBA", "RGBX", "P", "PA"})
# Errors from reading malformed metadata; bad metadata never rejects a photo. Pillow
# reports some broken EXIF with a UserWarning, which is an error under `-W error`.
_METADATA_ERRORS: Final = (
    UserWarning,
    KeyError,
    ValueError,
    TypeError,
    IndexError,
    OSError,
    SyntaxError,
    struct.error,
    UnicodeDecodeError,
    ZeroDivisionError,
    OverflowError,
)

_EXIF_DATETIME = re.compile(r"(\d{4})[:-](\d{2})[:-](\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
_EXIF_OFFSET = re.compile(r"([+-])(\d{2}):(\d{2})")
_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")


class PhotoRejected(Exception):
    """The upload cannot be accepted as a photo; carries the HTTP answer to give."""

    def __init__(self, code: str, http_status: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.http_status = http_status
        self.message = message

    def __repr__(self) -> str:
        return f"PhotoRejected({self.code!r}, {self.http_status}, {self.message!r})"


def _unsupported(message: str) -> PhotoRejected:
    return PhotoRejected("unsupported_media_type", 415, message)


def _corrupt(message: str) -> PhotoRejected:
    return PhotoRejected("corrupt_image", 422, message)


def _too_large(pixels: int | None, max_pixels: int, detail: str = "") -> PhotoRejected:
    count = f"{pixels} pixels" if pixels is not None else "too many pixels"
    return PhotoRejected(
        "image_too_large",
        413,
        f"image has {count}{detail}; the limit is {max_pixels} pixels",
    )


@dataclass(frozen=True)
class PhotoInfo:
    """What the server records about an accepted photo."""

    format: PhotoFormat
    width: int
    """Width after the EXIF orientation is applied."""
    height: int
    """Height after the EXIF orientation is applied."""
    taken_at: datetime | None
    """EXIF DateTimeOriginal as an aware UTC datetime (None when absent or invalid)."""
    gps_lat: float | None
    gps_lon: float | None
    phash: str
    """64-bit perceptual hash (``imagehash.phash``) of the oriented image, 16 hex digits."""
    camera: str | None
    """EXIF Make and Model, when present."""


# --------------------------------------------------------------------------- opening


def _sniff_format(head: bytes) -> PhotoFormat:
    if head.startswith(_JPEG_MAGIC):
        return "JPEG"
    if head.startswith(_PNG_MAGIC):
        return "PNG"
    if len(head) >= 12 and head[4:8] == b"ftyp":
        box_size = int.from_bytes(head[0:4], "big")
        end = min(box_size, len(head)) if box_size >= 16 else 16
        brands = {head[8:12]} | {head[i : i + 4] for i in range(16, end - 3, 4)}
        if brands & _HEIC_BRANDS:
            return "HEIF"
    if not head:
        raise _unsupported("empty file")
    raise _unsupported("not a JPEG, PNG or HEIC/HEIF image")


def sniff_content_type(path: str | Path) -> str:
    """The MIME type of a stored photo from its first bytes (``application/octet-stream``
    for anything else, which no browser renders)."""
    with open(path, "rb") as fh:
        head = fh.read(_SNIFF_BYTES)
    try:
        return f"image/{_sniff_format(head).lower()}"
    except PhotoRejected:
        return "application/octet-stream"


def _bomb_pixels(exc: Exception) -> int | None:
    match = _BOMB_PIXELS.search(str(exc))
    return int(match.group(1)) if match else None


@contextmanager
def _open_image(
    path: str | Path, max_pixels: int
) -> Iterator[tuple[PhotoFormat, ImageFile.ImageFile]]:
    """Open ``path`` lazily (header only) and check its pixel count; nothing is decoded."""
    with open(path, "rb") as fh:
        fmt = _sniff_format(fh.read(_SNIFF_BYTES))
        fh.seek(0)
        try:
            # Restricting the plugins to the sniffed format keeps Pillow from trying
            # every other decoder it knows on a file that claims to be a photo.
            img = Image.open(fh, formats=[fmt])
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            # Only reached when Pillow's own (global) limit is stricter than ours, or
            # when DecompressionBombWarning is turned into an error by a warnings filter.
            raise _too_large(_bomb_pixels(exc), max_pixels) from exc
        except _DECODE_ERRORS as exc:
            raise _corrupt(f"cannot read the {fmt} header") from exc
        with img:
            width, height = img.size
            if width <= 0 or height <= 0:
                raise _corrupt(f"{fmt} header gives a size of {width}x{height}")
            if width * height > max_pixels:
                raise _too_large(width * height, max_pixels, f" ({width}x{height})")
            yield fmt, img


def _decode(img: ImageFile.ImageFile, fmt: PhotoFormat, max_pixels: int) -> None:
    """Decode every pixel; any truncation or decoder error rejects the photo."""
    try:
        img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _too_large(_bomb_pixels(exc), max_pixels) from exc
    except _DECODE_ERRORS as exc:
        raise _corrupt(f"the {fmt} data is truncated or corrupt") from exc


def _orient(img: Image.Image) -> None:
    """Apply the EXIF orientation in place (HEIF images arrive already oriented)."""
    try:
        ImageOps.exif_transpose(img, in_place=True)
    except _METADATA_ERRORS:
        # Unreadable EXIF: keep the pixels as stored rather than reject the evidence.
        return


def _to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB view of ``img``; transparency is flattened onto white."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        # 16-bit greyscale PNG: scale to 8 bits (a plain convert would clip at 255).
        return img.convert("I").point(lambda v: v * (1 / 256)).convert("L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


# --------------------------------------------------------------------------- metadata


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if not isinstance(value, str):
        return None
    value = value.replace("\x00", "").strip()
    return value or None


def _parse_taken_at(
    original: object, offset: object, subsec: object, zone: ZoneInfo
) -> datetime | None:
    text = _text(original)
    match = _EXIF_DATETIME.match(text) if text else None
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in match.groups())
    micro = 0
    subsec_text = _text(subsec)
    if subsec_text and subsec_text.isdigit():
        micro = int((subsec_text + "000000")[:6])
    tzinfo: timezone | ZoneInfo = zone
    offset_text = _text(offset)
    offset_match = _EXIF_OFFSET.fullmatch(offset_text) if offset_text else None
    if offset_match is not None:
        sign, hours, minutes = offset_match.groups()
        delta = timedelta(hours=int(hours), minutes=int(minutes))
        if delta <= timedelta(hours=14) and int(minutes) < 60:
            tzinfo = timezone(-delta if sign == "-" else delta)
    try:
        local = datetime(year, month, day, hour, minute, second, micro, tzinfo=tzinfo)
    except ValueError:  # "0000:00:00 00:00:00" and other placeholders
        return None
    return local.astimezone(UTC)


def _gps_coordinate(value: object, ref: object, positive: str, negative: str) -> float | None:
    if not isinstance(value, tuple | list) or len(value) != 3:
        return None
    try:
        degrees, minutes, seconds = (float(part) for part in value)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        return None
    parts = (degrees, minutes, seconds)
    if not all(math.isfinite(p) and p >= 0 for p in parts) or minutes >= 60 or seconds >= 60:
        return None
    ref_text = (_text(ref) or "").upper()
    if ref_text not in (positive, negative):
        return None
    decimal = degrees + minutes / 60 + seconds / 3600
    return -decimal if ref_text == negative else decimal


def _parse_gps(gps: Mapping[int, Any]) -> tuple[float | None, float | None]:
    if not gps or _text(gps.get(ExifTags.GPS.GPSStatus)) == "V":  # "V": measurement void
        return None, None
    lat = _gps_coordinate(
        gps.get(ExifTags.GPS.GPSLatitude), gps.get(ExifTags.GPS.GPSLatitudeRef), "N", "S"
    )
    lon = _gps_coordinate(
        gps.get(ExifTags.GPS.GPSLongitude), gps.get(ExifTags.GPS.GPSLongitudeRef), "E", "W"
    )
    if lat is None or lon is None or abs(lat) > 90 or abs(lon) > 180:
        return None, None
    return lat, lon


def _parse_camera(make: object, model: object) -> str | None:
    make_text, model_text = _text(make), _text(model)
    if make_text and model_text:
        # Many cameras repeat the maker in the model ("Canon" + "Canon EOS 80D").
        if model_text.lower().startswith(make_text.lower()):
            return model_text
        return f"{make_text} {model_text}"
    return make_text or model_text


@dataclass(frozen=True)
class _Metadata:
    taken_at: datetime | None = None
    gps_lat: float | None = None
    gps_lon: float | None = None
    camera: str | None = None


def _read_metadata(img: Image.Image, zone: ZoneInfo) -> _Metadata:
    try:
        exif = img.getexif()
        base = dict(exif)
        exif_ifd = dict(exif.get_ifd(ExifTags.IFD.Exif))
        gps_ifd = dict(exif.get_ifd(ExifTags.IFD.GPSInfo))
    except _METADATA_ERRORS:
        return _Metadata()
    taken_at = gps_lat = gps_lon = camera = None
    try:
        taken_at = _parse_taken_at(
            exif_ifd.get(ExifTags.Base.DateTimeOriginal),
            exif_ifd.get(ExifTags.Base.OffsetTimeOriginal),
            exif_ifd.get(ExifTags.Base.SubsecTimeOriginal),
            zone,
        )
    except _METADATA_ERRORS:
        taken_at = None
    try:
        gps_lat, gps_lon = _parse_gps(gps_ifd)
    except _METADATA_ERRORS:
        gps_lat = gps_lon = None
    try:
        camera = _parse_camera(base.get(ExifTags.Base.Make), base.get(ExifTags.Base.Model))
    except _METADATA_ERRORS:
        camera = None
    return _Metadata(taken_at, gps_lat, gps_lon, camera)


def _phash(img: Image.Image) -> str:
    # Shrinking to phash's own 32x32 input first is the same computation as
    # imagehash.phash(img) up to resampling round-off, but ~15x faster on 12 MP
    # (reducing_gap=3 makes the fast pre-reduction indistinguishable from a fair resample).
    small = img.resize((32, 32), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return str(imagehash.phash(small))


# --------------------------------------------------------------------------- public API


def inspect_photo(
    path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS, tz: str = DEFAULT_TZ
) -> PhotoInfo:
    """Validate a photo and read what the server records about it.

    The image is decoded once, every byte of it; a JPEG at 1/8 scale (libjpeg's DCT
    scaling still reads all the entropy-coded data, so truncation and corrupt data
    are caught, at a tenth of the cost), which is also what the perceptual hash is
    computed from. ``tz`` is the zone in which an EXIF time without
    ``OffsetTimeOriginal`` is read.

    Raises :class:`PhotoRejected` (415 unsupported_media_type, 413 image_too_large,
    422 corrupt_image); ``OSError`` for a path that cannot be read.
    """
    zone = ZoneInfo(tz)
    with _open_image(path, max_pixels) as (fmt, img):
        width, height = img.size
        if fmt == "JPEG":
            # At most 1/8, and never below 256 px on the long side (the hash needs detail).
            scale = max(1 / 8, min(1.0, 256 / max(width, height)))
            img.draft("RGB", (max(1, int(width * scale)), max(1, int(height * scale))))
        _decode(img, fmt, max_pixels)
        meta = _read_metadata(img, zone)
        before = img.size
        _orient(img)
        if img.size != before and img.size == (before[1], before[0]):
            width, height = height, width  # a quarter turn: the full size turns too
        phash = _phash(_to_rgb(img))
    return PhotoInfo(
        format=fmt,
        width=width,
        height=height,
        taken_at=meta.taken_at,
        gps_lat=meta.gps_lat,
        gps_lon=meta.gps_lon,
        phash=phash,
        camera=meta.camera,
    )


@dataclass(frozen=True)
class PhotoFacts:
    """What a photo's header and metadata say, read without decoding its pixels."""

    format: PhotoFormat
    width: int
    height: int
    taken_at: datetime | None
    gps_lat: float | None
    gps_lon: float | None
    camera: str | None


_ORIENTATION_TAG: Final = 0x0112


# The next marker after entropy-coded data: 0xFF followed by anything but a stuffed
# zero, a restart marker (inside the scan) or another 0xFF (fill bytes before a marker).
_JPEG_MARKER_AFTER_SCAN: Final = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_MPF_SIGNATURE: Final = b"MPF\x00"


def _jpeg_end(data: bytes | mmap.mmap, start: int = 0) -> tuple[int, bool] | None:
    """Walk the JPEG that begins at ``start`` segment by segment, and each scan's
    entropy-coded data to the marker after it (progressive files have several scans),
    to its end-of-image marker. Returns the offset just past that marker and whether
    the header announces more images after it (an APP2 ``MPF`` segment: the gain map of
    an Ultra HDR photo, a camera's preview); None when the structure is broken or cut.
    An EXIF thumbnail's own markers sit inside APP1 and are skipped by the walk.
    """
    position = start + 2
    more_images = False
    while position + 2 <= len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker == 0xD9:  # end of image
            return position + 2, more_images
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            position += 2
            continue
        if position + 4 > len(data):
            return None
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        if length < 2:
            return None
        if marker == 0xE2 and data[position + 4 : position + 8] == _MPF_SIGNATURE:
            more_images = True
        position += 2 + length
        if marker == 0xDA:  # start of scan: its data runs to the next marker
            found = _JPEG_MARKER_AFTER_SCAN.search(data, position)
            if found is None:
                return None
            position = found.start()
    return None


def _png_end(data: bytes | mmap.mmap) -> int | None:
    """Walk the chunks, checking each CRC, to IEND; the offset just past it, or None."""
    position = len(_PNG_MAGIC)
    while position + 12 <= len(data):
        length = int.from_bytes(data[position : position + 4], "big")
        end = position + 12 + length
        if end > len(data):
            return None
        kind = data[position + 4 : position + 8]
        crc = int.from_bytes(data[end - 4 : end], "big")
        if zlib.crc32(data[position + 4 : end - 4]) != crc:
            return None
        if kind == b"IEND":
            return end
        position = end
    return None


def _image_end(data: bytes | mmap.mmap, fmt: PhotoFormat) -> int | None:
    """Where the image's own bytes end (a JPEG's announced extra images included), or
    None when its structure is truncated or corrupt."""
    if fmt == "PNG":
        return _png_end(data)
    found = _jpeg_end(data)
    if found is None:
        return None
    end, more_images = found
    if more_images:
        # MPF's extra images follow the first one, each a whole JPEG.
        while end < len(data) and data[end : end + 3] == _JPEG_MAGIC:
            following = _jpeg_end(data, end)
            if following is None:
                break
            end = following[0]
    if end < len(data) and _samsung_trailer_from(data, end):
        return len(data)
    return end


def _samsung_trailer_from(data: bytes | mmap.mmap, start: int) -> bool:
    """Whether ``data[start:]`` is exactly a Samsung camera trailer ("SEF": data blocks,
    then an ``SEFH`` directory of them, its length and ``SEFT``; the layout ExifTool
    reads), which Galaxy phones and tablets append to ordinary photos. Only a
    directory that accounts for the trailer from its first byte passes."""
    size = len(data)
    if size - start < 20 or data[size - 4 : size] != b"SEFT":
        return False
    directory_length = int.from_bytes(data[size - 8 : size - 4], "little")
    directory = size - 8 - directory_length
    if directory_length < 12 or directory < start or data[directory : directory + 4] != b"SEFH":
        return False
    count = int.from_bytes(data[directory + 8 : directory + 12], "little")
    if count == 0 or 12 + 12 * count > directory_length:
        return False
    first = 0
    for index in range(count):
        entry = directory + 12 + 12 * index
        back = int.from_bytes(data[entry + 4 : entry + 8], "little")  # from the directory
        length = int.from_bytes(data[entry + 8 : entry + 12], "little")
        if back > directory - start or not 8 <= length <= back:
            return False
        first = max(first, back)
    return directory - first == start


def _trailing_data(extra: int, fmt: PhotoFormat) -> PhotoRejected:
    where = "end-of-image marker" if fmt == "JPEG" else "IEND chunk"
    return PhotoRejected(
        "trailing_data",
        422,
        f"{extra} bytes follow the {fmt} {where}: a photo must be the image alone, "
        "as the camera saved it (nothing appended)",
    )


def _check_structure(path: str | Path, fmt: PhotoFormat) -> None:
    """A JPEG or PNG must be complete and end where its last byte is: a file with
    something appended (an HTML page, a ZIP archive) is refused, so what we keep and
    serve as an image is nothing else."""
    # Mapped, not read: the walk touches the headers and one search of each scan.
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
        end = _image_end(data, fmt)
        size = len(data)
    if end is None:
        raise _corrupt(f"the {fmt} data is truncated or corrupt")
    if end != size:
        raise _trailing_data(size - end, fmt)


def check_no_trailing_data(path: str | Path) -> None:
    """For files judged elsewhere (proof-of-life frames): refuse a JPEG or PNG followed
    by other data (``422 trailing_data``); anything else, broken structures included,
    is left to the decoder's verdict."""
    with open(path, "rb") as fh:
        head = fh.read(_SNIFF_BYTES)
    if not head.startswith((_JPEG_MAGIC, _PNG_MAGIC)):
        return
    fmt: PhotoFormat = "JPEG" if head.startswith(_JPEG_MAGIC) else "PNG"
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
        end = _image_end(data, fmt)
        size = len(data)
    if end is not None and end != size:
        raise _trailing_data(size - end, fmt)


def check_photo_file(
    path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS, tz: str = DEFAULT_TZ
) -> PhotoFacts:
    """The fast check an upload waits for: the format from the bytes, the pixel count
    from the header, the file's structure complete (a truncated JPEG lacks its end
    marker, a truncated PNG its IEND chunk) with nothing after it (``422
    trailing_data``), and the EXIF time, place and camera. No pixel is decoded (HEIF,
    whose structure we do not walk, is fully decoded).

    Raises :class:`PhotoRejected` like :func:`inspect_photo`.
    """
    zone = ZoneInfo(tz)
    with _open_image(path, max_pixels) as (fmt, img):
        if fmt == "HEIF":
            _decode(img, fmt, max_pixels)
        else:
            _check_structure(path, fmt)
        meta = _read_metadata(img, zone)
        width, height = img.size
        try:
            turned = img.getexif().get(_ORIENTATION_TAG) in (5, 6, 7, 8)
        except _METADATA_ERRORS:
            turned = False
        if turned and fmt != "HEIF":
            width, height = height, width
    return PhotoFacts(fmt, width, height, meta.taken_at, meta.gps_lat, meta.gps_lon, meta.camera)


def _oriented_rgb(path: str | Path, max_side: int, max_pixels: int) -> Image.Image:
    """Decode ``path`` oriented, 8-bit RGB, with its longest side at most ``max_side``."""
    if max_side < 1:
        raise ValueError("max_side must be positive")
    with _open_image(path, max_pixels) as (fmt, img):
        if fmt == "JPEG":
            # DCT-domain scaling: libjpeg decodes straight to 1/2, 1/4 or 1/8 size, the
            # smallest whose longest side is still >= max_side (rotation keeps that side).
            width, height = img.size
            longest = max(width, height)
            if longest > max_side:
                wanted = (-(-width * max_side // longest), -(-height * max_side // longest))
                img.draft("RGB", wanted)
        _decode(img, fmt, max_pixels)
        # An RGB colour profile stays valid for the RGB output; a CMYK or grey one would not.
        icc_profile = img.info.get("icc_profile") if img.mode in _RGB_MODES else None
        _orient(img)
        rgb = _to_rgb(img)
        rgb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        if rgb is img:
            rgb = img.copy()  # detach the (now small) pixels from the file being closed
    # Keep only the colour profile: no EXIF (GPS, camera, times), XMP or comments.
    rgb.info = {"icc_profile": icc_profile} if isinstance(icc_profile, bytes) else {}
    return rgb


def make_thumbnail(
    path: str | Path,
    dest_path: str | Path,
    *,
    max_side: int = 512,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> None:
    """Write an oriented JPEG thumbnail (longest side <= ``max_side``) without metadata.

    The file appears at ``dest_path`` atomically (written beside it, then renamed).
    """
    thumb = _oriented_rgb(path, max_side, max_pixels)
    dest = Path(dest_path)
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.tmp")
    try:
        save_args: dict[str, Any] = {"quality": THUMBNAIL_QUALITY, "optimize": True}
        if "icc_profile" in thumb.info:
            save_args["icc_profile"] = thumb.info["icc_profile"]
        thumb.save(tmp, format="JPEG", **save_args)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def downscaled_rgb(
    path: str | Path, *, max_side: int = 1000, max_pixels: int = DEFAULT_MAX_PIXELS
) -> npt.NDArray[np.uint8]:
    """Oriented RGB pixels, longest side <= ``max_side``: a C-contiguous uint8 H x W x 3 array."""
    rgb = _oriented_rgb(path, max_side, max_pixels)
    return np.ascontiguousarray(np.asarray(rgb), dtype=np.uint8)
