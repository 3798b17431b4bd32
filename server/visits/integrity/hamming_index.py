"""Exact Hamming-distance search over 64-bit hashes: multi-index hashing (MIH, Norouzi,
Punjani and Fleet, 2012). Pure numpy: no Flask, no database.

Each hash is cut into ``m`` substrings (for 64 bits and ``m = 3``: 22, 21 and 21 bits).
One table per substring holds the positions of the hashes sorted by that substring
(``argsort``), with a dense offsets array (bucket ``k`` is ``offsets[k]:offsets[k+1]``)
when the table is full enough, else ``searchsorted``. By pigeonhole, a hash whose
substrings lie at least ``r_i + 1`` bits from the query's in every table ``i`` lies at
least ``sum(r_i + 1)`` bits away: so after enumerating, in table ``i``, every key within
``r_i`` bits of the query's substring, every hash within ``sum(r_i + 1) - 1`` bits has
been seen. :class:`HammingSearch` widens one table by one bit per step (round robin),
so the radius it guarantees grows by one bit per step, and the caller can stop as soon
as it has what it needs (the nearest few). Every candidate is checked with the full
popcount distance, so what is returned is exact: the same as a linear scan.

Many queries are searched at once (a photo issues ~940 hashes): each step is one
vectorised pass over all queries' neighbourhoods.
"""

from __future__ import annotations

import itertools
import math
from functools import cache
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = ["HammingIndex", "HammingSearch", "distances", "parts_for"]

U64 = npt.NDArray[np.uint64]
Positions = npt.NDArray[np.intp]

_DENSE_MAX_BITS: Final = 24
"""A table keeps a dense offsets array (4 bytes per possible key) up to this width."""


def distances(a: U64, b: U64) -> npt.NDArray[np.uint8]:
    """Elementwise Hamming distance (popcount of the XOR)."""
    return np.bitwise_count(np.bitwise_xor(a, b))


def parts_for(size: int) -> int:
    """Substrings for ``size`` hashes: about 64 / log2(size) (MIH's optimum: a bucket
    then holds about one hash), at least 2 and at most 8."""
    if size < 4:
        return 8
    return max(2, min(8, round(64 / math.log2(size))))


def _widths(parts: int) -> tuple[int, ...]:
    base, extra = divmod(64, parts)
    return tuple(base + 1 if i < extra else base for i in range(parts))


@cache
def _ring(width: int, radius: int) -> npt.NDArray[np.uint32]:
    """Every ``width``-bit key with exactly ``radius`` bits set."""
    if radius > width:
        return np.zeros(0, dtype=np.uint32)
    values = [sum(1 << b for b in bits) for bits in itertools.combinations(range(width), radius)]
    return np.array(values, dtype=np.uint32)


class _Table:
    """The hashes sorted by one substring."""

    def __init__(self, hashes: U64, shift: int, width: int) -> None:
        self.shift = np.uint64(shift)
        self.width = width
        self.mask = np.uint64((1 << width) - 1)
        keys = self.keys(hashes)
        order = np.argsort(keys, kind="stable")
        small = np.int32 if len(hashes) < 2**31 else np.int64
        self.order = order.astype(small)
        self.sorted_keys: npt.NDArray[np.uint32] | None = keys[order]
        self.sorted_hashes: U64 = hashes[order]
        self.offsets: npt.NDArray[np.signedinteger] | None = None
        if width <= _DENSE_MAX_BITS and len(hashes) >= (1 << width) >> 3:
            self.offsets = np.searchsorted(
                keys[order], np.arange((1 << width) + 1, dtype=np.uint32)
            ).astype(small)
            self.sorted_keys = None  # the offsets say it all

    def keys(self, hashes: U64) -> npt.NDArray[np.uint32]:
        return ((hashes >> self.shift) & self.mask).astype(np.uint32)

    def buckets(
        self, probes: npt.NDArray[np.uint32]
    ) -> tuple[npt.NDArray[np.signedinteger], npt.NDArray[np.signedinteger]]:
        """Start and end (in sorted order) of each probe key's bucket."""
        if self.offsets is not None:
            return self.offsets[probes], self.offsets[probes.astype(np.int64) + 1]
        keys = self.sorted_keys if self.sorted_keys is not None else np.zeros(0, np.uint32)
        start = np.searchsorted(keys, probes, side="left").astype(np.int64)
        end = np.searchsorted(keys, probes, side="right").astype(np.int64)
        return start, end


