"""The supervisor console in a real browser (issue 15): headless Chromium (Debian's)
against the real server (gunicorn, SQLite) on a seeded league with history. A league
supervisor logs in, lands on the progress home, drills down league -> county ->
township, opens the cases behind a number, a case, its visits on a map and a
caseworker's day, and downloads an export. Screenshots at 1366x768 are read back by
OCR (tesseract, chi_sim) for the Chinese labels: the page must show them as text a
person can read, not only hold them in the DOM (a missing CJK font shows boxes)."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image, ImageOps
from playwright.sync_api import Page, sync_playwright

from server.config import ensure_dev_secrets
from tests.processes import free_port, start_gunicorn

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
TESSERACT = "/usr/bin/tesseract"  # Debian's tesseract-ocr, with tesseract-ocr-chi-sim
SCREEN = {"width": 1366, "height": 768}


@dataclass
class Server:
    base: str
    instance: Path
    env: dict[str, str]

    def cli(self, *args: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "server.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        ).stdout


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    instance = tmp_path_factory.mktemp("console-browser")
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
            "DATABASE_URL": f"sqlite:///{instance}/dibao.sqlite3",
            "DIBAO_INSTANCE_PATH": str(instance),
            "PUBLIC_BASE_URL": base,
        }
    )
    running = Server(base, instance, env)
    running.cli("db", "upgrade")
    process = start_gunicorn(env, port)
    yield running
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def supervisor_password(server: Server) -> str:
    seeded = json.loads(
        server.cli("seed", "--households", "80", "--seed", "7", "--months", "2", "--json")
    )
    password: str = next(u["password"] for u in seeded["users"] if u["username"] == "supervisor")
    return password


def _ocr(image_path: Path) -> str:
    """The Chinese text tesseract reads on a screenshot, without spaces (tesseract puts
    spaces between CJK characters)."""
    gray = ImageOps.grayscale(Image.open(image_path))
    big = gray.resize((gray.width * 2, gray.height * 2))
    prepared = image_path.with_suffix(".ocr.png")
    big.save(prepared)
    out = subprocess.run(
        [TESSERACT, str(prepared), "-", "-l", "chi_sim", "--psm", "6"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    return "".join(out.split())


def _reads(page: Page, selector: str, expected: str, shots: Path, name: str) -> None:
    """The element's screenshot shows ``expected`` (its DOM text) to OCR: at least all
    but one of its Chinese characters, in order."""
    element = page.locator(selector).first
    text = element.inner_text()
    assert expected in text, (expected, text)
    shot = shots / f"{name}.png"
    element.screenshot(path=str(shot))
    read = _ocr(shot)
    wanted = [c for c in expected if "\u4e00" <= c <= "\u9fff"]
    assert len(wanted) >= 2, expected
    position, found = 0, 0
    for char in wanted:
        at = read.find(char, position)
        if at >= 0:
            found, position = found + 1, at + 1
    assert found >= len(wanted) - 1, (expected, read)


def _fits_the_screen(page: Page) -> None:
    """No sideways scrolling on a 1366 px office screen."""
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= SCREEN["width"], width


def test_a_supervisor_drills_down_opens_a_map_and_downloads_an_export(
    server: Server, supervisor_password: str, tmp_path: Path
) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        context = browser.new_context(
            viewport=SCREEN, locale="zh-CN", accept_downloads=True, device_scale_factor=1
        )
        page = context.new_page()
        external: list[str] = []
        page.on(
            "request",
            lambda r: external.append(r.url) if not r.url.startswith(server.base) else None,
        )

        page.goto(server.base + "/login")
        page.fill("input[name=username]", "supervisor")
        page.fill("input[name=password]", supervisor_password)
        page.click("button[type=submit]")
        page.wait_for_load_state()
        # The supervisor lands on the league's progress home, in Chinese.
        assert page.url.rstrip("/").endswith("/console"), page.url
        _reads(page, "h1", "工作进度", tmp_path, "league")
        _fits_the_screen(page)
        page.screenshot(path=str(tmp_path / "league-full.png"), full_page=True)

        # League -> county -> township: each area's name opens its own page.
        for level in ("county", "township"):
            link = page.locator("table.progress tbody tr:not(.total) th a").first
            name = link.inner_text()
            link.click()
            page.wait_for_load_state()
            assert "area=" in page.url
            assert name in page.locator("h1").inner_text()
            _fits_the_screen(page)
            page.screenshot(path=str(tmp_path / f"{level}.png"), full_page=True)

        # The cases behind "visits this month" (or, in a quiet month, all cases).
        numbers = page.locator('a.number[data-key="visits"]:not(.zero)')
        if numbers.count() == 0:
            numbers = page.locator('a.number[data-key="cases"]:not(.zero)')
        expected = int(numbers.last.inner_text())  # the township's total
        numbers.last.click()
        page.wait_for_load_state()
        assert "/console/cases" in page.url
        rows = page.locator("table.console tbody tr")
        assert rows.count() == min(expected, 50)
        _reads(page, "table.console thead", "案件编号", tmp_path, "cases-header")

        # The list as a file: the same cases, with Chinese headers.
        with page.expect_download() as download_info:
            page.click("p.exports a:text('CSV')")
        path = download_info.value.path()
        assert path is not None
        lines = list(csv.reader(io.StringIO(Path(path).read_text("utf-8-sig"))))
        assert "案件编号" in lines[0]
        assert len(lines) - 1 == expected

        # Last month's bar of the visits trend: the cases visited then; one of them,
        # its visits on a map, then its caseworker's day.
        page.go_back()
        page.wait_for_load_state()
        bars = page.locator('figure[data-trend="visits"] svg a')
        assert bars.count() == 12
        bars.nth(10).click()
        page.wait_for_load_state()
        assert "/console/cases" in page.url and "month=" in page.url
        page.locator("table.console tbody tr td a").first.click()
        page.wait_for_load_state()
        assert "/cases/" in page.url
        page.click("text=在地图上查看走访")
        page.wait_for_load_state()
        assert "/console/maps/household/" in page.url
        assert page.locator("svg.trace-map").count() == 1
        assert page.locator("svg.trace-map circle").count() >= 1
        page.go_back()
        page.locator("section.visit h3 a").first.click()
        page.wait_for_load_state()
        assert "/console/maps/caseworker/" in page.url
        assert page.locator("svg.trace-map polyline, svg.trace-map circle").count() >= 1
        _fits_the_screen(page)
        page.screenshot(path=str(tmp_path / "day-map.png"), full_page=True)
        _reads(page, "h1", "走访", tmp_path, "day-map-title")

        # Nothing was asked of another host: no CDN, no tile server.
        assert external == [], external
        browser.close()
