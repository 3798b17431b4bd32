"""The public page in a real browser (Debian's headless Chromium) against gunicorn on a
seeded county: Chinese first, the English toggle, the filters, and an applicant looking
up their own case code as they would type it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, sync_playwright

from server.config import ensure_dev_secrets
from tests.processes import free_port, start_gunicorn

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    instance: Path = tmp_path_factory.mktemp("public-browser")
    ensure_dev_secrets(instance)
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("SECRET_KEY", "DIBAO_DATA_KEY", "DATABASE_URL", "CELERY_BROKER_URL")
    }
    env.update(
        DATABASE_URL=f"sqlite:///{instance}/dibao.sqlite3", DIBAO_INSTANCE_PATH=str(instance)
    )

    def cli(*args: str) -> None:
        subprocess.run(
            [sys.executable, "-m", "server.cli", *args], env=env, check=True, timeout=300
        )

    cli("db", "upgrade")
    cli("seed", "--households", "120", "--seed", "5")
    port = free_port()
    process = start_gunicorn(env, port)
    yield f"http://127.0.0.1:{port}"
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def page() -> Iterator[Page]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        context = browser.new_context(locale="zh-CN")
        yield context.new_page()
        browser.close()


@pytest.mark.slow
def test_a_visitor_reads_the_page_in_chinese_then_english(site: str, page: Page) -> None:
    page.goto(f"{site}/public")
    assert page.locator("h1").inner_text() == "低保公示"
    assert page.locator("table.stats").first.is_visible()
    assert page.locator("table.cases tbody tr").count() == 50
    page.get_by_role("link", name="English").click()
    assert page.locator("h1").inner_text() == "Subsistence allowance public notice"
    assert "/public?lang=en" in page.url

    first_township = page.locator("select[name=township] option").nth(1)
    page.select_option("select[name=township]", first_township.get_attribute("value") or "")
    page.get_by_role("button", name="Show").click()
    summary = page.locator("text=/\\d+ cases\\./").inner_text()
    shown = int(summary.split()[0])
    assert 0 < shown < 120
    assert page.locator("table.cases tbody tr").count() == min(shown, 50)


def test_an_applicant_finds_their_case_by_typing_its_code(site: str, page: Page) -> None:
    with urllib.request.urlopen(f"{site}/api/v1/public/cases?limit=1") as answer:
        code = json.load(answer)["items"][0]["case_code"]
    page.goto(f"{site}/public?lang=zh_CN")
    page.get_by_label("查询您的案件编号").fill(code.replace("-", "").lower())
    page.get_by_role("button", name="查询").click()
    assert page.url.endswith(f"/public/cases/{code}?lang=zh_CN")
    assert page.locator("h1").inner_text() == f"案件 {code}"
    assert page.locator("ol.history li").count() >= 1

    page.goto(f"{site}/public?lang=zh_CN")
    page.get_by_label("查询您的案件编号").fill("12345")
    page.get_by_role("button", name="查询").click()
    assert "不是案件编号" in page.locator("[role=alert]").inner_text()
