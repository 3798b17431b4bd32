"""The face engine behind a small interface: face_recognition (dlib) in-process.

dlib is not safe to call from several threads at once in one process, so every
call goes through one lock; Celery workers run one process per core instead.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from importlib import metadata
from typing import Protocol

import numpy as np
import numpy.typing as npt

MODEL_NAME = "dlib_face_recognition_resnet_model_v1"


@dataclass(frozen=True)
class DetectedFace:
    box: tuple[int, int, int, int]  # top, right, bottom, left
    encoding: npt.NDArray[np.float64]  # 128-d


class FaceEngine(Protocol):
    model_name: str
    model_version: str

    def faces(self, rgb: npt.NDArray[np.uint8]) -> list[DetectedFace]: ...


@dataclass(frozen=True)
class FaceShape:
    """One detected face with its 68 landmarks (iBUG 300-W order), no encoding yet."""

    box: tuple[int, int, int, int]  # top, right, bottom, left (clipped to the image)
    landmarks: npt.NDArray[np.float64]  # (68, 2): x, y in pixels of the analysed image

    @property
    def area(self) -> int:
        top, right, bottom, left = self.box
        return max(0, bottom - top) * max(0, right - left)


class LandmarkFaceEngine(Protocol):
    """What the proof-of-life pipeline needs: cheap landmarks on every frame, and the
    expensive 128-d encoding only for the few frames it chooses."""

    model_name: str
    model_version: str

    def analyse(self, rgb: npt.NDArray[np.uint8], *, upsample: int = 0) -> list[FaceShape]: ...

    def encoding(self, rgb: npt.NDArray[np.uint8], face: FaceShape) -> npt.NDArray[np.float64]: ...

    def detect(
        self, rgb: npt.NDArray[np.uint8], *, upsample: int = 0
    ) -> list[tuple[int, int, int, int]]: ...

    def shape_at(self, rgb: npt.NDArray[np.uint8], box: tuple[int, int, int, int]) -> FaceShape: ...


class DlibFaceEngine:
    model_name = MODEL_NAME

    def __init__(self, upsample: int = 1) -> None:
        import dlib
        import face_recognition
        from PIL import ImageFile

        # face_recognition switches Pillow, process-wide, to accepting truncated
        # images; a truncated photo is evidence of a broken upload: switch it back.
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        self._fr = face_recognition
        self._lock = threading.Lock()
        self.upsample = upsample
        self.model_version = (
            f"face_recognition {metadata.version('face_recognition')}; "
            f"dlib {dlib.__version__}; "
            f"models {metadata.version('face_recognition_models')}"
        )

    def faces(self, rgb: npt.NDArray[np.uint8]) -> list[DetectedFace]:
        """Every face in a C-contiguous RGB uint8 image, with its encoding."""
        image = np.ascontiguousarray(rgb, dtype=np.uint8)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError("expected an H x W x 3 RGB image")
        with self._lock:
            boxes = self._fr.face_locations(image, number_of_times_to_upsample=self.upsample)
            encodings = self._fr.face_encodings(image, boxes)
        return [
            DetectedFace(box=tuple(int(v) for v in box), encoding=np.asarray(enc, np.float64))  # type: ignore[arg-type]
            for box, enc in zip(boxes, encodings, strict=True)
        ]

    def analyse(self, rgb: npt.NDArray[np.uint8], *, upsample: int = 0) -> list[FaceShape]:
        """Every face in a C-contiguous RGB uint8 image with its 68 landmarks; no encoding.

        HOG detection (``upsample`` times upsampled: 0 finds faces from about 80 px wide,
        1 from about 40 px at roughly 4x the cost), then dlib's 68-point shape predictor.
        """
        image = _rgb(rgb)
        api = self._fr.api
        with self._lock:
            rects = api.face_detector(image, int(upsample))
            shapes = [api.pose_predictor_68_point(image, rect) for rect in rects]
        height, width = image.shape[:2]
        faces = []
        for rect, shape in zip(rects, shapes, strict=True):
            box = (
                max(int(rect.top()), 0),
                min(int(rect.right()), width),
                min(int(rect.bottom()), height),
                max(int(rect.left()), 0),
            )
            points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
            faces.append(FaceShape(box=box, landmarks=points))
        return faces

    def detect(
        self, rgb: npt.NDArray[np.uint8], *, upsample: int = 0
    ) -> list[tuple[int, int, int, int]]:
        """The boxes (top, right, bottom, left) of every face HOG finds, without
        landmarks: for a crop whose one face's landmarks are placed on the full image."""
        image = _rgb(rgb)
        with self._lock:
            rects = self._fr.api.face_detector(image, int(upsample))
        height, width = image.shape[:2]
        return [
            (
                max(int(r.top()), 0),
                min(int(r.right()), width),
                min(int(r.bottom()), height),
                max(int(r.left()), 0),
            )
            for r in rects
        ]

    def shape_at(self, rgb: npt.NDArray[np.uint8], box: tuple[int, int, int, int]) -> FaceShape:
        """The 68 landmarks of the face in ``box`` (top, right, bottom, left), without a
        detection: for a face found on a smaller crop of the same image (about 2 ms)."""
        import dlib

        image = _rgb(rgb)
        top, right, bottom, left = box
        with self._lock:
            shape = self._fr.api.pose_predictor_68_point(
                image, dlib.rectangle(int(left), int(top), int(right), int(bottom))
            )
        points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
        return FaceShape(box=box, landmarks=points)

    def encoding(self, rgb: npt.NDArray[np.uint8], face: FaceShape) -> npt.NDArray[np.float64]:
        """The 128-d encoding of ``face`` (from :meth:`analyse` on the same ``rgb``), aligned
        on its 68 landmarks. About 0.1 s of CPU: call it for a few chosen frames only.

        The enrolled templates (:meth:`faces`) are aligned on dlib's 5 landmarks; on the
        same photo the two encodings differ by about 0.10-0.15 (measured on the test
        stills), well inside the tolerances, and no second landmark pass is needed.
        """
        image = _rgb(rgb)
        if face.landmarks.shape != (68, 2):
            raise ValueError("expected 68 landmarks")
        import dlib

        top, right, bottom, left = face.box
        points = dlib.points()
        for x, y in np.rint(face.landmarks).astype(np.int64).tolist():
            points.append(dlib.point(int(x), int(y)))
        shape = dlib.full_object_detection(dlib.rectangle(left, top, right, bottom), points)
        with self._lock:
            descriptor = self._fr.api.face_encoder.compute_face_descriptor(image, shape)
        return np.asarray(descriptor, dtype=np.float64)


def _rgb(rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    image = np.ascontiguousarray(rgb, dtype=np.uint8)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError("expected an H x W x 3 RGB image")
    return image


_engine: DlibFaceEngine | None = None
_engine_lock = threading.Lock()


def default_engine() -> DlibFaceEngine:
    """One engine per process, loaded on first use (the models take a moment)."""
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = DlibFaceEngine()
        return _engine
