"""Benchmark: ODK Collect submissions (POST /openrosa/submission, Digest login) from
concurrent clients, against a bare Flask endpoint and the old tree in the same run.

Every client sends the same form's instance XML (a periodic review of one household;
only meta/instanceID differs, as every Collect submission's does) and, with
``--photos``, the same six JPEGs of about 3 MB (4000x3000) as file parts named in the
XML. Clients log in as ODK Collect does (okhttp-digest): the first POST is answered
401 with a challenge, later ones carry the Digest answer up front with the next nc.

Apps, each under gunicorn (2 sync workers; BENCH_WORKERS=N for N) on a copy of one
seeded PostgreSQL database (CREATE DATABASE ... TEMPLATE):

- ``bare``: benchmarks/bare_flask.py's POST /openrosa/submission (Flask parses the
  multipart body, answers 201 with an OpenRosa message): the machine's ceiling;
- ``old``: the tree of ``--old-commit`` (git archive), no broker;
- ``dibao``: this tree, no broker (photo work after the answer, in the worker's
  background thread: DIBAO_BACKGROUND_JOBS=thread);
- ``dibao+broker``: this tree with CELERY_BROKER_URL (Redis) and one Celery worker
  (solo pool) running during the submissions.

Printed per app: submissions/s, client-side latency (median, p95), the gunicorn
workers' CPU ms per submission during the timed run, then (photos) the seconds until
every photo's background work is done after the last answer and the CPU ms per
submission including it and the delayed pattern checks (and the Celery worker's), the
CPU ms per submission of the app database's PostgreSQL backends, and the workers' peak
RSS; then the rates against ODK Central's figures (the issue's, and the real Central
measured on this machine).

    .venv/bin/python benchmarks/openrosa.py [--photos] [--clients 4] [--submissions N]
        [--apps bare,old,dibao,dibao+broker] [--broker redis://127.0.0.1:6379/9]
        [--old-commit ad334d1] [--database-server postgresql://postgres@127.0.0.1:5432]
    .venv/bin/python benchmarks/openrosa.py --profile 200   # in-process: SQL statements
        # and CPU per submission of this tree and the old one, cProfile's top functions,
        # and the request's CPU stage by stage

A script, not a test: exits 0 whether or not the target is met, non-zero when a
submission fails or the setup fails.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import upload as up  # benchmarks/upload.py: database, servers, CPU and RSS readings

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432"
DEFAULT_BROKER = "redis://127.0.0.1:6379/9"
OLD_COMMIT = "ad334d1"
WORKERS = int(os.environ.get("BENCH_WORKERS", "2"))  # gunicorn sync workers per app
SEED_HOUSEHOLDS = 50
PHOTOS = 6
# ODK Central on this machine (issue 19: one Node process, PostgreSQL, 4 clients).
CENTRAL = {False: (112.0, 139.0), True: (2.9, 2.9)}
# ... and as this script's client measured it against a real Central on this machine
# (central-backend 4f5943d1, a fresh database each run, unique photo bytes: the
# procedure in benchmarks/README.md, "Against a real ODK Central").
CENTRAL_MEASURED = {False: 191.0, True: 4.00}
TARGET = {False: 1.5, True: 2.0}
APPS = ("bare", "old", "dibao", "dibao+broker")


# --------------------------------------------------------------------------- submissions


def instance_xml(household_id: int, lat: float, lon: float, files: list[str]) -> bytes:
    """The instance XML of forms/household_survey.xml as Collect writes it."""
    now = datetime.now(UTC).astimezone()
    start = (now - timedelta(minutes=40)).isoformat(timespec="milliseconds")
    end = (now - timedelta(minutes=5)).isoformat(timespec="milliseconds")
    housing = "".join(f"<housing_photos><photo>{f}</photo></housing_photos>" for f in files)
    return (
        '<?xml version="1.0"?><data xmlns:jr="http://openrosa.org/javarosa" '
        'xmlns:orx="http://openrosa.org/xforms" id="household_survey" version="2026112301">'
        f"<start>{start}</start><end>{end}</end>"
        f"<household_id>{household_id}</household_id><visit_kind>periodic_review</visit_kind>"
        f"<gps>{lat:.6f} {lon:.6f} 321.5 8.5</gps><housing_notes>土坯房，两间</housing_notes>"
        f"{housing}<notes>老人卧床</notes>"
        "<meta><instanceID>uuid:INSTANCE-ID-PLACEHOLDER-0000000000</instanceID></meta></data>"
    ).encode()


@dataclass
class Form:
    xml: bytes  # with the placeholder instanceID
    files: dict[str, bytes]
    unique: bool = False
    """A JPEG comment segment of 16 random bytes right after each photo's start-of-image
    marker (same pixels): every submission's photos then have new bytes and a new SHA,
    as real photos do, so that a store that keeps one copy per content (ODK Central's
    blobs) gains nothing from the benchmark sending the same files."""

    def body(self) -> tuple[str, list[bytes]]:
        """One POST's multipart body (a new instanceID) and its boundary."""
        instance = str(uuid.uuid4()).encode()
        xml = self.xml.replace(b"INSTANCE-ID-PLACEHOLDER-0000000000", instance)
        boundary = "dibao-odk-" + secrets.token_hex(12)
        pieces = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="xml_submission_file"; '
            f'filename="instance.xml"\r\nContent-Type: text/xml\r\n\r\n'.encode(),
            xml,
            b"\r\n",
        ]
        for name, content in self.files.items():
            pieces += [
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                f'filename="{name}"\r\nContent-Type: image/jpeg\r\n\r\n'.encode(),
                *(
                    (content[:2], b"\xff\xfe\x00\x12", secrets.token_bytes(16), content[2:])
                    if self.unique
                    else (content,)
                ),
                b"\r\n",
            ]
        pieces.append(f"--{boundary}--\r\n".encode())
        return boundary, pieces


