"""The one safe image decoder: every image the server accepts (visit photos, proof-of-life
frames) is opened, checked and decoded here.

* the format is identified from the bytes (magic numbers), never from a file name;
  JPEG, PNG and HEIC/HEIF (through ``pillow-heif``) are known, and each caller names
  the formats it takes (anything else: ``415 unsupported_media_type``);
* the pixel count is read from the header and checked against ``max_pixels`` *before*
  any pixel is decoded (``413 image_too_large``), independently of Pillow's global
  ``Image.MAX_IMAGE_PIXELS``, which this module never changes;
* a truncated or corrupt file is a ``422 corrupt_image`` (truncated images are never
  accepted); a JPEG or PNG followed by other data is a ``422 trailing_data``
  (:func:`check_structure`, :func:`check_no_trailing_data`);
* the EXIF orientation is applied before anything is measured, hashed or scaled, and
  every mode (palette, transparency, 16-bit greyscale) becomes 8-bit RGB.

Every refusal is one error type, :class:`ImageRejected`, carrying the HTTP answer;
callers map it to theirs. Pure module: no Flask, no database.
"""

from __future__ import annotations

import io
import mmap
import re
import struct
import zlib
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Final, Literal

import numpy as np
import numpy.typing as npt
import pillow_heif
from PIL import Image, ImageFile, ImageOps

# HEIF through Pillow. Embedded HEIF thumbnails are switched off: Pillow's ``draft``
# would otherwise decode the file's own thumbnail, which need not show the same
# picture as the primary image (a classic way to smuggle a different face past a check).
pillow_heif.register_heif_opener(thumbnails=False)

ImageFormat = Literal["JPEG", "PNG", "HEIF"]
FORMATS: Final[tuple[ImageFormat, ...]] = ("JPEG", "PNG", "HEIF")

