"""Benchmark: the public transparency pages with 1,000,000 cases, against a bare Flask app.

Setup (timed and printed, not part of the figures): a PostgreSQL database,
`dibao db upgrade`, `dibao seed --households N --seed 1` (default 1,000,000),
`dibao public refresh --force` (the published snapshot: public_snapshots and
public_cases), then `VACUUM ANALYZE`. With --database or --keep-database naming an
existing database, seeding and the refresh are skipped (a second run reuses the data).
With --league, the database is a clone of the shared league template
(benchmarks/league.py: households only, seeded once and kept), dropped at the end; the
refresh runs on the clone.

Then two gunicorn servers with the same settings (2 sync workers, as upload.py):
`server.wsgi:app` with DIBAO_PUBLIC_REFRESH=background (no request rebuilds the
snapshot), DIBAO_PUBLIC_RATE_LIMIT="10000000 per minute" (the limiter runs but never
trips) and DIBAO_LOG_LEVEL=WARNING; and the baseline, `bare_flask:app` (one view
answering {"ok": true}). wrk, a second process on loopback, loads one endpoint at a
time (a warm-up run, then the measured run) with `Accept-Language: zh-CN`:

    baseline  GET /bare                                   (bare_flask.py)
    GET /public                                           (HTML: 50 cases + aggregates)
    GET /api/v1/public/cases                              (JSON, 50 per page)
    GET /api/v1/public/cases?township=T&status=approved   (a filtered page)
    GET /api/v1/public/cases/<code>                       (one case)

It prints one line per endpoint and repeat (requests/s, latency p50/p95/p99/max from
wrk, CPU of the gunicorn workers and of PostgreSQL per request), then the medians, the
ratio of each endpoint's requests/s to the baseline's and the verdict against the
targets (p95 at most 50 ms, at least 0.5x the baseline's requests/s), and the workers'
VmRSS after the load.

    .venv/bin/python benchmarks/public.py [--households 1000000] [--duration 20]
        [--connections 8] [--repeat 1] [--warmup 3]
        [--database NAME | --keep-database NAME | --league]
        [--database-server postgresql://postgres@127.0.0.1:5432]

Needs wrk (Debian: `apt-get install wrk`). A script, not a test: it exits 0 whether or
not the targets are met, and non-zero only when the setup fails or a response is an
error (a socket error, a timeout or a status other than 2xx makes the run INVALID).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import psycopg
from league import league_database
from psycopg import sql
from seed import DEFAULT_SERVER, BenchmarkError, base_env, run_dibao, with_database
from upload import BenchmarkError as ServerError
from upload import Server, cpu_ticks, start_server

TARGET_P95_MS = 50.0
TARGET_RATIO = 0.5
SEED = 1
WORKERS = 2
WRK_THREADS = 2
ACCEPT_LANGUAGE = "zh-CN"
RATE_LIMIT = "10000000 per minute"

# wrk's summary as one machine-readable line. setup() runs in the main Lua state (the
# one done() runs in), init() and response() in each thread's own state: the non-2xx
# counts are gathered from the threads at the end.
WRK_SCRIPT = """
wrk.headers["Accept-Language"] = "%(language)s"

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  non2xx = 0
  first = 0
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
    if first == 0 then first = status end
  end
end

function done(summary, latency, requests)
  local bad, first_status = 0, 0
  for _, thread in ipairs(threads) do
    bad = bad + thread:get("non2xx")
    if first_status == 0 then first_status = thread:get("first") end
  end
  local e = summary.errors
  io.write(string.format(
    "WRK requests=%%.0f duration_us=%%.0f bytes=%%.0f connect=%%.0f read=%%.0f " ..
    "write=%%.0f status=%%.0f timeout=%%.0f non2xx=%%.0f first_status=%%.0f " ..
    "p50_us=%%.0f p95_us=%%.0f p99_us=%%.0f max_us=%%.0f mean_us=%%.1f\\n",
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, bad, first_status, latency:percentile(50),
    latency:percentile(95), latency:percentile(99), latency.max, latency.mean))
