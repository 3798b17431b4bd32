"""Visit integrity: face tolerances, review band, own templates (lane C).
Pure: no Flask, no database, no server.region.

Two questions are asked of every new member portrait (and every explicit enrollment):

- ``face_in_other_household``: is this face an enrolled member of ANOTHER household?
  A distance under ``match_below`` is "the same person" (critical), under
  ``review_below`` "possibly the same person" (warning).
- ``face_not_member``: is this face the member the portrait names? Compared with the
  templates already enrolled for that member: farther than ``not_member_above`` from all
  of them is "a different person" (warning), farther than ``not_member_critical_above``
  critical. A member's first portrait has nothing to compare with; it is still flagged
  when it is clearly another member of the same household (the same person enrolled as
  two members).

Each portrait is encoded twice, as taken and mirrored (selfie cameras mirror the
picture, and dlib's encoding of a mirror image is 0.11-0.22 away from the original's):
a distance is always the smaller of the two. The thresholds and the figures behind them:
docs/field-visits.md, "Integrity checks", "Faces"; benchmarks/face_calibration.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt

from server.visits.checks import Flag, Severity, nearest_faces

__all__ = [
    "FaceRules",
    "best_per_key",
    "distances_to",
    "not_member_flag",
    "other_household_flags",
    "parse_faces_rules",
    "search",
]

Encoding = npt.NDArray[np.float64]


@dataclass(frozen=True)
class FaceRules:
    """The region file's ``[integrity.faces]`` section (defaults equal to the file)."""

    # Another household's member closer than this: the same person (critical). Same-person
    # stills measured 0.05-0.45 (every variant), different people 0.69 or more.
    match_below: float = 0.50
    # ... closer than this: possibly the same person (warning). Below dlib's 0.6 (its
    # equal-error point on LFW, a 1:1 figure) because this is a 1:N search: every extra
    # enrolled stranger is another chance of a false match.
    review_below: float = 0.55
    # Farther than this from every earlier template of the named member: another person
    # stands in the portrait (warning). 1:1, so dlib's own tolerance 0.6.
    not_member_above: float = 0.60
    # ... farther than this: critical (different people measured 0.69-1.03, median 0.80).
    not_member_critical_above: float = 0.70
    # Encode the mirror image too (one more engine call per portrait).
    check_mirrored: bool = True


# Encodings have a norm of about 1: no distance between two of them exceeds 2.
_MAX_DISTANCE = 2.0


