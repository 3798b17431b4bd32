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
