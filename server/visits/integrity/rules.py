"""The region file's ``[integrity.*]`` sections (docs/field-visits.md, "Integrity
checks"), one per part of the integrity checks. Pure: server/region.py imports this."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from server.visits.integrity.face_match import FaceRules, parse_faces_rules
from server.visits.integrity.patterns import PatternRules, parse_patterns_rules
from server.visits.integrity.photo_match import PhotoRules, parse_photos_rules
from server.visits.integrity.risk import RiskRules, parse_risk_rules
from server.visits.integrity.visit import VisitRules, parse_visit_rules


@dataclass(frozen=True)
class IntegrityRules:
    visit: VisitRules = field(default_factory=VisitRules)
    photos: PhotoRules = field(default_factory=PhotoRules)
    faces: FaceRules = field(default_factory=FaceRules)
    patterns: PatternRules = field(default_factory=PatternRules)
    risk: RiskRules = field(default_factory=RiskRules)


def parse_integrity_rules(data: dict[str, Any]) -> IntegrityRules:
    """Validate ``[integrity]``; raises ValueError naming the bad key."""
    if not isinstance(data, dict):
        raise ValueError("integrity: must be a table")

    def section(name: str) -> dict[str, Any]:
        found = data.get(name, {})
        if not isinstance(found, dict):
            raise ValueError(f"integrity.{name}: must be a table")
        return found

    unknown = set(data) - {"visit", "photos", "faces", "patterns", "risk"}
    if unknown:
        raise ValueError(f"integrity: unknown section(s) {', '.join(sorted(unknown))}")
    return IntegrityRules(
        visit=parse_visit_rules(section("visit")),
        photos=parse_photos_rules(section("photos")),
        faces=parse_faces_rules(section("faces")),
        patterns=parse_patterns_rules(section("patterns")),
        risk=parse_risk_rules(section("risk")),
    )
