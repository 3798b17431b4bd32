"""Benchmark: the public snapshot absorbing changes in place, against a full build.

Setup (timed and printed): a PostgreSQL database `dibao_snap19_<N>`, `dibao db upgrade`,
`dibao seed --households N --seed 1` (default 100,000). With --keep-database the
database stays for a later run (which skips the setup); otherwise it is dropped.

Then, in this order:

    full build   `dibao public refresh --force` in a child process: wall and CPU seconds
                 and its peak RSS (os.wait4). This is the baseline: before issue 19
                 every change rebuilt all rows this way.
    size         pg_total_relation_size of public_cases and public_census after it.
    one change   --single times: one case's status changed through the ORM and
                 committed, then `changes.absorb()` and a GET of the case from
                 /api/v1/public/cases/<code> (the Flask test client, DIBAO_PUBLIC_CACHE_
                 SECONDS=0) until it shows the new status: seconds from the commit to
                 the answer (median, p95, max) and the absorb's CPU seconds.
    1,000        --batch changes (statuses, moves to another village, deaths, in that
                 rotation) committed, then one `changes.absorb()`: seconds and CPU
                 seconds, --rounds times.
    size         the relation sizes again: the absorbs wrote in place, no second copy.

Peak RSS of this process (which ran the absorbs) is printed at the end.

    .venv/bin/python benchmarks/public_incremental.py [--households 100000]
        [--single 5] [--batch 1000] [--rounds 2] [--keep-database]
        [--database-server postgresql://postgres@127.0.0.1:5432]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg import sql
from seed import DEFAULT_SERVER, base_env, run_dibao, with_database

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def database_exists(server: str, name: str) -> bool:
    with psycopg.connect(with_database(server, "postgres"), autocommit=True) as conn:
        return (
            conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            is not None
        )


def admin(server: str, statement: sql.Composable) -> None:
    with psycopg.connect(with_database(server, "postgres"), autocommit=True) as conn:
        conn.execute(statement)


def sizes(url: str) -> str:
    with psycopg.connect(url) as conn:
        cases, census, rows = conn.execute(
            "SELECT pg_total_relation_size('public_cases'),"
            " pg_total_relation_size('public_census'), (SELECT count(*) FROM public_cases)"
        ).fetchone()  # type: ignore[misc]
    return (
        f"public_cases {cases / 2**20:.1f} MiB ({rows:,} rows), "
        f"public_census {census / 2**20:.2f} MiB"
    )


def cpu() -> float:
    return time.process_time()


def pct(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def measure(url: str, env: dict[str, str], args: argparse.Namespace) -> None:
    os.environ.update({k: v for k, v in env.items() if k.startswith(("SECRET_KEY", "DIBAO_"))})
    from sqlalchemy import func, select

    from server import create_app
    from server.areas.models import Area, AreaLevel
    from server.cases.models import CaseState, Household
    from server.extensions import db
    from server.public import changes

    app = create_app(
        {
            "DATABASE_URL": url,
            "DIBAO_PUBLIC_CACHE_SECONDS": 0,
            "DIBAO_PUBLIC_REFRESH": "background",
            "DIBAO_LOG_LEVEL": "WARNING",
        }
    )
    client = app.test_client()
    states = [CaseState.APPROVED, CaseState.SUSPENDED, CaseState.ACCEPTED]
    with app.app_context():
        ids = db.session.scalars(select(Household.id).order_by(Household.id)).all()
        villages = db.session.scalars(
            select(Area.id).where(Area.level == AreaLevel.VILLAGE).order_by(Area.id)
        ).all()
        db.session.rollback()
        print(f"\n{len(ids):,} households, {len(villages):,} villages", flush=True)

        seen: list[float] = []
        absorb_cpu: list[float] = []
        absorb_wall: list[float] = []
        for index in range(args.single):
            household = db.session.get(Household, ids[(index * 7919) % len(ids)])
            assert household is not None
            code = household.case_code
            target = states[index % len(states)]
            if household.state == target:
                target = states[(index + 1) % len(states)]
            household.state = target
            db.session.commit()
            started, started_cpu = time.perf_counter(), cpu()
            changes.absorb()
            absorbed = time.perf_counter()
            absorb_cpu.append(cpu() - started_cpu)
            absorb_wall.append(absorbed - started)
            db.session.rollback()
            answer = client.get(f"/api/v1/public/cases/{code}").get_json()
            seen.append(time.perf_counter() - started)
            shown = answer["status"] if answer else None
            print(
                f"  one change {index + 1}: visible after {seen[-1]:.2f} s (absorb "
                f"{absorb_wall[-1]:.2f} s, CPU {absorb_cpu[-1]:.2f} s), status {shown}"
                f"{'' if shown == target.value else ' NOT SHOWN'}",
                flush=True,
            )
        if seen:
            print(
                f"one change visible: median {statistics.median(seen):.2f} s, p95 "
                f"{pct(seen, 0.95):.2f} s, max {max(seen):.2f} s; absorb CPU median "
                f"{statistics.median(absorb_cpu):.2f} s (target: 10 s)",
                flush=True,
            )

        batch_wall: list[float] = []
        for round_ in range(args.rounds):
            picked = [ids[(round_ * 104729 + i * 7919) % len(ids)] for i in range(args.batch)]
            for i, household_id in enumerate(picked):
                household = db.session.get(Household, household_id)
                assert household is not None
                kind = i % 3
                if kind == 0:
                    household.state = states[(i + round_) % len(states)]
                elif kind == 1:
                    household.village_id = villages[(i * 31 + round_) % len(villages)]
                else:
                    living = [m for m in household.members if m.alive and m.left_on is None]
                    if living:
                        living[-1].alive = False
                if i % 200 == 199:
                    db.session.commit()
            db.session.commit()
            pending = db.session.scalar(select(func.count()).select_from(changes.PublicDirty))
            db.session.rollback()
            started, started_cpu = time.perf_counter(), cpu()
            done = changes.absorb()
            batch_wall.append(time.perf_counter() - started)
            print(
                f"  {args.batch:,} changes ({pending:,} dirty rows): absorbed in "
                f"{batch_wall[-1]:.2f} s, CPU {cpu() - started_cpu:.2f} s"
                f"{'' if done is not None else ' (NOTHING DONE)'}",
                flush=True,
            )
        if batch_wall:
            print(
                f"{args.batch:,} changes: median {statistics.median(batch_wall):.2f} s, max "
                f"{max(batch_wall):.2f} s (target: 30 s)",
                flush=True,
            )
        db.session.remove()
        db.engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--households", type=int, default=100_000)
    parser.add_argument("--single", type=int, default=5, help="one-change runs (default 5)")
    parser.add_argument("--batch", type=int, default=1000, help="changes per batch (1000)")
    parser.add_argument("--rounds", type=int, default=2, help="batches (default 2)")
    parser.add_argument("--keep-database", action="store_true")
    parser.add_argument("--database-server", default=DEFAULT_SERVER)
    args = parser.parse_args(argv)

    server = args.database_server
    name = f"dibao_snap19_{args.households}"
    url = with_database(server, name)
    folder = Path(tempfile.mkdtemp(prefix="public_incremental_"))
    env = base_env(folder)
    env["DATABASE_URL"] = url
    env["DIBAO_LOG_LEVEL"] = "WARNING"
    print(f"{os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    reuse = database_exists(server, name)
    try:
        if reuse:
            print(f"reusing database {name} (seed skipped)", flush=True)
            keys = folder.parent / f"{name}.env"
            if keys.exists():
                for line in keys.read_text().splitlines():
                    key, _, value = line.partition("=")
                    env[key] = value
        else:
            admin(server, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            step = run_dibao(["db", "upgrade"], env, folder)
            print(f"db upgrade: {step.seconds:.1f} s", flush=True)
            step = run_dibao(
                ["seed", "--households", str(args.households), "--seed", "1"], env, folder
            )
            print(f"seed {args.households:,}: {step.seconds:.1f} s", flush=True)
            (folder.parent / f"{name}.env").write_text(
                f"SECRET_KEY={env['SECRET_KEY']}\nDIBAO_DATA_KEY={env['DIBAO_DATA_KEY']}\n"
            )
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
        before = os.times()
        full = run_dibao(["public", "refresh", "--force"], env, folder)
        after = os.times()
        child_cpu = (after.children_user - before.children_user) + (
            after.children_system - before.children_system
        )
        print(
            f"\nbaseline full build: {full.seconds:.1f} s, CPU {child_cpu:.1f} s, peak RSS "
            f"{full.peak_rss_mb:.0f} MB",
            flush=True,
        )
        print(f"size after the full build: {sizes(url)}", flush=True)
        measure(url, env, args)
        print(f"size after the absorbs:    {sizes(url)}")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"peak RSS of this process (the absorbs): {peak:.0f} MB; load average "
            f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
        )
    finally:
        if not args.keep_database:
            admin(
                server,
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)),
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
