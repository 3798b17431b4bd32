"""The region's proof-of-life rules (the ``[proof_of_life]`` section of the region file)."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


class ProofOfLifeConfigError(ValueError):
    pass


@dataclass(frozen=True)
class ProofOfLifeRules:
    open_day: int = 20  # the window opens on this day of the month, 00:00 local time
    window_days: int = 5  # ... and closes this many days later
    attempts_per_day: int = 5  # a recipient's own attempts per local day
    attempts_per_month: int = 15  # ... and per monthly window
    session_seconds: int = 120  # a session must be used within this
    frames_min: int = 6
    frames_max: int = 12
    frame_max_bytes: int = 400_000
    capture_count: int = 10
    capture_interval_ms: int = 300
    capture_width: int = 640
    capture_height: int = 480
    frame_retention_days: int = 30  # frames kept for audit, then deleted; results stay
    assisted_far_from_home_m: int = 300  # an assisted attempt farther than this is flagged

    def __post_init__(self) -> None:
        if not 1 <= self.open_day <= 28:
            raise ProofOfLifeConfigError("proof_of_life.open_day must be 1-28")
        if not self.frames_min <= self.capture_count <= self.frames_max:
            raise ProofOfLifeConfigError(
                "proof_of_life: frames_min <= capture_count <= frames_max is required"
            )


def parse_proof_of_life_rules(data: dict[str, Any]) -> ProofOfLifeRules:
    known = {f.name for f in fields(ProofOfLifeRules)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ProofOfLifeConfigError(f"proof_of_life: unknown settings {unknown}")
    values = {}
    for name, value in data.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ProofOfLifeConfigError(
                f"proof_of_life.{name}: {value!r} must be a positive whole number"
            )
        values[name] = value
    return ProofOfLifeRules(**values)


def parse_month(text: str) -> tuple[int, int]:
    match = MONTH.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a month (YYYY-MM)")
    return int(match.group(1)), int(match.group(2))


def window(month: str, rules: ProofOfLifeRules, tz: str) -> tuple[datetime, datetime]:
    """The month's window as aware UTC datetimes: [opens, closes)."""
    year, number = parse_month(month)
    opens_local = datetime(year, number, rules.open_day, tzinfo=ZoneInfo(tz))
    closes_local = opens_local + timedelta(days=rules.window_days)
    return opens_local.astimezone(UTC), closes_local.astimezone(UTC)


def current_month(now: datetime, tz: str) -> str:
    local: date = now.astimezone(ZoneInfo(tz)).date()
    return f"{local.year:04d}-{local.month:02d}"
