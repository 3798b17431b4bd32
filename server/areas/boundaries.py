"""Area boundaries from a GeoJSON file (``dibao areas boundaries FILE``).

The file is a FeatureCollection (RFC 7946); each feature names its area by the
property ``code`` (the area code, as in ``areas.code``) and carries a Polygon or a
MultiPolygon in WGS-84 longitude/latitude. A ``crs`` member (GeoJSON 2008) may say
CRS84, EPSG:4326 or EPSG:4490 (CGCS2000, within centimetres of WGS-84); any other
CRS is refused, as are coordinates outside degrees' range (a file in metres).
Coordinates shifted to GCJ-02 ("Mars coordinates") cannot be told apart from
WGS-84 by looking: export the file from a source in WGS-84 or CGCS2000.

All or nothing: every feature is checked before anything is written, and every
problem is reported with the feature's number and code. Rings are simplified
(Douglas-Peucker, ``SIMPLIFY_M``) before they are stored; a load replaces the
previous boundary of each area it names and leaves the others.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from server import clock
from server.areas.models import Area, AreaBoundary
from server.extensions import db

CODE_PROPERTY = "code"
MAX_VERTICES = 50_000  # per feature, as in the file
SIMPLIFY_M = 10.0  # a stored vertex departs at most this far from the file's line
MAX_FILE_BYTES = 50 * 1024 * 1024
ACCEPTED_CRS = {
    "urn:ogc:def:crs:ogc:1.3:crs84",
    "urn:ogc:def:crs:ogc::crs84",
    "crs84",
    "epsg:4326",
    "urn:ogc:def:crs:epsg::4326",
    "urn:ogc:def:crs:epsg:6.6:4326",
    "epsg:4490",
    "urn:ogc:def:crs:epsg::4490",
}
_R = 6_371_008.8

Ring = list[list[float]]  # closed: [[lon, lat], ..., first again]
Polygon = list[Ring]


class BoundaryError(ValueError):
    """The file cannot be loaded; ``problems`` says why, one line per feature."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


@dataclass(frozen=True)
class ParsedBoundary:
    code: str
    polygons: list[Polygon]
    vertices_in: int  # in the file

    @property
    def vertices(self) -> int:
        return sum(len(ring) for polygon in self.polygons for ring in polygon)


@dataclass(frozen=True)
class LoadedBoundary:
    code: str
    name: str
    vertices_in: int
    vertices: int
    replaced: bool


# --------------------------------------------------------------------------- parsing


def _crs_problem(data: dict[str, Any]) -> str | None:
    crs = data.get("crs")
    if crs is None:
        return None
    name = crs.get("properties", {}).get("name") if isinstance(crs, dict) else None
    if not isinstance(name, str) or name.strip().lower() not in ACCEPTED_CRS:
        return (
            f"the file's crs is {name or crs!r}: boundaries must be WGS-84 longitude/latitude "
            "(CRS84, EPSG:4326; or CGCS2000, EPSG:4490); reproject the file first"
        )
    return None


def _position(raw: Any) -> tuple[float, float] | str:
    if (
        not isinstance(raw, list)
        or len(raw) < 2
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in raw[:2])
    ):
        return "a position is not [longitude, latitude]"
    lon, lat = float(raw[0]), float(raw[1])
    if not (math.isfinite(lon) and math.isfinite(lat)):
        return "a coordinate is not a finite number"
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        return (
            f"coordinate [{raw[0]}, {raw[1]}] is not longitude/latitude in degrees "
            "(a projected file, in metres? or latitude first?)"
        )
    return lon, lat


def _ring(raw: Any) -> list[tuple[float, float]] | str:
    if not isinstance(raw, list):
        return "a ring is not a list of positions"
    points: list[tuple[float, float]] = []
    for item in raw:
        position = _position(item)
        if isinstance(position, str):
            return position
        points.append(position)
    if len(points) < 4:
        return f"a ring has {len(points)} positions; a closed ring needs at least 4"
    if points[0] != points[-1]:
        return "a ring is not closed (its last position must repeat the first)"
    if abs(_ring_area_m2(points)) < 1.0:
        return "a ring encloses no area"
    return points


