"""Real servers in subprocesses for tests that need one (crash safety, the browser)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_gunicorn(
    env: dict[str, str],
    port: int,
    *,
    workers: int | None = 1,
    options: tuple[str, ...] = (),
) -> subprocess.Popen[bytes]:
    """gunicorn serving ``server.wsgi:app`` on 127.0.0.1:``port`` with ``workers`` sync
    workers (None: what ``options`` say, e.g. ``("-c", "deploy/gunicorn.conf.py")``), in
    its own process group (stop it with ``os.killpg``); returns once /healthz answers."""
    command = [sys.executable, "-m", "gunicorn", *options]
    if workers is not None:
        command += ["--workers", str(workers), "--timeout", "120"]
    command += ["--bind", f"127.0.0.1:{port}", "server.wsgi:app"]
    server = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5):
                return server
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                raise
            time.sleep(0.2)


def start_celery_worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    """One Celery worker (solo pool: one task at a time, like one core) for
    ``server.celery_worker``, configured by ``env`` (DATABASE_URL, CELERY_BROKER_URL...)."""
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
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
