"""Exact Hamming-distance search over 64-bit hashes: multi-index hashing (MIH, Norouzi,
Punjani and Fleet, 2012), its search loop compiled with numba. No Flask, no database.

Each hash is cut into ``m`` substrings (for 64 bits and ``m = 4``: 16 bits each). One
table per substring holds the hashes sorted by that substring, so that a bucket (every
hash sharing that substring) is one contiguous slice, found through a dense offsets
array (or a binary search over the sorted keys when the table is small or wide). By
pigeonhole, a hash whose substrings lie at least ``r_i + 1`` bits from the query's in
every table ``i`` lies at least ``sum(r_i + 1)`` bits away: so after enumerating, in
table ``i``, every key within ``r_i`` bits of the query's substring, every hash within
``sum(r_i + 1) - 1`` bits has been seen. :class:`HammingSearch` widens one table by one
bit per step (round robin), so the radius it guarantees grows by one bit per step, and
the caller can stop as soon as it has what it needs (the nearest few). Every candidate
is checked with the full popcount distance, so what is returned is exact: the same as a
linear scan.

Many queries are searched at once (a photo issues ~940 hashes). A step probes, for each
distinct key of the queries (a photo's crops share many), each bucket of the ring around
it; the probes are sorted by bucket, so the table is read in ascending order and a
bucket that several queries probe is read once; the bucket a few probes ahead is
prefetched. Per probe and query of its key, the bucket's nearest hash by a vectorised
reduction (AVX-512 popcounts where the CPU has them, ~0.2 ns a hash), and only when it
is within ``cap`` a second pass that records the hits. The caller may lower ``cap``
between steps (the resident photo index lowers it to the bound of the nearest
``max_candidates``): hits beyond it are not recorded. Cost model (:func:`search_cost`,
measured at 1 to 5 million random hashes): ~23 ns per probe, ~0.17 ns per hash compared;
:func:`parts_for` picks ``m`` by it: 4 substrings of 16 bits from ~3 million hashes
(buckets of tens of hashes), 5 below, rather than MIH's ~1 hash per bucket (which
multiplies the probes: ~3,600 per query hash at 10 bits with ``m = 3``, ~430 with
``m = 4``). A step with many probes may be split over threads (``threads``): runs of
keys probed at once, the compiled loop releasing the GIL.
"""

from __future__ import annotations

import itertools
import math
import os
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import Any, Final

import numba
import numpy as np
import numpy.typing as npt
from llvmlite import ir  # type: ignore[import-untyped]
from numba.core import cgutils as _cgutils
from numba.extending import intrinsic

__all__ = ["HammingIndex", "HammingSearch", "distances", "parts_for"]

U64 = npt.NDArray[np.uint64]
Positions = npt.NDArray[np.intp]

_DENSE_MAX_BITS: Final = 24
"""A table keeps a dense offsets array (4 bytes per possible key) up to this width."""


def distances(a: U64, b: U64) -> npt.NDArray[np.uint8]:
    """Elementwise Hamming distance (popcount of the XOR)."""
    return np.bitwise_count(np.bitwise_xor(a, b))


PROBE_NS: Final = 23.0
"""The cost model's price of one probe (a query's visit to one bucket: finding it, the
loop's start and end, the cache misses), in ns; with :data:`HASH_NS`, fitted to the
search's time to certify 10 bits for a photo's ~930 query hashes among 5 million random
hashes with 4 and 5 substrings (14.0 and 16.8 ms on the benchmark's machine,
benchmarks/photo_index.py), which it reproduces; at 1 million hashes, 5 substrings
measured 1.5x faster than 4, as it predicts."""
HASH_NS: Final = 0.165
"""... and of one stored hash compared in a bucket (the vectorised loop)."""
TYPICAL_RADIUS: Final = 10
"""The radius a search typically has to certify (the 16 nearest of a photo's ~940 query
hashes among millions of random hashes lie at ~10 bits: docs/field-visits.md)."""


def probes_per_query(parts: int, radius: int) -> int:
    """Buckets one query hash visits for the search to certify ``radius`` bits with
    ``parts`` substrings (round robin: table ``i`` searched to ``r_i``, where
    ``sum(r_i + 1) = radius + 1``)."""
    widths = _widths(parts)
    radii = [-1] * parts
    for step in range(min(radius + 1, 64)):
        radii[step % parts] += 1
    return sum(
        math.comb(w, r) for w, top in zip(widths, radii, strict=True) for r in range(top + 1)
    )


