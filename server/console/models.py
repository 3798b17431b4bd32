"""The console's summary of closed months (docs/decisions/0008-console-month-rollup.md):
per month, trend and village, the count the live trend query gives, written by
``dibao console rollup`` and the nightly beat task (``server.console.tasks``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from server.extensions import Model
from server.types import UTCDateTime


class MonthRollup(Model):
    """A month summed up: its counts below are complete (a village without a row
    counted 0) as of ``computed_at``."""

    __tablename__ = "console_rollups"

    month: Mapped[str] = mapped_column(String(7), primary_key=True)  # YYYY-MM
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime)


class MonthCount(Model):
    """One trend's count of one month in one village."""

    __tablename__ = "console_month_counts"

    month: Mapped[str] = mapped_column(
        String(7), ForeignKey("console_rollups.month", ondelete="CASCADE"), primary_key=True
    )
    trend: Mapped[str] = mapped_column(String(20), primary_key=True)
    village_id: Mapped[int] = mapped_column(ForeignKey("areas.id"), primary_key=True)
    count: Mapped[int] = mapped_column(Integer)


class CurrentSummary(Model):
    """The progress home's numbers of the current period, counted for every area at
    once (docs/decisions/0009-console-current-summary.md): one row, the period the
    counts below are about and when they were counted."""

    __tablename__ = "console_current"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # always 1
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The period's keys (``progress.Period``): the summary serves only the same period.
    today: Mapped[str] = mapped_column(String(10))  # the local day, YYYY-MM-DD
    month: Mapped[str] = mapped_column(String(7))
    pol_month: Mapped[str] = mapped_column(String(7))
    payroll_month: Mapped[str] = mapped_column(String(7))


class CurrentCount(Model):
    """One number of the progress home (``block/filter key``) in one area, every level
    (a village's own numbers and the sums of each township, county and league); a
    number absent is 0."""

    __tablename__ = "console_current_counts"

    area_id: Mapped[int] = mapped_column(
        ForeignKey("areas.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(80), primary_key=True)
    count: Mapped[int] = mapped_column(Integer)
    # Only with ``pol/pol:at_risk``: when the earliest window of those members closes.
    earliest: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
