"""The `dibao` command end to end: demo, serve, users."""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import DATA_KEY, DatabaseFactory
from tests.test_seed import dibao

pytestmark = pytest.mark.slow  # tests that take seconds: pytest -m 'not slow' skips them


def _demo_env(instance: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("SECRET_KEY", "DIBAO_DATA_KEY", "DATABASE_URL")
    }
    env["DIBAO_INSTANCE_PATH"] = str(instance)
    return env


def _run_demo(instance: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server.cli", "demo", *args],
        env=_demo_env(instance),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_demo_prepares_an_embedded_database_once_and_reprints_the_logins(tmp_path: Path) -> None:
    first = _run_demo(tmp_path, "--no-serve", "--households", "25")
    assert first.returncode == 0, first.stderr
    assert "seeding 25 demo households" in first.stdout
    assert "generated for the demo only" in first.stdout
    assert (tmp_path / "dibao.sqlite3").exists()
    # Last month's back-check sample is drawn, so the console's page has one to record.
    drawn = re.search(r"back-checks: (\d+) visits of (\d{4}-\d{2}) drawn", first.stdout)
    assert drawn is not None and int(drawn.group(1)) > 0, first.stdout
    with sqlite3.connect(tmp_path / "dibao.sqlite3") as db:
        (sampled,) = db.execute("SELECT count(*) FROM back_checks").fetchone()
        # The seeded photos are in the photo-reuse index: later uploads meet them.
        (unindexed,) = db.execute(
            "SELECT count(*) FROM survey_photos p WHERE p.received_at IS NOT NULL AND NOT "
            "EXISTS (SELECT 1 FROM photo_hashes h WHERE h.survey_photo_id = p.id)"
        ).fetchone()
        (indexed,) = db.execute("SELECT count(*) FROM photo_hashes").fetchone()
    assert sampled == int(drawn.group(1))
    assert unindexed == 0 and indexed > 0
    logins = json.loads((tmp_path / "demo-logins.json").read_text("utf-8"))
    assert {entry["role"] for entry in logins} >= {"caseworker", "county_approver"}
    assert all(entry["username"] in first.stdout for entry in logins)

    second = _run_demo(tmp_path, "--no-serve")
    assert second.returncode == 0, second.stderr
    assert "seeding" not in second.stdout

    # The progress home's summary of every area, as the beat task stores it.
    refreshed = subprocess.run(
        [sys.executable, "-m", "server.cli", "console", "refresh"],
        env=_demo_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert refreshed.returncode == 0, refreshed.stderr
    stored = re.search(r"console refresh: (\d+) numbers stored", refreshed.stdout)
    assert stored is not None, refreshed.stdout
    with sqlite3.connect(tmp_path / "dibao.sqlite3") as db:
        (counts,) = db.execute("SELECT count(*) FROM console_current_counts").fetchone()
    assert counts == int(stored.group(1)) > 0
    assert logins[0]["password"] in second.stdout
    assert "public page (no login): http://127.0.0.1:5000/public" in second.stdout


def test_the_demos_links_carry_the_address_it_serves_on(tmp_path: Path) -> None:
    """Links (SMS, pages) are made from PUBLIC_BASE_URL; unset, from --host/--port."""
    prepared = _run_demo(tmp_path, "--no-serve", "--households", "0", "--port", "8765")
    assert prepared.returncode == 0, prepared.stderr
    assert "public page (no login): http://127.0.0.1:8765/public" in prepared.stdout
    assert "links in SMS and pages: http://127.0.0.1:8765 (PUBLIC_BASE_URL" in prepared.stdout
    env = {**_demo_env(tmp_path), "PUBLIC_BASE_URL": "https://dibao.example.gov.cn/"}
    behind_proxy = subprocess.run(
        [sys.executable, "-m", "server.cli", "demo", "--no-serve", "--port", "8765"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert behind_proxy.returncode == 0, behind_proxy.stderr
    assert "public page (no login): https://dibao.example.gov.cn/public" in behind_proxy.stdout


def test_the_demo_serves_pages_a_demo_user_can_log_into(tmp_path: Path) -> None:
    prepared = _run_demo(tmp_path, "--no-serve", "--households", "20")
    assert prepared.returncode == 0, prepared.stderr
    reviewer = next(
        u
        for u in json.loads((tmp_path / "demo-logins.json").read_text("utf-8"))
        if u["role"] == "township_reviewer"
    )
    port = _free_port()
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "demo", "--port", str(port)],
        env=_demo_env(tmp_path),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                with opener.open(base + "/healthz", timeout=5) as response:
                    assert json.load(response)["status"] == "ok"
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.3)
        with opener.open(base + "/login", timeout=10) as response:
            page = response.read().decode()
        token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
        assert token is not None, page
        form = urllib.parse.urlencode(
            {
                "csrf_token": token.group(1),
                "username": reviewer["username"],
                "password": reviewer["password"],
            }
        ).encode()
        with opener.open(base + "/login", data=form, timeout=10) as response:
            home = response.read().decode()
        assert "案件" in home and "退出登录" in home
        assert reviewer["username"] in home
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    assert f"links in SMS and pages: {base} " in (tmp_path / "server.log").read_text()


@pytest.fixture(scope="module")
def staff_database(
    databases: DatabaseFactory, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path]:
    """A migrated database with areas and the demo staff, shared by the users tests."""
    url, instance = databases.new("users"), tmp_path_factory.mktemp("users")
    assert dibao("db", "upgrade", database_url=url, instance=instance).returncode == 0
    assert dibao("seed", "--households", "0", database_url=url, instance=instance).returncode == 0
    return url, instance


def test_users_create_adds_an_account_scoped_to_an_area(staff_database: tuple[str, Path]) -> None:
    url, instance = staff_database
    created = dibao(
        "users",
        "create",
        "--username",
        "wang.li",
        "--password",
        "a-long-password",
        "--role",
        "caseworker",
        "--area",
        "152201100",
        database_url=url,
        instance=instance,
    )
    assert created.returncode == 0, created.stderr
    assert "created wang.li (caseworker, 152201100)" in created.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--role", "caseworker", "--area", "152201"], "scoped to a township"),
        (["--role", "caseworker", "--area", "999"], "no area with code '999'"),
        (["--role", "overlord", "--area", "152201100"], "Invalid value for '--role'"),
    ],
)
def test_users_create_explains_what_is_wrong(
    staff_database: tuple[str, Path], args: list[str], message: str
) -> None:
    url, instance = staff_database
    result = dibao(
        "users",
        "create",
        "--username",
        "x1",
        "--password",
        "a-long-password",
        *args,
        database_url=url,
        instance=instance,
    )
    assert result.returncode != 0
    assert message in result.stderr


