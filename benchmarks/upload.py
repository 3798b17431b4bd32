"""Benchmark: concurrent tablet uploads (a survey with 6 photos of 12 MP) against a bare baseline.

Concurrent clients on loopback POST surveys as multipart/form-data (docs/api.md) to
gunicorn serving `server.wsgi:app` with 2 workers, each survey carrying 6 distinct
4000x3000 JPEG photos of kind "housing" (about --photo-mb MB each; no face work). In
the same run the very same request bodies go to a bare WSGI app (`bare_app` below, same
gunicorn settings) that only streams the body to a file and fsyncs it: the baseline.

It prints, for each app, surveys per second, the client-side time to acknowledgement
(request start to the response read: median and p95), the workers' CPU seconds per
survey and their peak RSS (VmHWM from /proc/<pid>/status of each gunicorn worker, read
after the run, before stopping: the max over the workers, and their sum); then the
ratio dibao / baseline of the p50 against the target of 1.5x.

    .venv/bin/python benchmarks/upload.py [--clients 4] [--surveys 40] [--photo-mb 3]
        [--worker-class sync|gthread|both] [--threads 4] [--sqlite]
        [--database-server postgresql://postgres@127.0.0.1:5432]

A script, not a test: it exits 0 whether or not the target is met, and non-zero only
when an upload fails (a non-2xx answer, or a survey not "complete") or the setup fails.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import http.client
import json
import math
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

# Heavy imports (numpy, Pillow, psycopg) stay inside functions: gunicorn imports this
# module for `bare_app`, and the baseline's RSS should be that of a bare WSGI worker.

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432"
TARGET_P50_RATIO = 1.5
PHOTOS_PER_SURVEY = 6
PHOTO_SIZE = (4000, 3000)
JPEG_QUALITY = 92
SEED_HOUSEHOLDS = 200
WORKERS = 2
BARE_DIR_ENV = "DIBAO_BENCH_BARE_DIR"
CHUNK = 256 * 1024
TABLET_TZ = timezone(timedelta(hours=8))


# --------------------------------------------------------------------------- baseline app


def bare_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The baseline: stream the request body to a new file in $DIBAO_BENCH_BARE_DIR in
    256 KiB chunks, fsync it and answer 201 (GET answers 200: the readiness probe)."""
    if environ["REQUEST_METHOD"] != "POST":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]
    remaining = int(environ.get("CONTENT_LENGTH") or 0)
    stream = environ["wsgi.input"]
    fd, _ = tempfile.mkstemp(dir=os.environ[BARE_DIR_ENV], prefix="body-")
    with os.fdopen(fd, "wb") as out:
        while remaining > 0:
            chunk = stream.read(min(CHUNK, remaining))
            if not chunk:
                break
            out.write(chunk)
            remaining -= len(chunk)
        out.flush()
        os.fsync(out.fileno())
    body = b'{"status": "complete"}'
    start_response(
        "201 Created", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


# --------------------------------------------------------------------------- setup


class BenchmarkError(RuntimeError):
    """The setup or an upload failed."""


def with_database(server: str, name: str) -> str:
    return urlunsplit(urlsplit(server)._replace(path=f"/{name}"))


@contextmanager
def postgres_database(server: str) -> Iterator[str]:
    """A fresh database, dropped at the end (also on failure)."""
    import psycopg
    from psycopg import sql

    name = f"dibao_bench_{os.getpid()}_upload"
    admin = with_database(server, "postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_database(server, name)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def photos_awaiting_job(url: str) -> int:
    """Received photos the background job has not finished (no thumbnail yet)."""
    query = (
        "SELECT count(*) FROM survey_photos "
        "WHERE received_at IS NOT NULL AND thumbnail_sha256 IS NULL"
    )
    if url.startswith("sqlite:///"):
        import sqlite3

        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn:
            return int(conn.execute(query).fetchone()[0])
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute(query).fetchone()
        return int(row[0]) if row else 0


def start_celery_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "server.celery_worker",
                "worker",
                "--pool",
                "solo",
                "--loglevel",
                "WARNING",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def drain(url: str, worker: subprocess.Popen[bytes], timeout_s: float = 1800) -> tuple[int, float]:
    """Wait until the background job has finished every received photo; returns the
    photos it had to do when called and the seconds it took."""
    start = time.perf_counter()
    pending = photos_awaiting_job(url)
    while (left := photos_awaiting_job(url)) > 0:
        if worker.poll() is not None:
            raise BenchmarkError("the Celery worker stopped while photos were pending")
        if time.perf_counter() - start > timeout_s:
            raise BenchmarkError(f"{left} photos still awaiting the job after {timeout_s} s")
        time.sleep(0.2)
    return pending, time.perf_counter() - start


def cli(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "server.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        raise BenchmarkError(
            f"`dibao {' '.join(args)}` exited with {result.returncode}:\n"
            f"{(result.stdout + result.stderr)[-4000:]}"
        )
    return result.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def workers(self) -> list[int]:
        """The pids of the gunicorn master's children (its workers)."""
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            if f"\nPPid:\t{self.proc.pid}\n" in status:
                pids.append(int(entry.name))
        return sorted(pids)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)


def start_server(
    name: str, target: str, env: dict[str, str], worker_class: str, threads: int, log: Path
) -> Server:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "--workers",
        str(WORKERS),
        "--worker-class",
        worker_class,
        *(["--threads", str(threads)] if worker_class == "gthread" else []),
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
            command,
            env=env,
            cwd=ROOT,
            stdout=handle,
            stderr=handle,
            start_new_session=True,
        )
    server = Server(name, proc, port, log)
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5):
                break
        except OSError as exc:
            if time.monotonic() > deadline or proc.poll() is not None:
                server.stop()
                raise BenchmarkError(
                    f"{name} server did not start:\n{log.read_text('utf-8', 'replace')[-4000:]}"
                ) from exc
            time.sleep(0.2)
    # Wait for every worker to be forked (the probe may have been answered by the first).
    while len(server.workers()) < WORKERS and time.monotonic() < deadline:
        time.sleep(0.1)
    return server


