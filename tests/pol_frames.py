"""Frames for the proof-of-life tests and benchmarks, built from the shared test images.

Everything here is honest about what it makes:

* :func:`clip_frame` is a real video frame (lin_manuel_miranda/live_clip, 640x360)
  letterboxed onto a 640x480 canvas, the size the phone sends;
* :func:`tilted` photographs a flat picture (a print or a screen) rotated in 3D in
  front of a pinhole camera: a homography of the picture, nothing more;
* :func:`blinked` is a synthetic blink: the upper eyelids are pulled down over the
  eyes by a local warp driven by the eye landmarks (the skin above the lid stretches,
  the lid edge covers the top of the eye), as a half-closed eye looks;
* :class:`CachingEngine` wraps the real dlib engine and remembers its answers per image,
  so that tests which send the same frame twice pay for dlib once.
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps

from server.faces.engine import DlibFaceEngine, FaceShape

FACES = Path(__file__).resolve().parent / "data" / "faces"  # tests/data/faces/README.md
CLIP = FACES / "lin_manuel_miranda" / "live_clip"
CLIP_NUMBERS = tuple(range(92, 209, 4))  # frame_092 .. frame_208: 30 frames
FRAME_SIZE = (640, 480)
GREY = (118, 118, 118)

# What the live clip shows (yaw proxy of dlib's landmarks, unmirrored video): frames
# 092 -> 132 turn to the person's right (proxy +0.08 -> -0.67), 136 -> 160 back to
# their left (-0.54 -> +0.29), 180 -> 204 to their right again (-0.01 -> -0.51); the
# mouth is wide open at 132 (inner-lip ratio 0.48 against about 0.1 closed).


def still(relative: str) -> Image.Image:
    """A test image, EXIF orientation applied, in RGB."""
    with Image.open(FACES / relative) as img:
        oriented = ImageOps.exif_transpose(img)
        return oriented.convert("RGB")


def canvas(image: Image.Image, size: tuple[int, int] = FRAME_SIZE) -> Image.Image:
    """``image`` scaled to fit ``size`` and centred on a grey canvas (letterboxed)."""
    scale = min(size[0] / image.width, size[1] / image.height)
    resized = image.convert("RGB").resize(
        (max(1, round(image.width * scale)), max(1, round(image.height * scale))),
        Image.Resampling.LANCZOS,
    )
    frame = Image.new("RGB", size, GREY)
    frame.paste(resized, ((size[0] - resized.width) // 2, (size[1] - resized.height) // 2))
    return frame


def clip_frame(number: int) -> Image.Image:
    """Live-clip frame ``number`` (92, 96, ... 208) on a 640x480 canvas."""
    return canvas(still(f"lin_manuel_miranda/live_clip/frame_{number:03d}.jpg"))


def jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def rgb(image: Image.Image) -> npt.NDArray[np.uint8]:
    return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))


# --------------------------------------------------------------------------- flat pictures


def plane_homography(
    size: tuple[int, int],
    *,
    yaw: float = 0.0,
    pitch: float = 0.0,
    roll: float = 0.0,
    scale: float = 1.0,
    shift: tuple[float, float] = (0.0, 0.0),
    focal: float = 500.0,
) -> npt.NDArray[np.float64]:
    """Homography from a frontal picture filling a ``size`` canvas to the same picture
    rotated by ``yaw`` / ``pitch`` / ``roll`` degrees about its centre, seen by a pinhole
    camera of focal length ``focal`` pixels (500 px: a phone's front camera at 640 px,
    about 65 degrees across), then zoomed by ``scale`` and shifted by ``shift`` pixels."""
    width, height = size
    cx, cy = width / 2, height / 2
    a, b, c = np.radians([pitch, yaw, roll])
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    rotation = rz @ ry @ rx
    # The picture's plane sits at depth `focal`, so one picture pixel is one image pixel.
    k = np.array([[focal * scale, 0, cx + shift[0]], [0, focal * scale, cy + shift[1]], [0, 0, 1]])
    centre = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]], dtype=np.float64)
    plane = np.column_stack([rotation[:, 0], rotation[:, 1], [0.0, 0.0, focal]])
    h = k @ plane @ centre
    return np.asarray(h / h[2, 2], dtype=np.float64)


def warp_plane(image: Image.Image, homography: npt.NDArray[np.float64]) -> Image.Image:
    """``image`` seen through ``homography`` (same canvas size, grey outside)."""
    inverse = np.linalg.inv(homography)
    inverse = inverse / inverse[2, 2]
    coefficients = tuple(float(v) for v in inverse.flatten()[:8])
    return image.transform(
        image.size,
        Image.Transform.PERSPECTIVE,
        coefficients,
        Image.Resampling.BICUBIC,
        fillcolor=GREY,
    )


def tilted(
    image: Image.Image,
    *,
    yaw: float = 0.0,
    pitch: float = 0.0,
    roll: float = 0.0,
    scale: float = 1.0,
) -> Image.Image:
    """``image`` as a flat picture in the pose given (see :func:`plane_homography`)."""
    pose = plane_homography(image.size, yaw=yaw, pitch=pitch, roll=roll, scale=scale)
    return warp_plane(image, pose)


def tilt_ramp(
    image: Image.Image,
    frames: int,
    *,
    yaw: float = 0.0,
    pitch: float = 0.0,
    roll: float = 0.0,
    scale: float = 1.0,
) -> list[Image.Image]:
    """``frames`` views of a flat picture moving steadily from frontal to the final pose
    given (angles linear in time, the zoom from 1 to ``scale``)."""
    return [
        tilted(image, yaw=yaw * t, pitch=pitch * t, roll=roll * t, scale=1 + (scale - 1) * t)
        for t in np.linspace(0.0, 1.0, frames)
    ]


# --------------------------------------------------------------------------- blink


def _lid(points: npt.NDArray[np.float64], xs: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    order = np.argsort(points[:, 0])
    lid: npt.NDArray[np.float64] = np.interp(xs, points[order, 0], points[order, 1])
    return lid


def blinked(
    image: Image.Image, landmarks: npt.NDArray[np.float64], closing: float = 0.7
) -> Image.Image:
    """``image`` with both upper eyelids pulled down by ``closing`` (0..1) of the lid gap.

    For each column between an eye's corners, the upper lid (through landmarks 36-39 or
    42-45) moves down to ``closing`` of the way to the lower lid (39-41, 36 / 45-47, 42);
    the skin between the lid and a line one lid-gap-and-a-half above is stretched down
    to follow it, and the part of the eye below the new lid edge is left as it was (the
    lid covers the top of the eye, it does not squash it). A vertical-only warp:
    enough for a half-closed eye on a frontal face, nothing more.
    """
    pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    out = pixels.copy()
    height = pixels.shape[0]
    for upper_ids, lower_ids in (
        ((36, 37, 38, 39), (39, 40, 41, 36)),
        ((42, 43, 44, 45), (45, 46, 47, 42)),
    ):
        upper, lower = landmarks[list(upper_ids)], landmarks[list(lower_ids)]
        x0, x1 = int(np.ceil(upper[:, 0].min())), int(np.floor(upper[:, 0].max()))
        if x1 <= x0:
            continue
        xs = np.arange(x0, x1 + 1, dtype=np.float64)
        top_lid, bottom_lid = _lid(upper, xs), _lid(lower, xs)
        gap = np.maximum(bottom_lid - top_lid, 0.0)
        new_lid = top_lid + closing * gap
        reach = 1.5 * float(gap.max()) + 2
        for column, x in enumerate(xs.astype(int)):
            if gap[column] <= 0:
                continue
            y_top = top_lid[column] - reach
            rows = np.arange(
                max(int(np.floor(y_top)), 0), min(int(np.ceil(new_lid[column])), height)
            )
            if len(rows) == 0:
                continue
            # Output rows in [y_top, new_lid] show source rows [y_top, top_lid], stretched.
            fraction = (rows - y_top) / max(new_lid[column] - y_top, 1e-6)
            source = np.clip(y_top + fraction * (top_lid[column] - y_top), 0, height - 1)
            low = np.floor(source).astype(int)
            high = np.minimum(low + 1, height - 1)
            weight = (source - low)[:, None]
            out[rows, x] = (1 - weight) * pixels[low, x] + weight * pixels[high, x]
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8), "RGB")


# --------------------------------------------------------------------------- engine cache


class CachingEngine:
    """The real dlib engine, remembering ``analyse`` and ``encoding`` per image content."""

    def __init__(self, engine: DlibFaceEngine | None = None) -> None:
        self.engine = engine or DlibFaceEngine()
        self.model_name = self.engine.model_name
        self.model_version = self.engine.model_version
        self._shapes: dict[tuple[str, int], list[FaceShape]] = {}
        self._encodings: dict[tuple[str, tuple[int, ...]], npt.NDArray[np.float64]] = {}
        self._lock = threading.Lock()
        self._boxes: dict[tuple[str, int], list[tuple[int, int, int, int]]] = {}
        self._placed: dict[tuple[str, tuple[int, int, int, int]], FaceShape] = {}
        self.calls = {"analyse": 0, "detect": 0, "encoding": 0}

    @staticmethod
    def _key(image: npt.NDArray[np.uint8]) -> str:
        digest = hashlib.sha1(np.ascontiguousarray(image).tobytes(), usedforsecurity=False)
        return f"{image.shape}:{digest.hexdigest()}"

    def analyse(self, rgb: npt.NDArray[np.uint8], *, upsample: int = 0) -> list[FaceShape]:
        key = (self._key(rgb), upsample)
        with self._lock:
            if key not in self._shapes:
                self.calls["analyse"] += 1
                self._shapes[key] = self.engine.analyse(rgb, upsample=upsample)
            return list(self._shapes[key])

    def detect(
        self, rgb: npt.NDArray[np.uint8], *, upsample: int = 0
    ) -> list[tuple[int, int, int, int]]:
        key = (self._key(rgb), upsample)
        with self._lock:
            if key not in self._boxes:
                self.calls["detect"] += 1
                self._boxes[key] = self.engine.detect(rgb, upsample=upsample)
            return list(self._boxes[key])

    def shape_at(self, rgb: npt.NDArray[np.uint8], box: tuple[int, int, int, int]) -> FaceShape:
        key = (self._key(rgb), box)
        with self._lock:
            if key not in self._placed:
                self._placed[key] = self.engine.shape_at(rgb, box)
            return self._placed[key]

    def encoding(self, rgb: npt.NDArray[np.uint8], face: FaceShape) -> npt.NDArray[np.float64]:
        key = (self._key(rgb), tuple(int(v) for v in face.landmarks.ravel()))
        with self._lock:
            if key not in self._encodings:
                self.calls["encoding"] += 1
                self._encodings[key] = self.engine.encoding(rgb, face)
            return self._encodings[key].copy()

    def landmarks(self, image: Image.Image) -> npt.NDArray[np.float64]:
        """The 68 landmarks of the largest face in ``image`` (upsampling once if needed)."""
        pixels = rgb(image)
        faces = self.analyse(pixels) or self.analyse(pixels, upsample=1)
        if not faces:
            raise AssertionError("no face in the image")
        return max(faces, key=lambda f: f.area).landmarks


def sequence(images: Sequence[Image.Image], quality: int = 90) -> list[bytes]:
    """Frames as the phone sends them: JPEG bytes."""
    return [jpeg(image, quality) for image in images]


ENROLL_MAX_SIDE = 1000  # server.visits.faces.DETECTION_MAX_SIDE: how templates are made


def template(engine: DlibFaceEngine, relative: str) -> npt.NDArray[np.float64]:
    """A face template of the test image, made as enrollment makes it (scaled to at most
    1000 px, HOG with one upsampling, 5-point aligned encoding): exactly one face."""
    image = still(relative)
    scale = min(1.0, ENROLL_MAX_SIDE / max(image.size))
    if scale < 1:
        size = (round(image.width * scale), round(image.height * scale))
        image = image.resize(size, Image.Resampling.LANCZOS)
    faces = engine.faces(rgb(image))
    if len(faces) != 1:
        raise AssertionError(f"{relative}: {len(faces)} faces")
    return faces[0].encoding


def clip_numbers(first: int, last: int) -> list[int]:
    """Clip frame numbers from ``first`` to ``last`` inclusive (every 4th video frame)."""
    return [n for n in CLIP_NUMBERS if first <= n <= last]


def clip_attempt(
    engine: CachingEngine,
    numbers: Sequence[int],
    *,
    blink_at: int | None = None,
    closing: float = 0.9,
    second_face: bool = False,
    quality: int = 90,
) -> list[bytes]:
    """Live-clip frames as an attempt's JPEGs; frame ``blink_at`` (a clip number) gets the
    synthetic blink; ``second_face`` pastes another person's face beside the member's."""
    images = []
    for number in numbers:
        image = clip_frame(number)
        if number == blink_at:
            image = blinked(image, engine.landmarks(image), closing)
        if second_face:
            image = with_second_face(image)
        images.append(image)
    return sequence(images, quality)


def with_second_face(image: Image.Image) -> Image.Image:
    """``image`` with a second person's face (from obama_1.jpg, about 130 px wide, a bigger
    face than the clip's own) in its right-hand part, where the live clip shows none."""
    face = canvas(still("obama/obama_1.jpg")).crop((254, 35, 418, 199)).resize((130, 130))
    combined = image.copy()
    combined.paste(face, (480, 150))
    return combined