end
"""


# --------------------------------------------------------------------------- setup


@dataclass
class Database:
    name: str
    url: str
    created: bool  # by this run (else it existed and is reused)
    keep: bool


def admin_url(server: str) -> str:
    return with_database(server, "postgres")


def database_exists(server: str, name: str) -> bool:
    with psycopg.connect(admin_url(server), autocommit=True) as conn:
        row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return row is not None


def create_database(server: str, name: str) -> None:
    with psycopg.connect(admin_url(server), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_database(server: str, name: str) -> None:
    with psycopg.connect(admin_url(server), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def scalar(url: str, query: str) -> Any:
    with psycopg.connect(url) as conn:
        row = conn.execute(query).fetchone()
    return row[0] if row else None


def snapshot_summary(url: str) -> tuple[int, int, int] | None:
    """(id, cases, withheld) of the newest ready snapshot, or None."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT id, cases, withheld FROM public_snapshots WHERE state = 'ready' "
            "ORDER BY id DESC LIMIT 1"
        ).fetchone()
    return (int(row[0]), int(row[1]), int(row[2])) if row else None


def step(label: str, args: list[str], env: dict[str, str], folder: Path) -> str:
    """Run `dibao ARGS`, print its time and peak RSS; its standard output."""
    log_dir = folder / label
    log_dir.mkdir(exist_ok=True)
    print(f"{label}: dibao {' '.join(args)} ...", flush=True)
    measured = run_dibao(args, env, log_dir)
    print(f"{label}: {measured.seconds:.1f} s, peak RSS {measured.peak_rss_mb:.0f} MB", flush=True)
    return (log_dir / "stdout.txt").read_text("utf-8", "replace")