# (method, path, headers, body pieces) -> (status, headers, body)
Send = Callable[[str, str, dict[str, str], list[bytes]], tuple[int, dict[str, str], bytes]]


@dataclass
class DigestClient:
    """okhttp-digest's behaviour: answer the first Digest challenge, then send the
    answer up front with the next nc until the server says the nonce is stale."""

    username: str
    password: str
    send: Send
    challenge: dict[str, str] = field(default_factory=dict)
    nc: int = 0
    cnonce: str = ""

    def _header(self, method: str, path: str) -> str:
        c = self.challenge
        algorithm = c.get("algorithm", "MD5")
        hash_ = hashlib.sha256 if algorithm == "SHA-256" else hashlib.md5

        def h(text: str) -> str:
            return hash_(text.encode("iso-8859-1")).hexdigest()

        self.nc += 1
        nc = f"{self.nc:08x}"
        ha1 = h(f"{self.username}:{c['realm']}:{self.password}")
        ha2 = h(f"{method}:{path}")
        answer = h(f"{ha1}:{c['nonce']}:{nc}:{self.cnonce}:auth:{ha2}")
        return (
            f'Digest username="{self.username}", realm="{c["realm"]}", nonce="{c["nonce"]}", '
            f'uri="{path}", qop=auth, nc={nc}, cnonce="{self.cnonce}", '
            f'response="{answer}", algorithm={algorithm}'
        )

    def post(self, path: str, boundary: str, pieces: list[bytes]) -> tuple[int, bytes]:
        headers = {
            "X-OpenRosa-Version": "1.0",
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        }
        if not self.challenge:
            # As Collect: a HEAD first (its 401 brings the challenge), never a large body
            # sent without credentials.
            _, reply_headers, _ = self.send("HEAD", path, {"X-OpenRosa-Version": "1.0"}, [])
            self._challenged(reply_headers)
        for _ in range(3):
            sent = dict(headers)
            if self.challenge:
                sent["Authorization"] = self._header("POST", path)
            status, reply_headers, body = self.send("POST", path, sent, pieces)
            if status != 401:
                return status, body
            if not self._challenged(reply_headers):
                return status, body
        return status, body

    def _challenged(self, reply_headers: dict[str, str]) -> bool:
        digest = reply_headers.get("www-authenticate-digest", "")
        if digest:
            self.challenge = parse_challenge(digest)
            self.nc, self.cnonce = 0, secrets.token_hex(8)
        return bool(digest)


