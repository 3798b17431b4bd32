"""Benchmark: the monthly SMS campaign, opening a month and sending its reminders.

Figure 1, opening a month for --recipients designated members (default 100,000) on a
fresh PostgreSQL database: wall-clock seconds and peak RSS of a child process that does
what `dibao campaign open --month M --no-send` does (create the app, count the members
for the progress bar, `sms.campaign.open_month`), with the moment injected (10:00 local
time on the 20th of M) instead of the real clock, so that the run does not depend on
today's date. Targets: at most 30 s and 300 MB. The baseline, in the same run, is the
same child doing only the app start and the count (the fixed cost).

Figure 2, the sender's throughput in one worker process: a child process calls
`sms.sender.send_due(sms.service.gateway(), rate_per_s=0, limit=--messages)` with
SMS_BACKEND=twilio against a local fake Twilio (a threaded HTTP server in its own
process, checking Basic auth and answering 201 like Twilio), clock fixed inside the
sending hours and the window. Messages per second = sent / seconds of send_due. Target:
at least 200 messages/s. The baseline, in the same run, is the same number of POSTs
through the official twilio client alone (same HTTP client as sms/twilio_gateway.py, no
database) against the same fake server: the ceiling the sender's overhead is measured
against.

Setup (not timed): `dibao db upgrade`, `dibao seed --households H` with H chosen to give
a few more approved heads of household than --recipients, then SQL trims the designated
members to exactly --recipients and removes the phone of every 20th (5 %: the caseworker
task path). Each repeat opens a new month (opening the same month twice does nothing
new by design) and sends the next --messages reminders of the first month. The database
is dropped at the end, also on failure.

    .venv/bin/python benchmarks/campaign.py [--recipients 100000] [--messages 5000]
        [--repeat 1] [--database-server postgresql://postgres@127.0.0.1:5432] [--sqlite]

A script, not a test: it exits 0 whether or not a target is met, and non-zero only when
something fails (setup, a month not opened as expected, a message not sent, a POST
duplicated or refused by the fake server).
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import secrets
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import psycopg
from seed import (
    DEFAULT_SERVER,
    Backend,
    BenchmarkError,
    Measurement,
    PostgresBackend,
    SqliteBackend,
    base_env,
    run_dibao,
)

TARGET_OPEN_SECONDS = 30.0
TARGET_OPEN_RSS_MB = 300.0
TARGET_MESSAGES_PER_S = 200.0
SEED = 1
SEED_TODAY = "2026-11-01"
FIRST_MONTH = "2027-01"
# Approved households' heads are the designated members: about 0.68 per household
# (server/seed.py STATE_WEIGHTS); seed a little more and trim to --recipients.
HEADS_PER_HOUSEHOLD = 0.65
NO_PHONE_EVERY = 20  # every 20th recipient has no phone: 5 % get a caseworker task

ACCOUNT = "AC" + "b" * 32
TOKEN = "bench-auth-token"  # noqa: S105 (the local fake server's credential)
SERVICE = "MG" + "c" * 32
PUBLIC_BASE_URL = "https://dibao.example.cn"
CALLBACK = f"{PUBLIC_BASE_URL}/sms/twilio/status"
MESSAGES_PATH = f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json"
STATS_PATH = "/_bench/stats"


# --------------------------------------------------------------------------- children
# The timed work runs in child processes of this same file (`--child KIND ...`), so
# that os.wait4 gives each its own wall clock and peak RSS.


def _child_open(month: str, baseline: bool) -> None:
    """What `dibao campaign open --month M --no-send` does, at 10:00 local on the 20th."""
    from dataclasses import asdict
    from datetime import timedelta

    from server import create_app

    app = create_app()
    with app.app_context():
        from server.monthly import cycle as campaign

        total = campaign.size("open", month)  # the CLI's progress bar length
        if baseline:
            print(json.dumps({"designated": total}))
            return
        now = campaign.moments(month).opens + timedelta(hours=10)
        report = campaign.open_month(month, now=now)
        print(json.dumps({"designated": total, **asdict(report)}))


def _child_send(month: str, limit: int) -> None:
    """send_due through the configured gateway, the clock fixed at 10:00 local on the
    20th of ``month``; prints the report and the seconds send_due took."""
    from dataclasses import asdict
    from datetime import timedelta

    from server import create_app

    app = create_app()
    with app.app_context():
        from server.monthly import cycle as campaign
        from sms import sender, service

        now = campaign.moments(month).opens + timedelta(hours=10)
        if not sender.sending_hours(now):
            raise SystemExit(f"{now.isoformat()} is outside the sending hours")
        rate = app.config["SMS_RATE_PER_SECOND"]
        gateway = service.gateway()
        started = time.perf_counter()
        report = sender.send_due(gateway, clock=lambda: now, rate_per_s=rate, limit=limit)
        seconds = time.perf_counter() - started
        print(
            json.dumps(
                {
                    **asdict(report),
                    "handled": report.handled,
                    "seconds": seconds,
                    "rate_per_s": rate,
                }
            )
        )


def _child_twilio(base_url: str, count: int) -> None:
    """``count`` POSTs through the official client alone, with sms/twilio_gateway.py's
    HTTP client and timeouts, bodies shaped like the reminders; no app, no database."""
    from datetime import date

    from twilio.rest import Client

    from sms import templates
    from sms.twilio_gateway import TwilioSettings, _HttpClient

    defaults = TwilioSettings(ACCOUNT, TOKEN, SERVICE, None, CALLBACK, base_url)
    client = Client(
        ACCOUNT,
        TOKEN,
        http_client=_HttpClient(base_url, defaults.connect_timeout_s, defaults.read_timeout_s),
    )
    work = []
    for index in range(count):
        url = f"{PUBLIC_BASE_URL}/m/{secrets.token_urlsafe(18)}"
        body = templates.reminder(
            signature="【科尔沁区民政局】", name="王小明", last_day=date(2027, 1, 24), url=url
        )
        work.append((f"139{index:08d}", body))
    started = time.perf_counter()
    accepted = 0
    for to, body in work:
        message = client.messages.create(
            to=to, body=body, status_callback=CALLBACK, messaging_service_sid=SERVICE
        )
        accepted += message.status == "accepted"
    seconds = time.perf_counter() - started
    print(json.dumps({"sent": accepted, "seconds": seconds}))


class _FakeTwilioHandler(BaseHTTPRequestHandler):
    """POST Messages.json -> 201 and a message like Twilio's; GET the stats."""

    protocol_version = "HTTP/1.1"  # keep-alive, as api.twilio.com
    # Headers and body leave in two writes: without TCP_NODELAY the second waits for the
    # client's delayed ACK (40 ms a request on Linux).
    disable_nagle_algorithm = True
    server: _FakeTwilio

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path != MESSAGES_PATH:
            self._error(404, 20404, "not found")
            return
        if self.headers.get("Authorization") != self.server.expected_auth:
            self.server.count("refused")
            self._error(401, 20003, "Authenticate")
            return
        form = {k: v[0] for k, v in parse_qs(raw.decode(), keep_blank_values=True).items()}
        if not form.get("To") or not form.get("Body") or form.get("MessagingServiceSid") != SERVICE:
            self.server.count("refused")
            self._error(400, 21604, "A 'To', 'Body' and 'MessagingServiceSid' are required")
            return
        self.server.record(form["To"], form["Body"])
        sid = "SM" + uuid.uuid4().hex
        message = {
            "sid": sid,
            "account_sid": ACCOUNT,
            "messaging_service_sid": SERVICE,
            "to": form["To"],
            "from": None,
            "body": form["Body"],
            "status": "accepted",
            "num_segments": "1",
            "num_media": "0",
            "direction": "outbound-api",
            "api_version": "2010-04-01",
            "price": None,
            "price_unit": None,
            "error_code": None,
            "error_message": None,
            "date_created": time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime()),
            "date_sent": None,
            "date_updated": None,
            "uri": MESSAGES_PATH.removesuffix(".json") + f"/{sid}.json",
        }
        self._json(201, message)

    def do_GET(self) -> None:
        if self.path != STATS_PATH:
            self._error(404, 20404, "not found")
            return
        self._json(200, self.server.stats())

    def _error(self, status: int, code: int, message: str) -> None:
        self._json(status, {"code": code, "message": message, "more_info": "", "status": status})

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # no line per request


