"""Visit integrity: photo reuse robust to crops and rotations (lane B).
Pure: no Flask, no database, no server.region."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PhotoRules:
    """The region file's ``[integrity.photos]`` section."""


def parse_photos_rules(data: dict[str, Any]) -> PhotoRules:
    """Validate ``[integrity.photos]``; raises ValueError with the key's path."""
    return PhotoRules()
