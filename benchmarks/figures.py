"""Benchmark: the half-yearly figures (server/public/figures.py) of a seeded county.

Setup (timed and printed, not part of the figures): a fresh PostgreSQL database,
migrated, seeded in this process with N households (default 20,000), one proof-of-life
month opened, half of its checks passed and closed (the close writes the month's
payment rows), then ANALYZE. Then `half_year_figures(county, half)` is computed R times
(default 5), each in a fresh session, and the per-run wall-clock time is printed with
the median; also the /public/figures/<half> page, cold (new snapshot) and from the
response cache. The database is dropped at the end, also when a run fails.

    .venv/bin/python benchmarks/figures.py [--households 20000] [--repeat 5]
        [--database-server postgresql://postgres@127.0.0.1:5432]

A script, not a test: it exits 0 whatever the times, non-zero only when the setup or a
computation fails.
"""

from __future__ import annotations

import argparse
import base64
import secrets
import statistics
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

from seed import DEFAULT_SERVER, PostgresBackend
from sqlalchemy import text, update

MONTH = "2026-10"
HALF = "2026-H2"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--households", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--database-server", default=DEFAULT_SERVER)
    args = parser.parse_args()

    from flask_migrate import upgrade

    from server import create_app
    from server.extensions import db
    from server.monthly import cycle as campaign
    from server.proof_of_life.models import MonthStatus, ProofOfLifeMonth
    from server.public import changes, figures
    from server.seed import seed_database

    backend = PostgresBackend(args.database_server)
    with backend.database("figures") as url, tempfile.TemporaryDirectory() as instance:
        app = create_app(
            {
                "DATABASE_URL": url,
                "SECRET_KEY": secrets.token_urlsafe(32),
                "DIBAO_DATA_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
                "DIBAO_INSTANCE_PATH": str(Path(instance)),
                "RATELIMIT_ENABLED": False,
            }
        )
        with app.app_context():
            started = time.perf_counter()
            upgrade(directory=app.extensions["migrate"].directory)
            seed_database(
                households=args.households,
                seed=1,
                rules=app.config["REGION"],
                today=date(2026, 11, 23),
                hash_passwords=False,
            )
            db.session.commit()
            at = campaign.moments(MONTH)
            campaign.open_month(MONTH, now=at.opens + timedelta(hours=1))
            db.session.execute(
                update(ProofOfLifeMonth)
                .where(ProofOfLifeMonth.month == MONTH, ProofOfLifeMonth.id % 2 == 0)
                .values(status=MonthStatus.PASSED)
            )
            db.session.commit()
            campaign.close(MONTH, now=at.closes + timedelta(hours=1))
            db.session.commit()
            changes.refresh(force=True)
            db.session.execute(text("ANALYZE"))
            db.session.commit()
            rows = db.session.scalar(text("SELECT count(*) FROM payment_months"))
            print(
                f"setup: {args.households} households, {rows} payment rows, "
                f"{time.perf_counter() - started:.1f} s"
            )
            county = db.session.scalar(text("SELECT code FROM areas WHERE level = 'county'"))
            db.session.remove()
        times = []
        for run in range(args.repeat):
            with app.app_context():
                started = time.perf_counter()
                result = figures.half_year_figures(county, HALF)
                times.append(time.perf_counter() - started)
                print(
                    f"run {run + 1}: half_year_figures {times[-1] * 1000:.0f} ms "
                    f"({len(result.townships)} townships)"
                )
                db.session.remove()
        print(f"median half_year_figures: {statistics.median(times) * 1000:.0f} ms")
        client = app.test_client()
        for label in ("page, cold", "page, cached"):
            started = time.perf_counter()
            answer = client.get(f"/public/figures/{HALF}")
            assert answer.status_code == 200, answer.status_code
            print(f"{label}: {(time.perf_counter() - started) * 1000:.0f} ms")
        with app.app_context():
            db.engine.dispose()


if __name__ == "__main__":
    main()
