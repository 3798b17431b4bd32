"""The photo-reuse index at scale (issue 19, item 3): a new photo's reuse candidates
from the resident multi-index hashing index (server/visits/photo_hash_index.py) against
the linear scan it replaced (photo_match.nearest), on the same stored hashes and the
same query hashes, in the same run. A script that prints figures, not a test.

In memory, no database: ``--hashes`` stored rows (half ``full``, half ``centre``: one
photo each), uniformly random 64-bit hashes, plus the real stored hashes of each query
picture cut and turned (a reuse to find). Random hashes are the index's best case
(buckets all the same size) and the worst for stopping early (no cluster fills the
nearest few). ``--clustered``: real pHashes cluster, so the stored hashes are drawn
around ``--centres`` centres instead (a few hundred of them the real hashes of other
drawn village houses, the same kind of picture as the queries, the rest random), each
with 0 to 10 random bits flipped: uneven buckets (a centre's hashes share substrings),
and the queries land near crowds. The query pictures are drawn village houses
(tests/visits/photo_scenes.py); each check issues what integrity_flags issues: the
picture's ``query_hashes`` (8 ``full`` and ~930 ``centre`` hashes), radius
``candidate_hamming`` (14), the nearest ``max_candidates`` (16). The index part reads
no rows back from the table (``_search``, what ``nearest`` does under its lock).

Prints: the load average, the build (wall and CPU s, the index's bytes), per check
the wall and CPU milliseconds (median, p95) and the radius it stopped at, the linear
scan's for the first ``--linear`` checks (and how many found the same candidates),
peak RSS. ``--threads``: threads a search may split its large steps over
(PhotoHashIndex(threads=); the resident index uses 1).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/photo_index.py [--hashes 10000000]
        [--photos 30] [--linear 2] [--parts 4] [--threads 1] [--seed 1]
        [--clustered [--centres 4000]]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from server.visits.integrity.photo_match import (  # noqa: E402
    PhotoRules,
    StoredHashes,
    nearest,
    query_hashes,
    stored_hashes,
)
from server.visits.photo_hash_index import PhotoHashIndex, _Rows  # noqa: E402
from tests.visits.photo_scenes import brick_house, crop  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def p95(values: list[float]) -> float:
    return sorted(values)[max(0, round(0.95 * len(values)) - 1)]


def around(rng: np.random.Generator, centres: np.ndarray, count: int) -> np.ndarray:
    """``count`` hashes, each a random centre with 0 to 10 random bits flipped (a bit
    drawn twice flips once: a few fewer)."""
    out = centres[rng.integers(0, len(centres), size=count)]
    flips = rng.integers(0, 11, size=count)
    for k in range(10):
        bit = rng.integers(0, 64, size=count).astype(np.uint64)
        out ^= np.where(flips > k, np.uint64(1) << bit, np.uint64(0))
    return out


def clustered(
    rng: np.random.Generator, photos: int, centres: int, real: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per kind, ``photos`` hashes around ``centres`` centres, ``real`` of them the
    stored hashes of drawn houses other than the query pictures (seeds from 10,000)."""
    real = min(real, centres)
    houses = [stored_hashes(brick_house(10_000 + seed)) for seed in range(real)]
    out = []
    for kind in ("full", "centre"):
        own = np.array([h[kind] for h in houses], dtype=np.int64).view(np.uint64)
        more = rng.integers(0, 2**64, size=centres - real, dtype=np.uint64)
        out.append(around(rng, np.concatenate([own, more]), photos))
    return out[0], out[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hashes", type=int, default=10_000_000)
    parser.add_argument("--photos", type=int, default=30, help="checks timed")
    parser.add_argument("--linear", type=int, default=2, help="of them also by linear scan")
    parser.add_argument("--parts", type=int, default=None, help="MIH substrings (default: by size)")
    parser.add_argument("--threads", type=int, default=1, help="threads a search may use")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--clustered", action="store_true", help="hashes around centres")
    parser.add_argument("--centres", type=int, default=4000)
    parser.add_argument("--real-centres", type=int, default=200, help="of them drawn houses'")
    args = parser.parse_args()
    rules = PhotoRules()
    rng = np.random.default_rng(args.seed)

    t0 = time.perf_counter()
    pictures = [brick_house(seed) for seed in range(args.photos)]
    queries = [query_hashes(p) for p in pictures]
    # The reused photos to find: each picture's cut and turned copy, as stored.
    planted = [
        stored_hashes(crop(p, left=0.08, bottom=0.05).transpose(Image.Transpose.ROTATE_90))
        for p in pictures
    ]
    photos = args.hashes // 2
    if args.clustered:
        full, centre = clustered(rng, photos, args.centres, args.real_centres)
    else:
        full = rng.integers(0, 2**64, size=photos, dtype=np.uint64)
        centre = rng.integers(0, 2**64, size=photos, dtype=np.uint64)
    where = rng.choice(photos, size=len(planted), replace=False)
    for at, hashes in zip(where, planted, strict=True):
        full[at] = np.array([hashes["full"]], dtype=np.int64).view(np.uint64)[0]
        centre[at] = np.array([hashes["centre"]], dtype=np.int64).view(np.uint64)[0]
    photo_ids = np.arange(1, photos + 1, dtype=np.int64)
    households = photo_ids  # one photo per household
    rows = {
        "full": _Rows(photo_ids * 2 - 1, photo_ids, households, full),
        "centre": _Rows(photo_ids * 2, photo_ids, households, centre),
    }
    what = (
        f"clustered around {args.centres:,} centres ({args.real_centres} real)"
        if args.clustered
        else "uniformly random"
    )
    print(f"load average at the start {os.getloadavg()[0]:.1f}")
    print(
        f"setup: {args.hashes:,} hashes ({photos:,} photos, {what}), {args.photos} query pictures "
        f"({np.mean([len(q.full) + len(q.centre) for q in queries]):.0f} query hashes each): "
        f"{time.perf_counter() - t0:.1f} s"
    )

    index = PhotoHashIndex(parts=args.parts, threads=args.threads)
    t0, c0 = time.perf_counter(), time.process_time()
    index.load_rows(rows)
    build_wall, build_cpu = time.perf_counter() - t0, time.process_time() - c0
    parts = index._main["centre"].index.parts
    print(
        f"build: {build_wall:.1f} s wall, {build_cpu:.1f} s CPU; {parts} substrings "
        f"({', '.join(map(str, index._main['centre'].index.widths))} bits); "
        f"index {index.nbytes / 2**20:,.0f} MiB; peak RSS so far {peak_rss_mb():,.0f} MB"
    )

    # The compiled search loop: loaded from numba's cache (compiled the first time).
    t0 = time.perf_counter()
    index._search(queries[0], rules.candidate_hamming, rules.max_candidates, 0, 0)
    print(f"first search (the compiled loop loaded): {time.perf_counter() - t0:.1f} s")

    walls, cpus, found = [], [], []
    for q in queries:
        t0, c0 = time.perf_counter(), time.process_time()
        got, _ = index._search(q, rules.candidate_hamming, rules.max_candidates, 0, 0)
        walls.append((time.perf_counter() - t0) * 1000)
        cpus.append((time.process_time() - c0) * 1000)
        found.append(got)
    reach = [max(c.distance for c in got) if got else -1 for got in found]
    hits = sum(
        1 for got, at in zip(found, where, strict=True) if int(at) + 1 in [c.photo_id for c in got]
    )
    print(
        f"index, per photo ({len(queries)} checks): wall median {statistics.median(walls):.0f} ms, "
        f"p95 {p95(walls):.0f} ms; CPU median {statistics.median(cpus):.0f} ms, "
        f"p95 {p95(cpus):.0f} ms; 16th candidate at {min(reach)}-{max(reach)} bits; "
        f"reused copy among the candidates: {hits}/{len(queries)}"
    )

    if args.linear:
        stored = StoredHashes(
            np.concatenate([photo_ids, photo_ids]),  # type: ignore[arg-type]
            np.array(["full"] * photos + ["centre"] * photos),  # type: ignore[arg-type]
            np.concatenate([full, centre]).view(np.int64),  # type: ignore[arg-type]
        )
        lwalls, lcpus, same = [], [], 0
        for q, got in list(zip(queries, found, strict=True))[: args.linear]:
            t0, c0 = time.perf_counter(), time.process_time()
            expected = nearest(q, stored, rules.candidate_hamming, rules.max_candidates)
            lwalls.append((time.perf_counter() - t0) * 1000)
            lcpus.append((time.process_time() - c0) * 1000)
            same += expected == got
        print(
            f"linear scan, per photo ({len(lwalls)} checks): wall median "
            f"{statistics.median(lwalls):,.0f} ms; CPU median {statistics.median(lcpus):,.0f} ms; "
            f"same candidates as the index: {same}/{len(lwalls)}"
        )
    print(f"peak RSS {peak_rss_mb():,.0f} MB; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
