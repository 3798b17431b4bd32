"""How a guided session's frames are searched for faces (guided.observe_frame), on real
frames of the live clip with the real dlib engine: the face is followed on a crop around
where it was, the whole frame is searched every fourth frame and whenever the crop is not
enough, and the tracked landmarks agree with a whole-frame search."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from server.faces.engine import DlibFaceEngine, FaceShape
from server.proof_of_life.guided import GuideLimits, Observation, Track, observe_frame
from server.proof_of_life.pipeline import Thresholds
from tests.pol_frames import video_frame

pytestmark = pytest.mark.slow  # tests that take seconds: pytest -m 'not slow' skips them


class Recording:
    """The real engine, noting each search: ("whole", upsample) for a whole frame,
    ("crop", upsample) for a crop."""

    def __init__(self, engine: DlibFaceEngine) -> None:
        self.engine = engine
        self.model_name = engine.model_name
        self.model_version = engine.model_version
        self.searches: list[tuple[str, int]] = []

    def analyse(self, rgb: npt.NDArray[np.uint8], *, upsample: int = 0) -> list[FaceShape]:
        self.searches.append(("whole", upsample))
        return self.engine.analyse(rgb, upsample=upsample)

    def detect(
        self, rgb: npt.NDArray[np.uint8], *, upsample: int = 0
    ) -> list[tuple[int, int, int, int]]:
        self.searches.append(("crop", upsample))
        return self.engine.detect(rgb, upsample=upsample)

    def shape_at(self, rgb: npt.NDArray[np.uint8], box: tuple[int, int, int, int]) -> FaceShape:
        return self.engine.shape_at(rgb, box)

    def encoding(self, rgb: npt.NDArray[np.uint8], face: FaceShape) -> npt.NDArray[np.float64]:
        return self.engine.encoding(rgb, face)


@pytest.fixture(scope="module")
def dlib_engine() -> DlibFaceEngine:
    return DlibFaceEngine()


def _jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()


def _play(
    images: list[Image.Image], engine: Any, limits: GuideLimits | None = None
) -> tuple[list[Observation], list[list[tuple[str, int]]]]:
    """Observe ``images`` in order as the service does (the track carried from the last
    frame with a face); the observations and the searches made for each frame."""
    limits = limits or GuideLimits()
    track: Track | None = None
    seen: list[Observation] = []
    searches: list[list[tuple[str, int]]] = []
    for position, image in enumerate(images):
        engine.searches.clear()
        observation, _ = observe_frame(
            _jpeg(image),
            position=position,
            step=0,
            engine=engine,
            thresholds=Thresholds(),
            limits=limits,
            track=track,
        )
        if observation.used and observation.shape is not None:
            track = Track(observation.shape.box, position)
        seen.append(observation)
        searches.append(list(engine.searches))
    return seen, searches


def _with_second_face(image: Image.Image, box: tuple[int, int, int, int], dx: int) -> Image.Image:
    """``image`` with a copy of the face in ``box`` pasted ``dx`` px to the side."""
    top, right, bottom, left = box
    pad = (right - left) // 3
    face = image.crop((left - pad, top - pad, right + pad, bottom + pad))
    out = image.copy()
    out.paste(face, (left - pad + dx, top - pad))
    return out


def test_the_face_is_followed_on_crops_and_the_whole_frame_searched_every_fourth_frame(
    dlib_engine: DlibFaceEngine,
) -> None:
    engine = Recording(dlib_engine)
    images = [video_frame(n) for n in range(92, 104)]
    seen, searches = _play(images, engine)
    assert all(o.used for o in seen), [o.faces for o in seen]
    whole = [p for p, s in enumerate(searches) if ("whole", 0) in s]
    assert whole == [0, 4, 8]
    assert all(s == [("crop", 0)] for p, s in enumerate(searches) if p not in whole)

    # The landmarks placed from a crop agree with a search of the whole frame.
    for position in (2, 6, 10):
        rgb = np.asarray(Image.open(io.BytesIO(_jpeg(images[position]))).convert("RGB"))
        (reference,) = dlib_engine.analyse(np.ascontiguousarray(rgb))
        tracked = seen[position].shape
        assert tracked is not None
        width = reference.box[1] - reference.box[3]
        error = np.linalg.norm(tracked.landmarks - reference.landmarks, axis=1)
        assert float(np.median(error)) < 0.05 * width, (position, float(np.median(error)))


def test_a_second_face_shows_on_the_next_whole_search_or_at_once_inside_the_crop(
    dlib_engine: DlibFaceEngine,
) -> None:
    engine = Recording(dlib_engine)
    images = [video_frame(n) for n in range(92, 98)]
    seen, _ = _play(images[:3], engine)
    box = seen[2].shape.box if seen[2].shape is not None else None
    assert box is not None
    width = box[1] - box[3]
    # Far from the face (outside its crop): found on frame 4, the whole-frame search.
    far = 300 if box[3] < 300 else -300
    images[3] = _with_second_face(images[3], box, far)
    images[4] = _with_second_face(images[4], box, far)
    seen, searches = _play(images[:5], engine)
    assert [o.faces for o in seen[:3]] == [1, 1, 1]
    assert seen[3].faces == 1  # between whole searches a far second face is not looked for
    assert seen[4].faces == 2 and ("whole", 0) in searches[4]

    # A second face inside the crop (one reaching 1.5 box widths beside the box, where a
    # copy of the face fits) sends the frame to a whole search at once.
    images[5] = _with_second_face(images[5], box, int(1.25 * width))
    seen, searches = _play([*images[:3], images[5]], engine, GuideLimits(track_margin=1.5))
    assert seen[3].faces == 2
    assert searches[3][0] == ("crop", 0) and ("whole", 0) in searches[3]


def test_a_face_that_is_gone_costs_a_crop_until_it_is_lost_then_whole_searches(
    dlib_engine: DlibFaceEngine,
) -> None:
    engine = Recording(dlib_engine)
    limits = GuideLimits(track_frames=3)
    grey = Image.new("RGB", video_frame(92).size, (128, 128, 128))
    images = [video_frame(92), video_frame(93), *[grey] * 5, video_frame(94)]
    seen, searches = _play(images, engine, limits)
    assert [o.faces for o in seen] == [1, 1, 0, 0, 0, 0, 0, 1]
    # Positions 2 and 3 are within three frames of the last face (position 1): a crop,
    # once more upsampled, and no whole-frame search; position 4 is scheduled for a
    # whole search (every fourth), its crop tried when the whole frame shows none.
    assert searches[2] == searches[3] == [("crop", 0), ("crop", 1)]
    assert searches[4] == [("whole", 0), ("crop", 0), ("crop", 1)]
    # From position 5 the face is lost: the whole frame, then upsampled.
    assert searches[5] == searches[6] == [("whole", 0), ("whole", 1)]
    assert searches[7] == [("whole", 0)]
