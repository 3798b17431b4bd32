"""Benchmark: seconds for `dibao backup`, `dibao restore` and `dibao store gc` of a
seeded league (default: the demo's size, 400 households with 12 months of history and
photos).

Seeds a fresh database and photo store (PostgreSQL by default, a temporary SQLite file
with --sqlite; not timed), then times, each as a child process: `dibao backup DIR`,
`dibao restore DIR` into a second fresh database and store, and a `dibao store gc` dry
run. Prints the backup's size and the seconds (each includes the command's start-up,
about a second; `dibao --help` is timed as that baseline). Databases and folders are
removed at the end, also on failure.

    .venv/bin/python benchmarks/backup.py [--households 400] [--months 12] [--sqlite]
        [--database-server postgresql://postgres@127.0.0.1:5432]

This is a script, not a test: it exits non-zero only when a command fails.
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432"
ROOT = Path(__file__).resolve().parent.parent


def run(env: dict[str, str], *args: str) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "server.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"dibao {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return seconds, done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--households", type=int, default=400)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--sqlite", action="store_true")
    parser.add_argument("--database-server", default=DEFAULT_SERVER)
    options = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="dibao-backup-bench-"))
    names = [f"dibao_backup_bench_{secrets.token_hex(3)}_{side}" for side in ("a", "b")]
    server = options.database_server.rstrip("/")
    if options.sqlite:
        urls = [f"sqlite:///{folder / f'{side}.sqlite3'}" for side in ("a", "b")]
    else:
        with psycopg.connect(server + "/postgres", autocommit=True) as conn:
            for name in names:
                conn.execute(f'CREATE DATABASE "{name}"')
        urls = [f"{server}/{name}" for name in names]
    base = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "SECRET_KEY": "benchmark",
        "DIBAO_DATA_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
    }
    envs = [
        {**base, "DATABASE_URL": url, "DIBAO_INSTANCE_PATH": str(folder / side)}
        for url, side in zip(urls, ("a", "b"), strict=True)
    ]
    try:
        run(envs[0], "db", "upgrade")
        print("seeding ...", flush=True)
        run(envs[0], "seed", "--households", str(options.households), "--months",
            str(options.months), "--photos", "--today", "2026-11-20")  # fmt: skip
        baseline, _ = run(envs[0], "--help")
        backup = folder / "backup"
        took, said = run(envs[0], "backup", str(backup))
        size = sum(p.stat().st_size for p in backup.rglob("*") if p.is_file())
        print(f"dibao --help (start-up): {baseline:.2f} s")
        print(f"backup:  {took:.2f} s, {size / 1e6:.1f} MB  ({said})")
        took, said = run(envs[1], "restore", str(backup))
        print(f"restore: {took:.2f} s  ({said})")
        took, said = run(envs[0], "store", "gc")
        print(f"gc dry run: {took:.2f} s  ({said})")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if not options.sqlite:
            with psycopg.connect(server + "/postgres", autocommit=True) as conn:
                for name in names:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
