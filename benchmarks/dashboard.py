"""Benchmark: the supervisor console on a league seeded with history, against a bare
Flask page on the same setup (issue 15, "Figures").

Setup (timed and printed, not part of the figures): a fresh PostgreSQL database
(default ``dibao_bench_dashboard``, dropped and created again), ``dibao db upgrade``,
``dibao seed --households N --visits V --months M --seed 1`` (default 100,000
households, 1,000,000 visits, 12 months of proof of life and payments), then
``VACUUM ANALYZE``. With ``--database NAME`` naming an existing seeded database the
seeding is skipped (a second run reuses the data); ``--keep`` keeps the new database.

Then two gunicorn servers with the same settings (2 sync workers, as the other
benchmarks): ``server.wsgi:app`` (DIBAO_LOG_LEVEL=WARNING, login rate limits that never
trip) and ``bare_flask:app``. A client on loopback logs in as the league supervisor
(``supervisor``: its password is set for the run) and requests, one at a time, with
``Accept-Language: zh-CN``:

    baseline  GET /bare                                    (bare_flask.py)
    league home      GET /console/
    exceptions       GET /console/exceptions?area=<township code>
    caseworker day   GET /console/maps/caseworker/<id>/<date>  (the busiest day of all)

- **warm**: after 3 unmeasured requests, ``--requests`` requests in a row on the same
  keep-alive-less connection each (a new TCP connection per request, as a browser
  tab opening a page); p50, p95 and max.
- **cold**: ``--cold`` times: the server is stopped and started again (new worker
  processes: no compiled templates, no SQLAlchemy statement cache, no database
  connections), the supervisor logs in, and the page's first request is timed. The
  baseline's cold figure is the first /bare after its own restart. PostgreSQL's shared
  buffers and the OS page cache are *not* dropped (that needs a restart of a server
  other programs use, and root); so "cold" is a cold application on a warm database.

A page answering 404 is reported "not built yet" and skipped (the console pages are
built in parallel with this script); any other status than 200 is an error.
It prints one line per page (cold p95, warm p50/p95/max, ratio of warm p95 to the
baseline's), the targets (league home warm p95 <= 100 ms, cold <= 500 ms) and a verdict.

    .venv/bin/python benchmarks/dashboard.py [--households 100000] [--visits 1000000]
        [--months 12] [--requests 50] [--cold 5] [--database NAME | --keep]
        [--database-server postgresql://postgres@127.0.0.1:5432]

A script, not a test: it exits 0 whether or not the targets are met, and non-zero
only when the setup fails or a page answers an error.
"""

from __future__ import annotations

import argparse
import http.client
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import psycopg
from psycopg import sql
from seed import (
    DEFAULT_SERVER,
    BenchmarkError,
    base_env,
    dibao_command,
    run_dibao,
    with_database,
)
from upload import BenchmarkError as ServerError
from upload import Server, start_server

SEED = 1
SUPERVISOR = "supervisor"
PASSWORD = "bench-dashboard-password"  # noqa: S105  set for the run on a benchmark database
ACCEPT_LANGUAGE = "zh-CN"
TARGET_WARM_MS = 100.0
TARGET_COLD_MS = 500.0
NEVER = "10000000 per minute"


# --------------------------------------------------------------------------- setup


def admin(server: str) -> str:
    return with_database(server, "postgres")