def _polygons(geometry: Any) -> list[list[list[tuple[float, float]]]] | str:
    if not isinstance(geometry, dict):
        return "it has no geometry"
    kind = geometry.get("type")
    coordinates = geometry.get("coordinates")
    if kind == "Polygon":
        raw_polygons = [coordinates]
    elif kind == "MultiPolygon":
        if not isinstance(coordinates, list) or not coordinates:
            return "its MultiPolygon has no polygons"
        raw_polygons = coordinates
    else:
        return f"its geometry is {kind!r}; only Polygon and MultiPolygon are boundaries"
    polygons = []
    for raw in raw_polygons:
        if not isinstance(raw, list) or not raw:
            return "a polygon has no rings"
        rings = []
        for raw_ring in raw:
            ring = _ring(raw_ring)
            if isinstance(ring, str):
                return ring
            rings.append(ring)
        polygons.append(rings)
    return polygons


def _raw_count(geometry: Any) -> int:
    """Positions in a geometry as the file has them (0 when it is not a polygon's
    shape: the full check says what is wrong)."""
    if not isinstance(geometry, dict) or not isinstance(geometry.get("coordinates"), list):
        return 0
    polygons = geometry["coordinates"]
    if geometry.get("type") == "Polygon":
        polygons = [polygons]
    return sum(
        len(ring)
        for polygon in polygons
        if isinstance(polygon, list)
        for ring in polygon
        if isinstance(ring, list)
    )


def parse_boundaries(data: Any) -> list[ParsedBoundary]:
    """Check a parsed GeoJSON document and simplify its rings; BoundaryError lists
    every problem found (nothing of the database is read here)."""
    if not isinstance(data, dict) or data.get("type") != "FeatureCollection":
        raise BoundaryError(["the file is not a GeoJSON FeatureCollection"])
    crs = _crs_problem(data)
    if crs is not None:
        raise BoundaryError([crs])
    features = data.get("features")
    if not isinstance(features, list) or not features:
        raise BoundaryError(["the FeatureCollection has no features"])
    problems: list[str] = []
    parsed: list[ParsedBoundary] = []
    seen: dict[str, int] = {}
    for number, feature in enumerate(features, start=1):
        properties = feature.get("properties") if isinstance(feature, dict) else None
        code = properties.get(CODE_PROPERTY) if isinstance(properties, dict) else None
        if isinstance(code, int) and not isinstance(code, bool):
            code = str(code)
        name = f"feature {number}" + (f" (code {code})" if isinstance(code, str) else "")
        if not isinstance(feature, dict) or feature.get("type") != "Feature":
            problems.append(f"{name}: not a GeoJSON Feature")
            continue
        if not isinstance(code, str) or not code.strip():
            problems.append(f"{name}: no area code in its property {CODE_PROPERTY!r}")
            continue
        code = code.strip()
        if code in seen:
            problems.append(f"{name}: the same area as feature {seen[code]}")
            continue
        seen[code] = number
        count = _raw_count(feature.get("geometry"))
        if count > MAX_VERTICES:
            problems.append(
                f"{name}: {count} vertices, more than {MAX_VERTICES}; simplify the file first"
            )
            continue
        polygons = _polygons(feature.get("geometry"))
        if isinstance(polygons, str):
            problems.append(f"{name}: {polygons}")
            continue
        simplified = [[simplify_ring(ring, SIMPLIFY_M) for ring in polygon] for polygon in polygons]
        parsed.append(ParsedBoundary(code, simplified, count))
    if problems:
        raise BoundaryError(problems)
    return parsed


# --------------------------------------------------------------------------- geometry