def prepare(
    db: Database, households: int, env: dict[str, str], folder: Path, seeded: bool = False
) -> None:
    """Migrate; on a new database also seed (unless ``seeded``: a league clone) and
    build the snapshot; print the counts."""
    step("upgrade", ["db", "upgrade"], env, folder)
    if db.created and not seeded:
        step("seed", ["seed", "--households", str(households), "--seed", str(SEED)], env, folder)
    if db.created or snapshot_summary(db.url) is None:
        if not db.created:
            print(f"database {db.name} has no ready public snapshot: building one", flush=True)
        output = step("refresh", ["public", "refresh", "--force"], env, folder)
        for line in output.splitlines():
            if line.startswith("public snapshot"):
                print(f"refresh: {line}", flush=True)
        started = time.perf_counter()
        with psycopg.connect(db.url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
        print(f"vacuum analyze: {time.perf_counter() - started:.1f} s", flush=True)
    snapshot = snapshot_summary(db.url)
    if snapshot is None:
        raise BenchmarkError(f"database {db.name} has no ready public snapshot")
    found = int(scalar(db.url, "SELECT count(*) FROM households"))
    if found == 0:
        raise BenchmarkError(f"database {db.name} has no households")
    note = ""
    if not db.created and found != households:
        note = f" (reused database: --households {households} does not apply)"
    print(
        f"database {db.name}: {found:,} households; public snapshot {snapshot[0]}: "
        f"{snapshot[1]:,} cases published, {snapshot[2]:,} withheld{note}",
        flush=True,
    )


# --------------------------------------------------------------------------- requests


def fetch(port: int, path: str) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("GET", path, headers={"Accept-Language": ACCEPT_LANGUAGE})
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    return response.status, response.getheader("Content-Type", ""), body


def fetch_json(port: int, path: str) -> Any:
    status, _, body = fetch(port, path)
    if status != 200:
        raise BenchmarkError(f"GET {path} answered {status}: {body[:500]!r}")
    return json.loads(body)


@dataclass
class Endpoint:
    label: str
    server: str  # "dibao" or "bare"
    path: str
    # When set, wrk walks these paths instead (each thread from its own offset), so
    # every request asks for a page no process has rendered yet: the cold cost.
    paths: list[str] | None = None


# Cycles through PATHS; thread k starts k/threads of the way in, so with more paths
# than requests no two requests of a run ask for the same page.
WALK_SCRIPT = """
local thread_count = 0
function setup(thread)
  thread:set("offset", thread_count)
  thread_count = thread_count + 1
  table.insert(threads, thread)
end

function init(args)
  non2xx = 0
  first = 0
  position = math.floor(offset * #paths / %(threads)d)
end

function request()
  position = position %% #paths + 1
  return wrk.format(nil, paths[position])
end
"""


def distinct_codes(url: str, count: int) -> list[str]:
    """``count`` case codes of the current snapshot, in an order unrelated to the codes."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT case_code FROM public_cases WHERE snapshot_id = (SELECT max(id) FROM "
            "public_snapshots WHERE state = 'ready') ORDER BY md5(case_code) LIMIT %s",
            (count,),
        ).fetchall()
    return [row[0] for row in rows]


def walk_script(base: str, paths: list[str]) -> str:
    """The report script, plus the walk over ``paths`` (replacing its setup and init)."""
    table = ",\n".join(json.dumps(path) for path in paths)
    report = base.replace(
        "function setup(thread)\n  table.insert(threads, thread)\nend\n", ""
    ).replace("function init(args)\n  non2xx = 0\n  first = 0\nend\n", "")
    return f"paths = {{\n{table}\n}}\n" + report + WALK_SCRIPT % {"threads": WRK_THREADS}


def endpoints(port: int, database_url: str, distinct: int) -> list[Endpoint]:
    """The measured URLs; a township and a case code are taken from the API itself,
    ``distinct`` case codes for the cold runs from the database."""
    stats = fetch_json(port, "/api/v1/public/stats")
    townships = [t["township"] for t in stats.get("townships", []) if t.get("township")]
    if not townships:
        raise BenchmarkError(f"/api/v1/public/stats lists no township: {stats}")
    first = fetch_json(port, "/api/v1/public/cases")
    if not first.get("items"):
        raise BenchmarkError("/api/v1/public/cases lists no case")
    code = first["items"][0]["case_code"]
    filtered = "/api/v1/public/cases?" + urlencode({"township": townships[0], "status": "approved"})
    return [
        Endpoint("baseline /bare", "bare", "/bare"),
        Endpoint("/public", "dibao", "/public"),
        Endpoint("/api/v1/public/cases", "dibao", "/api/v1/public/cases"),
        Endpoint("cases?township&status", "dibao", filtered),
        Endpoint("cases/<code>", "dibao", f"/api/v1/public/cases/{quote(code)}"),
        *cold_endpoints(database_url, distinct),
    ]


def cold_endpoints(database_url: str, distinct: int) -> list[Endpoint]:
    if distinct <= 0:
        return []
    codes = [quote(code) for code in distinct_codes(database_url, distinct)]
    return [
        Endpoint(
            "/public, new pages",
            "dibao",
            f"/public?after={codes[0]}",
            [f"/public?after={c}" for c in codes],
        ),
        Endpoint(
            "cases, new pages",
            "dibao",
            f"/api/v1/public/cases?after={codes[0]}",
            [f"/api/v1/public/cases?after={c}" for c in codes],
        ),
        Endpoint(
            "cases/<code>, new codes",
            "dibao",
            f"/api/v1/public/cases/{codes[0]}",
            [f"/api/v1/public/cases/{c}" for c in codes],
        ),
    ]


# --------------------------------------------------------------------------- load


@dataclass
class Load:
    requests: int
    seconds: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    socket_errors: int  # connect, read, write, timeout
    non2xx: int
    first_status: int
    worker_cpu_ms: float  # per request
    pg_cpu_ms: float  # per request
    host_busy: float  # share of all CPUs' time not idle nor waiting, 0-1

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def valid(self) -> bool:
        return self.requests > 0 and self.socket_errors == 0 and self.non2xx == 0

    def problems(self) -> str:
        parts = []
        if self.socket_errors:
            parts.append(f"{self.socket_errors} socket errors/timeouts")
        if self.non2xx:
            parts.append(f"{self.non2xx} non-2xx answers (first: {self.first_status})")
        if not self.requests:
            parts.append("no request completed")
        return ", ".join(parts)


def find_wrk() -> str | None:
    return shutil.which("wrk") or ("/usr/bin/wrk" if Path("/usr/bin/wrk").exists() else None)


def postgres_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def cpu_of(pids: list[int]) -> dict[int, int]:
    return {pid: cpu_ticks(pid) for pid in pids}


def cpu_delta_s(before: dict[int, int], pids: list[int]) -> float:
    """CPU seconds since ``before``; processes started since count from zero (a new
    PostgreSQL backend per gunicorn worker connection), ended ones are lost."""
    ticks = sum(cpu_ticks(pid) - before.get(pid, 0) for pid in pids)
    return max(ticks, 0) / os.sysconf("SC_CLK_TCK")


def host_cpu() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


def run_wrk(
    wrk: str, script: Path, server: Server, path: str, seconds: float, connections: int
) -> Load:
    workers = server.workers()
    pg_before = cpu_of(postgres_pids())
    workers_before = cpu_of(workers)
    host_before = host_cpu()
    command = [
        wrk,
        "--threads",
        str(min(WRK_THREADS, connections)),
        "--connections",
        str(connections),
        "--duration",
        f"{seconds:g}s",
        "--timeout",
        "10s",
        "--script",
        str(script),
        f"http://127.0.0.1:{server.port}{path}",
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 120, check=False
    )
    host_after = host_cpu()
    worker_cpu = cpu_delta_s(workers_before, workers)
    pg_cpu = cpu_delta_s(pg_before, postgres_pids())
    line = next((x for x in result.stdout.splitlines() if x.startswith("WRK ")), None)
    if result.returncode != 0 or line is None:
        raise BenchmarkError(
            f"wrk exited with {result.returncode}:\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
    values = {k: float(v) for k, v in re.findall(r"(\w+)=([-\d.]+)", line)}
    requests = int(values["requests"])
    per = max(requests, 1)
    return Load(
        requests=requests,
        seconds=values["duration_us"] / 1e6,
        p50_ms=values["p50_us"] / 1000,
        p95_ms=values["p95_us"] / 1000,
        p99_ms=values["p99_us"] / 1000,
        max_ms=values["max_us"] / 1000,
        socket_errors=int(values["connect"] + values["read"] + values["write"] + values["timeout"]),
        non2xx=int(max(values["non2xx"], values["status"])),
        first_status=int(values["first_status"]),
        worker_cpu_ms=worker_cpu * 1000 / per,
        pg_cpu_ms=pg_cpu * 1000 / per,
        host_busy=(host_after[0] - host_before[0]) / max(host_after[1] - host_before[1], 1),
    )


def status_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


# --------------------------------------------------------------------------- report

HEADER = (
    f"{'run':<4} {'endpoint':<24} {'requests':>9} {'req/s':>9} {'p50 ms':>8} {'p95 ms':>8} "
    f"{'p99 ms':>8} {'max ms':>8} {'wkr cpu':>8} {'pg cpu':>7} {'host':>5} {'load':>5}  result"
)


def print_load(run: str, endpoint: Endpoint, load: Load) -> None:
    loadavg = os.getloadavg()[0]
    verdict = "ok" if load.valid else f"INVALID: {load.problems()}"
    print(
        f"{run:<4} {endpoint.label:<24} {load.requests:>9,} {load.rps:>9.1f} "
        f"{load.p50_ms:>8.2f} {load.p95_ms:>8.2f} {load.p99_ms:>8.2f} {load.max_ms:>8.1f} "
        f"{load.worker_cpu_ms:>8.2f} {load.pg_cpu_ms:>7.2f} {load.host_busy:>5.0%} "
        f"{loadavg:>5.2f}  {verdict}",
        flush=True,
    )


def print_summary(results: dict[str, list[Load]], baseline: str) -> None:
    base_rps = statistics.median(x.rps for x in results[baseline])
    print(
        f"\n{'endpoint':<24} {'req/s':>9} {'p95 ms':>8} {'x base':>7} {'wkr cpu':>8} "
        f"{'pg cpu':>7}  (medians of {len(results[baseline])} run(s))"
    )
    for label, loads in results.items():
        rps = statistics.median(x.rps for x in loads)
        ratio = rps / base_rps if base_rps else 0.0
        print(
            f"{label:<24} {rps:>9.1f} {statistics.median(x.p95_ms for x in loads):>8.2f} "
            f"{ratio:>7.2f} {statistics.median(x.worker_cpu_ms for x in loads):>8.2f} "
            f"{statistics.median(x.pg_cpu_ms for x in loads):>7.2f}"
        )
    print()
    for label, loads in results.items():
        if label == baseline:
            continue
        rps = statistics.median(x.rps for x in loads)
        p95 = statistics.median(x.p95_ms for x in loads)
        ratio = rps / base_rps if base_rps else 0.0
        if not all(x.valid for x in loads):
            verdict = "INVALID (errors, see above)"
        elif p95 <= TARGET_P95_MS and ratio >= TARGET_RATIO:
            verdict = "PASS"
        else:
            verdict = "FAIL"
        print(
            f"target {label}: p95 <= {TARGET_P95_MS:.0f} ms and >= {TARGET_RATIO}x baseline "
            f"-> {verdict} (p95 {p95:.1f} ms, {ratio:.2f}x)"
        )


def print_memory(servers: dict[str, Server], pids: dict[str, list[int]]) -> None:
    for name, server in servers.items():
        now = server.workers()
        rss = [status_kib(pid, "VmRSS") / 1024 for pid in now]
        hwm = [status_kib(pid, "VmHWM") / 1024 for pid in now]
        restarted = "" if now == pids[name] else " (a worker was restarted during the run!)"
        print(
            f"{name} workers after the load: VmRSS "
            f"{', '.join(f'{x:.0f}' for x in rss)} MB (sum {sum(rss):.0f}); VmHWM max "
            f"{max(hwm, default=0):.0f} MB{restarted}"
        )


def print_log(log: Path) -> int:
    """The dibao server's log lines (WARNING and above); how many there were."""
    text = log.read_text("utf-8", "replace") if log.exists() else ""
    lines = [
        x
        for x in text.splitlines()
        if x.strip() and "[INFO]" not in x and "Booting worker" not in x
    ]
    if lines:
        print(f"\ndibao server log ({len(lines)} lines besides gunicorn's INFO; the last 40):")
        for line in lines[-40:]:
            print(f"  {line}")
    else:
        print("\ndibao server log: nothing at WARNING or above")
    return len(lines)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--households",
        type=int,
        default=1_000_000,
        help="households to seed into a new database (default: 1000000)",
    )
    parser.add_argument(
        "--duration", type=float, default=20, help="seconds of each measured run (default: 20)"
    )
    parser.add_argument(
        "--warmup", type=float, default=3, help="seconds of the warm-up before each (default: 3)"
    )
    parser.add_argument(
        "--connections", type=int, default=8, help="wrk connections, 2 threads (default: 8)"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds over all endpoints; each run is printed, then the medians (default: 1)",
    )
    parser.add_argument(
        "--distinct",
        type=int,
        default=150000,
        help="case codes for the runs over pages never asked for before (split between "
        "rounds; 0: no such runs; default: 150000)",
    )
    parser.add_argument(
        "--database",
        metavar="NAME",
        help="use database NAME: if it exists, seeding and the refresh are skipped and it is "
        "kept; if not, it is created, set up, and dropped at the end",
    )
    parser.add_argument(
        "--keep-database",
        metavar="NAME",
        help="as --database NAME, and never drop it (a later run reuses it with "
        "--database NAME or --keep-database NAME)",
    )
    parser.add_argument(
        "--league",
        action="store_true",
        help="run on a clone of the shared league template (benchmarks/league.py, households "
        "only; built once and kept), dropped at the end",
    )
    parser.add_argument(
        "--database-server",
        default=DEFAULT_SERVER,
        help=f"PostgreSQL server URL; the database part is ignored (default: {DEFAULT_SERVER})",
    )
    args = parser.parse_args(argv)
    if args.league and (args.database or args.keep_database):
        parser.error("--league clones the league; --database and --keep-database name one")
    if min(args.households, args.repeat, args.connections) < 1:
        parser.error("--households, --repeat and --connections must be at least 1")
    if args.duration <= 0 or args.warmup < 0:
        parser.error("--duration must be positive and --warmup not negative")
    if args.database and args.keep_database and args.database != args.keep_database:
        parser.error("--database and --keep-database name different databases")
    return args