def recreate(server: str, name: str) -> None:
    with psycopg.connect(admin(server), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop(server: str, name: str) -> None:
    with psycopg.connect(admin(server), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def step(label: str, args: list[str], env: dict[str, str], folder: Path) -> str:
    log_dir = folder / label
    log_dir.mkdir(exist_ok=True)
    print(f"{label}: dibao {' '.join(args)} ...", flush=True)
    measured = run_dibao(args, env, log_dir)
    print(f"{label}: {measured.seconds:.1f} s, peak RSS {measured.peak_rss_mb:.0f} MB", flush=True)
    return (log_dir / "stdout.txt").read_text("utf-8", "replace")


def set_password(url: str) -> None:
    """The supervisor logs in with a password of this run (a reused database's
    passwords were printed once, by another run)."""
    from server.auth.passwords import hash_password

    with psycopg.connect(url) as conn:
        found = conn.execute(
            "UPDATE users SET password_hash = %s WHERE username = %s",
            (hash_password(PASSWORD), SUPERVISOR),
        ).rowcount
    if found != 1:
        raise BenchmarkError(f"the database has no user {SUPERVISOR!r}: not seeded by dibao seed")


@dataclass(frozen=True)
class Targets:
    township: str
    caseworker: int
    day: str
    visits: int


def targets(url: str) -> Targets:
    """A township (the one with most households), and the busiest caseworker-day."""
    with psycopg.connect(url) as conn:
        township = conn.execute(
            "SELECT t.code FROM households h JOIN areas v ON v.id = h.village_id "
            "JOIN areas t ON t.id = v.parent_id GROUP BY t.code ORDER BY count(*) DESC, t.code "
            "LIMIT 1"
        ).fetchone()
        busy = conn.execute(
            "SELECT caseworker_id, (finished_at AT TIME ZONE 'Asia/Shanghai')::date AS day, "
            "count(*) FROM surveys GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2 LIMIT 1"
        ).fetchone()
    if township is None or busy is None:
        raise BenchmarkError("the database has no households or no visits (seed with --months)")
    return Targets(township[0], int(busy[0]), busy[1].isoformat(), int(busy[2]))


def counts(url: str) -> dict[str, int]:
    tables = ("households", "surveys", "survey_flags", "pol_months", "payment_months")
    found = {}
    with psycopg.connect(url) as conn:
        for table in tables:
            row = conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
            ).fetchone()
            found[table] = int(row[0]) if row else 0
    return found


# --------------------------------------------------------------------------- requests


@dataclass
class Client:
    port: int
    cookie: str = ""

    def get(self, path: str) -> tuple[int, bytes, float]:
        """One GET on a new connection; its status, body and milliseconds."""
        headers = {"Accept-Language": ACCEPT_LANGUAGE}
        if self.cookie:
            headers["Cookie"] = self.cookie
        started = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
        try:
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        return response.status, body, (time.perf_counter() - started) * 1000

    def login(self, username: str, password: str) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            conn.request("GET", "/login", headers={"Accept-Language": ACCEPT_LANGUAGE})
            response = conn.getresponse()
            page = response.read().decode("utf-8", "replace")
            cookie = _cookie(response.getheader("Set-Cookie", ""))
            match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page)
            if match is None:
                raise BenchmarkError("the login page has no CSRF token")
            body = urlencode(
                {"username": username, "password": password, "csrf_token": match.group(1)}
            )
            conn.request(
                "POST",
                "/login",
                body=body,
                headers={
                    "Content-Type": "application/x-www-form-urlencoded",
                    "Cookie": cookie,
                    "Accept-Language": ACCEPT_LANGUAGE,
                },
            )
            response = conn.getresponse()
            response.read()
            if response.status != 302:
                raise BenchmarkError(f"logging in as {username} answered {response.status}")
            self.cookie = _cookie(response.getheader("Set-Cookie", "")) or cookie
        finally:
            conn.close()


def _cookie(header: str) -> str:
    return header.split(";", 1)[0] if header else ""


@dataclass
class Page:
    label: str
    server: str  # "dibao" or "bare"
    path: str
    cold_ms: list[float] = field(default_factory=list)
    warm_ms: list[float] = field(default_factory=list)
    missing: bool = False


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))]


def check(page: Page, status: int, body: bytes) -> bool:
    """True if the page answered; False (and marked) if it is not built yet."""
    if status == 404:
        page.missing = True
        return False
    if status != 200:
        raise BenchmarkError(f"GET {page.path} answered {status}: {body[:300]!r}")
    return True


class Servers:
    def __init__(self, env: dict[str, str], folder: Path) -> None:
        self.env, self.folder = env, folder
        self.running: dict[str, Server] = {}

    def start(self, name: str) -> Server:
        self.stop(name)
        target = "server.wsgi:app" if name == "dibao" else "bare_flask:app"
        try:
            server = start_server(name, target, self.env, "sync", 1, self.folder / f"{name}.log")
        except ServerError as exc:
            raise BenchmarkError(str(exc)) from exc
        self.running[name] = server
        return server

    def stop(self, name: str) -> None:
        if name in self.running:
            self.running.pop(name).stop()

    def stop_all(self) -> None:
        for name in list(self.running):
            self.stop(name)


def measure(pages: list[Page], servers: Servers, requests: int, colds: int) -> None:
    for page in pages:
        for _ in range(colds):
            server = servers.start(page.server)
            client = Client(server.port)
            if page.server == "dibao":
                client.login(SUPERVISOR, PASSWORD)
            status, body, ms = client.get(page.path)
            if not check(page, status, body):
                break
            page.cold_ms.append(ms)
        if page.missing:
            print(f"{page.label}: not built yet (GET {page.path} answered 404): skipped")
            continue
        server = servers.running[page.server]
        client = Client(server.port)
        if page.server == "dibao":
            client.login(SUPERVISOR, PASSWORD)
        for _ in range(3):
            check(page, *client.get(page.path)[:2])
        for _ in range(requests):
            status, body, ms = client.get(page.path)
            check(page, status, body)
            page.warm_ms.append(ms)
        print(
            f"{page.label}: cold {' '.join(f'{v:.0f}' for v in page.cold_ms)} ms; "
            f"warm p50 {statistics.median(page.warm_ms):.1f} ms",
            flush=True,
        )