def _to_metres(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    lat0 = sum(lat for _, lat in points) / len(points)
    cos0 = math.cos(math.radians(lat0))
    return [(_R * math.radians(lon) * cos0, _R * math.radians(lat)) for lon, lat in points]


def _ring_area_m2(points: Sequence[tuple[float, float]]) -> float:
    xy = _to_metres(points)
    return 0.5 * sum(
        x1 * y2 - x2 * y1 for (x1, y1), (x2, y2) in zip(xy, xy[1:] + xy[:1], strict=True)
    )


def _douglas_peucker(xy: Sequence[tuple[float, float]], tolerance: float) -> list[int]:
    """Indices of the kept points of an open line (first and last always kept)."""
    keep = {0, len(xy) - 1}
    stack = [(0, len(xy) - 1)]
    while stack:
        first, last = stack.pop()
        (ax, ay), (bx, by) = xy[first], xy[last]
        dx, dy = bx - ax, by - ay
        length = math.hypot(dx, dy)
        worst, worst_at = -1.0, -1
        for i in range(first + 1, last):
            px, py = xy[i]
            if length == 0:
                d = math.hypot(px - ax, py - ay)
            else:
                d = abs(dy * px - dx * py + bx * ay - by * ax) / length
            if d > worst:
                worst, worst_at = d, i
        if worst > tolerance:
            keep.add(worst_at)
            stack += [(first, worst_at), (worst_at, last)]
    return sorted(keep)


def simplify_ring(points: Sequence[tuple[float, float]], tolerance_m: float) -> Ring:
    """A closed ring with vertices within ``tolerance_m`` of the original line dropped;
    split at the vertex farthest from the first, so a ring keeps at least 4 positions.
    Coordinates rounded to 6 decimals (about 0.1 m)."""
    xy = _to_metres(points)
    far = max(range(len(xy)), key=lambda i: math.dist(xy[0], xy[i]))
    first = _douglas_peucker(xy[: far + 1], tolerance_m)
    second = [far + i for i in _douglas_peucker(xy[far:], tolerance_m)]
    kept = first + second[1:]
    if len(kept) < 4:  # a sliver: keep it as the file drew it
        kept = list(range(len(points)))
    return [[round(points[i][0], 6), round(points[i][1], 6)] for i in kept]


# --------------------------------------------------------------------------- loading


def read_geojson(path: Path) -> Any:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise BoundaryError([f"{path}: {size} bytes, more than {MAX_FILE_BYTES}"])
        return json.loads(path.read_text("utf-8"))
    except OSError as exc:
        raise BoundaryError([f"cannot read {path}: {exc.strerror}"]) from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BoundaryError([f"{path} is not a UTF-8 JSON file: {exc}"]) from exc


def load_boundaries(data: Any, source: str) -> list[LoadedBoundary]:
    """Store the boundaries of a parsed GeoJSON document, replacing each named area's
    previous one. Flushes; the caller commits. BoundaryError (nothing written) when
    any feature is wrong or names an unknown area."""
    parsed = parse_boundaries(data)
    codes = [b.code for b in parsed]
    areas = {a.code: a for a in db.session.scalars(select(Area).where(Area.code.in_(codes)))}
    unknown = [
        f"feature {number} (code {b.code}): no area has this code"
        for number, b in enumerate(parsed, start=1)
        if b.code not in areas
    ]
    if unknown:
        raise BoundaryError(unknown)
    existing = {
        row.area_id: row
        for row in db.session.scalars(
            select(AreaBoundary).where(AreaBoundary.area_id.in_([a.id for a in areas.values()]))
        )
    }
    loaded = []
    now = clock.utcnow()
    for boundary in parsed:
        area = areas[boundary.code]
        row = existing.get(area.id)
        replaced = row is not None
        if row is None:
            row = AreaBoundary(area_id=area.id)
            db.session.add(row)
        lons = [v[0] for polygon in boundary.polygons for ring in polygon for v in ring]
        lats = [v[1] for polygon in boundary.polygons for ring in polygon for v in ring]
        row.rings = boundary.polygons
        row.vertices = boundary.vertices
        row.min_lat, row.max_lat = min(lats), max(lats)
        row.min_lon, row.max_lon = min(lons), max(lons)
        row.source = source[-255:]
        row.loaded_at = now
        loaded.append(
            LoadedBoundary(area.code, area.name, boundary.vertices_in, boundary.vertices, replaced)
        )
    db.session.flush()
    return loaded
