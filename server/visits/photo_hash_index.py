"""The photo reuse index held in the worker's memory (docs/field-visits.md, "The
photo-reuse index"): every ``full`` and ``centre`` hash of the photo_hashes table in a
multi-index hashing structure (server/visits/integrity/hamming_index.py), so that a new
photo's reuse candidates are found without reading and scanning the whole table.

Kept current by id: each search first reads the rows added since the last one (and
re-reads the last ``LAG_IDS`` ids, for transactions that committed out of order). New
rows go to a small ``recent`` part, rebuilt on each read, merged into the ``main`` part
once it holds ``MERGE_ROWS`` rows. A row replaced (a photo indexed again) is dropped
when its successor is read. The rows behind the candidates found are read back from
the table before they are returned: one deleted since (a photo removed, a transaction
rolled back) is dropped and the search runs again, so that a search returns exactly
what the linear scan (:func:`server.visits.integrity.photo_match.nearest` over the
table) would. Thread-safe: one lock per index.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
from sqlalchemy import Select, select

from server.extensions import db
from server.visits.integrity.hamming_index import HammingIndex, HammingSearch
from server.visits.integrity.photo_match import (
    HASH_KINDS,
    Candidate,
    HashKind,
    QueryHashes,
    candidates,
)
from server.visits.models import PhotoHash, Survey, SurveyPhoto

__all__ = ["PHOTO_HASHES", "PhotoHashIndex"]

I64 = npt.NDArray[np.int64]


@dataclass
class _Rows:
    """Rows of one kind, in id order."""

    ids: I64
    photo_ids: I64
    households: I64
    hashes: npt.NDArray[np.uint64]

    @staticmethod
    def empty() -> _Rows:
        z = np.zeros(0, dtype=np.int64)
        return _Rows(z, z, z, z.view(np.uint64))

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, which: npt.NDArray[np.intp] | npt.NDArray[np.bool_]) -> _Rows:
        return _Rows(
            self.ids[which], self.photo_ids[which], self.households[which], self.hashes[which]
        )

    @staticmethod
    def join(parts: list[_Rows]) -> _Rows:
        if not parts:
            return _Rows.empty()
        return _Rows(
            np.concatenate([p.ids for p in parts]),
            np.concatenate([p.photo_ids for p in parts]),
            np.concatenate([p.households for p in parts]),
            np.concatenate([p.hashes for p in parts]),
        )


class _Part:
    """Rows of one kind and their MIH index; ``alive`` false for rows dropped since."""

    def __init__(self, rows: _Rows, parts: int | None) -> None:
        self.rows = rows
        self.alive = np.ones(len(rows), dtype=np.bool_)
        self.index = HammingIndex(rows.hashes, parts)
        self.by_photo = np.argsort(rows.photo_ids, kind="stable")
        self.by_id_sorted = bool(np.all(rows.ids[1:] > rows.ids[:-1])) if len(rows) else True

    def positions_of_photos(self, photo_ids: I64) -> npt.NDArray[np.intp]:
        """Positions of the rows of these photos."""
        sorted_ids = self.rows.photo_ids[self.by_photo]
        lo = np.searchsorted(sorted_ids, photo_ids, side="left")
        hi = np.searchsorted(sorted_ids, photo_ids, side="right")
        if not np.any(hi > lo):
            return np.zeros(0, dtype=np.intp)
        return np.concatenate([self.by_photo[a:b] for a, b in zip(lo, hi, strict=True) if b > a])

    def holds(self, ids: I64) -> npt.NDArray[np.bool_]:
        """Whether each row id is held (alive or not)."""
        held = self.rows.ids
        if not self.by_id_sorted:
            return np.isin(ids, held)
        at = np.searchsorted(held, ids).clip(0, max(len(held) - 1, 0))
        return (held[at] == ids) if len(held) else np.zeros(len(ids), dtype=np.bool_)

    def position_of_id(self, row_id: int) -> int | None:
        held = self.rows.ids
        if self.by_id_sorted:
            at = int(np.searchsorted(held, row_id))
            return at if at < len(held) and held[at] == row_id else None
        found = np.flatnonzero(held == row_id)
        return int(found[0]) if len(found) else None

    @property
    def nbytes(self) -> int:
        r = self.rows
        own = r.ids.nbytes + r.photo_ids.nbytes + r.households.nbytes + self.alive.nbytes
        return own + self.by_photo.nbytes + self.index.nbytes


def _index_rows(after_id: int, limit: int) -> Select[int, int, str, int, int]:
    return (
        select(
            PhotoHash.id,
            PhotoHash.survey_photo_id,
            PhotoHash.kind,
            PhotoHash.hash,
            Survey.household_id,
        )
        .join(SurveyPhoto, SurveyPhoto.id == PhotoHash.survey_photo_id)
        .join(Survey, Survey.id == SurveyPhoto.survey_id)
        .where(PhotoHash.id > after_id, PhotoHash.kind.in_(HASH_KINDS))
        .order_by(PhotoHash.id)
        .limit(limit)
    )


def _read(after_id: int, chunk: int = 200_000) -> dict[HashKind, _Rows]:
    """The index rows with an id above ``after_id``, per kind, in id order (read in
    chunks of ``chunk`` rows)."""
    got: dict[HashKind, list[_Rows]] = {kind: [] for kind in HASH_KINDS}
    while True:
        rows = db.session.execute(_index_rows(after_id, chunk)).all()
        if not rows:
            break
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        photo_ids = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))
        kinds = np.array([r[2] for r in rows])
        hashes = np.fromiter((r[3] for r in rows), dtype=np.int64, count=len(rows))
        households = np.fromiter((r[4] for r in rows), dtype=np.int64, count=len(rows))
        for kind in HASH_KINDS:
            mask = kinds == kind
            got[kind].append(
                _Rows(ids[mask], photo_ids[mask], households[mask], hashes[mask].view(np.uint64))
            )
        after_id = int(ids[-1])
        if len(rows) < chunk:
            break
    return {kind: _Rows.join(parts) for kind, parts in got.items()}


def _nearest_per_photo(photo_ids: I64, dist: npt.NDArray[np.intp]) -> npt.NDArray[np.intp]:
    """Each photo's smallest distance (one value per photo, in no particular order)."""
    if len(photo_ids) == 0:
        return np.zeros(0, dtype=np.intp)
    order = np.lexsort((dist, photo_ids))
    photo_ids, dist = photo_ids[order], dist[order]
    first = np.ones(len(photo_ids), dtype=np.bool_)
    first[1:] = photo_ids[1:] != photo_ids[:-1]
    return dist[first]


