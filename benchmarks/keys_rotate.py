"""Benchmark: how fast `dibao keys rotate` moves a seeded database to a new data key.

A fresh database (PostgreSQL by default, or a temporary SQLite file with --sqlite) is
migrated and seeded with `dibao seed --households N --months M` under an old data key
(not timed). Then `dibao keys rotate` runs as a child process with the new key as
DIBAO_DATA_KEY and the old one in DIBAO_DATA_KEYS_OLD, and is timed; `dibao keys status
--hashes` afterwards must report everything under the new key. The database is dropped
at the end, also on failure.

    .venv/bin/python benchmarks/keys_rotate.py [--households 2000] [--months 2]
        [--batch 500] [--database-server postgresql://postgres@127.0.0.1:5432] [--sqlite]

It prints the values moved (encrypted values re-encrypted plus look-up hashes
re-derived), the rotation's own time (as the command reports it, without starting the
app) and the command's wall-clock time, and values per second of each.

This is a script, not a test: it exits 0 whatever the speed, and non-zero only when
seeding or rotating fails.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.seed import (  # noqa: E402
    DEFAULT_SERVER,
    Backend,
    BenchmarkError,
    PostgresBackend,
    SqliteBackend,
)


def key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def dibao(args: list[str], env: dict[str, str]) -> tuple[str, float]:
    """Run `dibao ARGS` from this checkout; its output and wall-clock seconds."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "server.cli", *args],
        env={**env, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise BenchmarkError(
            f"`dibao {' '.join(args)}` exited with {done.returncode}:\n"
            f"{(done.stdout + done.stderr)[-4000:]}"
        )
    return done.stdout, seconds


def run(backend: Backend, households: int, months: int, batch: int, instance: Path) -> None:
    old, new = key(), key()
    base = {**os.environ, "SECRET_KEY": secrets.token_urlsafe(32)}
    base["DIBAO_INSTANCE_PATH"] = str(instance)
    base.pop("DIBAO_DATA_KEYS_OLD", None)
    with backend.database("keys") as url:
        before = {**base, "DATABASE_URL": url, "DIBAO_DATA_KEY": old}
        after = {**before, "DIBAO_DATA_KEY": new, "DIBAO_DATA_KEYS_OLD": old}
        dibao(["db", "upgrade"], before)
        _, seed_seconds = dibao(
            ["seed", "--households", str(households), "--months", str(months), "--seed", "1"],
            before,
        )
        members = backend.count(url, "members")
        output, wall = dibao(["keys", "rotate", "--batch", str(batch)], after)
        moved = re.search(r"(\d+) values moved in (\d+) batches, ([\d.]+) s", output)
        if moved is None or "every encrypted value is under the current key" not in output:
            raise BenchmarkError(f"unexpected `dibao keys rotate` output:\n{output}")
        values, batches, seconds = int(moved[1]), int(moved[2]), float(moved[3])
        status, status_seconds = dibao(["keys", "status", "--hashes"], after)
        if "everything is under the current key" not in status:
            raise BenchmarkError(f"values left under the old key:\n{status}")
    print(
        f"{households} households ({members} members, {months} months of history; "
        f"seeded in {seed_seconds:.1f} s), batch {batch}"
    )
    print(f"  values moved        {values:>10,} in {batches} batches")
    print(f"  rotation            {seconds:>10.2f} s  {values / seconds:>10,.0f} values/s")
    print(f"  command (wall)      {wall:>10.1f} s  {values / wall:>10,.0f} values/s")
    print(f"  keys status --hashes {status_seconds:>9.1f} s (wall)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--households", type=int, default=2000)
    parser.add_argument("--months", type=int, default=2)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--database-server", default=DEFAULT_SERVER)
    parser.add_argument("--sqlite", action="store_true", help="a temporary SQLite file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dibao_keys_bench_") as folder:
        backend: Backend = (
            SqliteBackend(Path(folder)) if args.sqlite else PostgresBackend(args.database_server)
        )
        label = "SQLite" if args.sqlite else "PostgreSQL"
        print(f"dibao keys rotate on {label}")
        try:
            run(backend, args.households, args.months, args.batch, Path(folder) / "instance")
        except BenchmarkError as exc:
            print(f"failed: {exc}", file=sys.stderr)
            sys.exit(1)


if __name__ == "__main__":
    main()
