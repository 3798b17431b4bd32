"""Months and periods: the one place for month arithmetic.

A month is the text ``YYYY-MM`` (as stored in ``proof_of_life_months.month`` and
``payment_months.month``). Local dates and moments are in the region's time zone,
passed in as ``tz``; nothing here reads a clock (callers pass ``now``, from
``server.clock.utcnow``) nor the app's configuration, so migrations and pure helpers
may use it too.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


class WindowDays(Protocol):
    """The proof-of-life window: it opens on ``open_day`` and lasts ``window_days``."""

    @property
    def open_day(self) -> int: ...

    @property
    def window_days(self) -> int: ...


def parse_month(text: str) -> tuple[int, int]:
    """``"2026-11"`` -> ``(2026, 11)``; ValueError for anything else."""
    match = MONTH.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a month (YYYY-MM)")
    return int(match.group(1)), int(match.group(2))


def month_text(year: int, month: int) -> str:
    return f"{year:04d}-{month:02d}"


def month_after(month: str, count: int = 1) -> str:
    """The month ``count`` months after ``month`` (before it when negative)."""
    year, number = parse_month(month)
    index = year * 12 + number - 1 + count
    return month_text(index // 12, index % 12 + 1)


def local_date(now: datetime, tz: str) -> date:
    """The local calendar day of the aware moment ``now``."""
    return now.astimezone(ZoneInfo(tz)).date()


def current_month(now: datetime, tz: str) -> str:
    """The local month of the aware moment ``now``."""
    local = local_date(now, tz)
    return month_text(local.year, local.month)


def local_moment(month: str, day: int, tz: str, hour: int = 0) -> datetime:
    """``day`` of ``month`` at ``hour`` local time, as an aware UTC datetime."""
    year, number = parse_month(month)
    return datetime(year, number, day, hour, tzinfo=ZoneInfo(tz)).astimezone(UTC)


def month_span(month: str, tz: str) -> tuple[datetime, datetime]:
    """[start, end) of a local month, as aware UTC datetimes."""
    return local_moment(month, 1, tz), local_moment(month_after(month), 1, tz)


def window(month: str, rules: WindowDays, tz: str) -> tuple[datetime, datetime]:
    """The month's proof-of-life window as aware UTC datetimes: [opens, closes)
    (the ``open_day``, 00:00 local time, and ``window_days`` later)."""
    opens_local = datetime(*parse_month(month), rules.open_day, tzinfo=ZoneInfo(tz))
    closes_local = opens_local + timedelta(days=rules.window_days)
    return opens_local.astimezone(UTC), closes_local.astimezone(UTC)


def last_local_day(ends: datetime, tz: str) -> date:
    """The last local day of a period that ends (exclusive) at the aware moment ``ends``:
    a window closing at midnight on the 25th ends on the 24th."""
    return local_date(ends - timedelta(seconds=1), tz)


def last_day_of_month(day: date) -> date:
    index = day.year * 12 + day.month  # the next month, counted from 0
    return date(index // 12, index % 12 + 1, 1) - timedelta(days=1)


def add_months(day: date, months: int) -> date:
    """The same day ``months`` later, clamped: 31 Jan + 1 month -> 28/29 Feb."""
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    last_day = last_day_of_month(date(year, month, 1)).day
    return date(year, month, min(day.day, last_day))


def first_of_next_month(day: date) -> date:
    return add_months(day.replace(day=1), 1)