# --------------------------------------------------------------------------- synthetic


def _face_model(eye_open: float, mouth_open: float) -> npt.NDArray[np.float64]:
    """68 points of a schematic head in millimetres: x to the image's right (the person's
    left), y down, z towards the camera; the outer eye corners 94 mm apart, the nose tip
    37 mm in front of them, the ears 60 mm behind."""
    h = 5.0 * eye_open
    m = mouth_open
    points: list[tuple[float, float, float]] = []
    for k in range(17):  # jaw, ear to ear through the chin
        a = -np.pi / 2 + np.pi * k / 16
        points.append((70 * np.sin(a), 10 + 95 * np.cos(a), -60 + 60 * np.cos(a)))
    for x in (-55, -45, -34, -23, -12):  # brow over the image-left eye
        points.append((x, -15 - 4 * np.cos((x + 33) / 22), -8 + 0.2 * (x + 55)))
    for x in (12, 23, 34, 45, 55):
        points.append((x, -15 - 4 * np.cos((x - 33) / 22), -8 + 0.2 * (55 - x)))
    points += [(0, 0, 8), (0, 12, 16), (0, 24, 24), (0, 36, 32)]  # nose bridge 27-30
    points += [(-14, 45, 14), (-7, 47, 18), (0, 48, 20), (7, 47, 18), (14, 45, 14)]
    for cx, sign in ((-32, -1), (32, 1)):  # eyes: outer corner first on the image-left one
        outer, inner = (cx + sign * 15, 5, -5), (cx - sign * 15, 5, 0)
        up1, up2 = (cx + sign * 5, 5 - h, 2), (cx - sign * 5, 5 - h, 2)
        lo2, lo1 = (cx - sign * 5, 5 + h, 2), (cx + sign * 5, 5 + h, 2)
        if sign < 0:
            points += [outer, up1, up2, inner, lo2, lo1]
        else:
            points += [inner, up2, up1, outer, lo1, lo2]
    points += [(-25, 75, 5), (-15, 70, 10), (-5, 68, 12), (0, 69, 12), (5, 68, 12)]
    points += [(15, 70, 10), (25, 75, 5), (15, 82 + m, 10), (5, 84 + m, 12)]
    points += [(0, 85 + m, 12), (-5, 84 + m, 12), (-15, 82 + m, 10)]
    points += [(-20, 76, 6), (-8, 75, 10), (0, 75, 11), (8, 75, 10), (20, 76, 6)]
    points += [(8, 77 + m, 10), (0, 77 + m, 11), (-8, 77 + m, 10)]
    return np.array(points, dtype=np.float64)


