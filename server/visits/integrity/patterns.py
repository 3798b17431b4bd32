"""Visit integrity: patterns across a caseworker's visits (lane D).
Pure: no Flask, no database, no server.region."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PatternRules:
    """The region file's ``[integrity.patterns]`` section."""


def parse_patterns_rules(data: dict[str, Any]) -> PatternRules:
    """Validate ``[integrity.patterns]``; raises ValueError with the key's path."""
    return PatternRules()
