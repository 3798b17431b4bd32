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


_engine: DlibFaceEngine | None = None
_engine_lock = threading.Lock()


def default_engine() -> DlibFaceEngine:
    """One engine per process, loaded on first use (the models take a moment)."""
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = DlibFaceEngine()
        return _engine