class _FakeTwilio(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _FakeTwilioHandler)
        self.expected_auth = "Basic " + base64.b64encode(f"{ACCOUNT}:{TOKEN}".encode()).decode()
        self.lock = threading.Lock()
        self.posts = 0
        self.counts = {"refused": 0}
        self.seen: set[tuple[str, str]] = set()

    def count(self, key: str) -> None:
        with self.lock:
            self.counts[key] += 1

    def record(self, to: str, body: str) -> None:
        with self.lock:
            self.posts += 1
            self.seen.add((to, body))

    def stats(self) -> dict[str, int]:
        with self.lock:
            return {"posts": self.posts, "distinct": len(self.seen), **self.counts}


def _child_fake_twilio() -> None:
    server = _FakeTwilio()
    print(server.server_address[1], flush=True)
    server.serve_forever()


def child_main(argv: list[str]) -> int:
    kind, *rest = argv
    if kind == "open":
        _child_open(rest[0], baseline=False)
    elif kind == "open-baseline":
        _child_open(rest[0], baseline=True)
    elif kind == "send":
        _child_send(rest[0], int(rest[1]))
    elif kind == "twilio":
        _child_twilio(rest[0], int(rest[1]))
    elif kind == "fake-twilio":
        _child_fake_twilio()
    else:
        raise SystemExit(f"unknown child {kind!r}")
    return 0