DEFAULT_MAX_PIXELS: Final = 40_000_000

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
DECODE_ERRORS: Final = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    RuntimeError,
    struct.error,
    IndexError,
)
RGB_MODES: Final = frozenset({"RGB", "RGBA", "RGBX", "P", "PA"})
# Errors from reading malformed metadata; bad metadata never rejects a photo. Pillow
# reports some broken EXIF with a UserWarning, which is an error under `-W error`.
METADATA_ERRORS: Final = (
    UserWarning,
    EOFError,
    RuntimeError,
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

_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")


class ImageRejected(Exception):
    """The bytes cannot be accepted as an image; carries the HTTP answer to give."""

    def __init__(self, code: str, http_status: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.http_status = http_status
        self.message = message

    def __repr__(self) -> str:
        return f"ImageRejected({self.code!r}, {self.http_status}, {self.message!r})"


def _unsupported(message: str) -> ImageRejected:
    return ImageRejected("unsupported_media_type", 415, message)


def _corrupt(message: str) -> ImageRejected:
    return ImageRejected("corrupt_image", 422, message)


def _too_large(pixels: int | None, max_pixels: int, detail: str = "") -> ImageRejected:
    count = f"{pixels} pixels" if pixels is not None else "too many pixels"
    return ImageRejected(
        "image_too_large",
        413,
        f"image has {count}{detail}; the limit is {max_pixels} pixels",
    )


def _known_format(head: bytes) -> ImageFormat | None:
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
    return None


def sniff_format(head: bytes, formats: Collection[ImageFormat] = FORMATS) -> ImageFormat:
    """The format of an image from its first bytes, one of ``formats``."""
    fmt = _known_format(head)
    if fmt is not None and fmt in formats:
        return fmt
    if not head:
        raise _unsupported("empty file")
    names = ["HEIC/HEIF" if name == "HEIF" else name for name in FORMATS if name in formats]
    listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
    raise _unsupported(f"not a {listed} image")


def sniff_content_type(path: str | Path) -> str:
    """The MIME type of a stored photo from its first bytes (``application/octet-stream``
    for anything else, which no browser renders)."""
    with open(path, "rb") as fh:
        head = fh.read(_SNIFF_BYTES)
    try:
        return f"image/{sniff_format(head).lower()}"
    except ImageRejected:
        return "application/octet-stream"


def _bomb_pixels(exc: Exception) -> int | None:
    match = _BOMB_PIXELS.search(str(exc))
    return int(match.group(1)) if match else None


Source = str | Path | bytes
"""A file's path, or the image's bytes."""


def _reader(source: Source) -> IO[bytes]:
    return io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")


@contextmanager
def open_image(
    source: Source, max_pixels: int, formats: Collection[ImageFormat] = FORMATS
) -> Iterator[tuple[ImageFormat, ImageFile.ImageFile]]:
    """Open ``source`` lazily (header only) and check its pixel count; nothing is decoded."""
    with _reader(source) as fh:
        fmt = sniff_format(fh.read(_SNIFF_BYTES), formats)
        fh.seek(0)
        try:
            # Restricting the plugins to the sniffed format keeps Pillow from trying
            # every other decoder it knows on a file that claims to be a photo.
            img = Image.open(fh, formats=[fmt])
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            # Only reached when Pillow's own (global) limit is stricter than ours, or
            # when DecompressionBombWarning is turned into an error by a warnings filter.
            raise _too_large(_bomb_pixels(exc), max_pixels) from exc
        except DECODE_ERRORS as exc:
            raise _corrupt(f"cannot read the {fmt} header") from exc
        with img:
            width, height = img.size
            if width <= 0 or height <= 0:
                raise _corrupt(f"{fmt} header gives a size of {width}x{height}")
            if width * height > max_pixels:
                raise _too_large(width * height, max_pixels, f" ({width}x{height})")
            yield fmt, img


def decode(img: ImageFile.ImageFile, fmt: ImageFormat, max_pixels: int) -> None:
    """Decode every pixel; any truncation or decoder error rejects the image."""
    # Pillow's switch is process-wide, and a library may turn it on when imported
    # (WeasyPrint does, for the notices): a cut-off photo must never pass as whole.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _too_large(_bomb_pixels(exc), max_pixels) from exc
    except DECODE_ERRORS as exc:
        raise _corrupt(f"the {fmt} data is truncated or corrupt") from exc


def orient(img: Image.Image) -> None:
    """Apply the EXIF orientation in place (HEIF images arrive already oriented)."""
    try:
        ImageOps.exif_transpose(img, in_place=True)
    except METADATA_ERRORS:
        # Unreadable EXIF: keep the pixels as stored rather than reject the evidence.
        return


def to_rgb(img: Image.Image) -> Image.Image:
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


def _image_end(data: bytes | mmap.mmap, fmt: ImageFormat) -> int | None:
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


def _trailing_data(extra: int, fmt: ImageFormat) -> ImageRejected:
    where = "end-of-image marker" if fmt == "JPEG" else "IEND chunk"
    return ImageRejected(
        "trailing_data",
        422,
        f"{extra} bytes follow the {fmt} {where}: a photo must be the image alone, "
        "as the camera saved it (nothing appended)",
    )


def check_structure(path: str | Path, fmt: ImageFormat) -> None:
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
    fmt: ImageFormat = "JPEG" if head.startswith(_JPEG_MAGIC) else "PNG"
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
        end = _image_end(data, fmt)
        size = len(data)
    if end is not None and end != size:
        raise _trailing_data(size - end, fmt)


def oriented_rgb(
    source: Source,
    max_side: int,
    max_pixels: int,
    formats: Collection[ImageFormat] = FORMATS,
) -> Image.Image:
    """Decode ``source`` oriented, 8-bit RGB, with its longest side at most ``max_side``;
    only the colour profile of its metadata is kept."""
    if max_side < 1:
        raise ValueError("max_side must be positive")
    with open_image(source, max_pixels, formats) as (fmt, img):
        if fmt == "JPEG":
            # DCT-domain scaling: libjpeg decodes straight to 1/2, 1/4 or 1/8 size, the
            # smallest whose longest side is still >= max_side (rotation keeps that side).
            width, height = img.size
            longest = max(width, height)
            if longest > max_side:
                wanted = (-(-width * max_side // longest), -(-height * max_side // longest))
                img.draft("RGB", wanted)
        decode(img, fmt, max_pixels)
        # An RGB colour profile stays valid for the RGB output; a CMYK or grey one would not.
        icc_profile = img.info.get("icc_profile") if img.mode in RGB_MODES else None
        orient(img)
        rgb = to_rgb(img)
        rgb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        if rgb is img:
            rgb = img.copy()  # detach the (now small) pixels from the file being closed
    # Keep only the colour profile: no EXIF (GPS, camera, times), XMP or comments.
    rgb.info = {"icc_profile": icc_profile} if isinstance(icc_profile, bytes) else {}
    return rgb


def downscaled_rgb(
    source: Source,
    *,
    max_side: int = 1000,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    formats: Collection[ImageFormat] = FORMATS,
) -> npt.NDArray[np.uint8]:
    """Oriented RGB pixels, longest side <= ``max_side``: a C-contiguous uint8 H x W x 3 array."""
    rgb = oriented_rgb(source, max_side, max_pixels, formats)
    return np.ascontiguousarray(np.asarray(rgb), dtype=np.uint8)
