"""Benchmark: seconds and peak RSS for `dibao seed --households N` (default 100,000).

Each run creates a fresh database (PostgreSQL by default, or a temporary SQLite
file with --sqlite), migrates it with `dibao db upgrade` (not timed), then runs
`dibao seed` in a child process and measures its wall-clock time and its own
peak RSS (os.wait4 returns the resource usage of exactly that child, so the
earlier upgrade process does not count). A baseline, `dibao seed --households 0`
on another fresh database, gives the fixed cost (app start, areas, users,
password hashing), so the per-household cost reads as (total - baseline) / N.
Databases are dropped at the end, also on failure.

    .venv/bin/python benchmarks/seed.py [--households 100000] [--repeat 1]
        [--database-server postgresql://postgres@127.0.0.1:5432] [--sqlite]
        [--with PARTS] [--months M] [--visits V]

With --with, --months or --visits, each run also seeds a third fresh database with
those options (`dibao seed --households N --seed 1 --with PARTS --months M`, or the
history's `--months M --visits V` without --with) and prints it beside the
households-only seed of the same run, with the rows of each part.

This is a script, not a test: it exits 0 whether or not the target is met, and
non-zero only when migrating or seeding fails.
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

TARGET_SECONDS = 60.0
TARGET_RSS_MB = 500.0
SEED = 1
DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432"


class BenchmarkError(RuntimeError):
    """Migrating or seeding failed; the message carries the child's output."""


@dataclass
class Measurement:
    seconds: float
    peak_rss_mb: float
    cpu_seconds: float = 0.0  # the child's user + system time


@dataclass
class Run:
    seed: Measurement
    baseline: Measurement
    households: int
    members: int
    events: int
    extra: Measurement | None = None  # with --with / --months / --visits
    extra_rows: dict[str, int] | None = None


def dibao_command() -> list[str]:
    """The `dibao` entry point of the interpreter running this script (the venv)."""
    beside = Path(sys.executable).parent / "dibao"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("dibao")
    if found is None:
        raise BenchmarkError("cannot find the `dibao` command; install the project first")
    return [found]


def base_env(instance: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("SECRET_KEY", secrets.token_urlsafe(32))
    env.setdefault("DIBAO_DATA_KEY", base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())
    env["DIBAO_INSTANCE_PATH"] = str(instance)
    return env


def run_dibao(args: list[str], env: dict[str, str], log_dir: Path) -> Measurement:
    """Run `dibao ARGS`; wall-clock seconds and the child's own peak RSS."""
    out_path = log_dir / "stdout.txt"
    err_path = log_dir / "stderr.txt"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen([*dibao_command(), *args], env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        output = out_path.read_text("utf-8", "replace") + err_path.read_text("utf-8", "replace")
        raise BenchmarkError(
            f"`dibao {' '.join(args)}` exited with {proc.returncode}:\n{output[-4000:]}"
        )
    # Linux reports ru_maxrss in KiB (macOS in bytes).
    divisor = 1024 * 1024 if sys.platform == "darwin" else 1024
    return Measurement(
        seconds=seconds,
        peak_rss_mb=usage.ru_maxrss / divisor,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
    )


class Backend(Protocol):
    """Makes and drops fresh, empty databases and counts rows in them."""

    def database(self, label: str) -> AbstractContextManager[str]: ...

    def count(self, url: str, table: str) -> int: ...


def with_database(server: str, name: str) -> str:
    """The server URL with its database (path) replaced; query options kept."""
    return urlunsplit(urlsplit(server)._replace(path=f"/{name}"))


class PostgresBackend:
    def __init__(self, server: str) -> None:
        self.server = server

    @contextmanager
    def database(self, label: str) -> Iterator[str]:
        name = f"dibao_bench_{os.getpid()}_{label}"
        admin = with_database(self.server, "postgres")
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield with_database(self.server, name)
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )

    def count(self, url: str, table: str) -> int:
        with psycopg.connect(url) as conn:
            query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
            row = conn.execute(query).fetchone()
        assert row is not None
        return int(row[0])


class SqliteBackend:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @contextmanager
    def database(self, label: str) -> Iterator[str]:
        path = self.folder / f"dibao_bench_{os.getpid()}_{label}.sqlite"
        try:
            yield f"sqlite:///{path}"
        finally:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)

    def count(self, url: str, table: str) -> int:
        path = url.removeprefix("sqlite:///")
        conn = sqlite3.connect(path)
        try:
            (value,) = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()  # noqa: S608
        finally:
            conn.close()
        return int(value)


