"""Properties of the maps' own geometry (docs/decisions/0007-maps-without-tiles.md):
the ring simplification and the spots of many households."""

from __future__ import annotations

import math
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from server.areas.boundaries import _to_metres, simplify_ring
from server.console.maps import find_clusters, local_metres

LAT0, LON0 = 46.1, 122.0


def _segment_distance(
    p: tuple[float, float], a: tuple[float, float], b: tuple[float, float]
) -> float:
    (px, py), (ax, ay), (bx, by) = p, a, b
    dx, dy = bx - ax, by - ay
    length2 = dx * dx + dy * dy
    t = 0.0 if length2 == 0 else max(0.0, min(1.0, ((px - ax) * dx + (py - ay) * dy) / length2))
    return math.hypot(px - (ax + t * dx), py - (ay + t * dy))


# A star-shaped ring around (LAT0, LON0): radii in metres at increasing angles.
rings = st.lists(st.floats(min_value=50, max_value=5000), min_size=3, max_size=60).map(
    lambda radii: [
        (
            LON0
            + r * math.sin(2 * math.pi * k / len(radii)) / (111_320 * math.cos(math.radians(LAT0))),
            LAT0 + r * math.cos(2 * math.pi * k / len(radii)) / 111_320,
        )
        for k, r in enumerate(radii)
    ]
)


@settings(max_examples=150, deadline=None)
@given(rings, st.sampled_from([1.0, 10.0, 100.0]))
def test_a_simplified_ring_stays_within_the_tolerance(
    ring: list[tuple[float, float]], tol: float
) -> None:
    closed = [*ring, ring[0]]
    simplified = simplify_ring(closed, tol)
    assert simplified[0] == simplified[-1] and len(simplified) >= 4
    kept = [(p[0], p[1]) for p in simplified]
    # Every original vertex within the tolerance (plus rounding to 1e-6 degrees) of the new line.
    xy = _to_metres(closed + kept)
    original, new = xy[: len(closed)], xy[len(closed) :]
    for point in original:
        nearest = min(_segment_distance(point, a, b) for a, b in pairwise(new))
        assert nearest <= tol + 0.2


points = st.lists(
    st.tuples(
        st.floats(min_value=-300, max_value=300),
        st.floats(min_value=-300, max_value=300),
        st.integers(min_value=1, max_value=8),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(points, st.sampled_from([10.0, 30.0, 80.0]), st.integers(min_value=2, max_value=4))
def test_clusters_are_tight_disjoint_and_big_enough(
    raw: list[tuple[float, float, int]], radius: float, minimum: int
) -> None:
    located = [
        (LAT0 + y / 111_200, LON0 + x / (111_200 * math.cos(math.radians(LAT0))), h)
        for x, y, h in raw
    ]
    found = find_clusters(located, radius, minimum)
    seen: set[int] = set()
    lat_mean = sum(p[0] for p in located) / len(located) if located else LAT0
    xy = local_metres(lat_mean, [(p[0], p[1]) for p in located])
    for cluster in found:
        assert cluster.centre in cluster.members
        assert not seen & set(cluster.members)
        seen |= set(cluster.members)
        assert cluster.households == len({located[i][2] for i in cluster.members}) >= minimum
        for i in cluster.members:
            assert math.dist(xy[i], xy[cluster.centre]) <= radius + 1e-6