# --------------------------------------------------------------------------- parent


@dataclass
class OpenRun:
    month: str
    open: Measurement
    baseline: Measurement
    report: dict[str, Any]
    records: int
    queued: int
    tasks: int


@dataclass
class SendRun:
    sent: int
    seconds: float
    peak_rss_mb: float
    baseline_sent: int
    baseline_seconds: float

    @property
    def rate(self) -> float:
        return self.sent / self.seconds

    @property
    def baseline_rate(self) -> float:
        return self.baseline_sent / self.baseline_seconds


def run_child(args: list[str], env: dict[str, str], log_dir: Path) -> tuple[Measurement, Any]:
    """Run this script as `--child ARGS`; its wall clock, own peak RSS and JSON output."""
    out_path = log_dir / "child_stdout.txt"
    err_path = log_dir / "child_stderr.txt"
    command = [sys.executable, str(Path(__file__).resolve()), "--child", *args]
    with out_path.open("wb") as out, err_path.open("wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    output = out_path.read_text("utf-8", "replace")
    if code != 0:
        errors = err_path.read_text("utf-8", "replace")
        raise BenchmarkError(f"child {' '.join(args)} exited with {code}:\n{errors[-4000:]}")
    divisor = 1024 * 1024 if sys.platform == "darwin" else 1024
    lines = output.strip().splitlines()
    if not lines:
        raise BenchmarkError(f"child {' '.join(args)} printed nothing")
    return Measurement(seconds, usage.ru_maxrss / divisor), json.loads(lines[-1])


def month_after(month: str, count: int) -> str:
    year, number = (int(part) for part in month.split("-"))
    index = year * 12 + number - 1 + count
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


class Database:
    """Plain SQL on the benchmark database (PostgreSQL through psycopg, or SQLite)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sqlite = url.startswith("sqlite:///")

    def _connect(self) -> Any:
        if self.sqlite:
            return sqlite3.connect(self.url.removeprefix("sqlite:///"), isolation_level=None)
        return psycopg.connect(self.url, autocommit=True)

    def scalar(self, query: str, *params: Any) -> int:
        conn = self._connect()
        try:
            text = query.replace("%s", "?") if self.sqlite else query
            row = conn.execute(text, params).fetchone()
        finally:
            conn.close()
        return int(row[0])

    def execute(self, *statements: str) -> None:
        conn = self._connect()
        try:
            for statement in statements:
                conn.execute(statement)
        finally:
            conn.close()


DESIGNATED = (
    "SELECT m.id FROM members m JOIN households h ON h.id = m.household_id "
    "WHERE h.state = 'approved' AND m.alive AND m.proof_of_life_required"
)


def prepare(db: Database, recipients: int) -> tuple[int, int]:
    """Trim the designated members to ``recipients`` and take the phone of every 20th;
    returns (designated, without a phone)."""
    found = db.scalar(f"SELECT count(*) FROM ({DESIGNATED}) d")  # noqa: S608
    if found < recipients:
        raise BenchmarkError(f"the seed gave {found} designated members, fewer than {recipients}")
    ranked = f"SELECT id, row_number() OVER (ORDER BY id) AS n FROM ({DESIGNATED}) d"  # noqa: S608
    db.execute(
        "UPDATE members SET proof_of_life_required = FALSE "  # noqa: S608
        f"WHERE id IN (SELECT id FROM ({ranked}) r WHERE n > {int(recipients)})",
        "UPDATE members SET phone = NULL "  # noqa: S608
        f"WHERE id IN (SELECT id FROM ({ranked}) r WHERE n % {NO_PHONE_EVERY} = 0)",
        "VACUUM ANALYZE" if not db.sqlite else "ANALYZE",
    )
    designated = db.scalar(f"SELECT count(*) FROM ({DESIGNATED}) d")  # noqa: S608
    no_phone = db.scalar(
        f"SELECT count(*) FROM members WHERE phone IS NULL AND id IN ({DESIGNATED})"  # noqa: S608
    )
    return designated, no_phone


def open_once(
    db: Database, month: str, recipients: int, env: dict[str, str], log_dir: Path
) -> OpenRun:
    baseline, counted = run_child(["open-baseline", month], env, log_dir)
    if counted["designated"] != recipients:
        raise BenchmarkError(f"baseline counted {counted['designated']}, not {recipients}")
    measured, report = run_child(["open", month], env, log_dir)
    records = db.scalar("SELECT count(*) FROM pol_months WHERE month = %s", month)
    queued = db.scalar(
        "SELECT count(*) FROM sms_messages WHERE month = %s AND status = 'queued'", month
    )
    tasks = db.scalar("SELECT count(*) FROM pol_contact_tasks WHERE month = %s", month)
    if records != recipients or report["members"] != recipients:
        raise BenchmarkError(f"open {month}: {records} records for {recipients} recipients")
    if queued + tasks != recipients or queued != report["queued"]:
        raise BenchmarkError(
            f"open {month}: {queued} queued + {tasks} tasks for {recipients} recipients"
        )
    return OpenRun(month, measured, baseline, report, records, queued, tasks)


def fake_stats(base_url: str) -> dict[str, int]:
    with urllib.request.urlopen(base_url + STATS_PATH, timeout=10) as response:  # noqa: S310
        stats: dict[str, int] = json.loads(response.read())
    return stats


def start_fake_twilio(env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", "fake-twilio"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.isdigit():
        proc.kill()
        proc.wait()
        raise BenchmarkError("the fake Twilio server did not start")
    return proc, f"http://127.0.0.1:{line}"


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def send_once(
    db: Database, month: str, messages: int, env: dict[str, str], log_dir: Path
) -> SendRun:
    before = db.scalar(
        "SELECT count(*) FROM sms_messages WHERE month = %s AND status = 'sent'", month
    )
    fake, base_url = start_fake_twilio(env)
    try:
        send_env = {
            **env,
            "SMS_BACKEND": "twilio",
            "TWILIO_ACCOUNT_SID": ACCOUNT,
            "TWILIO_AUTH_TOKEN": TOKEN,
            "TWILIO_MESSAGING_SERVICE_SID": SERVICE,
            "TWILIO_API_BASE_URL": base_url,
            "SMS_RATE_PER_SECOND": "0",
            "PUBLIC_BASE_URL": PUBLIC_BASE_URL,
        }
        send_env.pop("TWILIO_FROM_NUMBER", None)
        measured, report = run_child(["send", month, str(messages)], send_env, log_dir)
        stats = fake_stats(base_url)
        after = db.scalar(
            "SELECT count(*) FROM sms_messages WHERE month = %s AND status = 'sent'", month
        )
        problems = []
        if report["rate_per_s"] != 0:
            problems.append(f"the sender ran throttled at {report['rate_per_s']}/s")
        if report["sent"] < messages or report["handled"] != report["sent"]:
            problems.append(f"sent {report['sent']} of {messages}: {report}")
        if after - before != report["sent"]:
            problems.append(
                f"{after - before} rows became 'sent', the sender says {report['sent']}"
            )
        if stats["posts"] != report["sent"] or stats["distinct"] != stats["posts"]:
            problems.append(f"the fake server got {stats} for {report['sent']} messages")
        if stats["refused"]:
            problems.append(f"the fake server refused {stats['refused']} requests")
        if problems:
            raise BenchmarkError("send: " + "; ".join(problems))
        _, baseline = run_child(["twilio", base_url, str(report["sent"])], env, log_dir)
        stats = fake_stats(base_url)
        expected = 2 * report["sent"]
        if baseline["sent"] != report["sent"] or stats["posts"] != expected or stats["refused"]:
            raise BenchmarkError(f"twilio baseline: {baseline}, fake server {stats}")
    finally:
        stop(fake)
    return SendRun(
        report["sent"],
        report["seconds"],
        measured.peak_rss_mb,
        baseline["sent"],
        baseline["seconds"],
    )


def print_open(label: str, run: OpenRun) -> None:
    own = run.open.seconds - run.baseline.seconds
    print(
        f"{label:<8} {run.month:<8} {run.open.seconds:>7.2f} {run.open.peak_rss_mb:>8.1f} "
        f"{run.baseline.seconds:>7.2f} {run.baseline.peak_rss_mb:>8.1f} {own:>7.2f} "
        f"{run.records:>9,} {run.queued:>9,} {run.tasks:>7,}",
        flush=True,
    )


def print_send(label: str, run: SendRun) -> None:
    print(
        f"{label:<8} {run.sent:>7,} {run.seconds:>7.2f} {run.rate:>8.1f} {run.peak_rss_mb:>8.1f} "
        f"{run.baseline_seconds:>7.2f} {run.baseline_rate:>8.1f} "
        f"{run.rate / run.baseline_rate:>6.2f}",
        flush=True,
    )


def median_open(runs: list[OpenRun]) -> OpenRun:
    def med(values: list[float]) -> float:
        return statistics.median(values)

    return OpenRun(
        month="-",
        open=Measurement(
            med([r.open.seconds for r in runs]), med([r.open.peak_rss_mb for r in runs])
        ),
        baseline=Measurement(
            med([r.baseline.seconds for r in runs]), med([r.baseline.peak_rss_mb for r in runs])
        ),
        report=runs[0].report,
        records=runs[0].records,
        queued=runs[0].queued,
        tasks=runs[0].tasks,
    )


def median_send(runs: list[SendRun]) -> SendRun:
    # Medians of the rates, expressed back as seconds for the same count.
    sent = runs[0].sent
    rate = statistics.median(r.rate for r in runs)
    baseline = statistics.median(r.baseline_rate for r in runs)
    return SendRun(
        sent=sent,
        seconds=sent / rate,
        peak_rss_mb=statistics.median(r.peak_rss_mb for r in runs),
        baseline_sent=sent,
        baseline_seconds=sent / baseline,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--recipients",
        type=int,
        default=100_000,
        help="designated members the month is opened for (default: 100000)",
    )
    parser.add_argument(
        "--messages",
        type=int,
        default=5_000,
        help="messages the sender sends per run, a multiple of 20 (default: 5000)",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs; each is printed, then the median (default: 1)"
    )
    parser.add_argument(
        "--database-server",
        default=DEFAULT_SERVER,
        help=f"PostgreSQL server URL without a database (default: {DEFAULT_SERVER})",
    )
    parser.add_argument(
        "--sqlite", action="store_true", help="a temporary SQLite file instead, for comparison"
    )
    args = parser.parse_args(argv)
    if args.recipients < NO_PHONE_EVERY or args.repeat < 1 or args.messages < 20:
        parser.error("--recipients and --messages must be at least 20, --repeat at least 1")
    if args.messages % 20:
        parser.error("--messages must be a multiple of 20 (the sender claims 20 at a time)")
    with_phone = args.recipients - args.recipients // NO_PHONE_EVERY
    if args.messages * args.repeat > with_phone:
        parser.error(f"--messages x --repeat exceeds the {with_phone} reminders of one month")
    return args


def run(args: argparse.Namespace, backend: Backend, folder: Path) -> int:
    env = base_env(folder)
    households = math.ceil(args.recipients / HEADS_PER_HOUSEHOLD) + 100
    months = [month_after(FIRST_MONTH, index) for index in range(args.repeat)]
    with backend.database("campaign") as url:
        db = Database(url)
        env = {**env, "DATABASE_URL": url}
        started = time.perf_counter()
        run_dibao(["db", "upgrade"], env, folder)
        run_dibao(
            ["seed", "--households", str(households), "--seed", str(SEED), "--today", SEED_TODAY],
            env,
            folder,
        )
        designated, no_phone = prepare(db, args.recipients)
        print(
            f"setup (not timed): {households:,} households seeded, {designated:,} designated "
            f"members, {no_phone:,} of them without a phone, in "
            f"{time.perf_counter() - started:.0f} s",
            flush=True,
        )
        print(f"\nfigure 1: open a month for {designated:,} recipients")
        print(
            f"{'run':<8} {'month':<8} {'open s':>7} {'open MB':>8} {'base s':>7} {'base MB':>8} "
            f"{'own s':>7} {'records':>9} {'queued':>9} {'tasks':>7}"
        )
        opens: list[OpenRun] = []
        sends: list[SendRun] = []
        for index, month in enumerate(months, start=1):
            opens.append(open_once(db, month, designated, env, folder))
            print_open(f"#{index}", opens[-1])
        print(f"\nfigure 2: send {args.messages:,} reminders of {months[0]} (throttle off)")
        print(
            f"{'run':<8} {'sent':>7} {'send s':>7} {'msg/s':>8} {'send MB':>8} {'base s':>7} "
            f"{'base/s':>8} {'ratio':>6}"
        )
        for index in range(1, args.repeat + 1):
            sends.append(send_once(db, months[0], args.messages, env, folder))
            print_send(f"#{index}", sends[-1])

    opened = median_open(opens)
    sending = median_send(sends)
    if args.repeat > 1:
        print("\nmedians")
        print_open("median", opened)
        print_send("median", sending)
    report = opened.report
    print(
        f"\nopen: {opened.records:,} records, {opened.queued:,} reminders queued, "
        f"{opened.tasks:,} caseworker tasks {report['tasks']}; open s / MB: the whole child "
        "(app start, count, open_month); base: app start and count only; own = open - base"
    )
    ok_open = (
        opened.open.seconds <= TARGET_OPEN_SECONDS and opened.open.peak_rss_mb <= TARGET_OPEN_RSS_MB
    )
    print(
        f"target open: <={TARGET_OPEN_SECONDS:.0f} s and <={TARGET_OPEN_RSS_MB:.0f} MB -> "
        f"{'PASS' if ok_open else 'FAIL'} ({opened.open.seconds:.1f} s, "
        f"{opened.open.peak_rss_mb:.0f} MB)"
    )
    print(
        "send: msg/s = sent / seconds of send_due in one process (app start excluded); "
        "base/s: the twilio client alone, same fake server; ratio = msg/s / base/s"
    )
    ok_send = sending.rate >= TARGET_MESSAGES_PER_S
    print(
        f"target send: >={TARGET_MESSAGES_PER_S:.0f} msg/s -> {'PASS' if ok_send else 'FAIL'} "
        f"({sending.rate:.1f} msg/s, {sending.rate / sending.baseline_rate:.2f}x the client alone)"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dibao_bench_") as tmp:
        folder = Path(tmp)
        backend: Backend = (
            SqliteBackend(folder) if args.sqlite else PostgresBackend(args.database_server)
        )
        where = "SQLite (temporary file)" if args.sqlite else args.database_server
        print(
            f"campaign benchmark on {where}: {args.recipients:,} recipients, "
            f"{args.messages:,} messages, {args.repeat} run(s)",
            flush=True,
        )
        try:
            return run(args, backend, folder)
        except (BenchmarkError, psycopg.Error, sqlite3.Error, OSError) as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        sys.exit(child_main(sys.argv[2:]))
    sys.exit(main())
