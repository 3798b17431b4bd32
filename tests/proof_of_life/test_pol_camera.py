"""The fake-camera helper for browser tests (tests/pol_camera.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.pol_camera import write_y4m


def _parse(path: Path) -> tuple[dict[str, str], list[bytes]]:
    data = path.read_bytes()
    header, _, body = data.partition(b"\n")
    fields = header.decode("ascii").split(" ")
    assert fields[0] == "YUV4MPEG2"
    tags = {field[0]: field[1:] for field in fields[1:]}
    width, height = int(tags["W"]), int(tags["H"])
    size = width * height * 3 // 2
    frames = []
    while body:
        assert body.startswith(b"FRAME\n"), "frame marker expected"
        frames.append(body[6 : 6 + size])
        assert len(frames[-1]) == size, "truncated frame"
        body = body[6 + size :]
    return tags, frames


def test_two_images_make_a_clip_chromium_can_read(tmp_path: Path) -> None:
    red = Image.new("RGB", (64, 48), (255, 0, 0))
    grey_file = tmp_path / "grey.png"
    Image.new("RGB", (64, 48), (128, 128, 128)).save(grey_file)

    out = write_y4m([red, red], tmp_path / "a.y4m", width=64, height=48, fps=5, repeat=3)
    tags, frames = _parse(out)
    assert tags == {"W": "64", "H": "48", "F": "5:1", "I": "p", "A": "1:1", "C": "420jpeg"}
    assert len(frames) == 6

    planes = np.frombuffer(frames[0], np.uint8)
    y, cb, cr = planes[: 64 * 48], planes[64 * 48 : 64 * 48 * 5 // 4], planes[64 * 48 * 5 // 4 :]
    # BT.601 limited range: pure red is Y 81, Cb 90, Cr 240.
    assert abs(int(y.mean()) - 81) <= 1
    assert abs(int(cb.mean()) - 90) <= 1
    assert abs(int(cr.mean()) - 240) <= 1

    tags, frames = _parse(write_y4m([grey_file], tmp_path / "b.y4m", width=64, height=48))
    assert tags["F"] == "10:1"
    assert len(frames) == 1
    assert set(frames[0][64 * 48 :]) == {128}  # grey: no colour


def test_other_aspect_is_letterboxed(tmp_path: Path) -> None:
    wide = Image.new("RGB", (200, 50), (255, 255, 255))
    _, frames = _parse(write_y4m([wide], tmp_path / "c.y4m", width=40, height=40))
    luma = np.frombuffer(frames[0][: 40 * 40], np.uint8).reshape(40, 40)
    assert luma[0].max() == 16  # black bar at the top (limited-range black)
    assert luma[20].min() == 235  # white image in the middle


@pytest.mark.parametrize("size", [(641, 480), (640, 0)])
def test_odd_or_empty_sizes_are_refused(tmp_path: Path, size: tuple[int, int]) -> None:
    with pytest.raises(ValueError):
        write_y4m([Image.new("RGB", (4, 4))], tmp_path / "d.y4m", width=size[0], height=size[1])