class PhotoHashIndex:
    """See the module docstring. ``parts``: MIH substrings of the main part (None: by
    its size, :func:`server.visits.integrity.hamming_index.parts_for`); ``threads``:
    how many threads a search may use (1: the calling thread alone)."""

    MERGE_ROWS: Final = 65_536
    """The recent part is merged into the main one (a rebuild) at this size."""
    LAG_IDS: Final = 1_000
    """Ids re-read below the highest seen (rows whose transaction committed late)."""
    RELOAD_SECONDS: Final = 24 * 3600
    """A full reload this often (drops the rows deleted since from memory)."""

    def __init__(self, parts: int | None = None, threads: int = 1) -> None:
        self._parts = parts
        self.threads = threads
        """Threads a search's large steps are split over (HammingIndex.search)."""
        self._lock = threading.RLock()
        self._source: str | None = None
        self._loaded_at = 0.0
        self._main: dict[HashKind, _Part] = {}
        self._recent: dict[HashKind, _Part] = {}
        self._last_id = 0
        self.reloads = 0
        """Full loads so far (tests, the benchmark)."""

    # ----------------------------------------------------------------- keeping current

    def clear(self) -> None:
        with self._lock:
            self._source = None
            self._main, self._recent = {}, {}
            self._last_id = 0

    def load_rows(self, rows: dict[HashKind, _Rows]) -> None:
        """Replace everything held by ``rows`` (the benchmark builds from memory)."""
        with self._lock:
            self._main = {kind: _Part(rows[kind], self._parts) for kind in HASH_KINDS}
            self._recent = {kind: _Part(_Rows.empty(), None) for kind in HASH_KINDS}
            self._last_id = max((int(r.ids.max()) for r in rows.values() if len(r)), default=0)
            self._loaded_at = time.monotonic()

    def _reload(self) -> None:
        self.load_rows(_read(0))
        self._source = str(db.engine.url)
        self.reloads += 1

    def _tail_changed(self) -> bool:
        """Whether the row with the highest id held is gone or differs from the table's
        (a database restored or replaced, ids handed out again)."""
        if self._last_id == 0:
            return False
        row = db.session.execute(
            _index_rows(self._last_id - 1, 1).where(PhotoHash.id == self._last_id)
        ).first()
        for part in (*self._recent.values(), *self._main.values()):
            at = part.position_of_id(self._last_id)
            if at is not None:
                r = part.rows
                held = (
                    int(r.photo_ids[at]),
                    int(r.hashes[at : at + 1].view(np.int64)[0]),
                    int(r.households[at]),
                )
                return row is None or held != (row[1], row[3], row[4])
        return row is not None

    def refresh(self) -> None:
        """Read the rows added since the last read (a full load the first time, after
        ``RELOAD_SECONDS`` or when the table no longer holds what was read)."""
        with self._lock:
            if (
                self._source != str(db.engine.url)
                or time.monotonic() - self._loaded_at > self.RELOAD_SECONDS
                or self._tail_changed()
            ):
                self._reload()
                return
            new = _read(max(0, self._last_id - self.LAG_IDS))
            fresh: dict[HashKind, _Rows] = {}
            for kind in HASH_KINDS:
                rows = new[kind]
                held = self._main[kind].holds(rows.ids) | self._recent[kind].holds(rows.ids)
                fresh[kind] = rows.take(~held)
            if not any(len(r) for r in fresh.values()):
                return
            for kind in HASH_KINDS:
                self._add(kind, fresh[kind])
                if len(fresh[kind]):
                    self._last_id = max(self._last_id, int(fresh[kind].ids.max()))

    def _add(self, kind: HashKind, rows: _Rows) -> None:
        if len(rows) == 0:
            return
        # A photo indexed again: its earlier row of this kind is gone.
        main = self._main[kind]
        main.alive[main.positions_of_photos(rows.photo_ids)] = False
        recent = self._recent[kind]
        keep = recent.alive & ~np.isin(recent.rows.photo_ids, rows.photo_ids)
        joined = _Rows.join([recent.rows.take(keep), rows])
        if len(joined) >= self.MERGE_ROWS:
            merged = _Rows.join([main.rows.take(main.alive), joined])
            order = np.argsort(merged.ids, kind="stable")
            self._main[kind] = _Part(merged.take(order), self._parts)
            joined = _Rows.empty()
        self._recent[kind] = _Part(joined, None)

    # ----------------------------------------------------------------- searching

    def nearest(
        self,
        query: QueryHashes,
        radius: int,
        limit: int,
        *,
        household_id: int,
        photo_id: int,
    ) -> tuple[list[Candidate], dict[int, int]]:
        """The stored photos of other households (and other than ``photo_id``) within
        ``radius`` bits of the query, as :func:`~server.visits.integrity.photo_match.nearest`
        finds them over the table, with each one's household."""
        with self._lock:
            self.refresh()
            for _ in range(4):
                found, rows = self._search(query, radius, limit, household_id, photo_id)
                if self._confirm(rows):
                    return found, {
                        int(p): int(h)
                        for r in rows.values()
                        for p, h in zip(r.photo_ids, r.households, strict=True)
                    }
            # Rows kept vanishing under us: start again from the table.
            self._reload()
            found, rows = self._search(query, radius, limit, household_id, photo_id)
            return found, {
                int(p): int(h)
                for r in rows.values()
                for p, h in zip(r.photo_ids, r.households, strict=True)
            }

    def _search(
        self, query: QueryHashes, radius: int, limit: int, household_id: int, photo_id: int
    ) -> tuple[list[Candidate], dict[HashKind, _Rows]]:
        """Widen all parts' searches one bit at a time until ``limit`` eligible photos
        lie within the radius every part has searched (or the radius is reached): the
        nearest ``limit`` are then known exactly.

        Hits are kept up to a cap that falls as they come: once ``limit`` eligible
        photos have been seen within ``bound`` bits (found at any distance, complete or
        not), the ``limit`` nearest lie within ``bound`` (ties at ``bound`` included),
        so a hash farther than that is never needed, and the searches stop recording
        it. The widening stops at ``bound`` at the latest: the cap never falls below
        the radius still to be searched."""
        searches: list[tuple[HashKind, _Part, HammingSearch]] = []
        for kind in HASH_KINDS:
            for part in (self._main[kind], self._recent[kind]):
                if len(part.rows):
                    search = part.index.search(query.of_kind(kind)[0], radius, self.threads)
                    searches.append((kind, part, search))
        reach = -1
        cap = radius
        while True:
            reach += 1
            for _, _, search in searches:
                search.cap = cap
                search.widen_to(reach)
            hits: list[tuple[HashKind, _Part, npt.NDArray[np.intp], npt.NDArray[np.intp]]] = []
            for kind, part, search in searches:
                positions, dist = search.found(cap)
                r = part.rows
                ok = (
                    part.alive[positions]
                    & (r.households[positions] != household_id)
                    & (r.photo_ids[positions] != photo_id)
                )
                hits.append((kind, part, positions[ok], dist[ok]))
            best = _nearest_per_photo(
                np.concatenate(
                    [np.zeros(0, dtype=np.int64)] + [p.rows.photo_ids[at] for _, p, at, _ in hits]
                ),
                np.concatenate([np.zeros(0, dtype=np.intp)] + [d for _, _, _, d in hits]),
            )
            if reach >= radius or int(np.count_nonzero(best <= reach)) >= limit:
                break
            if len(best) >= limit:
                cap = min(cap, int(np.partition(best, limit - 1)[limit - 1]))
        found: dict[HashKind, list[_Rows]] = {kind: [] for kind in HASH_KINDS}
        for kind, part, positions, dist in hits:
            found[kind].append(part.rows.take(positions[dist <= reach]))
        rows = {kind: _Rows.join(parts) for kind, parts in found.items()}
        chosen = candidates(query, {k: (r.photo_ids, r.hashes) for k, r in rows.items()}, limit)
        keep = np.array([c.photo_id for c in chosen], dtype=np.int64)
        return chosen, {kind: r.take(np.isin(r.photo_ids, keep)) for kind, r in rows.items()}

    def _confirm(self, rows: dict[HashKind, _Rows]) -> bool:
        """Whether the rows behind the candidates are still the table's; those gone
        are dropped (False: search again). A row that differs means the table is not
        what was read: reloaded."""
        ids = np.concatenate([r.ids for r in rows.values()])
        if len(ids) == 0:
            return True
        now = {
            row[0]: (row[1], row[3], row[4])
            for row in db.session.execute(
                _index_rows(0, len(ids)).where(PhotoHash.id.in_(ids.tolist()))
            )
        }
        fine = True
        for kind, r in rows.items():
            for i, row_id in enumerate(r.ids.tolist()):
                held = (
                    int(r.photo_ids[i]),
                    int(r.hashes[i : i + 1].view(np.int64)[0]),
                    int(r.households[i]),
                )
                if row_id not in now:
                    for part in (self._main[kind], self._recent[kind]):
                        at = part.position_of_id(row_id)
                        if at is not None:
                            part.alive[at] = False
                    fine = False
                elif now[row_id] != held:
                    self._reload()
                    return False
        return fine

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(p.nbytes for p in (*self._main.values(), *self._recent.values()))

    def __len__(self) -> int:
        with self._lock:
            return sum(int(p.alive.sum()) for p in (*self._main.values(), *self._recent.values()))


PHOTO_HASHES: Final = PhotoHashIndex()
"""This process's resident index (a worker loads it on its first photo check)."""