class HammingIndex:
    """An immutable MIH index over ``hashes`` (unsigned 64-bit); results are positions
    into ``hashes``. Memory: the hashes once more per table (8 bytes each), the order
    per table (4 bytes each), and either the sorted keys (4 bytes each) or a dense
    offsets array (4 bytes x 2^width: 16 MB for 22 bits). Building sorts each table once:
    about a second per table at 10 million hashes."""

    def __init__(self, hashes: U64, parts: int | None = None) -> None:
        self.hashes: U64 = np.ascontiguousarray(hashes, dtype=np.uint64)
        self.parts = parts_for(len(self.hashes)) if parts is None else parts
        if not 1 <= self.parts <= 32:
            raise ValueError("parts must be between 1 and 32")
        self.widths = _widths(self.parts)
        tables = []
        shift = 64
        for width in self.widths:
            shift -= width
            tables.append(_Table(self.hashes, shift, width))
        self.tables: tuple[_Table, ...] = tuple(tables)

    def __len__(self) -> int:
        return len(self.hashes)

    @property
    def nbytes(self) -> int:
        total = self.hashes.nbytes
        for t in self.tables:
            total += t.order.nbytes + t.sorted_hashes.nbytes
            total += 0 if t.sorted_keys is None else t.sorted_keys.nbytes
            total += 0 if t.offsets is None else t.offsets.nbytes
        return total

    def search(self, queries: U64, cap: int = 64) -> HammingSearch:
        """A widening search for ``queries`` (see :class:`HammingSearch`)."""
        return HammingSearch(self, queries, cap)

    def within(self, queries: U64, radius: int) -> tuple[Positions, npt.NDArray[np.intp]]:
        """Every stored hash within ``radius`` bits of any query: (positions, smallest
        distance), positions ascending."""
        search = self.search(queries, radius)
        search.widen_to(radius)
        return search.found(radius)


class HammingSearch:
    """A search of ``queries`` in an index, widened step by step. After each step every
    stored hash within :attr:`guaranteed` bits of some query has been found, with its
    smallest distance to the queries. Hits farther than ``cap`` bits are dropped as
    they are found (they are never asked for)."""

    def __init__(self, index: HammingIndex, queries: U64, cap: int = 64) -> None:
        self.index = index
        self.cap = cap
        self.queries: U64 = np.unique(np.asarray(queries, dtype=np.uint64))
        self.radii = [-1] * index.parts
        self._steps = 0
        self._positions: list[Positions] = []
        self._distances: list[npt.NDArray[np.uint8]] = []

    @property
    def guaranteed(self) -> int:
        """Every stored hash within this many bits of a query has been found."""
        if len(self.index) == 0 or len(self.queries) == 0:
            return 64
        return min(64, sum(r + 1 for r in self.radii) - 1)

    def widen_to(self, radius: int) -> None:
        while self.guaranteed < radius:
            self.step()

    def step(self) -> None:
        """Widen the next table by one bit: ``guaranteed`` grows by one."""
        if self.guaranteed >= 64:
            return
        parts = self.index.parts
        i = self._steps % parts
        while self.radii[i] >= self.index.widths[i]:
            i = (i + 1) % parts
        self._steps += 1
        self.radii[i] += 1
        table = self.index.tables[i]
        ring = _ring(table.width, self.radii[i])
        probes = (table.keys(self.queries)[:, None] ^ ring[None, :]).ravel()
        start, end = table.buckets(probes)
        counts = end - start
        nonempty = counts > 0
        if not nonempty.any():
            return
        # Each hit: its place in the table's order and the query hash that probed it.
        prober = np.repeat(self.queries, len(ring))[nonempty]
        start, counts = start[nonempty], counts[nonempty]
        total = int(counts.sum())
        first = np.repeat(start - (np.cumsum(counts) - counts), counts)
        place = first + np.arange(total, dtype=first.dtype)
        dist = distances(table.sorted_hashes[place], np.repeat(prober, counts))
        near = dist <= self.cap
        self._positions.append(table.order[place[near]].astype(np.intp))
        self._distances.append(dist[near])

    def found(self, radius: int | None = None) -> tuple[Positions, npt.NDArray[np.intp]]:
        """The stored hashes found within ``radius`` bits (default: ``guaranteed``) of
        a query: (positions ascending, smallest distance). Complete up to
        ``guaranteed``; a hash farther than that may be missing."""
        limit = self.guaranteed if radius is None else radius
        if not self._positions:
            return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
        positions = np.concatenate(self._positions)
        dist = np.concatenate(self._distances)
        self._positions, self._distances = [positions], [dist]
        keep = dist <= limit
        positions, dist = positions[keep], dist[keep]
        if len(positions) == 0:
            return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
        order = np.lexsort((dist, positions))
        positions, dist = positions[order], dist[order]
        first = np.ones(len(positions), dtype=np.bool_)
        first[1:] = positions[1:] != positions[:-1]
        return positions[first].astype(np.intp), dist[first].astype(np.intp)