def test_users_create_takes_an_ascii_login_and_a_chinese_display_name(
    staff_database: tuple[str, Path],
) -> None:
    url, instance = staff_database
    common = ["--password", "a-long-password", "--role", "caseworker", "--area", "152201100"]
    refused = dibao(
        "users", "create", "--username", "王丽", *common, database_url=url, instance=instance
    )
    assert refused.returncode != 0
    assert "a login may hold only letters" in refused.stderr
    created = dibao(
        "users",
        "create",
        "--username",
        "wang.li2",
        "--name",
        "王丽",
        *common,
        database_url=url,
        instance=instance,
    )
    assert created.returncode == 0, created.stderr
    assert "created wang.li2 (caseworker, 152201100)" in created.stdout


def test_commands_refuse_to_run_without_production_secrets(tmp_path: Path) -> None:
    env = _demo_env(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "server.cli", "db", "current"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert "SECRET_KEY and DIBAO_DATA_KEY not set" in result.stderr


def test_serve_refuses_a_database_behind_the_migrations(tmp_path: Path) -> None:
    result = dibao(
        "serve",
        "--port",
        str(_free_port()),
        database_url=f"sqlite:///{tmp_path}/empty.sqlite3",
        instance=tmp_path,
    )
    assert result.returncode != 0
    assert "dibao db upgrade" in result.stderr
    assert DATA_KEY not in result.stderr
