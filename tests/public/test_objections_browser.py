"""An objection end to end in a real browser (Debian's headless Chromium) against
gunicorn on a seeded county: the public form, the receipt, the township reviewer's
worklist and decision (survey again), the case back to accepted, the public case page
showing the objection received and resolved, and the receipt page showing the outcome."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import Page, sync_playwright

from server.auth.passwords import hash_password
from server.config import ensure_dev_secrets
from tests.processes import free_port, start_gunicorn

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "Objection-test-2026"
REASON = "该户户主在县城有一套商品房，未如实申报"


class Site:
    def __init__(self, url: str, database: Path) -> None:
        self.url = url
        self.database = database

    def sql(self, query: str, *args: object) -> list[tuple[object, ...]]:
        with sqlite3.connect(self.database) as connection:
            rows = connection.execute(query, args).fetchall()
        connection.close()
        return rows


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    instance: Path = tmp_path_factory.mktemp("objections-browser")
    ensure_dev_secrets(instance)
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("SECRET_KEY", "DIBAO_DATA_KEY", "DATABASE_URL", "CELERY_BROKER_URL")
    }
    database = instance / "dibao.sqlite3"
    env.update(
        DATABASE_URL=f"sqlite:///{database}",
        DIBAO_INSTANCE_PATH=str(instance),
        # Ask the database for the current snapshot on every request (not every 2 s).
        DIBAO_PUBLIC_CACHE_SECONDS="0",
    )

    def cli(*args: str) -> None:
        subprocess.run(
            [sys.executable, "-m", "server.cli", *args], env=env, check=True, timeout=300
        )

    cli("db", "upgrade")
    cli("seed", "--households", "120", "--seed", "5")
    port = free_port()
    process = start_gunicorn(env, port)
    yield Site(f"http://127.0.0.1:{port}", database)
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


def _case_in_notice(site: Site) -> tuple[str, str]:
    """A published case put in public notice until five days from now (as the township
    reviewer's move would), and its township reviewer's username, given a password."""
    code, username = site.sql(
        "SELECT h.case_code, u.username FROM households h "
        "JOIN public_cases p ON p.case_code = h.case_code "
        "JOIN areas v ON v.id = h.village_id "
        "JOIN users u ON u.area_id = v.parent_id AND u.role = 'township_reviewer' "
        "ORDER BY h.id LIMIT 1"
    )[0]
    ends = (datetime.now(ZoneInfo("Asia/Shanghai")).date() + timedelta(days=5)).isoformat()
    site.sql(
        "UPDATE households SET state = 'in_public_notice', notice_ends_on = ? WHERE case_code = ?",
        ends,
        code,
    )
    site.sql(
        "UPDATE users SET password_hash = ? WHERE username = ?", hash_password(PASSWORD), username
    )
    # Written around the ORM: tell the public snapshot which case changed.
    site.sql(
        "INSERT INTO public_dirty (household_id, at) "
        "SELECT id, CURRENT_TIMESTAMP FROM households WHERE case_code = ?",
        code,
    )
    return str(code), str(username)


@pytest.mark.slow
def test_an_objection_from_the_public_page_to_the_reviewers_decision(
    site: Site, page: Page
) -> None:
    page.goto(f"{site.url}/public")  # builds the first snapshot
    code, reviewer = _case_in_notice(site)

    page.goto(f"{site.url}/public/cases/{code}")
    page.get_by_role("link", name="对本案件提出异议").click()
    page.fill("#reason", REASON)
    page.fill("#contact", "王先生")
    # First a wrong answer: the message is Chinese, the text typed is kept.
    page.fill("#answer", "0")
    page.get_by_role("button", name="提交异议").click()
    assert "验证问题回答错误" in page.locator("[data-field=challenge]").inner_text()
    assert page.locator("#reason").input_value() == REASON
    question = page.locator("label[for=answer]").inner_text()
    left, right = (int(n) for n in re.findall(r"\d+", question)[:2])
    page.fill("#answer", str(left + right))
    page.get_by_role("button", name="提交异议").click()
    assert page.locator("h1").inner_text() == "异议已收到"
    receipt = page.locator("#receipt").inner_text()
    receipt_url = page.locator("#receipt-url").get_attribute("href") or ""
    assert receipt in receipt_url

    page.goto(f"{site.url}/login")
    page.fill("input[name=username]", reviewer)
    page.fill("input[name=password]", PASSWORD)
    page.locator("form.login button[type=submit]").click()
    page.goto(f"{site.url}/console/worklist")
    row = page.locator("tr[data-kind=objection]").filter(has_text=code)
    assert row.count() == 1
    row.get_by_role("link", name=code).click()
    assert REASON in page.locator("dd.reason").inner_text()
    page.check("input[value=resurvey]")
    page.fill("#note", "异议反映有房产，重新入户调查")
    page.get_by_role("button", name="记录处理结果").click()
    assert f"/cases/{code}" in page.url
    assert site.sql("SELECT state FROM households WHERE case_code = ?", code) == [("accepted",)]
    page.goto(f"{site.url}/console/worklist")
    assert page.locator("tr[data-kind=objection]").filter(has_text=code).count() == 0

    page.goto(f"{site.url}/public/cases/{code}")
    page.reload()  # past any copy the browser kept (max-age=60): the ETag changed
    objections = page.locator("p.objections")
    assert objections.get_attribute("data-received") == "1"
    assert objections.get_attribute("data-resolved") == "1"
    assert "均已处理" in objections.inner_text()
    assert REASON not in page.content()
    assert page.get_by_role("link", name="对本案件提出异议").count() == 0

    page.goto(receipt_url)
    assert page.locator("dd.outcome").get_attribute("data-status") == "resurvey"
    assert "重新调查" in page.locator("dd.outcome").inner_text()
