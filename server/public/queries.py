"""Read the current published snapshot: cases by filter (keyset pages), one case, stats.

Nothing here reads a case table: only ``public_snapshots`` and ``public_cases``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from flask import current_app
from sqlalchemy import Row, Select, select

from server.extensions import db
from server.public.models import PublicCase, PublicSnapshot

MAX_PAGE = 100
CSV_BATCH = 2000


@dataclass(frozen=True)
class Filters:
    township: str | None = None
    village: str | None = None
    status: str | None = None
    class_code: str | None = None

    def as_query(self) -> dict[str, str]:
        pairs = {
            "township": self.township,
            "village": self.village,
            "status": self.status,
            "class": self.class_code,
        }
        return {k: v for k, v in pairs.items() if v}


@dataclass
class Snapshot:
    """The current snapshot as one process sees it; ``stats`` parsed once per build."""

    id: int
    token: str
    raw_stats: str = field(repr=False)
    _totals: dict[Filters, int] = field(default_factory=dict, repr=False)
    # Rendered pieces that depend only on the snapshot and the language.
    fragments: dict[str, Any] = field(default_factory=dict, repr=False)

    @cached_property
    def stats(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.raw_stats)
        return parsed

    @cached_property
    def areas(self) -> dict[str, dict[str, Any]]:
        return dict(self.stats["areas"])

    @cached_property
    def townships(self) -> list[str]:
        """Published township codes (those with at least one case placed in them)."""
        return sorted({cell[1] for cell in self.stats["cells"] if cell[1]})

    def villages(self, township: str | None) -> list[str]:
        return sorted(
            {
                cell[2]
                for cell in self.stats["cells"]
                if cell[2] and (township is None or cell[1] == township)
            }
        )

    def total(self, filters: Filters) -> int:
        """Cases matching ``filters``, from the per-cell counts of the build."""
        if filters not in self._totals:
            self._totals[filters] = sum(
                n
                for _county, township, village, status, class_code, n in self.stats["cells"]
                if (filters.township is None or township == filters.township)
                and (filters.village is None or village == filters.village)
                and (filters.status is None or status == filters.status)
                and (filters.class_code is None or class_code == filters.class_code)
            )
        return self._totals[filters]


_lock = threading.Lock()
_cache: dict[str, Any] = {"checked": 0.0, "snapshot": None}


def current() -> Snapshot | None:
    """The newest ready snapshot; asked of the database at most every
    DIBAO_PUBLIC_CACHE_SECONDS per process."""
    ttl = float(current_app.config["DIBAO_PUBLIC_CACHE_SECONDS"])
    now = time.monotonic()
    with _lock:
        cached: Snapshot | None = _cache["snapshot"]
        if cached is not None and now - _cache["checked"] < ttl:
            return cached
    row = db.session.execute(
        select(PublicSnapshot.id, PublicSnapshot.token)
        .where(PublicSnapshot.state == "ready")
        .order_by(PublicSnapshot.id.desc())
        .limit(1)
    ).first()
    if row is None:
        found = None
    elif cached is not None and cached.token == row.token:
        found = cached
    else:
        raw = db.session.scalar(select(PublicSnapshot.stats).where(PublicSnapshot.id == row.id))
        found = Snapshot(id=row.id, token=row.token, raw_stats=raw or "{}")
    with _lock:
        _cache["snapshot"] = found
        _cache["checked"] = now
    return found


# What the pages show (everything but the JSON document) and what the API sends.
PAGE_COLUMNS = tuple(c for c in PublicCase.__table__.c if c.name != "document")
API_COLUMNS = (PublicCase.__table__.c.case_code, PublicCase.__table__.c.document)


def _filtered(snapshot: Snapshot, filters: Filters, columns: Sequence[Any]) -> Select[Any]:
    query = select(*columns).where(PublicCase.snapshot_id == snapshot.id)
    if filters.township:
        query = query.where(PublicCase.township_code == filters.township)
    if filters.village:
        query = query.where(PublicCase.village_code == filters.village)
    if filters.status:
        query = query.where(PublicCase.status == filters.status)
    if filters.class_code:
        query = query.where(PublicCase.class_code == filters.class_code)
    return query


def page(
    snapshot: Snapshot,
    filters: Filters,
    after: str | None,
    limit: int,
    columns: Sequence[Any] = PAGE_COLUMNS,
) -> tuple[list[Row[Any]], str | None]:
    """Up to ``limit`` cases (rows of ``columns``) in case-code order after ``after``;
    and the cursor of the next page (None on the last). Case codes are stable, so a
    cursor stays valid across rebuilds."""
    query = _filtered(snapshot, filters, columns)
    if after:
        query = query.where(PublicCase.case_code > after)
    rows = list(db.session.execute(query.order_by(PublicCase.case_code).limit(limit + 1)))
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1].case_code
    return rows, None


def one(
    snapshot: Snapshot, case_code: str, columns: Sequence[Any] = PAGE_COLUMNS
) -> Row[Any] | None:
    return db.session.execute(
        select(*columns).where(
            PublicCase.snapshot_id == snapshot.id, PublicCase.case_code == case_code
        )
    ).first()


def every(snapshot: Snapshot, filters: Filters) -> Iterator[Row[Any]]:
    """All matching cases in case-code order, read in batches (the CSV export)."""
    after = None
    while True:
        rows, after = page(snapshot, filters, after, CSV_BATCH)
        yield from rows
        if after is None:
            return