def request_json(
    port: int, method: str, path: str, body: Any = None, token: str | None = None
) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    try:
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    return response.status, json.loads(raw) if raw else None


# --------------------------------------------------------------------------- photos


def _photo_bytes(index: int, sigma: float, noise: Any) -> bytes:
    """A 4000x3000 JPEG: a smooth random picture of its own (so that every photo has a
    different perceptual hash) plus grey noise of strength ``sigma`` (sets the size)."""
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(1000 + index)
    small = Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8))
    base = np.asarray(small.resize(PHOTO_SIZE, Image.Resampling.BICUBIC), dtype=np.float32)
    pixels = np.clip(base + noise * sigma, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def make_photos(count: int, target_bytes: int) -> list[bytes]:
    """``count`` distinct JPEGs; the noise strength is searched on the first photo so
    that it compresses to about ``target_bytes``."""
    import numpy as np

    width, height = PHOTO_SIZE
    noise = np.random.default_rng(7).standard_normal((height, width, 1), dtype=np.float32)
    low, high = 0.0, 64.0
    for _ in range(9):
        sigma = (low + high) / 2
        if len(_photo_bytes(0, sigma, noise)) < target_bytes:
            low = sigma
        else:
            high = sigma
    sigma = (low + high) / 2
    return [_photo_bytes(i, sigma, noise) for i in range(count)]


# --------------------------------------------------------------------------- requests


@dataclass
class Upload:
    """One survey's multipart body, as pieces sent one after the other."""

    label: str
    pieces: list[bytes | memoryview]
    boundary: str

    @property
    def length(self) -> int:
        return sum(len(p) for p in self.pieces)


def _dms(value: float) -> tuple[float, float, float]:
    value = abs(value)
    degrees = int(value)
    minutes = int((value - degrees) * 60)
    return float(degrees), float(minutes), round((value - degrees - minutes / 60) * 3600, 4)


def exif_segment(taken_at: datetime, lat: float, lon: float) -> bytes:
    """A JPEG APP1 EXIF segment as a tablet camera writes it: time taken, GPS position,
    camera, and a unique image id (so every upload's bytes and stored blob are new)."""
    from PIL import ExifTags, Image

    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "HUAWEI"
    exif[ExifTags.Base.Model] = "MediaPad M5"
    details = exif.get_ifd(ExifTags.IFD.Exif)
    local = taken_at.astimezone(TABLET_TZ)
    details[ExifTags.Base.DateTimeOriginal] = local.strftime("%Y:%m:%d %H:%M:%S")
    details[ExifTags.Base.OffsetTimeOriginal] = "+08:00"
    details[ExifTags.Base.ImageUniqueID] = uuid.uuid4().hex
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N" if lat >= 0 else "S"
    gps[ExifTags.GPS.GPSLatitude] = _dms(lat)
    gps[ExifTags.GPS.GPSLongitudeRef] = "E" if lon >= 0 else "W"
    gps[ExifTags.GPS.GPSLongitude] = _dms(lon)
    data = exif.tobytes()
    return b"\xff\xe1" + (len(data) + 2).to_bytes(2, "big") + data


def build_upload(
    label: str, household: dict[str, Any], photos: list[bytes], finished_at: datetime
) -> Upload:
    boundary = "dibao-bench-" + secrets.token_hex(16)
    parts: list[tuple[str, list[bytes | memoryview], int, str]] = []
    for number, photo in enumerate(photos, 1):
        photo_id = f"house{number}"
        segment = exif_segment(
            finished_at - timedelta(minutes=10 + number),
            household["location"]["lat"],
            household["location"]["lon"],
        )
        view = memoryview(photo)
        digest = hashlib.sha256(photo[:2])
        digest.update(segment)
        digest.update(view[2:])
        chunks: list[bytes | memoryview] = [view[:2], segment, view[2:]]
        parts.append((photo_id, chunks, len(photo) + len(segment), digest.hexdigest()))
    survey = {
        "client_uuid": str(uuid.uuid4()),
        "household_id": household["household_id"],
        "kind": household["kind"],
        "started_at": (finished_at - timedelta(minutes=30)).isoformat(),
        "finished_at": finished_at.isoformat(),
        "gps": {
            "lat": household["location"]["lat"],
            "lon": household["location"]["lon"],
            "accuracy_m": 8.0,
            "fix_at": (finished_at - timedelta(minutes=5)).isoformat(),
            "provider": "gps",
        },
        "housing": {"rooms": 2, "condition": "fair"},
        "notes": f"benchmark upload {label}",
        "photos": [
            {"photo_id": photo_id, "kind": "housing", "sha256": sha, "bytes": size}
            for photo_id, _, size, sha in parts
        ],
    }
    pieces: list[bytes | memoryview] = [
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="survey"\r\n'
            f"Content-Type: application/json\r\n\r\n{json.dumps(survey)}\r\n"
        ).encode()
    ]
    for photo_id, chunks, _, _ in parts:
        pieces.append(
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{photo_id}"; '
                f'filename="{photo_id}.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
            ).encode()
        )
        pieces.extend(chunks)
        pieces.append(b"\r\n")
    pieces.append(f"--{boundary}--\r\n".encode())
    return Upload(label, pieces, boundary)