def search_cost(size: int, parts: int, radius: int = TYPICAL_RADIUS) -> float:
    """The cost model: ns per query hash to certify ``radius`` bits among ``size``
    hashes with ``parts`` substrings: per probe a fixed price and the bucket's hashes
    (``size / 2^width`` of them on average)."""
    widths = _widths(parts)
    bucket = size / float(2.0 ** (sum(widths) / parts))
    return probes_per_query(parts, radius) * (PROBE_NS + bucket * HASH_NS)


def parts_for(size: int) -> int:
    """Substrings for ``size`` hashes: the cheapest by :func:`search_cost` (2 to 8).
    In the compiled loop a probe costs about as much as 140 hashes compared in a
    bucket, so the optimum has buckets of tens to a few hundred hashes: 4 substrings
    of 16 bits from 3 to 50 million hashes, 5 of 13 bits at 1 to 2 million (where pure
    MIH's rule, 64 / log2(size), says 3)."""
    return min(range(2, 9), key=lambda parts: search_cost(max(size, 1), parts))


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


def _ctpop(typingctx: object, value: object) -> tuple[object, object]:
    """The CPU's population count of a 64-bit integer (LLVM's ctpop)."""

    def codegen(context: object, builder: Any, signature: object, args: Any) -> Any:
        return builder.ctpop(args[0])

    return numba.types.uint64(numba.types.uint64), codegen


_popcount: Any = intrinsic(_ctpop)


