"""Benchmark: the resident 1:N face index (server/faces/index.py) against the old
brute-force search (decrypt every template, scan them all), in the same run.

(a) Search, no database: for each --templates size, synthetic 128-d templates like
    dlib's (a common offset, an uneven spread over the axes, norm about 1; seeded),
    each encrypted as the column stores it. The index is built from them
    (`FaceIndex.build`: build seconds, the arrays' bytes, RSS before and after). A query
    is one enrollment: the face as taken and mirrored (two encodings 0.15 apart); a
    quarter of the queries are near copies of a stored template, so there are matches.
    Index: --queries queries, `FaceIndex.scan` of both encodings plus the float64
    recheck of the candidates (`face_match.search`, as the app does after reading
    them again), median and p95 wall ms and CPU ms. Old path: for --old-queries of the
    same queries, decrypt every template (`FieldCipher.decrypt_bytes`, what the
    EncryptedBytes column does per row), join them into a float64 array and
    `face_match.search` both encodings (what `other_household_distances_brute_force`
    does after its SELECT). Every old-path query's matches must equal the index's
    (template id -> distance), or the script fails.
(b) End to end, PostgreSQL: --db-templates encrypted templates in a fresh database
    `dibao_face19_bench` (dropped at the end; foreign keys off for the bulk insert:
    the rows point at one member), then in the app: the first search (a full load from
    the database: SELECT, decrypt, build), an enrollment's search with nothing new, one
    new template written and the next search (a pull), and
    `other_household_distances_brute_force` on the same query.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/face_index.py \\
        [--templates 100000,1000000] [--queries 200] [--old-queries 3] \\
        [--db-templates 100000] [--database-server postgresql://postgres@127.0.0.1:5432]

OPENBLAS_NUM_THREADS is set to 1 by the script itself when unset (one core per search,
as a worker has). Peak RSS is the process's (resource.getrusage), which includes the
old path's decrypted copy, so the index's own size is given as array bytes and as the
RSS growth while building.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import base64
import resource
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from server.crypto import FieldCipher  # noqa: E402
from server.faces.index import FaceIndex  # noqa: E402
from server.visits.integrity import face_match  # noqa: E402

T = TypeVar("T")
CONTEXT = "face_templates.encoding"
THRESHOLD = 0.55  # review_below: the widest band the app searches
DB_NAME = "dibao_face19_bench"


def timed(func: Callable[[], T]) -> tuple[float, float, T]:
    """(wall seconds, CPU seconds, result)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = func()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def faces(rng: np.random.Generator, count: int) -> npt.NDArray[np.float64]:
    offset = np.linspace(-0.12, 0.12, 128)
    spread = np.linspace(0.02, 0.11, 128)
    out = np.empty((count, 128), np.float64)
    for start in range(0, count, 100_000):
        end = min(count, start + 100_000)
        out[start:end] = offset + rng.standard_normal((end - start, 128)) * spread
    return out


def queries_for(
    rng: np.random.Generator, stored: npt.NDArray[np.float64], count: int
) -> list[list[npt.NDArray[np.float64]]]:
    """Each: [as taken, mirrored]; every fourth a near copy of a stored template."""
    fresh = faces(rng, count)
    out = []
    for i in range(count):
        taken = fresh[i]
        if i % 4 == 0:
            noise = rng.standard_normal(128)
            taken = stored[int(rng.integers(len(stored)))] + noise / np.linalg.norm(noise) * 0.3
        noise = rng.standard_normal(128)
        out.append([taken, taken + noise / np.linalg.norm(noise) * 0.15])
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def index_query(
    index: FaceIndex, tokens: list[bytes], cipher: FieldCipher, query: list[Any]
) -> dict[int, float]:
    """The index's candidates, read again (decrypted) and measured as the app does."""
    ids = sorted({int(i) for q in query for i in index.scan(q, THRESHOLD)})
    encodings = [cipher.decrypt_bytes(tokens[i], CONTEXT) for i in ids]
    found = face_match.search(query, encodings, THRESHOLD)
    return {ids[row]: d for row, d in found.items()}


def old_query(tokens: list[bytes], cipher: FieldCipher, query: list[Any]) -> dict[int, float]:
    encodings = [cipher.decrypt_bytes(t, CONTEXT) for t in tokens]
    found = face_match.search(query, encodings, THRESHOLD)
    return dict(found)


def search_run(size: int, queries: int, old_queries: int, cipher: FieldCipher) -> None:
    rng = np.random.default_rng(size)
    stored = faces(rng, size)
    wall, cpu, tokens = timed(
        lambda: [cipher.encrypt_bytes(row.tobytes(), CONTEXT) for row in stored]
    )
    print(f"\n{size:,} templates (encrypted in {wall:.1f} s)")
    asked = queries_for(rng, stored, queries)
    before = rss_mb()
    index = FaceIndex()
    ids = list(range(size))
    wall, cpu, _ = timed(lambda: index.build(stored, ids, ids, ids))
    grown = rss_mb() - before
    print(
        f"  index build         {wall:8.2f} s wall {cpu:8.2f} s CPU   arrays"
        f" {index.nbytes / 1e6:,.0f} MB"
        f" ({index.nbytes / size:.0f} B/template), RSS +{grown:,.0f} MB"
    )
    walls, cpus, results = [], [], []
    for query in asked:
        w, c, found = timed(lambda q=query: index_query(index, tokens, cipher, q))  # type: ignore[misc]
        walls.append(w * 1000)
        cpus.append(c * 1000)
        results.append(found)
    matched = sum(bool(r) for r in results)
    print(
        f"  index query         median {statistics.median(walls):7.1f} ms wall"
        f" {statistics.median(cpus):7.1f} ms CPU; p95 {pct(walls, 0.95):7.1f} ms wall"
        f" {pct(cpus, 0.95):7.1f} ms CPU  ({len(asked)} queries, {matched} with matches)"
    )
    walls, cpus = [], []
    for i, query in enumerate(asked[:old_queries]):
        w, c, found = timed(lambda q=query: old_query(tokens, cipher, q))  # type: ignore[misc]
        walls.append(w * 1000)
        cpus.append(c * 1000)
        if found != results[i]:
            raise SystemExit(f"query {i}: the index found {results[i]}, the old path {found}")
    print(
        f"  old path query      median {statistics.median(walls):7.1f} ms wall"
        f" {statistics.median(cpus):7.1f} ms CPU  ({len(walls)} queries, same matches)"
    )
    print(f"  peak RSS so far     {peak_mb():,.0f} MB")


