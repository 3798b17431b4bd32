"""Calibration: face distances of the same person and of different people, on real photos.

Every single-face still of tests/data/faces/ (and of ../shared/testdata/faces/ when it
exists and holds other files) is taken through the pipeline a visit portrait goes
through (`server.visits.photos.downscaled_rgb(max_side=1000)`, then
`server.faces.engine.DlibFaceEngine().faces`), in several variants a real upload can
produce:

- ``original``; ``mirrored`` (a selfie camera's mirror image);
- ``jpeg40``: re-encoded at JPEG quality 40 (a messaging app, a screenshot);
- ``small480``: downscaled to 480 px on the long side, re-encoded at quality 70.

Each variant is also encoded mirrored, as `server.visits.faces` does for every portrait;
"with mirror handling" is the smaller of the two distances (the portrait and its mirror
image against the enrolled template). Every fourth frame of the live clip
(lin_manuel_miranda/live_clip, 90 px faces, stage light, blur) is added as a hard case.

Printed: per class of pair, the count, min / median / max of the distance; then, for
candidate thresholds, the share of same-person pairs under it (caught) and of
different-person pairs under it (wrongly matched).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/face_calibration.py [--frames-every 3]

A script, not a test: it exits 0 whatever the figures, non-zero only when a still does
not show exactly one face.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from server.faces.engine import DlibFaceEngine
from server.visits.faces import DETECTION_MAX_SIDE
from server.visits.photos import downscaled_rgb

ROOT = Path(__file__).resolve().parents[1]
DATA_DIRS = (ROOT / "tests" / "data" / "faces", ROOT.parent / "shared" / "testdata" / "faces")
# One face each (tests/data/faces/README.md); obama_partial_face is cut at the chin.
STILLS = {
    "obama": [
        "obama/obama_1.jpg",
        "obama/obama_2.jpg",
        "obama/obama_3.jpg",
        "obama/obama_4.jpg",
        "obama/obama_480p.jpg",
        "obama/obama_partial_face.jpg",
    ],
    "biden": ["biden/biden_1.jpg", "biden/biden_2.jpg"],
    "alex": ["alex_lacamoire/alex_1.jpg", "alex_lacamoire/alex_2.jpg"],
    "lin": ["lin_manuel_miranda/lin_1.png"],
}
CLIP = "lin_manuel_miranda/live_clip"
THRESHOLDS = (0.40, 0.45, 0.50, 0.55, 0.60, 0.65)

Vector = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Sample:
    identity: str
    source: str  # the file
    variant: str
    encoding: Vector
    mirrored: Vector  # the encoding of this variant's mirror image

    def to(self, template: Sample, *, handled: bool) -> float:
        """Distance of this sample (a new portrait) to ``template`` (an enrolled one)."""
        plain = float(np.linalg.norm(self.encoding - template.encoding))
        if not handled:
            return plain
        return min(plain, float(np.linalg.norm(self.mirrored - template.encoding)))


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def _variants(image: Image.Image) -> dict[str, Image.Image]:
    small = image.copy()
    small.thumbnail((480, 480), Image.Resampling.LANCZOS)
    return {
        "original": image,
        "mirrored": image.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        "jpeg40": _jpeg(image, 40),
        "small480": _jpeg(small, 70),
    }


def _one_face(engine: DlibFaceEngine, image: Image.Image, what: str) -> Vector | None:
    faces = engine.faces(np.ascontiguousarray(np.asarray(image), dtype=np.uint8))
    if len(faces) != 1:
        print(f"  {what}: {len(faces)} faces, left out", file=sys.stderr)
        return None
    return faces[0].encoding


def _encode(engine: DlibFaceEngine, identity: str, path: Path, name: str) -> list[Sample]:
    rgb = downscaled_rgb(path.read_bytes(), max_side=DETECTION_MAX_SIDE)
    samples = []
    for variant, image in _variants(Image.fromarray(rgb)).items():
        flipped = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        encoding = _one_face(engine, image, f"{name} {variant}")
        mirrored = _one_face(engine, flipped, f"{name} {variant} mirrored")
        if encoding is not None and mirrored is not None:
            samples.append(Sample(identity, name, variant, encoding, mirrored))
    return samples


def _data_dir(relative: str) -> Path | None:
    for folder in DATA_DIRS:
        if (folder / relative).exists():
            return folder / relative
    return None


def _summary(label: str, values: list[float]) -> None:
    if not values:
        print(f"  {label:58} (none)")
        return
    print(
        f"  {label:58} n={len(values):4}  min {min(values):.3f}  "
        f"median {statistics.median(values):.3f}  max {max(values):.3f}"
    )


def _pairs(samples: list[Sample]) -> Iterable[tuple[Sample, Sample]]:
    """(new portrait, enrolled template): every sample against every other source's
    ``original`` (templates are enrolled from portraits as they were uploaded)."""
    for query in samples:
        for template in samples:
            if template.variant == "original" and template.source != query.source:
                yield query, template


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames-every", type=int, default=3, help="every Nth clip frame")
    args = parser.parse_args()
    engine = DlibFaceEngine()
    print(f"engine: {engine.model_version}; detection on a copy <= {DETECTION_MAX_SIDE} px")
    started = time.monotonic()
    stills: list[Sample] = []
    for identity, names in STILLS.items():
        for name in names:
            path = _data_dir(name)
            if path is not None:
                stills.extend(_encode(engine, identity, path, name))
    frames: list[Sample] = []
    clip = _data_dir(CLIP)
    if clip is not None:
        for path in sorted(clip.glob("*.jpg"))[:: args.frames_every]:
            frames.extend(
                s
                for s in _encode(engine, "lin", path, f"{CLIP}/{path.name}")
                if s.variant == "original"
            )
    print(
        f"{len({s.source for s in stills})} stills ({len(stills)} variants), "
        f"{len(frames)} clip frames, encoded in {time.monotonic() - started:.0f} s\n"
    )

    same: dict[str, list[float]] = {}
    different: dict[str, list[float]] = {}
    for query, template in _pairs(stills):
        bucket = same if query.identity == template.identity else different
        for handled in (False, True):
            key = f"{query.variant} -> original, mirror handling {'on' if handled else 'off'}"
            bucket.setdefault(key, []).append(query.to(template, handled=handled))
    same_photo: dict[str, list[float]] = {}
    for query in stills:
        for template in stills:
            if (
                template.source == query.source
                and template.variant == "original"
                and query.variant != "original"
            ):
                for handled in (False, True):
                    key = f"{query.variant}, mirror handling {'on' if handled else 'off'}"
                    same_photo.setdefault(key, []).append(query.to(template, handled=handled))
    frame_same = [
        f.to(t, handled=True)
        for f in frames
        for t in stills
        if t.identity == "lin" and t.variant == "original"
    ]
    frame_other = [
        f.to(t, handled=True)
        for f in frames
        for t in stills
        if t.identity != "lin" and t.variant == "original"
    ]
    originals = [s for s in stills if s.variant == "original"]
    plain_same = [
        float(np.linalg.norm(a.encoding - b.encoding))
        for a, b in combinations(originals, 2)
        if a.identity == b.identity
    ]

    print("Same person, different photos (new portrait -> enrolled template):")
    _summary("original vs original, no variants", plain_same)
    for key, values in sorted(same.items()):
        _summary(key, values)
    print("Same photo, another variant of it (a re-uploaded portrait):")
    for key, values in sorted(same_photo.items()):
        _summary(key, values)
    print("Different people (new portrait -> enrolled template):")
    for key, values in sorted(different.items()):
        _summary(key, values)
    print("Live-clip frames (90 px faces), mirror handling on:")
    _summary("clip frame vs a still of the same person", frame_same)
    _summary("clip frame vs a still of another person", frame_other)

    handled_same = [v for k, vs in same.items() if k.endswith("on") for v in vs]
    handled_diff = [v for k, vs in different.items() if k.endswith("on") for v in vs]
    print("All variants together, mirror handling on:")
    _summary("same person, different photos", handled_same)
    _summary("different people", handled_diff)
    print("Rates with mirror handling (stills, every variant as the new portrait):")
    print(f"  {'threshold':>9}  {'same person under it':>22}  {'different people under it':>27}")
    for threshold in THRESHOLDS:
        caught = sum(v < threshold for v in handled_same) / len(handled_same)
        wrong = sum(v < threshold for v in handled_diff) / len(handled_diff)
        frames_caught = sum(v < threshold for v in frame_same) / max(1, len(frame_same))
        print(
            f"  {threshold:9.2f}  {caught:21.1%}  {wrong:26.2%}"
            f"   (clip frames caught {frames_caught:.0%})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