def post_upload(port: int, token: str, upload: Upload) -> tuple[float, int, bytes]:
    """Send one survey; seconds from the request's start to the response read."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        conn.putrequest("POST", "/api/v1/surveys")
        conn.putheader("Authorization", f"Bearer {token}")
        conn.putheader("Content-Type", f"multipart/form-data; boundary={upload.boundary}")
        conn.putheader("Content-Length", str(upload.length))
        conn.endheaders()
        for piece in upload.pieces:
            conn.send(piece)
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    return time.perf_counter() - started, response.status, body


def accepted(status: int, body: bytes, flags: Counter[str]) -> bool:
    """201 and a complete survey; counts the flags the server raised."""
    if status != 201:
        return False
    try:
        answer = json.loads(body)
    except ValueError:
        return False
    flags.update(f["code"] for f in answer.get("flags", []))
    return bool(answer.get("status") == "complete")


@dataclass
class Result:
    seconds: list[float]
    wall: float
    failures: list[str]
    cpu_seconds: float
    rss_max_mb: float
    rss_sum_mb: float
    flags: Counter[str]


def cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime + stime


def vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def run_clients(
    server: Server, token: str, uploads: list[Upload], clients: int, flags: Counter[str]
) -> tuple[list[float], float, list[str]]:
    """Send ``uploads`` from ``clients`` threads, each taking the next one when done."""
    lock = threading.Lock()
    pending = iter(uploads)
    seconds: list[float] = []
    failures: list[str] = []

    def client() -> None:
        while True:
            with lock:
                upload = next(pending, None)
            if upload is None:
                return
            try:
                elapsed, status, body = post_upload(server.port, token, upload)
            except OSError as exc:
                with lock:
                    failures.append(f"{upload.label}: {exc!r}")
                continue
            with lock:
                if accepted(status, body, flags):
                    seconds.append(elapsed)
                else:
                    failures.append(f"{upload.label}: {status} {body[:300]!r}")

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return seconds, time.perf_counter() - started, failures


def measure(
    server: Server,
    token: str,
    warmup: list[Upload],
    uploads: list[Upload],
    clients: int,
) -> Result:
    _, _, failures = run_clients(server, token, warmup, clients, Counter())
    if failures:
        raise BenchmarkError(f"{server.name} warm-up failed: {failures[0]}")
    workers = server.workers()
    ticks = {pid: cpu_ticks(pid) for pid in workers}
    flags: Counter[str] = Counter()
    seconds, wall, failures = run_clients(server, token, uploads, clients, flags)
    cpu = sum(cpu_ticks(pid) - ticks[pid] for pid in workers) / os.sysconf("SC_CLK_TCK")
    if server.workers() != workers:
        failures.append(f"{server.name}: a gunicorn worker was restarted during the run")
    hwm = [vm_hwm_kib(pid) / 1024 for pid in workers]
    return Result(seconds, wall, failures, cpu, max(hwm), sum(hwm), flags)


# --------------------------------------------------------------------------- report


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def print_result(name: str, result: Result, count: int) -> None:
    ok = result.seconds or [math.nan]
    print(
        f"{name:<22} {len(result.seconds) / result.wall:>9.2f} {statistics.median(ok):>8.3f} "
        f"{percentile(ok, 0.95):>8.3f} {max(ok):>8.3f} {result.cpu_seconds / count:>9.3f} "
        f"{result.rss_max_mb:>8.1f} {result.rss_sum_mb:>8.1f}",
        flush=True,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients (default: 4)")
    parser.add_argument(
        "--surveys", type=int, default=40, help="timed surveys per app (default: 40)"
    )
    parser.add_argument(
        "--photo-mb",
        type=float,
        default=3.0,
        help="target size of each 4000x3000 JPEG in MB (default: 3)",
    )
    parser.add_argument(
        "--worker-class",
        choices=["sync", "gthread", "both"],
        default="sync",
        help="gunicorn worker class, 2 workers (default: sync; both: sync, then gthread)",
    )
    parser.add_argument(
        "--threads", type=int, default=4, help="threads per gthread worker (default: 4)"
    )
    parser.add_argument(
        "--households",
        type=int,
        default=4,
        help="households visited round robin, each with its own 6 photos (default: 4)",
    )
    parser.add_argument(
        "--sqlite", action="store_true", help="use a temporary SQLite file instead of PostgreSQL"
    )
    parser.add_argument(
        "--celery",
        metavar="REDIS_URL",
        help="production shape: set CELERY_BROKER_URL, so thumbnails and faces leave the "
        "request, and run one Celery worker (default: no broker, jobs run in the request)",
    )
    parser.add_argument(
        "--celery-during-uploads",
        action="store_true",
        help="with --celery: run the worker during the timed uploads, on the same CPUs "
        "(default: start it when they end, then time how long it takes to catch up)",
    )
    parser.add_argument(
        "--database-server",
        default=DEFAULT_SERVER,
        help=f"PostgreSQL server URL; the database part is ignored (default: {DEFAULT_SERVER})",
    )
    args = parser.parse_args(argv)
    if min(args.clients, args.surveys, args.threads, args.households) < 1 or args.photo_mb <= 0:
        parser.error("counts and --photo-mb must be positive")
    return args


@contextmanager
def database(args: argparse.Namespace, folder: Path) -> Iterator[str]:
    if args.sqlite:
        yield f"sqlite:///{folder}/dibao.sqlite3"
    else:
        with postgres_database(args.database_server) as url:
            yield url


def finished_times(count: int) -> list[datetime]:
    """Visit times in the past, spaced so the travel check sees plausible speeds."""
    step = min(timedelta(hours=1), timedelta(days=20) / count)
    start = datetime.now(UTC) - step * (count + 1)
    return [start + step * i for i in range(count)]


def benchmark(args: argparse.Namespace, folder: Path, url: str) -> int:
    env = dict(os.environ)
    env.setdefault("SECRET_KEY", secrets.token_urlsafe(32))
    env.setdefault("DIBAO_DATA_KEY", base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())
    env["DIBAO_INSTANCE_PATH"] = str(folder / "instance")
    env["DATABASE_URL"] = url
    env[BARE_DIR_ENV] = str(folder / "bare")
    (folder / "bare").mkdir()
    if args.celery:
        env["CELERY_BROKER_URL"] = args.celery
    cli(env, "db", "upgrade")
    seeded = json.loads(cli(env, "seed", "--households", str(SEED_HOUSEHOLDS), "--json"))
    password = next(u["password"] for u in seeded["users"] if u["username"] == "caseworker1")

    photos = make_photos(PHOTOS_PER_SURVEY * args.households, int(args.photo_mb * 1_000_000))
    sizes = [len(p) for p in photos]
    classes = ["sync", "gthread"] if args.worker_class == "both" else [args.worker_class]
    where = "SQLite (temporary file)" if args.sqlite else "PostgreSQL"
    print(
        f"{args.surveys} surveys x {PHOTOS_PER_SURVEY} photos {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} "
        f"JPEG (mean {statistics.mean(sizes) / 1e6:.2f} MB, {min(sizes) / 1e6:.2f}-"
        f"{max(sizes) / 1e6:.2f}), {args.clients} client(s), {args.households} households, "
        f"{where}, gunicorn --workers {WORKERS}, "
        f"{'Celery worker on ' + args.celery if args.celery else 'background jobs eager'}",
        flush=True,
    )
    token = ""
    households: list[dict[str, Any]] = []
    failed = False
    for worker_class in classes:
        label = worker_class if worker_class == "sync" else f"gthread x{args.threads}"
        dibao = start_server(
            "dibao", "server.wsgi:app", env, worker_class, args.threads, folder / "dibao.log"
        )
        celery_worker = None
        if args.celery and args.celery_during_uploads:
            celery_worker = start_celery_worker(env, folder / "celery.log")
        try:
            if not token:
                status, login = request_json(
                    dibao.port,
                    "POST",
                    "/api/v1/auth/device-tokens",
                    {"username": "caseworker1", "password": password, "device_id": "bench-1"},
                )
                if status != 201:
                    raise BenchmarkError(f"login failed: {status} {login}")
                token = login["token"]
                status, due = request_json(dibao.port, "GET", "/api/v1/visits/due", token=token)
                if status != 200 or not due["items"]:
                    raise BenchmarkError(f"no households due: {status} {due}")
                items = due["items"]
                reviews = [i for i in items if i["kind"] == "periodic_review"]
                households = (reviews or items)[: args.households]
            total = args.clients + args.surveys
            times = finished_times(total)
            uploads = []
            for i in range(total):
                index = i % len(households)
                mine = photos[index * PHOTOS_PER_SURVEY : (index + 1) * PHOTOS_PER_SURVEY]
                uploads.append(
                    build_upload(f"{worker_class}-{i}", households[index], mine, times[i])
                )
            warmup, timed = uploads[: args.clients], uploads[args.clients :]
            body_mb = statistics.mean(u.length for u in timed) / 1e6
            print(f"\n[{label}] {body_mb:.1f} MB per request body", flush=True)
            print(
                f"{'app':<22} {'surveys/s':>9} {'p50 s':>8} {'p95 s':>8} {'max s':>8} "
                f"{'cpu s/sv':>9} {'MB max':>8} {'MB sum':>8}"
            )
            results = {"dibao": measure(dibao, token, warmup, timed, args.clients)}
            if args.celery:
                if celery_worker is None:
                    celery_worker = start_celery_worker(env, folder / "celery.log")
                pending, seconds = drain(url, celery_worker)
                when = "during" if args.celery_during_uploads else "after"
                print(
                    f"background job (1 Celery worker, solo pool, started {when} the uploads): "
                    f"{pending} photos left when the uploads ended, drained in {seconds:.1f} s",
                    flush=True,
                )
        finally:
            dibao.stop()
            if celery_worker is not None:
                celery_worker.terminate()
                celery_worker.wait(timeout=60)
        bare = start_server(
            "bare", "upload:bare_app", env, worker_class, args.threads, folder / "bare.log"
        )
        try:
            results["bare"] = measure(bare, token, warmup, timed, args.clients)
        finally:
            bare.stop()
        print_result("baseline (bare_app)", results["bare"], len(timed))
        print_result("dibao POST /surveys", results["dibao"], len(timed))
        raised = ", ".join(f"{c} x{n}" for c, n in sorted(results["dibao"].flags.items()))
        print(f"flags raised on the timed dibao surveys: {raised or 'none'}")
        for name, result in results.items():
            for failure in result.failures[:5]:
                print(f"  {name} FAILED {failure}")
            failed = failed or bool(result.failures)
        if results["dibao"].seconds and results["bare"].seconds:
            p50 = statistics.median(results["dibao"].seconds) / statistics.median(
                results["bare"].seconds
            )
            rate = (len(results["dibao"].seconds) / results["dibao"].wall) / (
                len(results["bare"].seconds) / results["bare"].wall
            )
            verdict = "PASS" if p50 <= TARGET_P50_RATIO else "FAIL"
            print(
                f"p50 ratio dibao/baseline: {p50:.2f}x (target <= {TARGET_P50_RATIO}x -> "
                f"{verdict}); throughput ratio {rate:.2f}; dibao worker peak RSS "
                f"{results['dibao'].rss_max_mb:.0f} MB (max of {WORKERS} workers)"
            )
    print(
        "\ntime to acknowledgement: client-side, request start to response read; p95 nearest "
        "rank; cpu s/sv: user+system CPU of the gunicorn workers per timed survey; MB max / "
        "sum: VmHWM of the gunicorn workers (not the master) after the run, incl. warm-up"
    )
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="dibao_bench_upload_"))
    try:
        with database(args, folder) as url:
            return benchmark(args, folder, url)
    except BenchmarkError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
