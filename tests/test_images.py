"""server/images.py: the one decoder of visit photos and proof-of-life frames."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from server.images import ImageRejected, downscaled_rgb
from server.proof_of_life.pipeline import FrameRejected, decode_frame
from server.visits.photos import PhotoRejected


def _png(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, "PNG")
    return buffer.getvalue()


def test_sixteen_bit_greyscale_is_scaled_to_eight_bits_on_both_paths(tmp_path: Path) -> None:
    data = _png(Image.new("I;16", (64, 48), 40000))
    frame = decode_frame(data)
    assert frame.shape == (48, 64, 3)
    assert int(frame[0, 0, 0]) == 40000 // 256  # scaled, not clipped at 255
    path = tmp_path / "grey.png"
    path.write_bytes(data)
    assert np.array_equal(downscaled_rgb(path), frame)


def test_one_error_type_each_caller_keeps_its_own() -> None:
    assert PhotoRejected is ImageRejected
    with pytest.raises(ImageRejected) as refused:
        downscaled_rgb(b"GIF89a not a photo")
    assert (refused.value.code, refused.value.http_status) == ("unsupported_media_type", 415)
    heif_like = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic"
    with pytest.raises(FrameRejected, match="not a JPEG or PNG image"):
        decode_frame(heif_like)  # frames are JPEG or PNG only