def measure(
    args: argparse.Namespace, wrk: str, env: dict[str, str], folder: Path
) -> tuple[dict[str, list[Load]], str, bool]:
    """Start both servers, load each endpoint; (results, baseline label, any error)."""
    server_env = {
        **env,
        "DIBAO_PUBLIC_REFRESH": "background",
        "DIBAO_PUBLIC_RATE_LIMIT": RATE_LIMIT,
        "DIBAO_LOG_LEVEL": "WARNING",
    }
    script = folder / "report.lua"
    script.write_text(WRK_SCRIPT % {"language": ACCEPT_LANGUAGE})
    servers: dict[str, Server] = {}
    results: dict[str, list[Load]] = {}
    failed = False
    try:
        servers["dibao"] = start_server(
            "dibao", "server.wsgi:app", server_env, "sync", 1, folder / "dibao.log"
        )
        servers["bare"] = start_server(
            "bare", "bare_flask:app", server_env, "sync", 1, folder / "bare.log"
        )
        pids = {name: server.workers() for name, server in servers.items()}
        targets = endpoints(servers["dibao"].port, env["DATABASE_URL"], args.distinct)
        print(
            f"\ngunicorn --workers {WORKERS} (sync) for dibao and bare_flask; wrk "
            f"--threads {min(WRK_THREADS, args.connections)} --connections {args.connections}, "
            f"{args.warmup:g} s warm-up + {args.duration:g} s per run, Accept-Language: "
            f"{ACCEPT_LANGUAGE}; {os.cpu_count()} CPUs, load average "
            f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
        )
        for target in targets:
            status, kind, body = fetch(servers[target.server].port, target.path)
            print(f"  {target.label:<24} GET {target.path} -> {status} {kind}, {len(body):,} B")
            if status != 200:
                raise BenchmarkError(f"GET {target.path} answered {status}: {body[:500]!r}")
        print(
            "\nwkr cpu / pg cpu: CPU ms per request of the gunicorn workers / of all "
            "PostgreSQL processes; host: busy share of all CPUs during the run (everything, "
            "wrk and other processes included); load: 1-minute load average after the run"
        )
        print(HEADER, flush=True)
        for repeat in range(1, args.repeat + 1):
            for target in targets:
                server = servers[target.server]
                run_script = script
                if target.paths:
                    # A slice of its own per round: no page is asked for twice in a run.
                    walk = folder / f"walk-{repeat}.lua"
                    base = WRK_SCRIPT % {"language": ACCEPT_LANGUAGE}
                    walk.write_text(walk_script(base, target.paths[repeat - 1 :: args.repeat]))
                    run_script = walk
                elif args.warmup > 0:
                    warm = run_wrk(wrk, script, server, target.path, args.warmup, args.connections)
                    if not warm.valid:
                        print_load("warm", target, warm)
                        failed = True
                load = run_wrk(
                    wrk, run_script, server, target.path, args.duration, args.connections
                )
                if target.paths and load.requests > len(target.paths) // args.repeat:
                    print(
                        f"  note: {load.requests:,} requests over "
                        f"{len(target.paths) // args.repeat:,} pages: some were asked for "
                        "twice (raise --distinct)"
                    )
                print_load(f"#{repeat}", target, load)
                failed = failed or not load.valid
                results.setdefault(target.label, []).append(load)
        print()
        print_memory(servers, pids)
    finally:
        for server in servers.values():
            server.stop()
        if "dibao" in servers:
            print_log(servers["dibao"].log)
    return results, targets[0].label, failed


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wrk = find_wrk()
    if wrk is None:
        print(
            "benchmark failed: wrk is not installed; install it first "
            "(Debian/Ubuntu: sudo apt-get install wrk)",
            file=sys.stderr,
        )
        return 2
    if args.league:
        return main_on_league(args, wrk)
    folder = Path(tempfile.mkdtemp(prefix="dibao_bench_public_"))
    name = args.keep_database or args.database or f"dibao_bench_{os.getpid()}_public"
    db: Database | None = None
    try:
        exists = database_exists(args.database_server, name)
        db = Database(
            name=name,
            url=with_database(args.database_server, name),
            created=not exists,
            keep=exists or args.keep_database is not None,
        )
        if exists:
            print(f"reusing database {name} (seed and refresh skipped)", flush=True)
        else:
            create_database(args.database_server, name)
            print(f"created database {name}; {args.households:,} households", flush=True)
        env = {**base_env(folder), "DATABASE_URL": db.url}
        prepare(db, args.households, env, folder)
        results, baseline, failed = measure(args, wrk, env, folder)
        print_summary(results, baseline)
    except (BenchmarkError, ServerError, psycopg.Error, OSError, subprocess.SubprocessError) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    finally:
        if db is not None and db.created and not db.keep:
            drop_database(args.database_server, db.name)
            print(f"dropped database {db.name}")
        elif db is not None:
            print(f"kept database {db.name} (reuse: --database {db.name})")
        shutil.rmtree(folder, ignore_errors=True)
    if failed:
        print("INVALID: some responses were errors (see above)", file=sys.stderr)
        return 1
    return 0


def main_on_league(args: argparse.Namespace, wrk: str) -> int:
    """The benchmark on a clone of the league (households only), dropped at the end."""
    folder = Path(tempfile.mkdtemp(prefix="dibao_bench_public_"))
    failed = False
    try:
        with league_database(
            households=args.households,
            parts=None,
            months=0,
            server=args.database_server,
            label="bench_public",
        ) as league:
            db = Database(name=league.name, url=league.url, created=True, keep=False)
            prepare(db, args.households, league.env, folder, seeded=True)
            results, baseline, failed = measure(args, wrk, league.env, folder)
            print_summary(results, baseline)
    except (BenchmarkError, ServerError, psycopg.Error, OSError, subprocess.SubprocessError) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if failed:
        print("INVALID: some responses were errors (see above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
