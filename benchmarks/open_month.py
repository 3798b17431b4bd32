"""Benchmark: opening the monthly proof-of-life month on PostgreSQL, the set-based open
of this tree against the row-by-row open of the old tree (commit ad334d1), in one run.

Setup (not timed): a fresh database (`dibao_month19_open_<pid>`, dropped at the end,
also on failure), `dibao db upgrade`, `dibao seed --households N --seed 1 --today
2026-11-01`, then SQL makes every household approved and its head (alive, not left)
the one designated member, so that the designated members are exactly N, and takes the
phone of every 20th (5 %: the caseworker-task path); `VACUUM ANALYZE`. The old tree is
`git archive ad334d1` unpacked into a temporary folder.

Each timed run is a child process of this file (`--child open M`, with PYTHONPATH on
this tree or on the old one): create the app, then `server.monthly.cycle.open_month(M,
now=10:00 local on the 20th of M)`. Each run opens a new month (the same month twice
does nothing new by design), old and new alternating (old first in odd rounds, new
first in even ones). Checked after each: N records, queued + tasks = N, else exit 1.

Columns: `open s` (wall clock of open_month alone, in the child), `CPU s` (the child's
user + system CPU of the open alone; PostgreSQL's own CPU is not in it), `ms/member`,
`PG CPU` (the CPU of the child's PostgreSQL backends during the open, from /proc: the
server runs on this machine), `child s` and `peak MB` (the whole child, from os.wait4:
app start included). On a machine shared with other work the CPU columns are the
figures to compare; the wall clock includes waiting for a core.

    .venv/bin/python benchmarks/open_month.py [--households 100000] [--rounds 1]
        [--database-server postgresql://postgres@127.0.0.1:5432] [--baseline-commit ad334d1]
        [--no-baseline]

A script, not a test: it exits 0 whether or not a target is met (120 s and 500 MB at
1,000,000 members), non-zero only when something fails.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from seed import DEFAULT_SERVER, BenchmarkError, base_env, run_dibao, with_database

ROOT = Path(__file__).resolve().parent.parent
BASELINE_COMMIT = "ad334d1"
SEED = 1
SEED_TODAY = "2026-11-01"
FIRST_MONTH = "2027-01"
NO_PHONE_EVERY = 20
TARGET_SECONDS = 120.0
TARGET_RSS_MB = 500.0
TARGET_MEMBERS = 1_000_000


# --------------------------------------------------------------------------- child


def _child_open(month: str) -> None:
    from dataclasses import asdict
    from datetime import timedelta

    from server import create_app

    app = create_app()
    with app.app_context():
        from server.monthly import cycle

        now = cycle.moments(month).opens + timedelta(hours=10)
        started, cpu = time.perf_counter(), time.process_time()
        backend = _backend_cpu()
        report = cycle.open_month(month, now=now)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        after = _backend_cpu()
        db_cpu = sum(cpu_s - backend.get(pid, 0.0) for pid, cpu_s in after.items())
        print(json.dumps({"seconds": seconds, "cpu": cpu, "db_cpu": db_cpu, **asdict(report)}))


def _backend_cpu() -> dict[int, float]:
    """CPU seconds (user + system) so far of each PostgreSQL backend connected to this
    database (the benchmark's own: only this child uses it), read from /proc (the
    server runs on this machine). The open's ranges run on several pooled connections
    (DIBAO_MONTH_OPEN_WORKERS), which stay open until the child exits."""
    from sqlalchemy import text

    from server.extensions import db

    pids = db.session.scalars(
        text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
    ).all()
    db.session.commit()
    found = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # ended since
            continue
        found[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return found


# --------------------------------------------------------------------------- parent


@dataclass
class OpenRun:
    code: str  # "new" or "old"
    month: str
    seconds: float
    cpu: float
    db_cpu: float
    child_seconds: float
    peak_mb: float
    members: int
    queued: int
    tasks: int


def month_after(month: str, count: int) -> str:
    year, number = map(int, month.split("-"))
    index = year * 12 + number - 1 + count
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def scalar(url: str, query: str, *params: Any) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(query, params).fetchone()  # type: ignore[arg-type]
    assert row is not None
    return int(row[0])


def prepare(url: str, households: int) -> tuple[int, int]:
    """Every household approved, its head the one designated member; every 20th head
    without a phone. Returns (designated, without a phone)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE households SET state = 'approved'")
        conn.execute(
            "UPDATE members SET proof_of_life_required = (relation = 'head'), "
            "alive = (relation = 'head') OR alive, "
            "left_on = CASE WHEN relation = 'head' THEN NULL ELSE left_on END"
        )
        conn.execute(
            "UPDATE members SET phone = NULL, phone_hash = NULL WHERE id IN (SELECT id FROM "
            "(SELECT id, row_number() OVER (ORDER BY id) AS n FROM members "
            "WHERE proof_of_life_required) r WHERE mod(n, %s) = 0)",
            (NO_PHONE_EVERY,),
        )
        conn.execute("VACUUM ANALYZE")
    designated = scalar(url, "SELECT count(*) FROM members WHERE proof_of_life_required")
    no_phone = scalar(
        url, "SELECT count(*) FROM members WHERE proof_of_life_required AND phone IS NULL"
    )
    if designated != households:
        raise BenchmarkError(f"{designated} designated members for {households} households")
    return designated, no_phone