def synthetic_face(
    *,
    yaw: float = 0.0,
    pitch: float = 0.0,
    eye_open: float = 1.0,
    mouth_open: float = 0.0,
    distance: float = 600.0,
    focal: float = 600.0,
) -> npt.NDArray[np.float64]:
    """(68, 2) landmarks of the schematic head turned by ``yaw`` degrees (positive: to the
    person's own left) and nodded by ``pitch``, seen by a pinhole camera (unmirrored)."""
    model = _face_model(eye_open, mouth_open)
    b, a = np.radians([yaw, pitch])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    posed = model @ (ry @ rx).T
    depth = distance - posed[:, 2]
    return np.column_stack([320 + focal * posed[:, 0] / depth, 240 + focal * posed[:, 1] / depth])


def apply_homography(
    points: npt.NDArray[np.float64], homography: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    mapped = np.column_stack([points, np.ones(len(points))]) @ homography.T
    result: npt.NDArray[np.float64] = mapped[:, :2] / mapped[:, 2:3]
    return result


# --------------------------------------------------------------------------- the whole clip

VIDEO = FACES / "lin_manuel_miranda" / "short_clip.mp4"
VIDEO_FPS = 30000 / 1001  # 29.97
# Frames of short_clip.mp4 that show the member (lin); 0-19 are a wider shot of him,
# 216 on another person. live_clip/frame_NNN.jpg is video frame NNN.
VIDEO_MEMBER_FRAMES = tuple(range(82, 212))

_video_cache: list[Image.Image] = []
_video_lock = threading.Lock()


def video_frames() -> list[Image.Image]:
    """Every frame of short_clip.mp4 (275 frames, 640x360, RGB), decoded once per process
    with PyAV. Index ``n`` is frame ``n`` of the video (live_clip/frame_NNN.jpg is ``n``)."""
    with _video_lock:
        if not _video_cache:
            import av

            with av.open(str(VIDEO)) as container:
                _video_cache.extend(f.to_image().convert("RGB") for f in container.decode(video=0))
        return list(_video_cache)


def video_frame(number: int, size: tuple[int, int] = FRAME_SIZE) -> Image.Image:
    """Video frame ``number`` letterboxed onto a ``size`` canvas (640x480: the phone's)."""
    return canvas(video_frames()[number], size)
