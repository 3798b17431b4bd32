"""Visit integrity: the risk score of a visit and a caseworker-month (lane E).
Pure: no Flask, no database, no server.region."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RiskRules:
    """The region file's ``[integrity.risk]`` section."""


def parse_risk_rules(data: dict[str, Any]) -> RiskRules:
    """Validate ``[integrity.risk]``; raises ValueError with the key's path."""
    return RiskRules()
