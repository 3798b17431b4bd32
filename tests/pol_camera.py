"""A fake camera for browser tests of the proof-of-life page.

``write_y4m`` turns still images into a raw YUV4MPEG2 file that Chromium plays as
the camera with ``--use-fake-device-for-media-stream
--use-file-for-fake-video-capture=FILE`` (it loops the file). Pixels are BT.601
limited range ("video range", what ffmpeg writes for yuv420p), chroma 4:2:0 with
each chroma sample the mean of a 2x2 block, i.e. centred: the ``C420jpeg`` siting.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

# BT.601, limited range: rows give Y, Cb, Cr from R', G', B' in [0, 1].
_RGB_TO_YCBCR = np.array(
    [
        [65.481, 128.553, 24.966],
        [-37.797, -74.203, 112.0],
        [112.0, -93.786, -18.214],
    ]
)
_OFFSET = np.array([16.0, 128.0, 128.0])


def _fit(frame: Image.Image | Path, width: int, height: int) -> Image.Image:
    """The frame as RGB, scaled to fit width x height and letterboxed with black."""
    if isinstance(frame, Image.Image):
        image = frame
    else:
        with Image.open(frame) as opened:
            image = opened.copy()
    image = ImageOps.exif_transpose(image).convert("RGB")
    return ImageOps.pad(image, (width, height), method=Image.Resampling.BICUBIC, color=(0, 0, 0))


def _to_i420(image: Image.Image) -> bytes:
    """Planar Y, then Cb, then Cr (each chroma plane a quarter of the pixels)."""
    rgb = np.asarray(image, dtype=np.float64) / 255.0
    ycc = rgb @ _RGB_TO_YCBCR.T + _OFFSET
    h, w = ycc.shape[:2]
    y = ycc[:, :, 0]
    chroma = ycc[:, :, 1:].reshape(h // 2, 2, w // 2, 2, 2).mean(axis=(1, 3))
    planes = (y, chroma[:, :, 0], chroma[:, :, 1])
    return b"".join(np.clip(np.rint(p), 0, 255).astype(np.uint8).tobytes() for p in planes)


def write_y4m(
    frames: Sequence[Image.Image] | Sequence[Path],
    path: Path,
    *,
    width: int = 640,
    height: int = 480,
    fps: int = 10,
    repeat: int = 1,
) -> Path:
    """Write ``frames`` (PIL images or image files) to ``path`` as a YUV4MPEG2 clip.

    Each frame is letterboxed to ``width`` x ``height`` (both even) and written
    ``repeat`` times in a row, so a few stills can make a slower, longer clip.
    Returns ``path``.
    """
    if not frames:
        raise ValueError("no frames")
    if width <= 0 or height <= 0 or width % 2 or height % 2:
        raise ValueError(f"width and height must be positive and even, not {width}x{height}")
    if fps <= 0 or repeat <= 0:
        raise ValueError("fps and repeat must be positive")
    header = f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode("ascii")
    path = Path(path)
    with path.open("wb") as out:
        out.write(header)
        for frame in frames:
            data = _to_i420(_fit(frame, width, height))
            for _ in range(repeat):
                out.write(b"FRAME\n")
                out.write(data)
    return path
