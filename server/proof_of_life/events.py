"""What the proof of life announces to the packages above it (server/events.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from server.events import Event


@dataclass(frozen=True)
class MonthDecided:
    """A member's month of proof of life changed status (passed, or decided by a
    reviewer): whatever depends on the household's month (its payment) follows."""

    household_id: int
    month: str
    now: datetime


month_decided: Event[MonthDecided] = Event("proof_of_life.month_decided")
