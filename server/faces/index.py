"""The resident 1:N face index: every active template of the database, decrypted once
into this process's memory, kept current from ``face_templates.version``.

What it answers: the templates that MAY lie within a distance of a face (a superset,
never missing one); the caller rechecks those few rows in float64 from the database,
exactly as the brute-force scan does (``server.visits.faces``), so the matches are the
same as decrypting and scanning every template.

Layout (about 540 bytes a template: 0.54 GB at 1,000,000). The templates, centred on
their mean and turned onto their principal axes (an orthogonal change of basis: every
distance stays the same), are one float32 matrix of 128 columns kept as two C-contiguous
column blocks, the first ``HEAD`` axes (most of the spread) and the rest; beside it each
row's squared norm and the norm of its tail block, and its template, member and
household ids. A search reads the head block (a matrix-vector product), bounds each
row's distance from below by ``|q_head - x_head|^2 + (|q_tail| - |x_tail|)^2`` and
computes the full distance only for rows the bound cannot exclude. Every comparison
is made against the tolerance padded by a bound of the float32 rounding errors, so no
row within the tolerance is ever dropped.

Kept current: each flush that writes templates takes the next version of the one-row
``face_template_clock`` with a random token (``server.faces.models``). Before each
search the index reads the clock (one row); when it moved it pulls the rows with a
newer version (indexed), adds or replaces the active ones and drops the others. It
reloads everything when the data key changed (a key rotation), when the history it
knows is not the database's any more (a restore, a rolled-back write: the version went
back, or the token of the last version it applied is not in
``face_template_versions`` any more) and every
``RELOAD_SECONDS``. One lock: a search sees one consistent state; a reload (about a
minute at 1,000,000 on this machine, mostly decryption) holds it.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from flask import current_app
from sqlalchemy import select
from sqlalchemy.orm import Session, scoped_session

from server.faces.models import (
    OWN_FIRST_VERSION,
    FaceTemplate,
    FaceTemplateClock,
    FaceTemplateVersion,
)
from server.types import field_cipher

__all__ = ["DIMENSIONS", "HEAD", "FaceIndex", "face_index"]

DIMENSIONS = 128
# Principal axes in the head block: with random (isotropic) templates the bound then
# excludes all but about 0.1% of the rows at the tolerance 0.55.
HEAD = 48
RELOAD_SECONDS = 6 * 3600
# Rows per block of the scan: the temporaries stay in the CPU cache.
_CHUNK = 16384
# float32 unit roundoff.
_U = 2.0**-24

Matrix = npt.NDArray[np.float32]


@dataclass
class _Pulled:
    """Rows read from the database: the index's own (committed) and the searching
    session's uncommitted ones (searched on the side, never kept)."""

    ids: list[int] = field(default_factory=list)
    members: list[int] = field(default_factory=list)
    households: list[int] = field(default_factory=list)
    encodings: list[bytes] = field(default_factory=list)


