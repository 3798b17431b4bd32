"""server.visits.photos: format sniffing, bombs, corruption, EXIF, hashes, derived images.

No Flask app and no database: every image is built here with Pillow (EXIF with piexif),
plus one real camera JPEG from tests/data/faces.
"""

from __future__ import annotations

import io
import struct
import time
import tracemalloc
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import imagehash
import numpy as np
import piexif
import pytest
from PIL import Image, ImageDraw, ImageFile

from server.visits import photos
from server.visits.photos import PhotoRejected, downscaled_rgb, inspect_photo, make_thumbnail

FACES = Path(__file__).resolve().parents[1] / "data" / "faces"  # tests/data/faces/README.md
REAL_JPEG = FACES / "obama" / "obama_1.jpg"
OTHER_JPEG = FACES / "biden" / "biden_1.jpg"

# --------------------------------------------------------------------------- helpers


def scene(size: tuple[int, int] = (400, 300)) -> Image.Image:
    """An RGB picture with a red top-left quadrant, so orientation can be checked."""
    img = Image.new("RGB", size, (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, size[0] // 2, size[1] // 2))
    return img


def exif_bytes(
    *,
    orientation: int | None = None,
    taken: str | None = None,
    offset: str | None = None,
    gps: dict[int, Any] | None = None,
    make: str | None = None,
    model: str | None = None,
) -> bytes:
    zeroth: dict[int, Any] = {}
    exif: dict[int, Any] = {}
    if orientation is not None:
        zeroth[piexif.ImageIFD.Orientation] = orientation
    if make is not None:
        zeroth[piexif.ImageIFD.Make] = make.encode()
    if model is not None:
        zeroth[piexif.ImageIFD.Model] = model.encode()
    if taken is not None:
        exif[piexif.ExifIFD.DateTimeOriginal] = taken.encode()
    if offset is not None:
        exif[piexif.ExifIFD.OffsetTimeOriginal] = offset.encode()
    data: bytes = piexif.dump({"0th": zeroth, "Exif": exif, "GPS": gps or {}})
    return data


def save_jpeg(path: Path, img: Image.Image, *, exif: bytes = b"", quality: int = 90) -> Path:
    img.save(path, format="JPEG", quality=quality, exif=exif)
    return path


def gps_ifd(
    lat: tuple[Any, ...], lat_ref: str, lon: tuple[Any, ...], lon_ref: str
) -> dict[int, Any]:
    return {
        piexif.GPSIFD.GPSLatitudeRef: lat_ref.encode(),
        piexif.GPSIFD.GPSLatitude: lat,
        piexif.GPSIFD.GPSLongitudeRef: lon_ref.encode(),
        piexif.GPSIFD.GPSLongitude: lon,
    }


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def black_png(width: int, height: int) -> bytes:
    """A valid 1-bit greyscale PNG of an all-black ``width`` x ``height`` image, built cheaply.

    Every row is zeros, so one compressed block (ended by a full flush, which resets the
    deflate state) is repeated; the Adler-32 of n zero bytes is (n mod 65521) << 16 | 1.
    """
    row_len = 1 + (width + 7) // 8  # filter byte 0, then 1-bit pixels
    rows_per_block = max(1, min(height, (1 << 20) // row_len))
    n_blocks, rest = divmod(height, rows_per_block)
    comp = zlib.compressobj(9)
    first = comp.compress(bytes(row_len * rows_per_block)) + comp.flush(zlib.Z_FULL_FLUSH)
    again = comp.compress(bytes(row_len * rows_per_block)) + comp.flush(zlib.Z_FULL_FLUSH)
    tail = comp.compress(bytes(row_len * rest)) + comp.flush(zlib.Z_FULL_FLUSH) if rest else b""
    final_block = b"\x03\x00"  # empty fixed-Huffman block with BFINAL set
    adler = struct.pack(">I", ((row_len * height % 65521) << 16) | 1)
    idat = first + again * (n_blocks - 1) + tail + final_block + adler
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def hamming(a: str, b: str) -> int:
    return int(imagehash.hex_to_hash(a) - imagehash.hex_to_hash(b))


def rejected(excinfo: pytest.ExceptionInfo[PhotoRejected]) -> tuple[str, int]:
    return excinfo.value.code, excinfo.value.http_status


# --------------------------------------------------------------------------- accepted formats


def test_jpeg_accepted_with_dimensions(tmp_path: Path) -> None:
    info = inspect_photo(save_jpeg(tmp_path / "a.jpg", scene((640, 480))))
    assert info.format == "JPEG"
    assert (info.width, info.height) == (640, 480)
    assert info.taken_at is None and info.gps_lat is None and info.gps_lon is None
    assert info.camera is None
    assert len(info.phash) == 16 and int(info.phash, 16) >= 0


def test_png_accepted_with_dimensions(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    scene((320, 200)).save(path, format="PNG")
    info = inspect_photo(path)
    assert info.format == "PNG"
    assert (info.width, info.height) == (320, 200)


def test_format_comes_from_bytes_not_name(tmp_path: Path) -> None:
    path = tmp_path / "really-a-png.jpg"
    scene().save(path, format="PNG")
    assert inspect_photo(path).format == "PNG"
    jpeg = save_jpeg(tmp_path / "photo.bin", scene())
    assert inspect_photo(jpeg).format == "JPEG"


def test_heif_accepted_and_oriented(tmp_path: Path) -> None:
    path = tmp_path / "a.heic"
    scene((400, 300)).save(path, format="HEIF", quality=90, exif=exif_bytes(orientation=6))
    info = inspect_photo(path)
    assert info.format == "HEIF"
    assert (info.width, info.height) == (300, 400)
    pixels = downscaled_rgb(path)
    assert pixels.shape == (400, 300, 3)
    assert pixels[5, -5, 0] > 200 and pixels[5, -5, 2] < 60  # red quadrant now top right


def test_real_camera_jpeg() -> None:
    info = inspect_photo(REAL_JPEG)
    assert info.format == "JPEG"
    assert (info.width, info.height) == (910, 1137)
    assert info.camera == "Canon EOS 5D Mark III"  # Model already starts with the Make
    assert info.taken_at is not None and info.taken_at.tzinfo is UTC


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    path = tmp_path / "deep.png"
    Image.new("I;16", (64, 48), 32768).save(path, format="PNG")
    assert inspect_photo(path).format == "PNG"
    pixels = downscaled_rgb(path)
    assert pixels.shape == (48, 64, 3)
    assert 120 <= int(pixels[0, 0, 0]) <= 136


# --------------------------------------------------------------------------- orientation


def test_orientation_6_swaps_width_and_height(tmp_path: Path) -> None:
    path = save_jpeg(tmp_path / "rot.jpg", scene((400, 300)), exif=exif_bytes(orientation=6))
    info = inspect_photo(path)
    assert (info.width, info.height) == (300, 400)
    pixels = downscaled_rgb(path)
    assert pixels.shape == (400, 300, 3)
    # Orientation 6 is displayed rotated 90° clockwise: the top-left quadrant goes top right.
    assert pixels[5, -5, 0] > 200 and pixels[5, -5, 2] < 60
    assert pixels[5, 5, 2] > 200 and pixels[5, 5, 0] < 60


def test_phash_is_taken_after_orientation(tmp_path: Path) -> None:
    upright = scene((400, 300)).transpose(Image.Transpose.ROTATE_270)
    a = inspect_photo(save_jpeg(tmp_path / "upright.jpg", upright))
    b = inspect_photo(
        save_jpeg(tmp_path / "rot.jpg", scene((400, 300)), exif=exif_bytes(orientation=6))
    )
    assert hamming(a.phash, b.phash) <= 4


def test_png_exif_orientation_is_applied(tmp_path: Path) -> None:
    path = tmp_path / "rot.png"
    scene((400, 300)).save(path, format="PNG", exif=exif_bytes(orientation=6))
    info = inspect_photo(path)
    assert (info.width, info.height) == (300, 400)


# --------------------------------------------------------------------------- EXIF time


def test_taken_at_with_offset(tmp_path: Path) -> None:
    exif = exif_bytes(taken="2024:03:05 14:30:00", offset="-05:00")
    info = inspect_photo(save_jpeg(tmp_path / "t.jpg", scene(), exif=exif))
    assert info.taken_at == datetime(2024, 3, 5, 19, 30, tzinfo=UTC)
    assert info.taken_at is not None and info.taken_at.utcoffset() is not None


def test_taken_at_without_offset_is_read_in_shanghai(tmp_path: Path) -> None:
    path = save_jpeg(tmp_path / "t.jpg", scene(), exif=exif_bytes(taken="2024:03:05 14:30:00"))
    assert inspect_photo(path).taken_at == datetime(2024, 3, 5, 6, 30, tzinfo=UTC)
    berlin = inspect_photo(path, tz="Europe/Berlin").taken_at
    assert berlin == datetime(2024, 3, 5, 13, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("taken", "offset", "expected"),
    [
        ("0000:00:00 00:00:00", None, None),
        ("    :  :     :  :  ", None, None),
        ("2024:02:30 10:00:00", None, None),
        ("2024:03:05 14:30:00", "garbage", datetime(2024, 3, 5, 6, 30, tzinfo=UTC)),
    ],
)
def test_taken_at_placeholders_and_bad_offsets(
    tmp_path: Path, taken: str, offset: str | None, expected: datetime | None
) -> None:
    path = save_jpeg(tmp_path / "t.jpg", scene(), exif=exif_bytes(taken=taken, offset=offset))
    assert inspect_photo(path).taken_at == expected


# --------------------------------------------------------------------------- EXIF GPS and camera


def test_gps_south_and_west_are_negative(tmp_path: Path) -> None:
    gps = gps_ifd(((33, 1), (52, 1), (48, 10)), "S", ((70, 1), (30, 1), (0, 1)), "W")
    exif = exif_bytes(gps=gps, make="HUAWEI", model="ELS-AN00")
    info = inspect_photo(save_jpeg(tmp_path / "g.jpg", scene(), exif=exif))
    assert info.gps_lat == pytest.approx(-(33 + 52 / 60 + 4.8 / 3600))
    assert info.gps_lon == pytest.approx(-70.5)
    assert info.camera == "HUAWEI ELS-AN00"


def test_gps_north_and_east_are_positive(tmp_path: Path) -> None:
    gps = gps_ifd(((39, 1), (54, 1), (2712, 100)), "N", ((116, 1), (2394, 100), (0, 1)), "E")
    info = inspect_photo(save_jpeg(tmp_path / "g.jpg", scene(), exif=exif_bytes(gps=gps)))
    assert info.gps_lat == pytest.approx(39 + 54 / 60 + 27.12 / 3600)
    assert info.gps_lon == pytest.approx(116 + 23.94 / 60)


LAT_10N = ((10, 1), (0, 1), (0, 1))
LON_1E = ((1, 1), (0, 1), (0, 1))


@pytest.mark.parametrize(
    "gps",
    [
        pytest.param(gps_ifd(((95, 1), (0, 1), (0, 1)), "N", LON_1E, "E"), id="lat>90"),
        pytest.param(gps_ifd(LAT_10N, "N", ((181, 1), (0, 1), (0, 1)), "E"), id="lon>180"),
        pytest.param(gps_ifd(((10, 0), (0, 1), (0, 1)), "N", LON_1E, "E"), id="zero-denominator"),
        pytest.param(gps_ifd(LAT_10N, "X", LON_1E, "E"), id="bad-ref"),
        pytest.param(gps_ifd(((10, 1), (0, 1)), "N", LON_1E, "E"), id="two-parts"),
        pytest.param(gps_ifd(((10, 1), (75, 1), (0, 1)), "N", LON_1E, "E"), id="minutes>=60"),
        # piexif writes this one broken: Pillow warns "Corrupt EXIF data" (an error here).
        pytest.param({piexif.GPSIFD.GPSLatitudeRef: b"N"}, id="ref-only"),
        pytest.param(
            {**gps_ifd(LAT_10N, "N", LON_1E, "E"), piexif.GPSIFD.GPSStatus: b"V"},
            id="status-void",
        ),
    ],
)
def test_malformed_gps_is_none(tmp_path: Path, gps: dict[int, Any]) -> None:
    info = inspect_photo(save_jpeg(tmp_path / "g.jpg", scene(), exif=exif_bytes(gps=gps)))
    assert (info.gps_lat, info.gps_lon) == (None, None)


# Pillow already warns while opening such a JPEG (it reads the EXIF for the DPI); in
# production that is a log line, so the warning is let through here to see the outcome.
@pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")
def test_garbage_exif_does_not_reject_the_photo(tmp_path: Path) -> None:
    path = save_jpeg(tmp_path / "e.jpg", scene(), exif=b"Exif\x00\x00II*\x00\xff\xff\xff\x7fjunk")
    info = inspect_photo(path)
    assert (info.width, info.height) == (400, 300)
    assert info.taken_at is None and info.gps_lat is None


# --------------------------------------------------------------------------- 415


def _gif() -> bytes:
    buf = io.BytesIO()
    scene().save(buf, format="GIF")
    return buf.getvalue()


def _webp() -> bytes:
    buf = io.BytesIO()
    scene().save(buf, format="WEBP")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("notes.jpg", b"this is not a photo, just text\n"),
        ("scan.jpg", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n"),
        ("anim.jpg", _gif()),
        ("pic.jpg", _webp()),
        ("empty.jpg", b""),
        ("pic.heic", b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf"),
        ("short.png", b"\x89PN"),
    ],
)
def test_unsupported_media_type(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    for call in (
        lambda: inspect_photo(path),
        lambda: make_thumbnail(path, tmp_path / "thumb.jpg"),
        lambda: downscaled_rgb(path),
    ):
        with pytest.raises(PhotoRejected) as excinfo:
            call()
        assert rejected(excinfo) == ("unsupported_media_type", 415)
    assert not (tmp_path / "thumb.jpg").exists()


# --------------------------------------------------------------------------- 422


def test_truncated_real_jpeg_is_corrupt(tmp_path: Path) -> None:
    data = REAL_JPEG.read_bytes()
    path = tmp_path / "half.jpg"
    path.write_bytes(data[: len(data) // 2])
    for call in (
        lambda: inspect_photo(path),
        lambda: make_thumbnail(path, tmp_path / "thumb.jpg"),
        lambda: downscaled_rgb(path),  # decodes through draft(): still must see the cut
    ):
        with pytest.raises(PhotoRejected) as excinfo:
            call()
        assert rejected(excinfo) == ("corrupt_image", 422)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    assert list(tmp_path.iterdir()) == [path]  # no thumbnail, no temporary file left


def test_truncated_png_is_corrupt(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (200, 300, 3), dtype=np.uint8)).save(buf, format="PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) * 2 // 3])
    with pytest.raises(PhotoRejected) as excinfo:
        inspect_photo(path)
    assert rejected(excinfo) == ("corrupt_image", 422)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"\xff\xd8\xff\xe0" + b"\x00" * 100, id="jpeg-magic-then-zeros"),
        pytest.param(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10, id="png-magic-then-garbage"),
        pytest.param(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 50, id="heic"),
    ],
)
def test_magic_number_without_image_is_corrupt(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.img"
    path.write_bytes(content)
    with pytest.raises(PhotoRejected) as excinfo:
        inspect_photo(path)
    assert rejected(excinfo) == ("corrupt_image", 422)


# --------------------------------------------------------------------------- 413


def test_black_png_helper_builds_real_pngs(tmp_path: Path) -> None:
    path = tmp_path / "black.png"
    path.write_bytes(black_png(3001, 2003))
    info = inspect_photo(path)
    assert (info.format, info.width, info.height) == ("PNG", 3001, 2003)
    pixels = downscaled_rgb(path)
    assert pixels.shape == (667, 1000, 3) and not pixels.any()


@pytest.mark.parametrize(
    ("width", "height"),
    [
        (50_000, 50_000),  # beyond Pillow's own error limit
        (10_000, 10_000),  # in Pillow's warning band (89M..179M pixels)
        (8_000, 6_000),  # below anything Pillow checks, above ours
    ],
)
def test_pixel_bomb_is_rejected_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, width: int, height: int
) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(black_png(width, height))
    assert path.stat().st_size < 2_000_000

    def no_decoding(self: ImageFile.ImageFile) -> None:
        raise AssertionError("the bomb was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    max_pixels_before = Image.MAX_IMAGE_PIXELS
    for call in (
        lambda: inspect_photo(path),
        lambda: make_thumbnail(path, tmp_path / "thumb.jpg"),
        lambda: downscaled_rgb(path),
    ):
        tracemalloc.start()
        started = time.perf_counter()
        try:
            with pytest.raises(PhotoRejected) as excinfo:
                call()
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        assert time.perf_counter() - started < 1.0
        assert peak < 50 * 1024 * 1024
        assert rejected(excinfo) == ("image_too_large", 413)
        assert str(width * height) in excinfo.value.message
    assert max_pixels_before == Image.MAX_IMAGE_PIXELS


def test_jpeg_header_bomb(tmp_path: Path) -> None:
    data = bytearray(save_jpeg(tmp_path / "small.jpg", scene((64, 48))).read_bytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 60_000, 60_000)  # height, width
    path = tmp_path / "bomb.jpg"
    path.write_bytes(bytes(data))
    with pytest.raises(PhotoRejected) as excinfo:
        inspect_photo(path)
    assert rejected(excinfo) == ("image_too_large", 413)
    assert "3600000000" in excinfo.value.message


def test_max_pixels_is_a_parameter(tmp_path: Path) -> None:
    path = save_jpeg(tmp_path / "a.jpg", scene((400, 300)))
    with pytest.raises(PhotoRejected) as excinfo:
        inspect_photo(path, max_pixels=100_000)
    assert rejected(excinfo) == ("image_too_large", 413)
    assert "120000" in excinfo.value.message
    assert inspect_photo(path, max_pixels=120_000).width == 400


# --------------------------------------------------------------------------- perceptual hash


def test_phash_survives_reencoding_and_separates_pictures(tmp_path: Path) -> None:
    original = inspect_photo(REAL_JPEG)
    with Image.open(REAL_JPEG) as img:
        small = img.resize((img.width // 2, img.height // 2), Image.Resampling.BILINEAR)
    reencoded = inspect_photo(save_jpeg(tmp_path / "small.jpg", small, quality=40))
    assert hamming(original.phash, reencoded.phash) <= 8
    png = tmp_path / "same.png"
    small.save(png, format="PNG")
    assert hamming(original.phash, inspect_photo(png).phash) <= 8
    other = inspect_photo(OTHER_JPEG)
    assert hamming(original.phash, other.phash) > 20


# --------------------------------------------------------------------------- thumbnails


def test_thumbnail_is_oriented_small_and_has_no_metadata(tmp_path: Path) -> None:
    gps = gps_ifd(((33, 1), (52, 1), (48, 10)), "S", ((70, 1), (30, 1), (0, 1)), "W")
    exif = exif_bytes(
        orientation=6, taken="2024:03:05 14:30:00", gps=gps, make="HUAWEI", model="ELS-AN00"
    )
    src = scene((1600, 1200))
    src.info["comment"] = b"secret comment"
    path = tmp_path / "src.jpg"
    src.save(path, format="JPEG", quality=90, exif=exif, comment=b"secret comment")
    dest = tmp_path / "thumb.jpg"
    make_thumbnail(path, dest)
    data = dest.read_bytes()
    with Image.open(dest) as thumb:
        assert thumb.format == "JPEG"
        assert thumb.size == (384, 512)  # oriented, longest side 512
        assert "exif" not in thumb.info and "xmp" not in thumb.info
        assert "comment" not in thumb.info
        assert len(thumb.getexif()) == 0
        rgb = thumb.convert("RGB")
        assert rgb.getpixel((380, 3)) == pytest.approx((255, 0, 0), abs=40)
    assert b"Exif" not in data and b"HUAWEI" not in data and b"secret" not in data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.jpg", "thumb.jpg"]


def test_thumbnail_max_side_and_no_upscaling(tmp_path: Path) -> None:
    path = tmp_path / "alpha.png"
    rgba = Image.new("RGBA", (200, 100), (0, 0, 0, 0))
    ImageDraw.Draw(rgba).rectangle((0, 0, 99, 99), fill=(255, 0, 0, 255))
    rgba.save(path, format="PNG")
    make_thumbnail(path, tmp_path / "t1.jpg")
    with Image.open(tmp_path / "t1.jpg") as thumb:
        assert thumb.size == (200, 100)
        pixel = thumb.convert("RGB").getpixel((150, 50))  # transparent → white
        assert isinstance(pixel, tuple) and min(pixel) > 230
    make_thumbnail(path, tmp_path / "t2.jpg", max_side=64)
    with Image.open(tmp_path / "t2.jpg") as thumb:
        assert thumb.size == (64, 32)


def test_thumbnail_of_real_photo(tmp_path: Path) -> None:
    dest = tmp_path / "t.jpg"
    make_thumbnail(REAL_JPEG, dest)
    with Image.open(dest) as thumb:
        assert thumb.size[1] == 512 and thumb.size[0] in (409, 410)  # 910x1137 scaled
        assert len(thumb.getexif()) == 0
    assert b"Canon" not in dest.read_bytes()


# --------------------------------------------------------------------------- downscaled RGB


def _assert_rgb_array(pixels: np.ndarray[Any, Any], max_side: int) -> None:
    assert isinstance(pixels, np.ndarray)
    assert pixels.dtype == np.uint8
    assert pixels.ndim == 3 and pixels.shape[2] == 3
    assert pixels.flags["C_CONTIGUOUS"]
    assert max(pixels.shape[:2]) <= max_side


def test_downscaled_rgb_of_real_photo() -> None:
    pixels = downscaled_rgb(REAL_JPEG)
    _assert_rgb_array(pixels, 1000)
    assert pixels.shape == (1000, 800, 3)
    small = downscaled_rgb(REAL_JPEG, max_side=300)
    _assert_rgb_array(small, 300)
    assert small.shape[0] == 300


def test_downscaled_rgb_of_large_jpeg_uses_full_side(tmp_path: Path) -> None:
    path = save_jpeg(tmp_path / "big.jpg", scene((4000, 3000)))
    pixels = downscaled_rgb(path)
    _assert_rgb_array(pixels, 1000)
    assert pixels.shape == (750, 1000, 3)
    assert tuple(pixels[10, 10]) == pytest.approx((255, 0, 0), abs=30)


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "1"])
def test_downscaled_rgb_of_other_modes(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "m.png"
    img = scene((120, 80)).convert(mode)
    if mode == "CMYK":
        path = tmp_path / "m.jpg"
        img.save(path, format="JPEG")
    else:
        img.save(path, format="PNG")
    pixels = downscaled_rgb(path)
    _assert_rgb_array(pixels, 1000)
    assert pixels.shape == (80, 120, 3)


def test_photo_rejected_carries_its_answer() -> None:
    exc = PhotoRejected("corrupt_image", 422, "broken")
    assert (exc.code, exc.http_status, exc.message, str(exc)) == (
        "corrupt_image",
        422,
        "broken",
        "broken",
    )
    assert photos.DEFAULT_MAX_PIXELS == 40_000_000


def test_the_upload_check_reads_facts_without_decoding_and_catches_truncation(
    tmp_path: Path,
) -> None:
    from server.visits.photos import check_photo_file
    from tests.visits.test_stored_photos import samsung_trailer

    real = (FACES / "obama" / "obama_1.jpg").read_bytes()
    facts = check_photo_file(_write(tmp_path / "ok.jpg", real))
    assert (facts.format, facts.width, facts.height) == ("JPEG", 910, 1137)
    # A Samsung camera's own trailer after the end marker is part of the photo; other
    # appended data is not (tests/visits/test_stored_photos.py).
    trailer = samsung_trailer({0x0A01: (b"Image_UTC_Data", b"1733150000000")})
    assert check_photo_file(_write(tmp_path / "trailer.jpg", real + trailer)).width == 910
    for name, content in (("cut.jpg", real[: len(real) // 2]), ("cut2.jpg", real[:-2])):
        with pytest.raises(PhotoRejected) as rejected:
            check_photo_file(_write(tmp_path / name, content))
        assert rejected.value.code == "corrupt_image"
    png = io.BytesIO()
    Image.new("RGB", (300, 200), (1, 2, 3)).save(png, "PNG")
    assert check_photo_file(_write(tmp_path / "ok.png", png.getvalue())).height == 200
    with pytest.raises(PhotoRejected):
        check_photo_file(_write(tmp_path / "cut.png", png.getvalue()[:-20]))


def test_the_upload_check_turns_the_size_of_a_rotated_photo(tmp_path: Path) -> None:
    from server.visits.photos import check_photo_file

    path = save_jpeg(tmp_path / "rot.jpg", scene((400, 300)), exif=exif_bytes(orientation=6))
    facts = check_photo_file(path)
    assert (facts.width, facts.height) == (300, 400)


def test_the_upload_check_skips_an_exif_thumbnails_end_marker(tmp_path: Path) -> None:
    from server.visits.photos import check_photo_file

    thumb = io.BytesIO()
    Image.new("RGB", (64, 48), (9, 9, 9)).save(thumb, "JPEG")
    exif = piexif.dump(
        {
            "0th": {},
            "Exif": {},
            "1st": {piexif.ImageIFD.Compression: 6},
            "thumbnail": thumb.getvalue(),
        }
    )
    full = io.BytesIO()
    scene((400, 300)).save(full, "JPEG", exif=exif)
    data = full.getvalue()
    cut = data[: len(data) - 400]  # the main image's end is gone; the thumbnail's is not
    with pytest.raises(PhotoRejected):
        check_photo_file(_write(tmp_path / "cut.jpg", cut))


def _write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path