def report(pages: list[Page]) -> None:
    baseline = next(p for p in pages if p.server == "bare")
    base_warm = percentile(baseline.warm_ms, 0.95)
    print()
    print(
        f"{'page':<18} {'cold p95':>9} {'warm p50':>9} {'warm p95':>9} {'warm max':>9} "
        f"{'x bare':>7}  path"
    )
    for page in pages:
        if page.missing:
            print(f"{page.label:<18} {'not built yet':>47}  {page.path}")
            continue
        warm95 = percentile(page.warm_ms, 0.95)
        print(
            f"{page.label:<18} {percentile(page.cold_ms, 0.95):>9.1f} "
            f"{statistics.median(page.warm_ms):>9.1f} {warm95:>9.1f} {max(page.warm_ms):>9.1f} "
            f"{warm95 / base_warm:>7.1f}  {page.path}"
        )
    home = next(p for p in pages if p.label == "league home")
    print()
    if home.missing:
        print("target (league home): not built yet")
        return
    warm, cold = percentile(home.warm_ms, 0.95), percentile(home.cold_ms, 0.95)
    verdict = "PASS" if warm <= TARGET_WARM_MS and cold <= TARGET_COLD_MS else "FAIL"
    print(
        f"target (league home): warm p95 {warm:.0f} ms <= {TARGET_WARM_MS:.0f} ms, "
        f"cold p95 {cold:.0f} ms <= {TARGET_COLD_MS:.0f} ms -> {verdict}"
    )


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--households", type=int, default=100_000)
    parser.add_argument("--visits", type=int, help="default: 10 per household")
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--requests", type=int, default=50, help="warm requests per page")
    parser.add_argument("--cold", type=int, default=5, help="cold starts per page")
    parser.add_argument("--database", help="reuse this seeded database (no seeding)")
    parser.add_argument("--keep", action="store_true", help="keep the new database")
    parser.add_argument("--database-server", default=DEFAULT_SERVER)
    args = parser.parse_args(argv)
    if args.visits is None:
        args.visits = 10 * args.households
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    name = args.database or "dibao_bench_dashboard"
    url = with_database(args.database_server, name)
    with tempfile.TemporaryDirectory(prefix="dibao-dashboard-") as tmp:
        folder = Path(tmp)
        env = base_env(folder / "instance")
        env.update(
            DATABASE_URL=url,
            DIBAO_LOG_LEVEL="WARNING",
            DIBAO_LOGIN_RATE_LIMIT=NEVER,
            DIBAO_LOGIN_ADDRESS_RATE_LIMIT=NEVER,
            # As in production with a broker: the summary of every area's numbers is
            # refreshed in the background (the beat task; here `dibao console refresh
            # --every 60` beside the servers), the pages only read it.
            DIBAO_CONSOLE_REFRESH="background",
        )
        created = args.database is None
        servers = Servers(env, folder)
        try:
            if created:
                recreate(args.database_server, name)
                step("upgrade", ["db", "upgrade"], env, folder)
                step(
                    "seed",
                    [
                        "seed",
                        *("--households", str(args.households)),
                        *("--visits", str(args.visits)),
                        *("--months", str(args.months)),
                        *("--seed", str(SEED)),
                    ],
                    env,
                    folder,
                )
                started = time.perf_counter()
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute("VACUUM ANALYZE")
                print(f"vacuum analyze: {time.perf_counter() - started:.1f} s", flush=True)
            else:
                step("upgrade", ["db", "upgrade"], env, folder)
                # The trends' closed months, as the nightly task leaves them (a new
                # database has them from `dibao seed --months`).
                print(step("rollup", ["console", "rollup"], env, folder).strip(), flush=True)
            set_password(url)
            found = counts(url)
            chosen = targets(url)
            print(
                f"database {name}: "
                + ", ".join(f"{v:,} {k}" for k, v in found.items())
                + f"; township {chosen.township}; busiest day: caseworker {chosen.caseworker} "
                f"on {chosen.day} ({chosen.visits} visits)",
                flush=True,
            )
            pages = [
                Page("baseline /bare", "bare", "/bare"),
                Page("league home", "dibao", "/console/"),
                Page(
                    "exceptions",
                    "dibao",
                    "/console/exceptions?" + urlencode({"area": chosen.township}),
                ),
                Page(
                    "caseworker day",
                    "dibao",
                    f"/console/maps/caseworker/{chosen.caseworker}/{chosen.day}",
                ),
            ]
            print(step("refresh", ["console", "refresh"], env, folder).strip(), flush=True)
            refresher = subprocess.Popen(
                [*dibao_command(), "console", "refresh", "--every", "60"],
                env=env,
                cwd=folder,
                stdout=subprocess.DEVNULL,
                stderr=(folder / "refresher.log").open("w"),
            )
            try:
                measure(pages, servers, args.requests, args.cold)
            finally:
                refresher.terminate()
                refresher.wait(timeout=30)
            report(pages)
        except BenchmarkError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        finally:
            servers.stop_all()
            if created and not args.keep:
                drop(args.database_server, name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