class FaceIndex:
    """Process-resident; one per app (``face_index()``). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clear()
        self.loads = 0  # full loads so far (tests and the benchmark read it)

    # ------------------------------------------------------------------ state

    def _clear(self) -> None:
        self.n = 0
        self._capacity = 0
        self._head: Matrix = np.empty((0, HEAD), np.float32)
        self._tail: Matrix = np.empty((0, DIMENSIONS - HEAD), np.float32)
        self._norm2: npt.NDArray[np.float32] = np.empty(0, np.float32)
        self._tail_norm: npt.NDArray[np.float32] = np.empty(0, np.float32)
        self._ids: npt.NDArray[np.int64] = np.empty(0, np.int64)
        self._members: npt.NDArray[np.int64] = np.empty(0, np.int64)
        self._households: npt.NDArray[np.int64] = np.empty(0, np.int64)
        self._row_of: dict[int, int] = {}
        self._mean = np.zeros(DIMENSIONS, np.float64)
        self._axes = np.eye(DIMENSIONS, dtype=np.float64)
        self._max_norm = 0.0
        self._version = 0
        self._token = 0
        self._keys: tuple[str, ...] = ()
        self._loaded_at = -math.inf

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays (allocated capacity; the id map is extra, about 100 bytes
        a template in Python objects)."""
        arrays = (
            self._head,
            self._tail,
            self._norm2,
            self._tail_norm,
            self._ids,
            self._members,
            self._households,
        )
        return sum(a.nbytes for a in arrays)

    def _reserve(self, rows: int) -> None:
        if rows <= self._capacity:
            return
        capacity = max(rows, int(self._capacity * 1.25) + 1024)

        def grow(a: npt.NDArray[Any]) -> npt.NDArray[Any]:
            b = np.empty((capacity, *a.shape[1:]), a.dtype)
            b[: self.n] = a[: self.n]
            return b

        self._head, self._tail = grow(self._head), grow(self._tail)
        self._norm2, self._tail_norm = grow(self._norm2), grow(self._tail_norm)
        self._ids, self._members = grow(self._ids), grow(self._members)
        self._households = grow(self._households)
        self._capacity = capacity

    def _transform(self, encodings: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return (encodings - self._mean) @ self._axes

    def _put(
        self,
        rows: npt.NDArray[np.intp],
        encodings: npt.NDArray[np.float64],
        ids: Sequence[int],
        members: Sequence[int],
        households: Sequence[int],
    ) -> None:
        turned = self._transform(encodings)
        stored = turned.astype(np.float32)
        exact = stored.astype(np.float64)
        norms2 = np.einsum("ij,ij->i", exact, exact)
        self._head[rows] = stored[:, :HEAD]
        self._tail[rows] = stored[:, HEAD:]
        self._norm2[rows] = norms2
        self._tail_norm[rows] = np.sqrt(np.einsum("ij,ij->i", exact[:, HEAD:], exact[:, HEAD:]))
        self._ids[rows] = ids
        self._members[rows] = members
        self._households[rows] = households
        if len(norms2):
            self._max_norm = max(self._max_norm, float(np.sqrt(norms2.max())))

    def _remove(self, template_id: int) -> None:
        row = self._row_of.pop(template_id, None)
        if row is None:
            return
        last = self.n - 1
        if row != last:
            moved = int(self._ids[last])
            for a in (
                self._head,
                self._tail,
                self._norm2,
                self._tail_norm,
                self._ids,
                self._members,
                self._households,
            ):
                a[row] = a[last]
            self._row_of[moved] = row
        self.n = last

    def _apply(self, pulled: _Pulled) -> None:
        """Add or replace the active rows pulled (``pulled`` holds active rows only)."""
        if not pulled.ids:
            return
        encodings = _matrix(pulled.encodings)
        rows = np.empty(len(pulled.ids), np.intp)
        for i, template_id in enumerate(pulled.ids):
            row = self._row_of.get(template_id)
            if row is None:
                row = self.n
                self._reserve(row + 1)
                self._row_of[template_id] = row
                self.n += 1
            rows[i] = row
        self._put(rows, encodings, pulled.ids, pulled.members, pulled.households)

    # ------------------------------------------------------------------ loading

    def _load(self, session: Session | scoped_session[Any], own_first: int | None) -> _Pulled:
        self._clear()
        self.loads += 1
        keys = tuple(field_cipher().key_ids)
        query = select(
            FaceTemplate.id,
            FaceTemplate.member_id,
            FaceTemplate.household_id,
            FaceTemplate.encoding,
            FaceTemplate.active,
            FaceTemplate.version,
            FaceTemplate.version_token,
        ).execution_options(yield_per=20000)
        own = _Pulled()
        ids: list[int] = []
        members: list[int] = []
        households: list[int] = []
        blocks: list[npt.NDArray[np.float64]] = []
        for partition in session.execute(query).partitions():
            kept = _Pulled()  # a block of rows as bytes, then as one array
            for row in partition:
                mine = own_first is not None and row.version >= own_first
                if not mine and row.version > self._version:
                    self._version, self._token = row.version, row.version_token
                if row.active and _usable(row.encoding):
                    _add_row(own if mine else kept, row)
            ids += kept.ids
            members += kept.members
            households += kept.households
            blocks.append(_matrix(kept.encodings).copy())
        encodings = np.concatenate(blocks) if blocks else _matrix([])
        del blocks
        self.build(encodings, ids, members, households)
        self._keys, self._loaded_at = keys, time.monotonic()
        return own

    def build(
        self,
        encodings: npt.NDArray[np.float64],
        ids: Sequence[int],
        members: Sequence[int],
        households: Sequence[int],
    ) -> None:
        """Fill the (cleared) index from float64 encodings: the principal axes of (a
        sample of at most 100,000 of) them, then the rows. The benchmark calls it
        directly on synthetic templates."""
        if len(encodings):
            self._mean = encodings.mean(axis=0)
            sample = encodings[:: max(1, len(encodings) // 100_000)] - self._mean
            _, vectors = np.linalg.eigh(sample.T @ sample)
            self._axes = np.ascontiguousarray(vectors[:, ::-1])
        self._reserve(len(ids))
        for start in range(0, len(ids), 65536):
            end = min(len(ids), start + 65536)
            self._put(
                np.arange(start, end),
                encodings[start:end],
                ids[start:end],
                members[start:end],
                households[start:end],
            )
        self.n = len(ids)
        self._row_of = {int(template_id): row for row, template_id in enumerate(ids)}

    def scan(self, query: npt.NDArray[np.float64], threshold: float) -> npt.NDArray[np.int64]:
        """Template ids that may be closer than ``threshold`` to ``query`` (a superset),
        from the index as it is (no refresh)."""
        with self._lock:
            return self._ids[self._scan(np.asarray(query, np.float64), threshold)]

    def _refresh(self, session: Session | scoped_session[Any]) -> _Pulled:
        """Bring the index up to date; returns the session's own uncommitted rows."""
        own_first: int | None = session.info.get(OWN_FIRST_VERSION)
        if (
            tuple(field_cipher().key_ids) != self._keys
            or time.monotonic() - self._loaded_at > RELOAD_SECONDS
        ):
            return self._load(session, own_first)
        clock = session.execute(
            select(FaceTemplateClock.version, FaceTemplateClock.token).where(
                FaceTemplateClock.id == 1
            )
        ).one()
        if own_first is None and (clock.version, clock.token) == (self._version, self._token):
            return _Pulled()
        if clock.version < self._version or not self._knows_history(session):
            return self._load(session, own_first)
        rows = session.execute(
            select(
                FaceTemplate.id,
                FaceTemplate.member_id,
                FaceTemplate.household_id,
                FaceTemplate.encoding,
                FaceTemplate.active,
                FaceTemplate.version,
                FaceTemplate.version_token,
            )
            .where(FaceTemplate.version > self._version)
            .order_by(FaceTemplate.version)
        ).all()
        kept, own = _Pulled(), _Pulled()
        for row in rows:
            if own_first is not None and row.version >= own_first:
                if row.active and _usable(row.encoding):
                    _add_row(own, row)
                continue
            self._version, self._token = row.version, row.version_token
            if row.active and _usable(row.encoding):
                _add_row(kept, row)
            else:
                self._remove(row.id)
        self._apply(kept)
        return own

    def _knows_history(self, session: Session | scoped_session[Any]) -> bool:
        """The last version applied is still in the database with the same token."""
        if self._version == 0:
            return True
        token = session.scalar(
            select(FaceTemplateVersion.token).where(FaceTemplateVersion.version == self._version)
        )
        return token == self._token

    # ------------------------------------------------------------------ search

    def candidates(
        self,
        session: Session | scoped_session[Any],
        queries: Sequence[npt.NDArray[np.float64]],
        threshold: float,
        *,
        exclude_household: int | None = None,
    ) -> list[int]:
        """Template ids of every active template that may be closer than ``threshold``
        to any of ``queries`` (a superset: recheck them), not of ``exclude_household``.
        Brings the index up to date first."""
        with self._lock:
            own = self._refresh(session)
            found: set[int] = set()
            for query in queries:
                rows = self._scan(np.asarray(query, np.float64), threshold)
                if exclude_household is not None:
                    rows = rows[self._households[rows] != exclude_household]
                found.update(int(i) for i in self._ids[rows])
                if own.ids:
                    found.update(_near(own, query, threshold, exclude_household))
            return sorted(found)

    def _scan(self, query64: npt.NDArray[np.float64], threshold: float) -> npt.NDArray[np.intp]:
        if self.n == 0 or threshold <= 0:
            return np.empty(0, np.intp)
        turned = self._transform(query64[None, :])[0]
        q32 = turned.astype(np.float32)
        q = q32.astype(np.float64)
        q_norm2 = float(q @ q)
        q_tail_norm = np.float32(math.sqrt(float(q[HEAD:] @ q[HEAD:])))
        q_head, q_tail = np.ascontiguousarray(q32[:HEAD]), np.ascontiguousarray(q32[HEAD:])
        # Padding: the change of basis and the rounding of the query and of the rows to
        # float32 move a distance by at most 2u(|q| + R) (R: the largest row norm); the
        # float32 dot products, norms and sums below err by at most (D + 4)u(|q| + R)^2
        # each. Both are doubled (and more: 8u for the first).
        scale = math.sqrt(q_norm2) + self._max_norm
        padded = threshold + 8 * _U * scale + 1e-9
        limit = (padded * padded) * (1 + 4 * _U) + 4 * (DIMENSIONS + 16) * _U * scale * scale
        # Keep a row when |x|^2 - 2 (q_head . x_head + |q_tail| |x_tail|) <= limit - |q|^2
        # (the lower bound), then when |x|^2 - 2 (q . x) <= limit - |q|^2 (the distance).
        cut = np.float32(limit - q_norm2)
        hits: list[npt.NDArray[np.intp]] = []
        bound = np.empty(_CHUNK, np.float32)
        dot = np.empty(_CHUNK, np.float32)
        for start in range(0, self.n, _CHUNK):
            end = min(self.n, start + _CHUNK)
            size = end - start
            head_dot = dot[:size]
            np.matmul(self._head[start:end], q_head, out=head_dot)
            low = bound[:size]
            np.multiply(self._tail_norm[start:end], q_tail_norm, out=low)
            low += head_dot
            low *= np.float32(-2)
            low += self._norm2[start:end]
            (maybe,) = np.nonzero(low <= cut)
            if not maybe.size:
                continue
            rows = maybe + start
            full = head_dot[maybe] + self._tail[rows] @ q_tail
            full *= np.float32(-2)
            full += self._norm2[rows]
            hits.append(rows[full <= cut])
        return np.concatenate(hits) if hits else np.empty(0, np.intp)


def _matrix(encodings: Sequence[bytes]) -> npt.NDArray[np.float64]:
    if not encodings:
        return np.empty((0, DIMENSIONS), np.float64)
    return np.frombuffer(b"".join(encodings), dtype=np.float64).reshape(len(encodings), DIMENSIONS)


def _usable(encoding: bytes) -> bool:
    """A 128-d encoding of finite numbers (the scan's exact pass never matches NaN)."""
    if len(encoding) != DIMENSIONS * 8:
        return False
    return bool(np.all(np.isfinite(np.frombuffer(encoding, dtype=np.float64))))


def _add_row(pulled: _Pulled, row: Any) -> None:
    pulled.ids.append(row.id)
    pulled.members.append(row.member_id)
    pulled.households.append(row.household_id)
    pulled.encodings.append(row.encoding)


def _near(
    pulled: _Pulled, query: npt.NDArray[np.float64], threshold: float, exclude: int | None
) -> list[int]:
    """The session's own uncommitted rows, few: every one within a generous margin."""
    distances = np.linalg.norm(_matrix(pulled.encodings) - query, axis=1)
    return [
        i
        for i, h, d in zip(pulled.ids, pulled.households, distances, strict=True)
        if d < threshold + 1e-6 and h != exclude
    ]


_CREATE = threading.Lock()


def face_index() -> FaceIndex:
    """The current app's index in this process (created empty, loaded by the first
    search)."""
    index = current_app.extensions.get("dibao.face_index")
    if index is None:
        with _CREATE:
            index = current_app.extensions.setdefault("dibao.face_index", FaceIndex())
    if not isinstance(index, FaceIndex):
        raise TypeError("app.extensions['dibao.face_index'] is not a FaceIndex")
    return index