def parse_faces_rules(data: dict[str, Any]) -> FaceRules:
    """Validate ``[integrity.faces]``; raises ValueError with the key's path."""
    where = "integrity.faces."
    if not isinstance(data, dict):
        raise ValueError("integrity.faces: must be a table")
    known = {f.name for f in fields(FaceRules)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{where}{unknown[0]}: unknown key")
    default = FaceRules()
    values: dict[str, Any] = {}
    for name in known - {"check_mirrored"}:
        raw = data.get(name, getattr(default, name))
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise ValueError(f"{where}{name}: {raw!r} must be a number")
        if not 0 < raw <= _MAX_DISTANCE:
            raise ValueError(f"{where}{name}: {raw!r} must be a distance in (0, 2]")
        values[name] = float(raw)
    mirrored = data.get("check_mirrored", default.check_mirrored)
    if not isinstance(mirrored, bool):
        raise ValueError(f"{where}check_mirrored: {mirrored!r} must be true or false")
    rules = FaceRules(check_mirrored=mirrored, **values)
    if rules.review_below < rules.match_below:
        raise ValueError(f"{where}review_below: must not be under match_below")
    if rules.not_member_critical_above < rules.not_member_above:
        raise ValueError(f"{where}not_member_critical_above: must not be under not_member_above")
    return rules


def _stack(encodings: Sequence[bytes] | npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    if isinstance(encodings, np.ndarray):
        return encodings
    if not encodings:
        return np.empty((0, 128), dtype=np.float64)
    return np.frombuffer(b"".join(encodings), dtype=np.float64).reshape(len(encodings), -1)


def search(
    queries: Sequence[Encoding],
    candidates: Sequence[bytes] | npt.NDArray[np.float64],
    threshold: float,
) -> dict[int, float]:
    """Rows of ``candidates`` (raw float64 encodings, or an (N, 128) array) closer than
    ``threshold`` to any of ``queries`` (the portrait as taken and mirrored), with the
    smaller distance: the chunked, exact scan of ``nearest_faces`` once per query."""
    matrix = _stack(candidates)
    found: dict[int, float] = {}
    for query in queries:
        for row, distance in nearest_faces(query.tolist(), matrix, threshold):
            found[row] = min(distance, found.get(row, distance))
    return found


def distances_to(
    queries: Sequence[Encoding], candidates: Sequence[bytes] | npt.NDArray[np.float64]
) -> list[float]:
    """The distance of each candidate to the nearest of ``queries`` (few candidates: a
    member's or a household's own templates)."""
    matrix = _stack(candidates)
    if matrix.shape[0] == 0 or not queries:
        return []
    per_query = [np.linalg.norm(matrix - np.asarray(q, np.float64), axis=1) for q in queries]
    return [float(d) for d in np.min(np.vstack(per_query), axis=0)]


def best_per_key(keys: Sequence[int], distances: Mapping[int, float]) -> dict[int, float]:
    """The smallest distance per key (household or member id) of the rows found."""
    best: dict[int, float] = {}
    for row, distance in distances.items():
        key = keys[row]
        best[key] = min(distance, best.get(key, distance))
    return best


def _band(distance: float, rules: FaceRules) -> tuple[Severity, float] | None:
    if distance < rules.match_below:
        return "critical", rules.match_below
    if distance < rules.review_below:
        return "warning", rules.review_below
    return None


def other_household_flags(best: Mapping[int, float], rules: FaceRules) -> list[Flag]:
    """``face_in_other_household`` per household whose nearest template is in a band,
    nearest first."""
    flags = []
    for household_id, distance in sorted(best.items(), key=lambda item: (item[1], item[0])):
        band = _band(distance, rules)
        if band is None:
            continue
        severity, limit = band
        wording = "the same person as" if severity == "critical" else "possibly the same person as"
        flags.append(
            Flag(
                code="face_in_other_household",
                severity=severity,
                value=round(distance, 3),
                threshold=limit,
                detail=(
                    f"the portrait's face is {wording} a member of household {household_id} "
                    f"(face distance {distance:.3f}, limit {limit:g})"
                ),
            )
        )
    return flags


def not_member_flag(
    own: Sequence[float],
    household: Mapping[int, float],
    rules: FaceRules,
    *,
    what: str,
) -> Flag | None:
    """``face_not_member``: the portrait (``what``: "portrait p3") does not show the
    member it names.

    ``own`` holds the distances to the named member's earlier templates; ``household``
    the nearest distance to each OTHER member of the same household (member id ->
    distance). Without earlier templates the portrait is flagged only when it is the same
    person as another member (``match_below``: one person enrolled as two members, a
    warning). A portrait closer to another member of the household than to the named one
    (a mix-up on the tablet, or a relative standing in) says so in the detail, by member
    id, never by name.
    """
    closest_other = min(household.items(), key=lambda item: (item[1], item[0]), default=None)
    nearest_own = min(own, default=None)
    other_is_closer = closest_other is not None and (
        nearest_own is None or closest_other[1] < nearest_own
    )
    mention = ""
    if closest_other is not None and other_is_closer and closest_other[1] < rules.review_below:
        mention = (
            f"; it is closer to member {closest_other[0]} of the same household "
            f"(face distance {closest_other[1]:.3f})"
        )
    if nearest_own is None:
        if closest_other is None or closest_other[1] >= rules.match_below:
            return None
        return Flag(
            code="face_not_member",
            severity="warning",
            value=round(closest_other[1], 3),
            threshold=rules.match_below,
            detail=(
                f"{what} is the first of its member but shows the same person as member "
                f"{closest_other[0]} of the same household (face distance "
                f"{closest_other[1]:.3f}, limit {rules.match_below:g})"
            ),
        )
    if nearest_own <= rules.not_member_above:
        return None
    critical = nearest_own > rules.not_member_critical_above
    limit = rules.not_member_critical_above if critical else rules.not_member_above
    return Flag(
        code="face_not_member",
        severity="critical" if critical else "warning",
        value=round(nearest_own, 3),
        threshold=limit,
        detail=(
            f"{what} does not show the member it names: face distance {nearest_own:.3f} "
            f"from the nearest of {len(own)} earlier template(s) of that member "
            f"(limit {limit:g}){mention}"
        ),
    )
