"""A walk-in application with two members in a real browser: headless Chromium (Debian's)
against the real server (gunicorn) on a seeded league, on the test run's database kind.
The clerk adds a member row (no JavaScript: the form posts itself back), makes a
mistake, sees it beside its field with everything typed kept, corrects it and lands
on the new case's page."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from playwright.sync_api import sync_playwright

from server.config import ensure_dev_secrets
from tests import factories
from tests.conftest import DatabaseFactory
from tests.processes import free_port, start_gunicorn

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"


@dataclass
class Server:
    base: str
    username: str
    password: str


def _cli(env: dict[str, str], *args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    ).stdout


@pytest.fixture(scope="module")
def server(
    databases: DatabaseFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    instance = tmp_path_factory.mktemp("walk-in-browser")
    ensure_dev_secrets(instance)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("SECRET_KEY", "DIBAO_DATA_KEY", "DATABASE_URL", "CELERY_BROKER_URL")
    }
    env.update(
        {
            "DATABASE_URL": databases.new("walk_in_browser"),
            "DIBAO_INSTANCE_PATH": str(instance),
            "PUBLIC_BASE_URL": base,
        }
    )
    _cli(env, "db", "upgrade")
    seeded = json.loads(_cli(env, "seed", "--households", "10", "--seed", "5", "--json"))
    reviewer = next(u for u in seeded["users"] if u["role"] == "township_reviewer")
    process = start_gunicorn(env, port)
    yield Server(base, reviewer["username"], reviewer["password"])
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)


def test_a_clerk_registers_a_household_of_two_at_the_office(server: Server) -> None:
    head_id = factories.id_number()
    child_id = factories.id_number()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page(locale="zh-CN")
        page.goto(server.base + "/login")
        page.fill("input[name=username]", server.username)
        page.fill("input[name=password]", server.password)
        page.click("button[type=submit]")
        page.wait_for_load_state()

        page.click("text=来访申请")
        page.wait_for_load_state()
        assert page.locator("h1").inner_text() == "来访申请"
        page.select_option("select[name=village]", index=1)
        page.fill("input[name=address]", "幸福村2组8号")
        page.select_option("select[name=class]", index=1)
        page.fill("input[name=m-0-name]", "孙淑珍")
        page.fill("input[name=m-0-id_number]", head_id)
        page.fill("input[name=m-0-phone]", "139 0000 5555")
        page.fill("input[name=m-0-income]", "200")
        # One more row, without JavaScript: the form comes back with four rows, all kept.
        page.click("button[value=add_row]")
        page.wait_for_load_state()
        assert page.locator("tr.member-row").count() == 4
        assert page.input_value("input[name=m-0-id_number]") == head_id
        page.fill("input[name=m-3-name]", "孙强")
        page.fill("input[name=m-3-id_number]", child_id)
        page.select_option("select[name=m-3-relation]", "child")
        page.fill("input[name=m-3-birth_date]", "2001-02-30")  # no such day
        page.click("button[value=submit]")
        page.wait_for_load_state()

        # Refused: the error beside the child's birth date, everything else as typed.
        row = page.locator("tr.member-row[data-row='3']")
        assert "YYYY-MM-DD" in row.locator(".field-error").inner_text()
        assert page.input_value("input[name=address]") == "幸福村2组8号"
        assert page.input_value("input[name=m-0-phone]") == "139 0000 5555"
        assert page.input_value("input[name=m-3-id_number]") == child_id
        page.fill("input[name=m-3-birth_date]", "")  # taken from the ID number
        page.click("button[value=submit]")
        page.wait_for_load_state()

        assert "/cases/" in page.url, page.url
        assert "申请已登记" in page.locator(".flash").inner_text()
        assert page.locator("dd.state").inner_text() == "已申请"
        members = page.locator("table").first.inner_text()
        assert "孙淑珍" in members and "孙强" in members
        assert head_id not in members  # masked on the page
        assert head_id not in page.url and child_id not in page.url
        browser.close()