def _prefetch_read(typingctx: object, array: Any, index: Any) -> tuple[object, object]:
    """A hint to the CPU to fetch ``array[index]`` into its caches (LLVM's prefetch:
    read, keep in all levels); no effect on the result, a no-op where unsupported."""

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        byte_ptr = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        cgutils: Any = _cgutils
        prefetch = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(ir.VoidType(), [byte_ptr, i32, i32, i32]),
            "llvm.prefetch.p0i8",
        )
        at = builder.bitcast(builder.gep(data, [args[1]]), byte_ptr)
        builder.call(prefetch, [at, i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return numba.types.void(array, index), codegen


_prefetch: Any = intrinsic(_prefetch_read)


def _compiled(func: Any) -> Any:
    """``numba.njit(nogil=True)``, its machine code cached on disk when numba has
    somewhere to write it: beside this file, in ``NUMBA_CACHE_DIR`` or under the
    user's home. Without any (a read-only install run by a user with no home), numba
    refuses ``cache=True`` when the module is imported; the search then compiles in
    each process at its first use (about 10 s) instead of failing the import
    (docs/operations.md, "The photo-reuse index in each worker")."""
    try:
        return numba.njit(cache=True, nogil=True)(func)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return numba.njit(cache=False, nogil=True)(func)


@_compiled
def _probes_in_order(
    queries: U64, shift: np.uint64, mask: np.uint64, ring: npt.NDArray[np.uint32], buckets: int
) -> U64:
    """Each query's probes (bucket << 32 | query), sorted by bucket then query: by a
    counting sort over the ``buckets`` keys when given (a dense table) and the probes
    are not far fewer than the keys, else a sort."""
    total = len(queries) * len(ring)
    probes = np.empty(total, dtype=np.uint64)
    if buckets == 0 or total * 16 < buckets:
        k = 0
        for qi in range(len(queries)):
            key = (queries[qi] >> shift) & mask
            for flip in ring:
                probes[k] = ((key ^ np.uint64(flip)) << np.uint64(32)) | np.uint64(qi)
                k += 1
        probes.sort()
        return probes
    starts = np.zeros(buckets + 1, dtype=np.int32)
    for qi in range(len(queries)):
        key = (queries[qi] >> shift) & mask
        for flip in ring:
            starts[np.int64(key ^ np.uint64(flip)) + 1] += 1
    for b in range(buckets):
        starts[b + 1] += starts[b]
    for qi in range(len(queries)):
        key = (queries[qi] >> shift) & mask
        for flip in ring:
            bucket = np.int64(key ^ np.uint64(flip))
            probes[starts[bucket]] = (np.uint64(bucket) << np.uint64(32)) | np.uint64(qi)
            starts[bucket] += 1
    return probes


_AHEAD: Final = 16
"""Probes ahead whose bucket is prefetched."""
_STRIDE: Final = 32
"""A bucket is compared in whole multiples of this many hashes (the compiled loop's
stride: 4 x 8 to a 512-bit register); a table is padded by as many."""


@_compiled
def _probe(
    queries: U64,
    groups: npt.NDArray[np.int64],
    shift: np.uint64,
    mask: np.uint64,
    ring: npt.NDArray[np.uint32],
    offsets: npt.NDArray[Any],
    sorted_keys: npt.NDArray[np.uint32],
    sorted_hashes: U64,
    order: npt.NDArray[Any],
    cap: int,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8]]:
    """Every stored hash whose substring is one of ``ring`` away from a query's, within
    ``cap`` bits of that query: (positions, distances; a hash once per query that
    reaches it). ``queries`` are in the order of their substring (the key), the queries
    sharing a key ``queries[groups[g]:groups[g + 1]]``: a key's probes are its group's.
    The probes (bucket, key) are sorted first: the buckets are then read in ascending
    order, each once while in cache for all the queries that probe it (memory, not
    popcounts, is the cost: see the module docstring)."""
    dense = len(offsets) > 0
    probes = _probes_in_order(
        queries[groups[:-1]], shift, mask, ring, len(offsets) - 1 if dense else 0
    )
    found = np.empty(1024, dtype=np.int64)
    dist = np.empty(1024, dtype=np.uint8)
    count = 0
    limit = np.uint64(cap)
    for k in range(len(probes)):
        pair = probes[k]
        # The bucket a few probes ahead fetched while this one is compared: the buckets
        # are far apart in a 40 MB table, each a cache miss otherwise.
        if dense and k + _AHEAD < len(probes):
            upcoming = np.int64(probes[k + _AHEAD] >> np.uint64(32))
            if upcoming != np.int64(probes[k + _AHEAD - 1] >> np.uint64(32)):
                for at in range(np.int64(offsets[upcoming]), np.int64(offsets[upcoming + 1]), 8):
                    _prefetch(sorted_hashes, at)
        bucket = np.int64(pair >> np.uint64(32))
        group = np.int64(pair & np.uint64(0xFFFFFFFF))
        if dense:
            start, end = np.uint64(offsets[bucket]), np.uint64(offsets[bucket + 1])
        else:
            start = np.uint64(np.searchsorted(sorted_keys, bucket, side="left"))
            end = np.uint64(np.searchsorted(sorted_keys, bucket, side="right"))
        # Per query of the key, first the bucket's nearest (a reduction the compiler
        # vectorises), then, rarely, the hits. Unsigned indices and a select, not
        # min(): with a signed index (numba's negative-index wraparound) or min() the
        # loop stays scalar, ~7x slower (1.4 against 0.2 ns per hash). The bucket is
        # read on to a whole number of the vectorised loop's strides (into the next
        # bucket, or the table's padding): no scalar tail, no mispredicted exit. What
        # is read past the bucket are stored hashes too, compared in full: a hit there
        # is a true distance, found again (or not) by its own probe; nothing is missed.
        end = start + ((end - start + np.uint64(_STRIDE - 1)) & ~np.uint64(_STRIDE - 1))
        for qi in range(groups[group], groups[group + 1]):
            q = queries[qi]
            nearest = np.uint64(64)
            for at in range(start, end):
                d = _popcount(sorted_hashes[at] ^ q)
                nearest = d if d < nearest else nearest
            if nearest > limit:
                continue
            size = int(end - start)
            if count + size > len(found):
                grown = max(2 * len(found), count + size)
                found = np.concatenate((found[:count], np.empty(grown - count, dtype=np.int64)))
                dist = np.concatenate((dist[:count], np.empty(grown - count, dtype=np.uint8)))
            # Written for every hash, kept (count advanced) for the hits: no branch.
            for at in range(start, end):
                d = _popcount(sorted_hashes[at] ^ q)
                found[count] = order[at]
                dist[count] = np.uint8(d)
                count += int(d <= limit)
    return found[:count], dist[:count]


_THREAD_PROBES: Final = 20_000
"""A step is split over threads only with at least this many probes per thread (below,
starting a thread costs more than it saves)."""


@cache
def _pool(workers: int, pid: int) -> ThreadPoolExecutor:
    """The process's threads for the steps split over several (created at first use).
    By process id: a child forked after its parent made one (gunicorn's preload) has
    none of its threads, and would wait on them forever."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hamming")


class _Table:
    """The hashes sorted by one substring: ``sorted_hashes[offsets[k]:offsets[k + 1]]``
    is bucket ``k`` (every hash whose substring is ``k``), contiguous; ``order`` maps
    back to positions; both end with ``_STRIDE`` copies of their last entry (padding).
    A table too sparse for a dense offsets array (small or wide) keeps its sorted keys
    instead (``offsets`` then empty), for a binary search."""

    def __init__(self, hashes: U64, shift: int, width: int) -> None:
        self.shift = np.uint64(shift)
        self.width = width
        self.mask = np.uint64((1 << width) - 1)
        keys = self.keys(hashes)
        order = np.argsort(keys, kind="stable")
        small = np.int32 if len(hashes) < 2**31 else np.int64
        # Padded with copies of the last hash (and its position) for the buckets read
        # on past their end (_probe).
        padded = np.concatenate((order, np.full(_STRIDE, order[-1] if len(order) else 0)))
        self.order: npt.NDArray[Any] = padded.astype(small)
        self.sorted_hashes: U64 = hashes[padded] if len(hashes) else np.zeros(_STRIDE, np.uint64)
        sorted_keys = keys[order]
        del keys, order
        if width <= _DENSE_MAX_BITS and len(hashes) >= (1 << width) >> 3:
            self.offsets: npt.NDArray[Any] = np.searchsorted(
                sorted_keys, np.arange((1 << width) + 1, dtype=np.uint32)
            ).astype(small)
            self.sorted_keys = np.zeros(0, dtype=np.uint32)  # the offsets say it all
        else:
            self.offsets = np.zeros(0, dtype=small)
            self.sorted_keys = sorted_keys

    def keys(self, hashes: U64) -> npt.NDArray[np.uint32]:
        return ((hashes >> self.shift) & self.mask).astype(np.uint32)

    @property
    def nbytes(self) -> int:
        arrays = (self.order, self.sorted_hashes, self.sorted_keys, self.offsets)
        return sum(a.nbytes for a in arrays)


class HammingIndex:
    """An immutable MIH index over ``hashes`` (unsigned 64-bit); results are positions
    into ``hashes``. Memory: the hashes once more per table (8 bytes each), the order
    per table (4 bytes each), and either the sorted keys (4 bytes each) or a dense
    offsets array (4 bytes x 2^width: 256 kB for 16 bits). Building sorts each table
    once: about a second per table at 5 million hashes."""

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
        return self.hashes.nbytes + sum(t.nbytes for t in self.tables)

    def search(self, queries: U64, cap: int = 64, threads: int = 1) -> HammingSearch:
        """A widening search for ``queries`` (see :class:`HammingSearch`), each large
        step split over up to ``threads`` threads."""
        return HammingSearch(self, queries, cap, threads)

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

    def __init__(self, index: HammingIndex, queries: U64, cap: int = 64, threads: int = 1) -> None:
        self.index = index
        self.cap = cap
        self.threads = max(1, threads)
        self.queries: U64 = np.unique(np.asarray(queries, dtype=np.uint64))
        # Per table, the queries in the order of their substring: queries sharing a
        # bucket probe it one after the other (it is then in cache).
        self._by_key: list[tuple[U64, npt.NDArray[np.int64]]] = []
        for t in index.tables:
            by_key = self.queries[np.argsort(t.keys(self.queries), kind="stable")]
            keys = t.keys(by_key)
            firsts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
            groups = np.append(firsts, len(by_key)).astype(np.int64)
            self._by_key.append((by_key, groups))
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

    def _chunks(self, probes: int) -> int:
        """Threads for a step of this many probes: one below ``_THREAD_PROBES`` each."""
        return max(1, min(self.threads, probes // _THREAD_PROBES))

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
        queries, groups = self._by_key[i]
        chunks = self._chunks((len(groups) - 1) * len(ring))
        args: tuple[Any, ...] = (
            table.shift,
            table.mask,
            ring,
            table.offsets,
            table.sorted_keys,
            table.sorted_hashes,
            table.order,
            self.cap,
        )
        if chunks == 1:
            positions, dist = _probe(queries, groups, *args)
        else:
            # Runs of keys (their probes overlap least), each probed on its own thread
            # (the compiled loop releases the GIL), this one's too.
            bounds = np.linspace(0, len(groups) - 1, chunks + 1).astype(np.intp)
            runs = [
                (queries[groups[a] : groups[b]], groups[a : b + 1] - groups[a])
                for a, b in itertools.pairwise(bounds)
            ]
            pool = _pool(chunks - 1, os.getpid())
            others = [pool.submit(_probe, *run, *args) for run in runs[1:]]
            parts_found = [_probe(*runs[0], *args)]
            parts_found += [f.result() for f in others]
            positions = np.concatenate([p for p, _ in parts_found])
            dist = np.concatenate([d for _, d in parts_found])
        if len(positions):
            self._positions.append(positions)
            self._distances.append(dist)

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