def db_run(server: str, size: int, data_key: str) -> None:
    import psycopg
    from flask_migrate import upgrade
    from psycopg import sql

    from server import create_app
    from server.extensions import db
    from server.faces.engine import MODEL_NAME
    from server.faces.index import face_index
    from server.faces.models import FaceTemplate
    from server.visits import faces as visit_faces

    admin = f"{server}/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(DB_NAME)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DB_NAME)))
    try:
        with tempfile.TemporaryDirectory() as instance:
            app = create_app(
                {
                    "DATABASE_URL": f"{server}/{DB_NAME}",
                    "SECRET_KEY": secrets.token_urlsafe(32),
                    "DIBAO_DATA_KEY": data_key,
                    "DIBAO_INSTANCE_PATH": instance,
                }
            )
            with app.app_context():
                upgrade(directory=app.extensions["migrate"].directory)
                cipher: FieldCipher = app.extensions["dibao.cipher"]
                rng = np.random.default_rng(7)
                stored = faces(rng, size)
                started = time.perf_counter()
                with psycopg.connect(f"{server}/{DB_NAME}") as conn:
                    conn.execute("SET session_replication_role = replica")  # no FK checks
                    with conn.cursor().copy(
                        "COPY face_templates (member_id, household_id, encoding, model_name,"
                        " model_version, active, created_at) FROM STDIN"
                    ) as copy:
                        for i, row in enumerate(stored):
                            token = cipher.encrypt_bytes(row.tobytes(), CONTEXT)
                            copy.write_row(
                                (1, i + 1, token, MODEL_NAME, "bench", True, "2026-12-06T00:00Z")
                            )
                print(
                    f"\nPostgreSQL, {size:,} encrypted templates"
                    f" (written in {time.perf_counter() - started:.1f} s)"
                )
                query = [stored[5] + 0.01, stored[5] - 0.01]
                threshold = 0.55

                def index_search() -> dict[int, float]:
                    result = visit_faces.other_household_distances(query, -1, MODEL_NAME, threshold)
                    db.session.rollback()
                    return result

                def old_search() -> dict[int, float]:
                    result = visit_faces.other_household_distances_brute_force(
                        query, -1, MODEL_NAME, threshold
                    )
                    db.session.rollback()
                    return result

                before = rss_mb()
                wall, cpu, first = timed(index_search)
                print(
                    f"  first search (full load) {wall:7.2f} s wall {cpu:7.2f} s CPU,"
                    f" RSS +{rss_mb() - before:,.0f} MB, loads {face_index().loads}"
                )
                runs = [timed(index_search) for _ in range(20)]
                median_wall = statistics.median(r[0] for r in runs) * 1000
                median_cpu = statistics.median(r[1] for r in runs) * 1000
                print(
                    f"  search, nothing new     median {median_wall:7.1f} ms wall"
                    f" {median_cpu:7.1f} ms CPU (20 searches)"
                )
                db.session.execute(sql_text("SET session_replication_role = replica"))
                db.session.add(
                    FaceTemplate(
                        member_id=1,
                        household_id=size + 1,
                        encoding=(stored[5] + 0.02).tobytes(),
                        model_name=MODEL_NAME,
                        model_version="bench",
                    )
                )
                db.session.commit()
                wall, cpu, after = timed(index_search)
                print(
                    f"  search after 1 new row  {wall * 1000:7.1f} ms wall {cpu * 1000:7.1f} ms CPU"
                    f" (a pull; loads {face_index().loads}, matches {len(first)} -> {len(after)})"
                )
                wall, cpu, old = timed(old_search)
                if old != after:
                    raise SystemExit(f"index {after} != brute force {old}")
                print(
                    f"  old path (brute force)  {wall * 1000:7.1f} ms wall {cpu * 1000:7.1f} ms CPU"
                    " (same matches)"
                )
            with app.app_context():
                db.engine.dispose()
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DB_NAME))
            )


def sql_text(statement: str) -> Any:
    from sqlalchemy import text

    return text(statement)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--templates", default="100000,1000000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--old-queries", type=int, default=3)
    parser.add_argument("--db-templates", type=int, default=100_000, help="0: skip (b)")
    parser.add_argument("--database-server", default="postgresql://postgres@127.0.0.1:5432")
    args = parser.parse_args()
    print(
        f"OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}, load average"
        f" {' '.join(f'{x:.1f}' for x in os.getloadavg())}, threshold {THRESHOLD}"
    )
    data_key = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    cipher = FieldCipher(base64.urlsafe_b64decode(data_key))
    for size in (int(s) for s in args.templates.split(",")):
        search_run(size, args.queries, args.old_queries, cipher)
    if args.db_templates:
        db_run(args.database_server, args.db_templates, data_key)
    print(
        f"\npeak RSS {peak_mb():,.0f} MB; load average at the end"
        f" {' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )


if __name__ == "__main__":
    main()
