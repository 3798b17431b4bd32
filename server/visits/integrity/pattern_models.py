"""Patterns across visits, stored (docs/field-visits.md, "Patterns across visits"):
one row per pattern found, one per visit in it. Each member visit also carries a
flag whose ``value`` is the pattern's id, so the flags of one pattern link its visits.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from server.clock import utcnow
from server.extensions import Model
from server.types import UTCDateTime

_KINDS = "('pattern_one_spot', 'pattern_fast_legs', 'pattern_odd_hours', 'pattern_shared_spots')"


class VisitPattern(Model):
    """A group of one caseworker's visits that together look made up. Found again,
    it is the same pattern (a visit belongs to one pattern of a kind at most); a
    pattern that grows gains members, and never loses one."""

    __tablename__ = "visit_patterns"
    __table_args__ = (CheckConstraint(f"kind IN {_KINDS}", name="kind_known"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    caseworker_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    month: Mapped[str] = mapped_column(String(7))  # YYYY-MM, local, of its first visit
    detected_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # What it is, as the flags' detail says it (English; no names or coordinates).
    detail: Mapped[str] = mapped_column(Text, default="")

    members: Mapped[list[VisitPatternMember]] = relationship(
        back_populates="pattern", order_by="VisitPatternMember.survey_id"
    )

    def __repr__(self) -> str:
        return f"<VisitPattern #{self.id} {self.kind} of caseworker {self.caseworker_id}>"


class VisitPatternMember(Model):
    """One visit of a pattern. ``kind`` repeats the pattern's: a visit is in one
    pattern of each kind at most, which the database enforces (two jobs finding the
    same pattern at once cannot both store it)."""

    __tablename__ = "visit_pattern_members"
    __table_args__ = (
        UniqueConstraint("kind", "survey_id"),
        CheckConstraint(f"kind IN {_KINDS}", name="kind_known"),
    )

    pattern_id: Mapped[int] = mapped_column(
        ForeignKey("visit_patterns.id", ondelete="CASCADE"), primary_key=True
    )
    survey_id: Mapped[int] = mapped_column(
        ForeignKey("surveys.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    kind: Mapped[str] = mapped_column(String(40))
    added_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    pattern: Mapped[VisitPattern] = relationship(back_populates="members")

    def __repr__(self) -> str:
        return f"<VisitPatternMember survey {self.survey_id} of pattern #{self.pattern_id}>"
