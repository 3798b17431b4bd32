"""Visit integrity: face tolerances, review band, own templates (lane C).
Pure: no Flask, no database, no server.region."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FaceRules:
    """The region file's ``[integrity.faces]`` section."""


def parse_faces_rules(data: dict[str, Any]) -> FaceRules:
    """Validate ``[integrity.faces]``; raises ValueError with the key's path."""
    return FaceRules()