# The rows counted after a seed with extra options.
PART_TABLES = (
    "surveys",
    "survey_photos",
    "photo_hashes",
    "face_templates",
    "pol_months",
    "payment_months",
)


def seed_fresh(
    backend: Backend,
    label: str,
    households: int,
    env: dict[str, str],
    log_dir: Path,
    extra: list[str] | None = None,
) -> tuple[Measurement, dict[str, int]]:
    with backend.database(label) as url:
        run_env = {**env, "DATABASE_URL": url}
        run_dibao(["db", "upgrade"], run_env, log_dir)  # not timed
        measured = run_dibao(
            ["seed", "--households", str(households), "--seed", str(SEED), *(extra or [])],
            run_env,
            log_dir,
        )
        tables = ("households", "members", "case_events", *(PART_TABLES if extra else ()))
        counts = {table: backend.count(url, table) for table in tables}
    return measured, counts


def one_run(
    backend: Backend,
    index: int,
    households: int,
    env: dict[str, str],
    log_dir: Path,
    extra: list[str] | None = None,
) -> Run:
    baseline, _ = seed_fresh(backend, f"{index}_base", 0, env, log_dir)
    measured, counts = seed_fresh(backend, f"{index}_seed", households, env, log_dir)
    if counts["households"] != households:
        raise BenchmarkError(f"expected {households} households, found {counts['households']}")
    run = Run(measured, baseline, households, counts["members"], counts["case_events"])
    if extra:
        run.extra, rows = seed_fresh(backend, f"{index}_parts", households, env, log_dir, extra)
        run.extra_rows = {t: rows[t] for t in PART_TABLES}
    return run


def rate(rows: int, seconds: float) -> str:
    return f"{rows / seconds:,.0f}" if seconds > 0 else "-"


def print_run(label: str, run: Run) -> None:
    variable = run.seed.seconds - run.baseline.seconds
    per_household_ms = variable / run.households * 1000 if run.households else 0.0
    print(
        f"{label:<8} {run.seed.seconds:>8.2f} {run.seed.cpu_seconds:>8.2f} "
        f"{run.seed.peak_rss_mb:>8.1f} "
        f"{run.baseline.seconds:>8.2f} {run.baseline.peak_rss_mb:>8.1f} "
        f"{per_household_ms:>8.3f} {rate(run.households, run.seed.seconds):>10} "
        f"{rate(run.members, run.seed.seconds):>10} {rate(run.events, run.seed.seconds):>10}",
        flush=True,
    )
    if run.extra is not None:
        extra = run.extra.seconds - run.baseline.seconds
        print(
            f"{label + '+':<8} {run.extra.seconds:>8.2f} {run.extra.cpu_seconds:>8.2f} "
            f"{run.extra.peak_rss_mb:>8.1f} {'':>8} {'':>8} "
            f"{extra / run.households * 1000 if run.households else 0.0:>8.3f} "
            f"{rate(run.households, run.extra.seconds):>10}",
            flush=True,
        )


def _median(measurements: list[Measurement]) -> Measurement:
    return Measurement(
        statistics.median(m.seconds for m in measurements),
        statistics.median(m.peak_rss_mb for m in measurements),
        statistics.median(m.cpu_seconds for m in measurements),
    )


