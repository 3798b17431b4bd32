"""Benchmark: a tablet polling GET /api/v1/visits/due, full answer (200) and
revalidation (If-None-Match, 304), new code against main before the change (issue 19,
item 4), in the same run on the same database.

For each ``--visits`` count N: a fresh PostgreSQL database (``dibao_due19_<pid>_<N>``,
dropped at the end), ``dibao db upgrade``, ``dibao seed --households 6N --seed 1``
(households with 1-6 members), then SQL makes the township with most households
hold exactly N visits due for its caseworker (N households ``accepted``, the rest of
the township ``surveyed``, so not due; no proof-of-life months, no revisits).
Setup is timed and printed, not part of the figures.

Then two child processes, one after the other, each a Flask test client in process
(no HTTP server: the figures are the application's own cost):

    new   this tree
    old   main at ad334d1 (``git archive ad334d1`` into a temporary folder, imported
          through PYTHONPATH)

Each logs the caseworker's tablet in (not measured), makes one unmeasured request,
then ``--requests`` requests without If-None-Match (200) and ``--requests`` with the
ETag of the last answer (304 when the list is unchanged; the old code answers 304 too,
but only after building and hashing the whole list). Per request: wall ms, CPU ms
(``time.process_time``, the child's own CPU: the database server's is not in it) and
values decrypted (``FieldCipher.decrypt_bytes`` wrapped in the child, the same hook in
both trees). Printed: median and p95 of wall and CPU, decryptions per request, whether
both trees sent byte-identical 200 bodies, and each child's peak RSS (``os.wait4``).

    .venv/bin/python benchmarks/visits_due.py [--visits 500,5000] [--requests 7]
        [--database-server postgresql://postgres@127.0.0.1:5432] [--old-commit ad334d1]

A script, not a test: it exits 0 whatever the figures, non-zero when the setup fails,
a request answers an unexpected status, or the two trees' lists differ.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432"
OLD_COMMIT = "ad334d1"
PASSWORD = "bench-visits-due-password"  # noqa: S105  set for the run on a benchmark database


# --------------------------------------------------------------------------- child


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def child(tree: str, username: str, requests: int) -> None:
    """Runs in a child process with PYTHONPATH set to the tree under test."""
    import hashlib

    import server
    from server import create_app
    from server.crypto import FieldCipher

    if not Path(server.__file__).resolve().is_relative_to(Path(tree).resolve()):
        raise SystemExit(f"imported {server.__file__}, not the tree {tree}")
    decrypted = [0]
    original = FieldCipher.decrypt_bytes

    def counted(self: FieldCipher, token: bytes, context: str) -> bytes:
        decrypted[0] += 1
        return original(self, token, context)

    FieldCipher.decrypt_bytes = counted  # type: ignore[method-assign]
    app = create_app()
    client = app.test_client()
    login = client.post(
        "/api/v1/auth/device-tokens",
        json={"username": username, "password": PASSWORD, "device_id": "bench-tablet"},
    )
    if login.status_code != 201:
        raise SystemExit(f"login failed: {login.status_code} {login.get_data(as_text=True)}")
    bearer = {"Authorization": f"Bearer {login.get_json()['token']}"}

    def call(headers: dict[str, str], expect: int) -> tuple[float, float, int, Any]:
        before = decrypted[0]
        cpu = time.process_time()
        wall = time.perf_counter()
        response = client.get("/api/v1/visits/due", headers=headers)
        wall_ms = (time.perf_counter() - wall) * 1000
        cpu_ms = (time.process_time() - cpu) * 1000
        if response.status_code != expect:
            raise SystemExit(f"expected {expect}, got {response.status_code}")
        return wall_ms, cpu_ms, decrypted[0] - before, response

    *_, first = call(bearer, 200)
    figures: dict[str, Any] = {
        "items": len(first.get_json()["items"]),
        "body_sha256": hashlib.sha256(first.data).hexdigest(),
    }
    etag = first.headers["ETag"]
    for label, headers, expect in (
        ("200", bearer, 200),
        ("304", {**bearer, "If-None-Match": etag}, 304),
    ):
        runs = [call(headers, expect) for _ in range(requests)]
        walls = [r[0] for r in runs]
        cpus = [r[1] for r in runs]
        figures[label] = {
            "wall_median": statistics.median(walls),
            "wall_p95": _p95(walls),
            "cpu_median": statistics.median(cpus),
            "cpu_p95": _p95(cpus),
            "decryptions": statistics.median(r[2] for r in runs),
        }
    print(json.dumps(figures))


# --------------------------------------------------------------------------- parent


def with_database(server: str, name: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    return urlunsplit(urlsplit(server)._replace(path=f"/{name}"))


@contextmanager
def database(server: str, name: str) -> Iterator[str]:
    admin = with_database(server, "postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_database(server, name)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def run(args: list[str], env: dict[str, str]) -> tuple[str, float, float]:
    """Run a child; its stdout, wall seconds and own peak RSS (MB)."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(args[:4])} ... failed:\n{(stdout + stderr)[-4000:]}")
    return stdout, seconds, usage.ru_maxrss / 1024


def dibao(tree: Path, *args: str, env: dict[str, str]) -> float:
    _, seconds, _ = run(
        [sys.executable, "-c", "from server.cli import main; main()", *args],
        {**env, "PYTHONPATH": str(tree)},
    )
    return seconds