def parse_challenge(value: str) -> dict[str, str]:
    params = {}
    for item in value.partition(" ")[2].split(","):
        key, _, raw = item.strip().partition("=")
        params[key.lower()] = raw.strip('"')
    return params


def http_send(port: int) -> Send:
    def send(
        method: str, path: str, headers: dict[str, str], pieces: list[bytes]
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        try:
            conn.putrequest(method, path)
            for key, value in headers.items():
                conn.putheader(key, value)
            conn.putheader("Content-Length", str(sum(len(p) for p in pieces)))
            conn.endheaders()
            for piece in pieces:
                conn.send(piece)
            response = conn.getresponse()
            body = b"" if method == "HEAD" else response.read()
            found = {}
            for key, value in response.getheaders():
                if key.lower() == "www-authenticate" and value.startswith("Digest"):
                    found.setdefault("www-authenticate-digest", value)
            return response.status, found, body
        finally:
            conn.close()

    return send


# --------------------------------------------------------------------------- setup


@dataclass
class Setup:
    server: str
    template: str
    env: dict[str, str]
    username: str
    token: str
    household: dict[str, Any]


def database_url(server: str, name: str) -> str:
    return up.with_database(server, name)


def admin(server: str, statement: str) -> None:
    import psycopg

    with psycopg.connect(database_url(server, "postgres"), autocommit=True) as conn:
        conn.execute(statement)  # type: ignore[arg-type]


@contextmanager
def seeded(server: str, folder: Path) -> Iterator[Setup]:
    """One seeded database (the template of every app's copy), a caseworker's device
    token (its Digest HA1 stored at issue) and a household due a review."""
    template = f"dibao_odk19_{os.getpid()}_template"
    admin(server, f'DROP DATABASE IF EXISTS "{template}"')
    admin(server, f'CREATE DATABASE "{template}"')
    try:
        env = dict(os.environ)
        env.setdefault("SECRET_KEY", secrets.token_urlsafe(32))
        env.setdefault("DIBAO_DATA_KEY", base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())
        env["DIBAO_INSTANCE_PATH"] = str(folder / "instance-seed")
        env["DATABASE_URL"] = database_url(server, template)
        env["PYTHONPATH"] = str(ROOT)
        env.pop("CELERY_BROKER_URL", None)
        up.cli(env, "db", "upgrade")
        users = json.loads(up.cli(env, "seed", "--households", str(SEED_HOUSEHOLDS), "--json"))
        password = next(u["password"] for u in users["users"] if u["username"] == "caseworker1")
        site = up.start_server("seed", "server.wsgi:app", env, "sync", 1, folder / "seed.log")
        try:
            status, login = up.request_json(
                site.port,
                "POST",
                "/api/v1/auth/device-tokens",
                {"username": "caseworker1", "password": password, "device_id": "bench-odk"},
            )
            if status != 201:
                raise up.BenchmarkError(f"login failed: {status} {login}")
            status, due = up.request_json(
                site.port, "GET", "/api/v1/visits/due", token=login["token"]
            )
            reviews = [i for i in due["items"] if i["kind"] == "periodic_review"]
            if status != 200 or not reviews:
                raise up.BenchmarkError(f"no household due a review: {status} {due}")
        finally:
            site.stop()
        yield Setup(server, template, env, "caseworker1", login["token"], reviews[0])
    finally:
        admin(server, f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)')


# Tables the old tree writes that this tree's schema no longer has (created in the old
# tree's copy only, empty: its submissions insert into them).
OLD_TABLES = (
    "CREATE TABLE IF NOT EXISTS public_changes "
    "(id SERIAL PRIMARY KEY, at TIMESTAMP WITH TIME ZONE NOT NULL)",
)


@contextmanager
def copy_of(setup: Setup, label: str) -> Iterator[str]:
    name = f"dibao_odk19_{os.getpid()}_{label.replace('+', '_')}"
    admin(setup.server, f'DROP DATABASE IF EXISTS "{name}"')
    admin(setup.server, f'CREATE DATABASE "{name}" TEMPLATE "{setup.template}"')
    if label.endswith("old"):
        import psycopg

        with psycopg.connect(database_url(setup.server, name), autocommit=True) as conn:
            for statement in OLD_TABLES:
                conn.execute(statement)  # type: ignore[arg-type]
    try:
        yield database_url(setup.server, name)
    finally:
        admin(setup.server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def old_tree(commit: str, folder: Path) -> Path:
    target = folder / f"old-{commit}"
    target.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", commit], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def make_form(setup: Setup, photos: list[bytes], unique: bool = False) -> Form:
    files = {f"17147123{i:05d}.jpg": photo for i, photo in enumerate(photos)}
    location = setup.household["location"]
    xml = instance_xml(
        setup.household["household_id"], location["lat"], location["lon"], list(files)
    )
    return Form(xml, files, unique)


# --------------------------------------------------------------------------- servers


def start(name: str, target: str, env: dict[str, str], root: Path, folder: Path) -> up.Server:
    """gunicorn with 2 sync workers, from ``root`` (this tree or the old one)."""
    port = up.free_port()
    log = folder / f"{name.replace('+', '_')}.log"
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "--workers",
        str(WORKERS),
        "--bind",
        f"127.0.0.1:{port}",
        "--timeout",
        "300",
        "--pythonpath",
        str(ROOT / "benchmarks"),
        target,
    ]
    with log.open("ab") as handle:
        proc = subprocess.Popen(
            command, env=env, cwd=root, stdout=handle, stderr=handle, start_new_session=True
        )
    server = up.Server(name, proc, port, log)
    deadline = time.monotonic() + 120
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/healthz")
            conn.getresponse().read()
            conn.close()
            break
        except OSError as exc:
            if time.monotonic() > deadline or proc.poll() is not None:
                server.stop()
                raise up.BenchmarkError(
                    f"{name} did not start:\n{log.read_text('utf-8', 'replace')[-3000:]}"
                ) from exc
            time.sleep(0.2)
    while len(server.workers()) < WORKERS and time.monotonic() < deadline:
        time.sleep(0.1)
    return server


@dataclass
class Result:
    name: str
    latencies: list[float]
    wall: float
    cpu_s: float
    drain_s: float = 0.0
    cpu_total_s: float = 0.0
    rss_mb: float = 0.0
    failures: list[str] = field(default_factory=list)
    db_s: float = 0.0  # CPU of the app database's PostgreSQL backends, until settled


def run_clients(
    port: int, setup: Setup, form: Form, clients: int, count: int
) -> tuple[list[float], float, list[str]]:
    lock = threading.Lock()
    left = [count]
    latencies: list[float] = []
    failures: list[str] = []

    def client() -> None:
        digest = DigestClient(setup.username, setup.token, http_send(port))
        while True:
            with lock:
                if left[0] <= 0:
                    return
                left[0] -= 1
            boundary, pieces = form.body()
            started = time.perf_counter()
            try:
                status, body = digest.post("/openrosa/submission", boundary, pieces)
            except OSError as exc:
                with lock:
                    failures.append(repr(exc))
                continue
            elapsed = time.perf_counter() - started
            with lock:
                if status == 201:
                    latencies.append(elapsed)
                else:
                    failures.append(f"{status} {body[:200]!r}")

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, time.perf_counter() - started, failures


def pending_photos(url: str) -> int:
    return up.photos_awaiting_job(url) if url else 0


def measure(
    name: str,
    server: up.Server,
    setup: Setup,
    form: Form,
    args: argparse.Namespace,
    url: str,
    celery: subprocess.Popen[bytes] | None = None,
) -> Result:
    _, _, failures = run_clients(server.port, setup, form, args.clients, args.clients)
    if failures:
        raise up.BenchmarkError(f"{name} warm-up failed: {failures[0]}")
    if url:
        wait_drained(url, celery)
    workers = server.workers()
    extra = [celery.pid] if celery is not None else []
    db_before = backend_ticks(url) if url else {}
    before = {pid: up.cpu_ticks(pid) for pid in workers + extra}
    latencies, wall, failures = run_clients(
        server.port, setup, form, args.clients, args.submissions
    )
    tick = os.sysconf("SC_CLK_TCK")
    cpu = sum(up.cpu_ticks(pid) - before[pid] for pid in workers) / tick
    drained = wait_drained(url, celery) if url else 0.0
    if url:  # the pattern checks wait DIBAO_PATTERN_DELAY_SECONDS: count them too
        settle(workers + extra, at_least=float(os.environ.get("DIBAO_PATTERN_DELAY_SECONDS", 5)))
    total = sum(up.cpu_ticks(pid) - before[pid] for pid in workers + extra) / tick
    db_after = backend_ticks(url) if url else {}
    db_cpu = sum(ticks - db_before.get(pid, 0) for pid, ticks in db_after.items()) / tick
    rss = max(up.vm_hwm_kib(pid) for pid in workers) / 1024
    if server.workers() != workers:
        failures.append("a gunicorn worker was restarted during the run")
    return Result(name, latencies, wall, cpu, drained, total, rss, failures, db_cpu)


def backend_ticks(url: str) -> dict[int, int]:
    """CPU ticks of every PostgreSQL backend connected to the app's database (this
    query's own excepted), by pid: the server's share of each submission."""
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        pids = [
            row[0]
            for row in conn.execute(
                "SELECT pid FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ]
    found = {}
    for pid in pids:
        try:
            found[pid] = up.cpu_ticks(pid)
        except (FileNotFoundError, ProcessLookupError):  # ended since
            continue
    return found


def settle(pids: list[int], at_least: float, quiet: float = 1.0, timeout: float = 300) -> None:
    """Wait ``at_least`` seconds, then until the processes have used no CPU for
    ``quiet`` seconds (the work queued after the answers is done)."""
    started = time.perf_counter()
    time.sleep(at_least)
    last = sum(up.cpu_ticks(pid) for pid in pids)
    still = time.perf_counter()
    while time.perf_counter() - still < quiet:
        if time.perf_counter() - started > timeout:
            raise up.BenchmarkError(f"the servers still busy after {timeout} s")
        time.sleep(0.25)
        now = sum(up.cpu_ticks(pid) for pid in pids)
        if now != last:
            last, still = now, time.perf_counter()


def wait_drained(url: str, celery: subprocess.Popen[bytes] | None, timeout: float = 900) -> float:
    started = time.perf_counter()
    while pending_photos(url) > 0:
        if celery is not None and celery.poll() is not None:
            raise up.BenchmarkError("the Celery worker stopped")
        if time.perf_counter() - started > timeout:
            raise up.BenchmarkError("photo work not done after {timeout} s")
        time.sleep(0.1)
    return time.perf_counter() - started


def run_app(
    name: str, setup: Setup, form: Form, args: argparse.Namespace, folder: Path, old: Path | None
) -> Result:
    env = dict(setup.env)
    env["DIBAO_INSTANCE_PATH"] = str(folder / f"instance-{name.replace('+', '_')}")
    if name == "bare":
        server = start(name, "bare_flask:app", env, ROOT, folder)
        try:
            return measure(name, server, setup, form, args, "")
        finally:
            server.stop()
    root = old if name == "old" and old is not None else ROOT
    env["PYTHONPATH"] = str(root)
    if name == "dibao+broker":
        env["CELERY_BROKER_URL"] = args.broker
    with copy_of(setup, name) as url:
        env["DATABASE_URL"] = url
        celery = None
        if name == "dibao+broker":
            celery = up.start_celery_worker(env, folder / "celery.log")
        server = start(name, "server.wsgi:app", env, root, folder)
        try:
            return measure(name, server, setup, form, args, url, celery)
        finally:
            server.stop()
            if celery is not None:
                celery.terminate()
                celery.wait(timeout=60)


def flush_broker(url: str) -> None:
    """Empty the benchmark's Redis database (leftover messages of an earlier run)."""
    import redis

    redis.Redis.from_url(url).flushdb()


# --------------------------------------------------------------------------- profile


PROFILE_CHILD = r"""
import cProfile, io, json, os, pstats, sys, threading, time
sys.path.insert(0, os.environ["BENCH_DIR"])
import openrosa as bench
from sqlalchemy import event
from server import create_app
from server.extensions import db

try:  # this tree: the photo work and pattern checks after the answer
    from server.visits.background import wait_idle
except ImportError:  # the old tree: all in the request
    def wait_idle(app, timeout=0):
        return True

setup = json.loads(os.environ["BENCH_SETUP"])
count = int(os.environ["BENCH_COUNT"])
app = create_app()
client = app.test_client()
statements = [0, 0]  # in the request, in the background thread

def send(method, path, headers, pieces):
    reply = client.open(path, method=method, headers=headers, data=b"".join(pieces))
    found = {}
    for value in reply.headers.getlist("WWW-Authenticate"):
        if value.startswith("Digest"):
            found.setdefault("www-authenticate-digest", value)
    return reply.status_code, found, reply.data

form = bench.Form(bench.instance_xml(setup["household_id"], setup["lat"], setup["lon"], []), {})
digest = bench.DigestClient(setup["username"], setup["token"], send)
with app.app_context():
    engine = db.engine
main = threading.main_thread()

shown = []

def count_statement(conn, cursor, statement, *_args):
    statements[0 if threading.current_thread() is main else 1] += 1
    if os.environ.get("BENCH_SQL") and threading.current_thread() is main:
        shown.append(" ".join(statement.split())[:160])

event.listen(engine, "before_cursor_execute", count_statement)

def run(n):
    for _ in range(n):
        status, body = digest.post("/openrosa/submission", *form.body())
        assert status == 201, body

run(10)
wait_idle(app, 600)
if shown:
    shown.clear()
    run(1)
    print("\n".join(shown))
statements[:] = [0, 0]
profile = cProfile.Profile(time.thread_time)  # CPU of the request thread, not waits
profile.enable()
run(count)
profile.disable()
wait_idle(app, 600)
print(f"statements per submission: {statements[0] / count:.1f} in the request, "
      f"{statements[1] / count:.1f} after it (background thread)")
out = io.StringIO()
stats = pstats.Stats(profile, stream=out).sort_stats(os.environ["BENCH_SORT"])
stats.print_stats(int(os.environ["BENCH_TOP"]))
if os.environ.get("BENCH_CALLEES"):
    stats.print_callees(os.environ["BENCH_CALLEES"])
print(out.getvalue()[-int(os.environ["BENCH_CHARS"]):] if os.environ["BENCH_TOP"] != "0" else "")
# cProfile slows every call: CPU is measured again without it. thread_time: the request
# thread alone; process_time: with the background thread's work (waited for).
request_cpu, total_cpu = time.thread_time(), time.process_time()
run(count)
request_cpu = time.thread_time() - request_cpu
wait_idle(app, 600)
total_cpu = time.process_time() - total_cpu
print(f"cpu ms per submission (in-process, no profiler): {request_cpu * 1000 / count:.2f} "
      f"in the request, {total_cpu * 1000 / count:.2f} with the work after it")

# Where the request's CPU goes, stage by stage (request thread, no profiler; a stage
# inside another is counted in both). Only the stages this tree has.
import importlib
spent = {}
STAGES = [
    ("mobile_api.openrosa", "authenticate", "login (Digest)"),
    ("mobile_api.openrosa_auth", "digest_candidates", "  token lookup"),
    ("mobile_api.openrosa_auth", "ha1", "  HA1 (decrypt)"),
    ("mobile_api.openrosa_auth", "mark_used", "  mark used"),
    ("mobile_api.openrosa", "read_upload", "multipart body"),
    ("mobile_api.openrosa", "parse_submission", "XML parse"),
    ("server.visits.openrosa_mapping", "Submission.validate", "validation"),
    ("server.visits.service", "receive_survey", "receive_survey"),
    ("server.visits.service", "_visible_place", "  household and area"),
    ("server.visits.service", "_new_or_replayed", "  survey row (flush)"),
    ("server.visits.service", "_judge_and_record", "    checks and case"),
    ("server.audit.service", "record", "  audit"),
    ("mobile_api.openrosa", "enqueue_upload_work", "queue the work after"),
    ("mobile_api.openrosa", "_reply", "reply"),
    ("sqlalchemy.orm.session", "Session.flush", "  (ORM flushes)"),
    ("sqlalchemy.orm.session", "Session.commit", "  (commit)"),
]

def timed(label, real):
    def wrapper(*args, **kwargs):
        started = time.thread_time()
        try:
            return real(*args, **kwargs)
        finally:
            spent[label] = spent.get(label, 0.0) + time.thread_time() - started
    return wrapper

for module_name, attribute, label in STAGES:
    try:
        owner = importlib.import_module(module_name)
        *path, name = attribute.split(".")
        for part in path:
            owner = getattr(owner, part)
        setattr(owner, name, timed(label, getattr(owner, name)))
    except (ImportError, AttributeError):
        continue
started = time.thread_time()
run(count)
whole = time.thread_time() - started
wait_idle(app, 600)
print("request CPU by stage, ms per submission:")
for _module, _attribute, label in STAGES:
    if label in spent:
        print(f"  {label:<26} {spent[label] * 1000 / count:6.2f}")
top = sum(v for k, v in spent.items() if not k.startswith(" "))
print(f"  {'the rest (Flask, commit)':<26} {(whole - top) * 1000 / count:6.2f}")
print(f"  {'whole request':<26} {whole * 1000 / count:6.2f}")
"""


def profile(args: argparse.Namespace, setup: Setup, folder: Path, old: Path | None) -> None:
    for name, root in (("old", old), ("dibao", ROOT)):
        if root is None:
            continue
        with copy_of(setup, f"profile_{name}") as url:
            env = dict(setup.env)
            env.update(
                DATABASE_URL=url,
                PYTHONPATH=str(root),
                DIBAO_INSTANCE_PATH=str(folder / f"instance-profile-{name}"),
                BENCH_DIR=str(ROOT / "benchmarks"),
                BENCH_COUNT=str(args.profile),
                BENCH_TOP=str(args.top if name == "dibao" else 0),
                BENCH_CHARS=os.environ.get("BENCH_CHARS", "12000"),
                BENCH_SQL="1" if args.sql else "",
                BENCH_SORT=args.sort,
                BENCH_CALLEES=os.environ.get("BENCH_CALLEES", ""),
                BENCH_SETUP=json.dumps(
                    {
                        "household_id": setup.household["household_id"],
                        "lat": setup.household["location"]["lat"],
                        "lon": setup.household["location"]["lon"],
                        "username": setup.username,
                        "token": setup.token,
                    }
                ),
            )
            print(f"== {name} ({root}), {args.profile} submissions without photos", flush=True)
            result = subprocess.run(
                [sys.executable, "-c", PROFILE_CHILD],
                env=env,
                cwd=root,
                capture_output=True,
                text=True,
                check=False,
            )
            print(result.stdout, flush=True)
            if result.returncode != 0:
                raise up.BenchmarkError(result.stderr[-3000:])


# --------------------------------------------------------------------------- report


def report(results: list[Result], args: argparse.Namespace) -> int:
    count = args.submissions
    print(
        f"\n{'app':<14} {'subs/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'cpu ms':>8} "
        f"{'drain s':>8} {'sust/s':>8} {'cpu+bg ms':>9} {'db ms':>7} {'RSS MB':>7}"
    )
    failed = False
    for r in results:
        rate = len(r.latencies) / r.wall
        sustained = len(r.latencies) / (r.wall + r.drain_s)
        ok = r.latencies or [float("nan")]
        print(
            f"{r.name:<14} {rate:>8.1f} {statistics.median(ok) * 1000:>8.1f} "
            f"{up.percentile(ok, 0.95) * 1000:>8.1f} {r.cpu_s * 1000 / count:>8.2f} "
            f"{r.drain_s:>8.1f} {sustained:>8.1f} {r.cpu_total_s * 1000 / count:>9.2f} "
            f"{r.db_s * 1000 / count:>7.2f} {r.rss_mb:>7.0f}",
            flush=True,
        )
        for failure in r.failures[:3]:
            print(f"  {r.name} FAILED {failure}")
        failed = failed or bool(r.failures)
    low, high = CENTRAL[args.photos]
    target = TARGET[args.photos]
    bare = next((r for r in results if r.name == "bare"), None)
    print(
        f"\nODK Central's reference (issue 19, this machine earlier): {low:g}-{high:g} "
        f"submissions/s; target {target:g}x -> {target * high:g}/s against its best"
    )
    for r in results:
        if r.name == "bare":
            continue
        rate = len(r.latencies) / r.wall
        sustained = len(r.latencies) / (r.wall + r.drain_s)
        line = (
            f"{r.name:<14} {rate / high:.2f}x-{rate / low:.2f}x Central "
            f"({'PASS' if rate / high >= target else 'FAIL'} on its best)"
        )
        if args.photos:
            line += f"; sustained incl. background work {sustained / high:.2f}x"
        measured = CENTRAL_MEASURED[args.photos]
        line += f"; {rate / measured:.2f}x the {measured:g}/s measured here"
        if bare is not None and bare.latencies:
            line += f"; {rate / (len(bare.latencies) / bare.wall):.2f} of the bare endpoint"
        print(line)
    return 1 if failed else 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--photos", action="store_true", help="six ~3 MB JPEGs per submission")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument(
        "--submissions", type=int, help="timed submissions per app (default 400; 40 with photos)"
    )
    parser.add_argument("--apps", default=",".join(APPS), help=f"subset of {','.join(APPS)}")
    parser.add_argument("--broker", default=DEFAULT_BROKER, help="Redis for dibao+broker")
    parser.add_argument("--old-commit", default=OLD_COMMIT)
    parser.add_argument("--photo-mb", type=float, default=3.0)
    parser.add_argument(
        "--unique-photos",
        action="store_true",
        help="with --photos: new bytes in every submission's photos (a JPEG comment of 16 "
        "random bytes; same pixels), as real photos have",
    )
    parser.add_argument("--database-server", default=DEFAULT_SERVER)
    parser.add_argument("--profile", type=int, default=0, help="in-process profile of N")
    parser.add_argument("--top", type=int, default=30, help="cProfile lines with --profile")
    parser.add_argument("--sort", default="cumulative", help="cProfile's order with --profile")
    parser.add_argument("--sql", action="store_true", help="with --profile: one submission's SQL")
    args = parser.parse_args(argv)
    if args.submissions is None:
        args.submissions = 40 if args.photos else 400
    args.apps = [a.strip() for a in args.apps.split(",") if a.strip()]
    unknown = set(args.apps) - set(APPS)
    if unknown:
        parser.error(f"unknown apps: {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="dibao_bench_openrosa_"))
    try:
        with seeded(args.database_server, folder) as setup:
            wants_old = "old" in args.apps
            old = old_tree(args.old_commit, folder) if wants_old else None
            if args.profile:
                profile(args, setup, folder, old)
                return 0
            photos = up.make_photos(PHOTOS, int(args.photo_mb * 1e6)) if args.photos else []
            form = make_form(setup, photos, args.unique_photos)
            mb = sum(len(p) for p in photos) / 1e6
            load = os.getloadavg()
            print(
                f"{args.submissions} submissions per app, {args.clients} clients, "
                f"{len(photos)} photos ({mb:.1f} MB) each, PostgreSQL, gunicorn {WORKERS} sync "
                f"workers; old tree {args.old_commit}; load average {load[0]:.2f} "
                f"{load[1]:.2f} {load[2]:.2f}",
                flush=True,
            )
            if "dibao+broker" in args.apps:
                flush_broker(args.broker)
            results = [run_app(name, setup, form, args, folder, old) for name in args.apps]
            load = os.getloadavg()
            print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
            return report(results, args)
    except up.BenchmarkError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    finally:
        subprocess.run(["rm", "-rf", str(folder)], check=False)


if __name__ == "__main__":
    sys.exit(main())
