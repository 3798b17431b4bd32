"""Death-register matching at scale: a 100,000-row register against 100,000 households.

.venv/bin/python benchmarks/deaths.py                 # PostgreSQL on 127.0.0.1:5432
.venv/bin/python benchmarks/deaths.py --households 10000 --rows 10000 --repeat 1

Seeds a fresh database (`dibao seed`, with --months of history so that proof-of-life
months and payments exist), builds a register file (about 2 % of the rows matched,
0.5 % ambiguous: names that differ, dates in the future, wrong check digits; the rest
valid ID numbers of nobody), then runs `dibao deaths import FILE` (the dry run, median
of --repeat runs), `--apply --user approver`, and `--apply` again (every row is then
already applied). Each is a child process: wall-clock seconds include starting the app
(about 3 s); peak RSS is the child's own. Target: dry run and apply each within 30 s.
The database is dropped at the end.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from seed import (
    DEFAULT_SERVER,
    BenchmarkError,
    Measurement,
    PostgresBackend,
    base_env,
    run_dibao,
)

TARGET_SECONDS = 30.0
# The app judges future dates by its own clock: the region's day (Asia/Shanghai).
TODAY = datetime.now(ZoneInfo("Asia/Shanghai")).date()


def build_register(
    url: str, env: dict[str, str], rows: int, path: Path, seed: int
) -> dict[str, int]:
    """The register file; returns how many rows of each planted kind it holds."""
    import os

    os.environ.update({k: env[k] for k in ("SECRET_KEY", "DIBAO_DATA_KEY")})
    from sqlalchemy import func, select

    from server import create_app
    from server.areas.models import Area  # noqa: F401  (the mapper registry)
    from server.cases.models import CaseState, Household, Member
    from server.extensions import db
    from server.seed import id_check_digit

    rng = random.Random(seed)
    matched_n, ambiguous_n = rows // 50, rows // 200
    app = create_app({"DATABASE_URL": url, "DIBAO_INSTANCE_PATH": env["DIBAO_INSTANCE_PATH"]})
    with app.app_context():
        sample = db.session.execute(
            select(Member.id_number, Member.name, Member.birth_date)
            .join(Household, Household.id == Member.household_id)
            .where(Household.state == CaseState.APPROVED, Member.alive.is_(True))
            .order_by(func.random())
            .limit(matched_n + ambiguous_n)
        ).all()
        db.engine.dispose()
    lines: list[tuple[str, str, str]] = []
    planted = {"matched": 0, "ambiguous": 0, "not_found": 0}
    for index, (id_number, name, birth) in enumerate(sample):
        died = TODAY - timedelta(days=rng.randrange(1, 150))
        died = max(died, birth)
        if index < matched_n:
            lines.append((id_number, name, died.isoformat()))
            planted["matched"] += 1
            continue
        kind = index % 3
        if kind == 0:
            lines.append((id_number, name + "某", died.isoformat()))
        elif kind == 1:
            lines.append((id_number, name, (TODAY + timedelta(days=400)).isoformat()))
        else:
            wrong = "0" if id_number[-1] != "0" else "1"
            lines.append((id_number[:-1] + wrong, name, died.isoformat()))
        planted["ambiguous"] += 1
    while len(lines) < rows:
        birth = date(1930, 1, 1) + timedelta(days=rng.randrange(0, 30000))
        first17 = f"9{rng.randrange(10**5):05d}{birth:%Y%m%d}{rng.randrange(1000):03d}"
        lines.append((first17 + id_check_digit(first17), "某某", f"{TODAY:%Y/%m/%d}"))
        planted["not_found"] += 1
    rng.shuffle(lines)
    with path.open("w", encoding="utf-8-sig", newline="") as out:
        out.write("身份证号,姓名,死亡日期\r\n")
        out.writelines(f"{a},{b},{c}\r\n" for a, b, c in lines)
    return planted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--households", type=int, default=100_000)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--months", type=int, default=2, help="months of seeded history")
    parser.add_argument("--repeat", type=int, default=3, help="dry runs (the median is kept)")
    parser.add_argument("--database-server", default=DEFAULT_SERVER)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="dibao-deaths-") as folder_name:
        folder = Path(folder_name)
        env = base_env(folder / "instance")
        backend = PostgresBackend(args.database_server)
        with backend.database("deaths") as url:
            run_env = {**env, "DATABASE_URL": url}
            run_dibao(["db", "upgrade"], run_env, folder)
            print(f"seeding {args.households} households, {args.months} months ...", flush=True)
            seeded = run_dibao(
                [
                    "seed",
                    "--households",
                    str(args.households),
                    "--months",
                    str(args.months),
                    "--today",
                    TODAY.isoformat(),
                ],
                run_env,
                folder,
            )
            print(f"seeded in {seeded.seconds:.0f} s", flush=True)
            register = folder / "register.csv"
            planted = build_register(url, run_env, args.rows, register, seed=1)
            size = register.stat().st_size // 1024
            print(f"register: {args.rows} rows, {size} KiB, planted {planted}")

            def run(label: str, extra: list[str]) -> Measurement:
                measured = run_dibao(["deaths", "import", str(register), *extra], run_env, folder)
                output = (folder / "stdout.txt").read_text("utf-8").strip().splitlines()
                counts = next(line for line in output if line.startswith("matched="))
                print(
                    f"{label:12} {measured.seconds:6.1f} s  peak RSS {measured.peak_rss_mb:5.0f} MB"
                    f"  {counts}  {output[-1]}",
                    flush=True,
                )
                return measured

            dry = [run(f"dry run {i + 1}", []) for i in range(args.repeat)]
            applied = run("apply", ["--apply", "--user", "approver"])
            again = run("apply again", ["--apply", "--user", "approver"])
            counts = {
                table: backend.count(url, table)
                for table in ("households", "members", "death_imports", "overpayments")
            }
    dry_s = statistics.median(m.seconds for m in dry)
    peak = max(m.peak_rss_mb for m in (*dry, applied, again))
    print(f"rows: {counts}")
    print(
        f"dry run (median of {len(dry)}) {dry_s:.1f} s; apply {applied.seconds:.1f} s; "
        f"apply again {again.seconds:.1f} s; peak RSS {peak:.0f} MB"
    )
    ok = max(dry_s, applied.seconds, again.seconds) <= TARGET_SECONDS
    print(f"target: <= {TARGET_SECONDS:.0f} s each -> {'PASS' if ok else 'FAIL'}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchmarkError as exc:
        print(exc, file=sys.stderr)
        sys.exit(1)
