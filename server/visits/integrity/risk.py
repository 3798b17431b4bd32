"""Visit integrity: the risk score of a visit and of a caseworker-month (lane E).
Pure: no Flask, no database, no server.region.

A flag says "look at this"; the score says "look here first". It adds up a visit's
flags with a weight per code (how strongly the code points at a fabricated visit, not
at a bad phone), scaled by the flag's severity, with a cleared flag counting a fraction
(a reviewer accepted it, but a caseworker whose visits keep needing clearing is still
worth a look), and each code capped (ten photos without EXIF must not outweigh one face
from another household). The caseworker-month adds up their visits' scores and their
record (visits rejected, back-checks failed). Every score carries its parts, so a
reviewer sees why: docs/field-visits.md, "The risk score".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, NamedTuple

SEVERITIES = ("info", "warning", "critical")
BANDS = ("low", "medium", "high")

# Points of one open warning of each code. The scale: 1 a weak hint (an honest phone or
# an honest caseworker raises it often), 3 a doubt worth a look, 5-6 evidence that the
# visit may not have happened (someone else's face, a photo of another household, a
# simulated location). Every code of server.labels.FLAG_LABELS has its weight here
# (tests/visits/test_integrity_risk.py checks it); a code missing gets default_weight.
DEFAULT_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {
        # The upload's own checks (server/visits/checks.py).
        "gps_far_from_home": 2.0,
        "gps_low_accuracy": 1.0,
        "gps_mock": 5.0,
        "visit_in_future": 1.5,
        "visit_stale": 1.0,
        "visit_times_inverted": 1.5,
        "photo_exif_far": 2.0,
        "photo_time_outside_visit": 2.0,
        "photo_no_exif": 1.0,
        "photo_undecodable": 1.0,
        "photo_reused": 5.0,
        "impossible_travel": 3.0,
        "portrait_no_face": 1.5,
        "portrait_many_faces": 1.0,
        "portrait_member_unknown": 1.0,
        "face_in_other_household": 6.0,
        "visit_kind_mismatch": 0.5,
        "member_registered_elsewhere": 2.0,
        # Integrity checks of one visit (lane A).
        "visit_too_short": 3.0,
        "photos_bunched": 2.0,
        "gps_too_precise": 3.0,
        "gps_at_registered_point": 4.0,
        "gps_repeated": 4.0,
        "gps_fix_stale": 2.0,
        "track_static": 2.0,
        "track_jump": 2.0,
        # Photos and faces (lanes B and C).
        "photo_near_duplicate": 3.0,
        "face_not_member": 4.0,
        # Patterns across a caseworker's visits (lane D).
        "pattern_one_spot": 4.0,
        "pattern_fast_legs": 3.0,
        "pattern_odd_hours": 1.5,
        "pattern_shared_spots": 3.0,
    }
)

# The parts of a caseworker-month that are not flag codes (labels: server.labels).
MONTH_PARTS = ("mean_visit", "worst_visit", "high_visits", "rejected", "failed_back_checks")


@dataclass(frozen=True)
class RiskRules:
    """The region file's ``[integrity.risk]`` section (defaults equal the file)."""

    # Points per open warning flag, by code (``[integrity.risk.weights]``), and for a
    # code that has none (a new check whose weight nobody chose yet: a doubt).
    weights: Mapping[str, float] = field(default_factory=lambda: DEFAULT_WEIGHTS, hash=False)
    default_weight: float = 2.0
    # The severity multiplies the weight: an info flag is a note, a critical one counts
    # twice a warning.
    info: float = 0.25
    warning: float = 1.0
    critical: float = 2.0
    # A cleared flag counts this share of its points.
    cleared: float = 0.25
    # One code adds at most this many times its weight (two warnings' worth), so a
    # caseworker's phone that never writes EXIF cannot outweigh one borrowed face.
    code_cap: float = 2.0
    # Bands: medium from this total, high from this one (a visit with one doubt worth a
    # look is medium; one piece of evidence, or three doubts, make it high).
    medium: float = 3.0
    high: float = 8.0
    # The caseworker-month: the mean of its visits' scores, plus worst_visit times the
    # worst one, plus high_visits times the share of high visits (all high: that many
    # points), plus the record over record_months up to the month's end (each rejected
    # visit and failed back-check), the record capped at record_cap.
    worst_visit: float = 0.25
    high_visits: float = 10.0
    rejected_visit: float = 1.0
    failed_back_check: float = 4.0
    record_months: int = 6
    record_cap: float = 10.0
    # The back-check draw: a visit weighs 1 + its score + this share of its
    # caseworker-month's score (a risky caseworker's other visits are worth a look too,
    # but less than the risky visits themselves).
    month_in_draw: float = 0.5

    def weight(self, code: str) -> float:
        return self.weights.get(code, self.default_weight)

    def severity_factor(self, severity: str) -> float:
        """Unknown severities count as warnings (the column is free text)."""
        return {"info": self.info, "critical": self.critical}.get(severity, self.warning)

    def band(self, total: float) -> str:
        if total >= self.high:
            return "high"
        return "medium" if total >= self.medium else "low"


class Part(NamedTuple):
    """What one code (or one item of a month) added: ``times`` flags (``cleared`` of
    them cleared), the worst ``severity`` among them ("" for a month's items),
    ``points``. For a month, ``times`` counts visits, visits rejected, back-checks."""

    code: str
    severity: str
    times: int
    cleared: int
    points: float