def prepare(url: str, visits: int) -> str:
    """N households due to one township's caseworker; that caseworker's login."""
    from server.auth.passwords import hash_password

    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT t.id FROM households h JOIN areas v ON v.id = h.village_id "
            "JOIN areas t ON t.id = v.parent_id GROUP BY t.id ORDER BY count(*) DESC, t.id LIMIT 1"
        ).fetchone()
        assert row is not None
        township = row[0]
        found = conn.execute(
            "SELECT username FROM users WHERE role = 'caseworker' AND area_id = %s "
            "ORDER BY id LIMIT 1",
            (township,),
        ).fetchone()
        assert found is not None
        username = str(found[0])
        conn.execute(
            "UPDATE users SET password_hash = %s WHERE username = %s",
            (hash_password(PASSWORD), username),
        )
        ids = [
            r[0]
            for r in conn.execute(
                "SELECT h.id FROM households h JOIN areas v ON v.id = h.village_id "
                "WHERE v.parent_id = %s ORDER BY h.id",
                (township,),
            )
        ]
        if len(ids) < visits:
            raise SystemExit(f"the township has {len(ids)} households, fewer than {visits}")
        conn.execute(
            "UPDATE households SET state = 'surveyed', next_review_on = NULL WHERE id = ANY(%s)",
            (ids[visits:],),
        )
        conn.execute(
            "UPDATE households SET state = 'accepted', next_review_on = NULL WHERE id = ANY(%s)",
            (ids[:visits],),
        )
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return username


def old_tree(commit: str, folder: Path) -> Path:
    target = folder / "old"
    target.mkdir()
    archive = folder / "old.tar"
    with archive.open("wb") as out:
        subprocess.run(["git", "-C", str(ROOT), "archive", commit], stdout=out, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(target, filter="data")
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--visits", default="500,5000", help="comma-separated counts")
    parser.add_argument("--requests", type=int, default=7, help="measured requests per kind")
    parser.add_argument("--database-server", default=DEFAULT_SERVER)
    parser.add_argument("--old-commit", default=OLD_COMMIT)
    parser.add_argument(
        "--child", nargs=3, metavar=("TREE", "USER", "REQUESTS"), help=argparse.SUPPRESS
    )
    options = parser.parse_args(argv)
    if options.child:
        tree, username, requests = options.child
        child(tree, username, int(requests))
        return

    import base64
    import secrets

    counts = [int(v) for v in options.visits.split(",")]
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="dibao-due19-") as folder:
        old = old_tree(options.old_commit, Path(folder))
        env = {
            **os.environ,
            "SECRET_KEY": secrets.token_urlsafe(32),
            "DIBAO_DATA_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
            "DIBAO_INSTANCE_PATH": str(Path(folder) / "instance"),
            "DIBAO_LOG_LEVEL": "WARNING",
        }
        header = (
            f"{'visits':>6} {'code':<4} {'kind':<4} {'wall p50':>9} {'wall p95':>9} "
            f"{'CPU p50':>9} {'CPU p95':>9} {'decrypts':>9} {'peak RSS':>9}"
        )
        results = []
        for count in counts:
            name = f"dibao_due19_{os.getpid()}_{count}"
            with database(options.database_server, name) as url:
                env["DATABASE_URL"] = url
                started = time.perf_counter()
                dibao(ROOT, "db", "upgrade", env=env)
                dibao(ROOT, "seed", "--households", str(6 * count), "--seed", "1", env=env)
                username = prepare(url, count)
                print(
                    f"setup {count} visits: {time.perf_counter() - started:.1f} s "
                    f"(seed {6 * count} households, {username})",
                    flush=True,
                )
                measured = {}
                for label, tree in (("new", ROOT), ("old", old)):
                    stdout, _, rss = run(
                        [
                            sys.executable,
                            str(Path(__file__).resolve()),
                            "--child",
                            str(tree),
                            username,
                            str(options.requests),
                        ],
                        {**env, "PYTHONPATH": str(tree)},
                    )
                    measured[label] = json.loads(stdout.strip().splitlines()[-1]) | {"rss": rss}
                    print(f"  {label}: done", flush=True)
                results.append((count, measured))
        print()
        print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print(header)
        mismatch = False
        for count, measured in results:
            for label in ("new", "old"):
                m = measured[label]
                for kind in ("200", "304"):
                    f = m[kind]
                    print(
                        f"{count:>6} {label:<4} {kind:<4} {f['wall_median']:>9.1f} "
                        f"{f['wall_p95']:>9.1f} {f['cpu_median']:>9.1f} {f['cpu_p95']:>9.1f} "
                        f"{f['decryptions']:>9.0f} {m['rss']:>7.0f}MB"
                    )
            same = measured["new"]["body_sha256"] == measured["old"]["body_sha256"]
            items = measured["new"]["items"]
            print(f"{count:>6} items listed: {items}; new and old 200 bodies identical: {same}")
            mismatch |= not same or items != count
        print("(ms; CPU is the app process's own; peak RSS of each child process)")
    if mismatch:
        raise SystemExit("the new and old lists differ, or the list is not the size seeded")


if __name__ == "__main__":
    main()
