"""Visit integrity: per-visit checks of the upload (lane A).
Pure: no Flask, no database, no server.region."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class VisitRules:
    """The region file's ``[integrity.visit]`` section."""


def parse_visit_rules(data: dict[str, Any]) -> VisitRules:
    """Validate ``[integrity.visit]``; raises ValueError with the key's path."""
    return VisitRules()