def old_tree(commit: str, folder: Path) -> Path:
    target = folder / f"old_{commit}"
    target.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", commit], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def run_open(
    code: str, tree: Path, month: str, env: dict[str, str], url: str, folder: Path
) -> OpenRun:
    child_env = {**env, "PYTHONPATH": str(tree)}
    out_path, err_path = folder / f"{code}_{month}.out", folder / f"{code}_{month}.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--child", "open", month],
            env=child_env,
            cwd=tree,
            stdout=out,
            stderr=err,
        )
        _, status, usage = os.wait4(proc.pid, 0)  # the child's own peak RSS
        child_seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise BenchmarkError(
            f"{code} open {month} exited {proc.returncode}:\n"
            + err_path.read_text("utf-8", "replace")[-4000:]
        )
    result = json.loads(out_path.read_text("utf-8").strip().splitlines()[-1])
    records = scalar(url, "SELECT count(*) FROM pol_months WHERE month = %s", month)
    queued = scalar(
        url, "SELECT count(*) FROM sms_messages WHERE month = %s AND status = 'queued'", month
    )
    tasks = scalar(url, "SELECT count(*) FROM pol_contact_tasks WHERE month = %s", month)
    return OpenRun(
        code,
        month,
        result["seconds"],
        result["cpu"],
        result["db_cpu"],
        child_seconds,
        usage.ru_maxrss / 1024,  # Linux: KiB
        records,
        queued,
        tasks,
    )


def print_run(run: OpenRun, designated: int) -> None:
    print(
        f"{run.code:<4} {run.month:<8} {run.seconds:>8.1f} {run.cpu:>7.1f} {run.db_cpu:>7.1f} "
        f"{run.seconds / designated * 1000:>9.3f} {run.child_seconds:>8.1f} {run.peak_mb:>8.1f} "
        f"{run.members:>9,} {run.queued:>9,} {run.tasks:>7,}",
        flush=True,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--households", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--database-server", default=DEFAULT_SERVER)
    parser.add_argument("--baseline-commit", default=BASELINE_COMMIT)
    parser.add_argument("--no-baseline", action="store_true", help="the new code only")
    return parser.parse_args(argv)


def run(args: argparse.Namespace, folder: Path) -> int:
    env = base_env(folder)
    name = f"dibao_month19_open_{os.getpid()}"
    admin = with_database(args.database_server, "postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        url = with_database(args.database_server, name)
        env = {**env, "DATABASE_URL": url}
        started = time.perf_counter()
        run_dibao(["db", "upgrade"], env, folder)
        seeded = run_dibao(
            [
                "seed",
                "--households",
                str(args.households),
                "--seed",
                str(SEED),
                "--today",
                SEED_TODAY,
            ],
            env,
            folder,
        )
        designated, no_phone = prepare(url, args.households)
        old = None if args.no_baseline else old_tree(args.baseline_commit, folder)
        print(
            f"setup (not timed): {args.households:,} households seeded in {seeded.seconds:.0f} s "
            f"({seeded.peak_rss_mb:.0f} MB), {designated:,} designated members, {no_phone:,} "
            f"without a phone; setup {time.perf_counter() - started:.0f} s; load average "
            f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}",
            flush=True,
        )
        print(
            f"{'code':<4} {'month':<8} {'open s':>8} {'CPU s':>7} {'PG CPU':>7} {'ms/member':>9} "
            f"{'child s':>8} {'peak MB':>8} {'records':>9} {'queued':>9} {'tasks':>7}"
        )
        runs: list[OpenRun] = []
        month = FIRST_MONTH
        for index in range(args.rounds):
            order = [("new", ROOT)] + ([] if old is None else [("old", old)])
            if index % 2 == 0:
                order.reverse()
            for code, tree in order:
                result = run_open(code, tree, month, env, url, folder)
                if result.members != designated or result.queued + result.tasks != designated:
                    raise BenchmarkError(f"{code} open {month}: {result}")
                print_run(result, designated)
                runs.append(result)
                month = month_after(month, 1)
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        for code in ("new", "old"):
            mine = [r for r in runs if r.code == code]
            if not mine:
                continue
            seconds = statistics.median(r.seconds for r in mine)
            cpu = statistics.median(r.cpu for r in mine)
            db_cpu = statistics.median(r.db_cpu for r in mine)
            peak = max(r.peak_mb for r in mine)
            per = seconds / designated
            print(
                f"median {code}: {seconds:.1f} s ({cpu:.1f} CPU s + {db_cpu:.1f} PostgreSQL "
                "CPU s), "
                f"{per * 1000:.3f} ms/member, "
                f"peak {peak:.0f} MB; at {TARGET_MEMBERS:,}: {per * TARGET_MEMBERS:.0f} s "
                "if linear"
            )
        new = [r for r in runs if r.code == "new"]
        seconds = statistics.median(r.seconds for r in new)
        peak = max(r.peak_mb for r in new)
        scaled = seconds / designated * TARGET_MEMBERS
        verdict = "PASS" if scaled <= TARGET_SECONDS and peak <= TARGET_RSS_MB else "FAIL"
        measured = "measured" if designated >= TARGET_MEMBERS else "extrapolated"
        print(
            f"target: <= {TARGET_SECONDS:.0f} s and <= {TARGET_RSS_MB:.0f} MB at "
            f"{TARGET_MEMBERS:,} members -> {scaled:.0f} s ({measured}), {peak:.0f} MB: {verdict}"
        )
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        if argv[1] == "open":
            _child_open(argv[2])
            return 0
        raise SystemExit(f"unknown child {argv[1]}")
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dibao_open_month_") as folder:
        try:
            return run(args, Path(folder))
        except BenchmarkError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())
