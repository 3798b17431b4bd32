"""The monthly cycle's bookkeeping: which step ran for which month, and what it did."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from server.clock import utcnow
from server.extensions import Model
from server.types import UTCDateTime


class CampaignStep(Model):
    """One step (open, remind, close) of one month's campaign: when it started and
    finished and what it did. A step that started and never finished (a crash) is
    simply run again: every step only does what is still missing."""

    __tablename__ = "campaign_steps"
    __table_args__ = (UniqueConstraint("month", "step", name="uq_campaign_steps_month_step"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    month: Mapped[str] = mapped_column(String(7))
    step: Mapped[str] = mapped_column(String(10))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    runs: Mapped[int] = mapped_column(Integer, default=0)
    counts: Mapped[str] = mapped_column(Text, default="{}")  # JSON: what the last run did
