"""The published snapshot: what the public pages and open data read, and nothing else.

``public_cases`` holds only published values (codes, bands, generalized places, the
masked surname where allowed). Personal data never enters these tables, so no public
query can return it, whatever its filters.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from server.clock import utcnow
from server.extensions import Model
from server.types import UTCDateTime


class PublicSnapshot(Model):
    """One build of the published data. Readers use the newest ``ready`` one."""

    __tablename__ = "public_snapshots"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Random per build: the ETag, and the key of each process's cache of ``stats``.
    token: Mapped[str] = mapped_column(String(32), unique=True)
    state: Mapped[str] = mapped_column(String(10), default="building")  # building | ready
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The newest public_dirty row when the full build started (older ones it covers).
    source_mark: Mapped[int] = mapped_column(Integer, default=0)
    # What the rows were built with ([public] rules, areas, classes): a change means a
    # full build. NULL before incremental absorbs existed.
    fingerprint: Mapped[str | None] = mapped_column(String(64))
    # The last absorb of changes into this snapshot (finished_at: its full build).
    absorbed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cases: Mapped[int] = mapped_column(Integer, default=0)
    withheld: Mapped[int] = mapped_column(Integer, default=0)
    # Aggregates, per-filter counts and area names (JSON), computed with the rows.
    stats: Mapped[str] = mapped_column(Text, default="{}")


class PublicCase(Model):
    __tablename__ = "public_cases"
    __table_args__ = (
        Index("ix_public_cases_township", "snapshot_id", "township_code", "case_code"),
        Index("ix_public_cases_village", "snapshot_id", "village_code", "case_code"),
        Index("ix_public_cases_status", "snapshot_id", "status", "case_code"),
        Index("ix_public_cases_class", "snapshot_id", "class_code", "case_code"),
    )

    snapshot_id: Mapped[int] = mapped_column(
        ForeignKey("public_snapshots.id", ondelete="CASCADE"), primary_key=True
    )
    case_code: Mapped[str] = mapped_column(String(16), primary_key=True)
    # NULL where generalized away (docs/public.md).
    county_code: Mapped[str] = mapped_column(String(20))
    township_code: Mapped[str | None] = mapped_column(String(20))
    village_code: Mapped[str | None] = mapped_column(String(20))
    class_code: Mapped[str | None] = mapped_column(String(8))
    size_band: Mapped[str | None] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(20))
    amount: Mapped[str | None] = mapped_column(String(24))
    masked_name: Mapped[str | None] = mapped_column(String(8))
    # "applied:2026-03 accepted:2026-04 ..." (status, then its local month).
    changes: Mapped[str] = mapped_column(Text, default="")
    # This year's proof of life: "2026-01:passed 2026-02:missed ...".
    proof_of_life: Mapped[str] = mapped_column(Text, default="")
    # The case as the JSON API publishes it (server.public.schemas.case_document),
    # written once per build so a page of the API is a join of stored strings.
    document: Mapped[str] = mapped_column(Text, default="{}")


class PublicDirty(Model):
    """A case changed since the snapshot last absorbed changes (``snapshot.absorb``):
    one row per changed household (and per village a household left), written in the
    transaction that changed it. A row with no household, village or case code asks
    for a full build (bulk statements whose cases are not known). Insert-only for
    writers; the absorber claims rows by deleting them."""

    __tablename__ = "public_dirty"

    id: Mapped[int] = mapped_column(primary_key=True)
    household_id: Mapped[int | None] = mapped_column(Integer)
    # A village whose groups changed (the one a household left, or a deleted one's).
    village_id: Mapped[int | None] = mapped_column(Integer)
    # A deleted household's case code (its published row must go).
    case_code: Mapped[str | None] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PublicCensus(Model):
    """Cases per village, class, size band and status, as the last full build or absorb
    counted them: what generalization and the per-township figures are made from, kept
    so an absorb recounts only the villages it touches."""

    __tablename__ = "public_census"

    village_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    class_code: Mapped[str] = mapped_column(String(8), primary_key=True)
    size_band: Mapped[str] = mapped_column(String(8), primary_key=True)
    status: Mapped[str] = mapped_column(String(20), primary_key=True)
    cases: Mapped[int] = mapped_column(Integer)
    # Living members and monthly allowance (whole fen) of these cases, summed: the
    # per-township figures of the approved ones.
    persons: Mapped[int] = mapped_column(Integer)
    fen: Mapped[int] = mapped_column(BigInteger)
