"""A server killed in the middle of an upload leaves no survey and no stored file,
and the next server start clears the interrupted upload's temp file."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DATA_KEY
from tests.processes import free_port, start_gunicorn
from tests.visits.test_api_surveys import jpeg, manifest_entry

pytestmark = pytest.mark.slow  # tests that take seconds: pytest -m 'not slow' skips them


def _env(instance: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{instance}/dibao.sqlite3",
        "SECRET_KEY": "test",
        "DIBAO_DATA_KEY": DATA_KEY,
        "DIBAO_INSTANCE_PATH": str(instance),
    }


def _cli(instance: Path, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "server.cli", *args],
        env=_env(instance),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return result.stdout


def _start(instance: Path, port: int) -> subprocess.Popen[bytes]:
    return start_gunicorn(_env(instance), port)


def _request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=body, method=method, headers=headers or {}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def test_a_server_killed_mid_upload_leaves_nothing_behind(tmp_path: Path) -> None:
    _cli(tmp_path, "db", "upgrade")
    users = json.loads(_cli(tmp_path, "seed", "--households", "60", "--seed", "5", "--json"))
    caseworker = next(u for u in users["users"] if u["username"] == "caseworker1")
    port = free_port()
    server = _start(tmp_path, port)
    try:
        status, login = _request(
            port,
            "POST",
            "/api/v1/auth/device-tokens",
            json.dumps(
                {
                    "username": "caseworker1",
                    "password": caseworker["password"],
                    "device_id": "crash-tablet",
                }
            ).encode(),
            {"Content-Type": "application/json"},
        )
        assert status == 201, login
        auth = {"Authorization": f"Bearer {login['token']}"}
        status, due = _request(port, "GET", "/api/v1/visits/due", headers=auth)
        household_id = due["items"][0]["household_id"]

        # Six megabytes of comment segments inside a valid JPEG: half is several reads.
        base = jpeg(4, size=(1600, 1200))
        comments = b"".join(
            b"\xff\xfe" + (65_002).to_bytes(2, "big") + os.urandom(65_000) for _ in range(92)
        )
        photo = base[:2] + comments + base[2:]
        now = datetime.now(UTC)
        survey = {
            "client_uuid": str(uuid.uuid4()),
            "household_id": household_id,
            "kind": "periodic_review",
            "started_at": (now - timedelta(minutes=30)).isoformat(),
            "finished_at": now.isoformat(),
            "gps": {"lat": 46.08, "lon": 122.05},
            "photos": [manifest_entry("big", photo)],
        }
        boundary = "dibao-crash-test"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="survey"\r\n\r\n'
            f"{json.dumps(survey)}\r\n--{boundary}\r\nContent-Disposition: form-data; "
            f'name="big"; filename="big.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        total = len(head) + len(photo) + len(tail)
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(
                (
                    f"POST /api/v1/surveys HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    f"Authorization: Bearer {login['token']}\r\n"
                    f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                    f"Content-Length: {total}\r\n\r\n"
                ).encode()
                + head
                + photo[: len(photo) // 2]
            )
            # Wait until the server is writing the photo into its temp folder.
            tmp = tmp_path / "store" / "tmp"
            deadline = time.monotonic() + 30
            while not any(p.is_file() and p.stat().st_size > 0 for p in tmp.rglob("*")):
                assert time.monotonic() < deadline, "the upload never reached the store"
                time.sleep(0.05)
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)

        with sqlite3.connect(tmp_path / "dibao.sqlite3") as conn:
            assert conn.execute("SELECT count(*) FROM surveys").fetchone() == (0,)
        blobs = tmp_path / "store" / "blobs"
        assert not [p for p in blobs.rglob("*") if p.is_file()]
        assert [p for p in tmp.rglob("*") if p.is_file()]  # the interrupted upload's temp file

        server = _start(tmp_path, port)
        assert not [p for p in tmp.rglob("*") if p.is_file()]
        form = head + photo + tail
        status, body = _request(
            port,
            "POST",
            "/api/v1/surveys",
            form,
            {**auth, "Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        assert status == 201 and body["status"] == "complete", body
        digest = hashlib.sha256(photo).hexdigest()
        assert (blobs / digest[:2] / digest[2:4] / digest).read_bytes() == photo
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
