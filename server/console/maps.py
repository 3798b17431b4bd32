"""Maps without tiles: visit traces drawn as inline SVG from our own data.

Pure geometry and SVG text, no Flask and no database: the query module
(``server.console.traces``) loads the points and labels, this module projects them
and writes the picture.

Coordinates are WGS-84 longitude/latitude as the tablets captured them (no GCJ-02
shift: there is no tile layer to line up with). The projection is equirectangular
around the view's centre: ``x = R (lon - lon0) cos(lat0)``, ``y = R (lat - lat0)``,
with R the mean earth radius. At township scale this is as good as any: east-west
distances at a latitude ``d`` degrees from the centre are off by about
``tan(lat0) * d * pi / 180`` (0.35 % at 46 N for 0.2 degrees, 22 km), north-south ones
by the ellipsoid's departure from the sphere (under 0.5 %). Distances in tables and
flags are geodesic on the ellipsoid (``server.visits.checks.distance_m``), not
measured on the map.

Nothing here means something by colour alone: each kind of mark has its own shape,
impossible legs and far fixes are dashed and labelled, clusters are ringed and named.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from markupsafe import Markup, escape

# The geometry the flags share (server/visits/integrity/patterns.py): one implementation
# of clusters and leg speeds for the maps and the pattern checks.
from server.visits.integrity.patterns import (
    EARTH_RADIUS_M,
    Cluster,
    find_clusters,
    leg_speed_kmh,
    local_metres,
)

__all__ = ["Cluster", "find_clusters", "leg_speed_kmh", "local_metres"]
WIDTH = 760  # the SVG's width in user units (pixels on screen)
MAX_HEIGHT = 560
MIN_HEIGHT = 260
MARGIN = 36  # pixels around the data, room for labels and the scale bar
MIN_EXTENT_M = 400.0  # the narrowest view: a single point still shows its street


# --------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class Projection:
    """Equirectangular around (lat0, lon0), scaled to pixels; y grows downwards."""

    lat0: float
    lon0: float
    metres_per_px: float
    width: float
    height: float

    @classmethod
    def fit(
        cls,
        points: Iterable[tuple[float, float, float]],
        *,
        width: float = WIDTH,
        max_height: float = MAX_HEIGHT,
        margin: float = MARGIN,
        min_extent_m: float = MIN_EXTENT_M,
    ) -> Projection:
        """The view that holds every ``(lat, lon, radius_m)``, circles included."""
        items = list(points)
        if not items:
            raise ValueError("a map needs at least one point")
        lats = [p[0] for p in items]
        lons = [p[1] for p in items]
        lat0 = (min(lats) + max(lats)) / 2
        lon0 = (min(lons) + max(lons)) / 2
        cos0 = math.cos(math.radians(lat0))
        xs, ys = [], []
        for lat, lon, radius in items:
            x = EARTH_RADIUS_M * math.radians(lon - lon0) * cos0
            y = EARTH_RADIUS_M * math.radians(lat - lat0)
            xs += [x - radius, x + radius]
            ys += [y - radius, y + radius]
        # Symmetric around the centre, so the centre stays in the middle.
        half_w = max(max(abs(v) for v in xs), min_extent_m / 2)
        half_h = max(max(abs(v) for v in ys), min_extent_m / 2)
        inner_w = width - 2 * margin
        inner_h_max = max_height - 2 * margin
        scale = max(2 * half_w / inner_w, 2 * half_h / inner_h_max)
        height = min(max_height, max(2 * half_h / scale + 2 * margin, MIN_HEIGHT))
        return cls(lat0, lon0, scale, width, height)

    def xy(self, lat: float, lon: float) -> tuple[float, float]:
        x_m = EARTH_RADIUS_M * math.radians(lon - self.lon0) * math.cos(math.radians(self.lat0))
        y_m = EARTH_RADIUS_M * math.radians(lat - self.lat0)
        return self.width / 2 + x_m / self.metres_per_px, self.height / 2 - y_m / self.metres_per_px

    def px(self, metres: float) -> float:
        return metres / self.metres_per_px

    def bounds(self) -> tuple[float, float, float, float]:
        """(min_lat, min_lon, max_lat, max_lon) of the whole picture."""
        half_h_m = self.height / 2 * self.metres_per_px
        half_w_m = self.width / 2 * self.metres_per_px
        dlat = math.degrees(half_h_m / EARTH_RADIUS_M)
        dlon = math.degrees(half_w_m / (EARTH_RADIUS_M * math.cos(math.radians(self.lat0))))
        return self.lat0 - dlat, self.lon0 - dlon, self.lat0 + dlat, self.lon0 + dlon


def nice_length(max_m: float) -> float:
    """The largest 1, 2 or 5 x 10^n metres not over ``max_m`` (a scale bar's length)."""
    if max_m <= 0:
        raise ValueError("max_m must be positive")
    power = 10 ** math.floor(math.log10(max_m))
    for step in (5, 2, 1):
        if step * power <= max_m:
            return float(step * power)
    return float(power)


def format_metres(metres: float) -> str:
    return f"{metres / 1000:g} km" if metres >= 1000 else f"{metres:g} m"


# --------------------------------------------------------------------------- what to draw

# Shapes per group (a caseworker on the township's map): shape and colour together,
# so a printout in black and white still tells them apart.
SHAPES = ("circle", "square", "triangle", "diamond", "star", "hexagon")
COLOURS = ("#1f5fa8", "#a8501f", "#2e7d32", "#6a1b9a", "#00838f", "#8d6e00")


@dataclass(frozen=True)
class Home:
    lat: float
    lon: float
    label: str  # the case code: never a name
    href: str | None = None


@dataclass(frozen=True)
class Place:
    """A village's centroid (its name: an area's, not a person's)."""

    lat: float
    lon: float
    label: str


@dataclass(frozen=True)
class Fix:
    lat: float
    lon: float
    accuracy_m: float | None
    label: str  # "3" (its order in the day), or a date
    title: str  # the tooltip: time, case code, distance
    home: tuple[float, float] | None = None
    far: bool = False  # farther from home than the visit checks allow
    group: int = 0  # the caseworker's index (shape and colour)
    href: str | None = None
    flagged: bool = False


@dataclass(frozen=True)
class Leg:
    """The path from fix ``start`` to fix ``end`` (indices into ``fixes``)."""

    start: int
    end: int
    label: str  # "42 km/h"
    impossible: bool = False


@dataclass(frozen=True)
class Ring:
    """A cluster drawn: a ring of ``radius_m`` (at least a readable size) and its name."""

    lat: float
    lon: float
    radius_m: float
    label: str


@dataclass(frozen=True)
class Outline:
    """An area's boundary: polygons of rings of ``[lon, lat]``."""

    polygons: Sequence[Sequence[Sequence[Sequence[float]]]]
    label: str


@dataclass
class MapData:
    title: str
    homes: list[Home] = field(default_factory=list)
    places: list[Place] = field(default_factory=list)
    fixes: list[Fix] = field(default_factory=list)
    legs: list[Leg] = field(default_factory=list)
    rings: list[Ring] = field(default_factory=list)
    outlines: list[Outline] = field(default_factory=list)

    def extent(self) -> list[tuple[float, float, float]]:
        points: list[tuple[float, float, float]] = []
        points += [(h.lat, h.lon, 0.0) for h in self.homes]
        points += [(p.lat, p.lon, 0.0) for p in self.places]
        points += [(f.lat, f.lon, f.accuracy_m or 0.0) for f in self.fixes]
        points += [(r.lat, r.lon, r.radius_m) for r in self.rings]
        return points


# --------------------------------------------------------------------------- SVG


def _n(value: float) -> str:
    return f"{value:.1f}"


def shape_path(shape: str, x: float, y: float, r: float) -> str:
    """An SVG element of ``shape`` centred on (x, y), ``r`` pixels across half."""
    if shape == "circle":
        return f'<circle cx="{_n(x)}" cy="{_n(y)}" r="{_n(r)}"/>'
    if shape == "square":
        return f'<rect x="{_n(x - r)}" y="{_n(y - r)}" width="{_n(2 * r)}" height="{_n(2 * r)}"/>'
    corners: list[tuple[float, float]]
    if shape == "triangle":
        corners = [(x, y - 1.2 * r), (x + 1.1 * r, y + 0.8 * r), (x - 1.1 * r, y + 0.8 * r)]
    elif shape == "diamond":
        corners = [(x, y - 1.3 * r), (x + 1.3 * r, y), (x, y + 1.3 * r), (x - 1.3 * r, y)]
    elif shape == "star":
        corners = [
            (
                x + (1.4 * r if k % 2 == 0 else 0.6 * r) * math.sin(math.pi * k / 5),
                y - (1.4 * r if k % 2 == 0 else 0.6 * r) * math.cos(math.pi * k / 5),
            )
            for k in range(10)
        ]
    elif shape == "hexagon":
        corners = [
            (x + 1.1 * r * math.cos(math.pi * k / 3), y + 1.1 * r * math.sin(math.pi * k / 3))
            for k in range(6)
        ]
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return '<polygon points="' + " ".join(f"{_n(a)},{_n(b)}" for a, b in corners) + '"/>'


def group_style(group: int) -> tuple[str, str]:
    return SHAPES[group % len(SHAPES)], COLOURS[group % len(COLOURS)]


def symbol(kind: str, group: int = 0, size: int = 18) -> Markup:
    """A small SVG of one legend entry, the same marks as on the map."""
    c = size / 2
    inner = {
        "home": (f'<rect class="home" x="{c - 5}" y="{c - 5}" width="10" height="10"/>'),
        "place": f'<polygon class="place" points="{c},{c - 6} {c + 6},{c + 5} {c - 6},{c + 5}"/>',
        "accuracy": f'<circle class="accuracy" cx="{c}" cy="{c}" r="{c - 1}"/>',
        "to-home": f'<line class="to-home" x1="1" y1="{c}" x2="{size - 1}" y2="{c}"/>',
        "far": f'<line class="to-home far" x1="1" y1="{c}" x2="{size - 1}" y2="{c}"/>',
        "leg": f'<line class="leg" x1="1" y1="{c}" x2="{size - 1}" y2="{c}"/>',
        "impossible": f'<line class="leg impossible" x1="1" y1="{c}" x2="{size - 1}" y2="{c}"/>',
        "cluster": f'<circle class="cluster" cx="{c}" cy="{c}" r="{c - 2}"/>',
        "outline": f'<rect class="outline" x="2" y="2" width="{size - 4}" height="{size - 4}"/>',
    }
    if kind == "fix":
        shape, colour = group_style(group)
        body = f'<g class="fix" fill="{colour}">{shape_path(shape, c, c, 5)}</g>'
    else:
        body = inner[kind]
    # Our own marks only: no text from data in a legend symbol.
    return Markup(  # noqa: S704
        f'<svg class="map-symbol" width="{size}" height="{size}" viewBox="0 0 {size} {size}" '
        f'aria-hidden="true">{body}</svg>'
    )


def render_svg(data: MapData, *, north: str = "N", label: str = "") -> Markup:
    """The map as one ``<svg>`` element (no namespace declaration: inline in HTML5,
    so the page holds no address of another host)."""
    projection = Projection.fit(data.extent() or [(0.0, 0.0, 0.0)])
    p = projection
    out: list[str] = [
        f'<svg class="trace-map" viewBox="0 0 {_n(p.width)} {_n(p.height)}" '
        f'width="{_n(p.width)}" height="{_n(p.height)}" role="img" '
        f'aria-label="{escape(label or data.title)}">',
        f"<title>{escape(data.title)}</title>",
        f'<rect class="paper" x="0" y="0" width="{_n(p.width)}" height="{_n(p.height)}"/>',
    ]
    out += _outlines(p, data.outlines)
    out += _places(p, data.places)
    out += _to_home_lines(p, data.fixes)
    out += _homes(p, data.homes)
    out += _legs(p, data)
    out += _accuracy(p, data.fixes)
    out += _rings(p, data.rings)
    out += _fixes(p, data.fixes)
    out += _scale_bar(p)
    out += _north_arrow(p, north)
    out.append("</svg>")
    # Every text from data went through ``escape`` above; the rest is numbers we wrote.
    return Markup("\n".join(out))  # noqa: S704


def _outlines(p: Projection, outlines: Sequence[Outline]) -> list[str]:
    out = ['<g class="outlines">']
    for outline in outlines:
        d = []
        for polygon in outline.polygons:
            for ring in polygon:
                points = [p.xy(lat, lon) for lon, lat in ring]
                d.append("M" + " L".join(f"{_n(x)},{_n(y)}" for x, y in points) + " Z")
        out.append(
            f'<path class="outline" d="{" ".join(d)}"><title>{escape(outline.label)}</title></path>'
        )
    out.append("</g>")
    return out


def _places(p: Projection, places: Sequence[Place]) -> list[str]:
    out = ['<g class="places">']
    for place in places:
        x, y = p.xy(place.lat, place.lon)
        out.append(
            f'<polygon class="place" points="{_n(x)},{_n(y - 7)} {_n(x + 7)},{_n(y + 5)} '
            f'{_n(x - 7)},{_n(y + 5)}"><title>{escape(place.label)}</title></polygon>'
            f'<text class="place-label" x="{_n(x)}" y="{_n(y + 17)}">{escape(place.label)}</text>'
        )
    out.append("</g>")
    return out


def _to_home_lines(p: Projection, fixes: Sequence[Fix]) -> list[str]:
    out = ['<g class="to-home-lines">']
    for fix in fixes:
        if fix.home is None:
            continue
        x1, y1 = p.xy(fix.lat, fix.lon)
        x2, y2 = p.xy(*fix.home)
        css = "to-home far" if fix.far else "to-home"
        out.append(f'<line class="{css}" x1="{_n(x1)}" y1="{_n(y1)}" x2="{_n(x2)}" y2="{_n(y2)}"/>')
    out.append("</g>")
    return out


def _homes(p: Projection, homes: Sequence[Home]) -> list[str]:
    out = ['<g class="homes">']
    for home in homes:
        x, y = p.xy(home.lat, home.lon)
        mark = (
            f'<rect class="home" x="{_n(x - 5)}" y="{_n(y - 5)}" width="10" height="10">'
            f"<title>{escape(home.label)}</title></rect>"
            f'<text class="home-label" x="{_n(x + 8)}" y="{_n(y - 7)}">{escape(home.label)}</text>'
        )
        if home.href:
            mark = f'<a href="{escape(home.href)}">{mark}</a>'
        out.append(mark)
    out.append("</g>")
    return out


def _legs(p: Projection, data: MapData) -> list[str]:
    if not data.legs:
        return []
    fixes = data.fixes
    # The whole path, in time order, as one polyline; then each leg's label (and the
    # impossible ones drawn again, dashed).
    order = [data.legs[0].start] + [leg.end for leg in data.legs]
    points = " ".join(
        f"{_n(x)},{_n(y)}" for x, y in (p.xy(fixes[i].lat, fixes[i].lon) for i in order)
    )
    out = ['<g class="legs">', f'<polyline class="path" points="{points}"/>']
    for leg in data.legs:
        a, b = fixes[leg.start], fixes[leg.end]
        x1, y1 = p.xy(a.lat, a.lon)
        x2, y2 = p.xy(b.lat, b.lon)
        css = "leg impossible" if leg.impossible else "leg"
        out.append(
            f'<line class="{css}" x1="{_n(x1)}" y1="{_n(y1)}" x2="{_n(x2)}" y2="{_n(y2)}">'
            f"<title>{escape(leg.label)}</title></line>"
        )
        text = ("⚠ " if leg.impossible else "") + leg.label
        out.append(
            f'<text class="{css}-label" x="{_n((x1 + x2) / 2)}" y="{_n((y1 + y2) / 2 - 4)}">'
            f"{escape(text)}</text>"
        )
    out.append("</g>")
    return out


def _accuracy(p: Projection, fixes: Sequence[Fix]) -> list[str]:
    out = ['<g class="accuracies">']
    for fix in fixes:
        if fix.accuracy_m is None or fix.accuracy_m <= 0:
            continue
        x, y = p.xy(fix.lat, fix.lon)
        out.append(
            f'<circle class="accuracy" cx="{_n(x)}" cy="{_n(y)}" r="{p.px(fix.accuracy_m):.2f}" '
            f'data-accuracy-m="{fix.accuracy_m:g}"/>'
        )
    out.append("</g>")
    return out


def _rings(p: Projection, rings: Sequence[Ring]) -> list[str]:
    out = ['<g class="clusters">']
    for ring in rings:
        x, y = p.xy(ring.lat, ring.lon)
        r = max(p.px(ring.radius_m), 14.0)
        out.append(
            f'<circle class="cluster" cx="{_n(x)}" cy="{_n(y)}" r="{_n(r)}">'
            f"<title>{escape(ring.label)}</title></circle>"
            f'<text class="cluster-label" x="{_n(x + r + 3)}" y="{_n(y - r)}">'
            f"{escape(ring.label)}</text>"
        )
    out.append("</g>")
    return out


def _fixes(p: Projection, fixes: Sequence[Fix]) -> list[str]:
    out = ['<g class="fixes">']
    for fix in fixes:
        x, y = p.xy(fix.lat, fix.lon)
        shape, colour = group_style(fix.group)
        css = "fix far" if fix.far else "fix"
        label = fix.label + (" ⚠" if fix.far or fix.flagged else "")
        mark = (
            f'<g class="{css}" fill="{colour}" data-group="{fix.group}">'
            f"{shape_path(shape, x, y, 5)}<title>{escape(fix.title)}</title></g>"
            f'<text class="fix-label" x="{_n(x + 7)}" y="{_n(y + 4)}">{escape(label)}</text>'
        )
        if fix.href:
            mark = f'<a href="{escape(fix.href)}">{mark}</a>'
        out.append(mark)
    out.append("</g>")
    return out


def _scale_bar(p: Projection) -> list[str]:
    length_m = nice_length(p.width / 4 * p.metres_per_px)
    length_px = p.px(length_m)
    x0, y0 = 12.0, p.height - 14
    return [
        '<g class="scale-bar">',
        f'<rect class="scale-back" x="{_n(x0 - 4)}" y="{_n(y0 - 18)}" '
        f'width="{_n(length_px + 8)}" height="26"/>',
        f'<path d="M{_n(x0)},{_n(y0 - 5)} V{_n(y0)} H{_n(x0 + length_px)} V{_n(y0 - 5)}"/>',
        f'<text x="{_n(x0 + length_px / 2)}" y="{_n(y0 - 8)}">{format_metres(length_m)}</text>',
        "</g>",
    ]


def _north_arrow(p: Projection, north: str) -> list[str]:
    x, y = p.width - 24, 16.0
    return [
        '<g class="north-arrow">',
        f'<polygon points="{_n(x)},{_n(y)} {_n(x + 7)},{_n(y + 22)} {_n(x)},{_n(y + 17)} '
        f'{_n(x - 7)},{_n(y + 22)}"/>',
        f'<text x="{_n(x)}" y="{_n(y + 36)}">{escape(north)}</text>',
        "</g>",
    ]