def median_run(runs: list[Run]) -> Run:
    extras = [r.extra for r in runs if r.extra is not None]
    return Run(
        seed=_median([r.seed for r in runs]),
        baseline=Measurement(
            statistics.median(r.baseline.seconds for r in runs),
            statistics.median(r.baseline.peak_rss_mb for r in runs),
        ),
        households=runs[0].households,
        members=runs[0].members,
        events=runs[0].events,
        extra=_median(extras) if extras else None,
        extra_rows=runs[0].extra_rows,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--households", type=int, default=100_000, help="households to seed (default: 100000)"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="number of runs; each is printed, then the median (default: 1)",
    )
    parser.add_argument(
        "--database-server",
        default=DEFAULT_SERVER,
        help=f"PostgreSQL server URL without a database (default: {DEFAULT_SERVER})",
    )
    parser.add_argument(
        "--sqlite", action="store_true", help="seed a temporary SQLite file instead, for comparison"
    )
    parser.add_argument(
        "--with",
        dest="parts",
        metavar="PARTS",
        help="also seed with `dibao seed --with PARTS` (all, or visits,photos,templates,"
        "months,payments) in the same run",
    )
    parser.add_argument(
        "--months", type=int, help="with --with: its --months; without: the history's months"
    )
    parser.add_argument("--visits", type=int, help="the history's --visits (not with --with)")
    args = parser.parse_args(argv)
    if args.parts and args.visits is not None:
        parser.error("--visits shapes the history; --with replaces it")
    if args.households < 1 or args.repeat < 1:
        parser.error("--households and --repeat must be at least 1")
    return args


def extra_args(args: argparse.Namespace) -> list[str]:
    """The options of the '+' seed (none: households only)."""
    extra: list[str] = []
    if args.parts:
        extra += ["--with", args.parts]
    if args.months is not None:
        extra += ["--months", str(args.months)]
    if args.visits is not None:
        extra += ["--visits", str(args.visits)]
    return extra


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dibao_bench_") as tmp:
        folder = Path(tmp)
        backend: Backend = (
            SqliteBackend(folder) if args.sqlite else PostgresBackend(args.database_server)
        )
        env = base_env(folder)
        where = "SQLite (temporary file)" if args.sqlite else args.database_server
        print(f"dibao seed --households {args.households} --seed {SEED} on {where}")
        extra = extra_args(args)
        if extra:
            print(f"'+' rows: the same with {' '.join(extra)}")
        print(
            f"{'run':<8} {'seed s':>8} {'cpu s':>8} {'seed MB':>8} {'base s':>8} "
            f"{'base MB':>8} {'ms/hh':>8} {'hh/s':>10} {'members/s':>10} {'events/s':>10}"
        )
        runs: list[Run] = []
        try:
            for index in range(1, args.repeat + 1):
                runs.append(one_run(backend, index, args.households, env, folder, extra))
                print_run(f"#{index}", runs[-1])
        except (BenchmarkError, psycopg.Error) as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 1
    result = median_run(runs)
    if len(runs) > 1:
        print_run("median", result)
    print(
        f"rows: {result.households:,} households, {result.members:,} members, "
        f"{result.events:,} case events"
    )
    if result.extra_rows:
        print(
            "rows with "
            + " ".join(extra)
            + ": "
            + ", ".join(f"{count:,} {table}" for table, count in result.extra_rows.items())
        )
    print(
        "seed s / cpu s / MB: whole `dibao seed` child (wall clock, its user + system CPU, "
        "peak RSS); base: the same with --households 0; ms/hh = (seed - base) / households; "
        f"rates use seed s; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    ok = result.seed.seconds < TARGET_SECONDS and result.seed.peak_rss_mb < TARGET_RSS_MB
    print(
        f"target: <{TARGET_SECONDS:.0f} s and <{TARGET_RSS_MB:.0f} MB -> "
        f"{'PASS' if ok else 'FAIL'} ({result.seed.seconds:.1f} s, "
        f"{result.seed.peak_rss_mb:.0f} MB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