@dataclass(frozen=True)
class Score:
    total: float
    band: str
    parts: tuple[Part, ...] = ()  # the biggest first


class RiskFlag(NamedTuple):
    """A flag as the score sees it."""

    code: str
    severity: str
    cleared: bool = False


def _worst(severities: Iterable[str]) -> str:
    return max(severities, key=lambda s: SEVERITIES.index(s) if s in SEVERITIES else 1)


def _sorted(parts: Iterable[Part]) -> tuple[Part, ...]:
    return tuple(sorted((p for p in parts if p.times), key=lambda p: (-p.points, p.code)))


def score_visit(flags: Iterable[RiskFlag | tuple[str, str, bool]], rules: RiskRules) -> Score:
    """A visit's score: per code, the sum of weight x severity (x ``cleared`` when
    cleared) over its flags, capped at ``code_cap`` x the weight; the codes summed."""
    by_code: dict[str, list[RiskFlag]] = {}
    for flag in flags:
        found = RiskFlag(*flag)
        by_code.setdefault(found.code, []).append(found)
    parts = []
    for code, of_code in by_code.items():
        weight = rules.weight(code)
        raw = sum(
            weight * rules.severity_factor(f.severity) * (rules.cleared if f.cleared else 1.0)
            for f in of_code
        )
        parts.append(
            Part(
                code,
                _worst(f.severity for f in of_code),
                len(of_code),
                sum(f.cleared for f in of_code),
                round(min(raw, rules.code_cap * weight), 2),
            )
        )
    total = round(float(sum(p.points for p in parts)), 2)
    return Score(total, rules.band(total), _sorted(parts))


def score_month(
    visit_scores: Sequence[Score],
    rules: RiskRules,
    *,
    rejected: int = 0,
    failed_back_checks: int = 0,
) -> Score:
    """A caseworker-month: the mean visit score, ``worst_visit`` x the worst one,
    ``high_visits`` x the share of high visits, and the record (``rejected`` visits and
    ``failed_back_checks`` over the last ``record_months``), the record capped."""
    parts = []
    visits = len(visit_scores)
    if visits:
        totals = [s.total for s in visit_scores]
        high = sum(s.band == "high" for s in visit_scores)
        parts += [
            Part("mean_visit", "", visits, 0, round(sum(totals) / visits, 2)),
            Part("worst_visit", "", 1, 0, round(rules.worst_visit * max(totals), 2)),
            Part("high_visits", "", high, 0, round(rules.high_visits * high / visits, 2)),
        ]
    record = rules.rejected_visit * rejected + rules.failed_back_check * failed_back_checks
    shrink = min(1.0, rules.record_cap / record) if record else 1.0
    parts += [
        Part("rejected", "", rejected, 0, round(rules.rejected_visit * rejected * shrink, 2)),
        Part(
            "failed_back_checks",
            "",
            failed_back_checks,
            0,
            round(rules.failed_back_check * failed_back_checks * shrink, 2),
        ),
    ]
    kept = [p for p in parts if p.points > 0]
    total = round(float(sum(p.points for p in kept)), 2)
    return Score(total, rules.band(total), _sorted(kept))


def draw_weight(visit: Score, month: Score | None, rules: RiskRules) -> float:
    """A visit's weight in the back-check draw: 1 (every visit can be drawn) plus its
    score plus ``month_in_draw`` x its caseworker-month's score."""
    from_month = rules.month_in_draw * month.total if month is not None else 0.0
    return 1.0 + visit.total + from_month


# ------------------------------------------------------------------ the region file

_NUMBERS = tuple(f.name for f in fields(RiskRules) if f.name != "weights")


def _number(name: str, raw: Any, *, whole: bool = False) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or raw < 0:
        raise ValueError(f"integrity.risk.{name}: {raw!r} must be a number >= 0")
    if whole and not isinstance(raw, int):
        raise ValueError(f"integrity.risk.{name}: {raw!r} must be a whole number")
    return raw


def _weights(raw: Any) -> Mapping[str, float]:
    if not isinstance(raw, dict):
        raise ValueError("integrity.risk.weights: must be a table of flag code = points")
    unknown = sorted(set(raw) - set(DEFAULT_WEIGHTS))
    if unknown:
        raise ValueError(f"integrity.risk.weights: unknown flag code(s) {', '.join(unknown)}")
    merged = dict(DEFAULT_WEIGHTS)
    for code, value in raw.items():
        merged[code] = float(_number(f"weights.{code}", value))
    return MappingProxyType(merged)


def parse_risk_rules(data: dict[str, Any]) -> RiskRules:
    """Validate ``[integrity.risk]``; raises ValueError with the key's path."""
    unknown = sorted(set(data) - set(_NUMBERS) - {"weights"})
    if unknown:
        raise ValueError(f"integrity.risk: unknown setting(s) {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for name in _NUMBERS:
        if name in data:
            whole = name == "record_months"
            number = _number(name, data[name], whole=whole)
            values[name] = int(number) if whole else float(number)
    if "weights" in data:
        values["weights"] = _weights(data["weights"])
    rules = RiskRules(**values)
    if not 0 < rules.medium < rules.high:
        raise ValueError("integrity.risk.medium: must be above 0 and below integrity.risk.high")
    if rules.record_months < 1:
        raise ValueError("integrity.risk.record_months: must be at least 1")
    if rules.cleared > 1:
        raise ValueError("integrity.risk.cleared: a share, at most 1")
    return rules
