"""Every answer carries the browser-safety headers (server/security_headers.py): a
content security policy without inline script or style, no framing, no sniffing, a
referrer policy (none at all for addresses that carry a link token), HSTS only over
HTTPS, and no caching of anything personal. Behind a trusted proxy the scheme and
address come from it, and the session cookie is Secure when the request came over
HTTPS; a client's own X-Forwarded-* headers are ignored when no proxy is trusted."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from server.cases.models import CaseState
from server.config import ensure_dev_secrets
from server.extensions import db
from server.public import changes
from server.security_headers import PAGE_POLICY
from tests import factories
from tests.conftest import login, make_app
from tests.mobile_api.test_api_devices import bearer, device_login
from tests.processes import free_port, start_gunicorn
from tests.proof_of_life.test_proof_of_life_api import issue

TEMPLATES = Path(__file__).resolve().parents[1] / "server" / "templates"


def policy(response: Any) -> dict[str, str]:
    directives = {}
    for part in response.headers["Content-Security-Policy"].split(";"):
        name, _, sources = part.strip().partition(" ")
        directives[name] = sources
    return directives


def assert_safe(response: Any, *, referrer: str = "same-origin") -> None:
    directives = policy(response)
    assert directives["frame-ancestors"] == "'none'"
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"
    assert directives["object-src"] == "'none'" and directives["base-uri"] == "'none'"
    assert "unsafe-inline" not in response.headers["Content-Security-Policy"]
    assert "unsafe-eval" not in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == referrer
    assert "Strict-Transport-Security" not in response.headers  # plain HTTP here


@pytest.fixture
def household_code(app: Flask) -> str:
    household = factories.make_household(state=CaseState.APPROVED)
    db.session.commit()
    return household.case_code


def test_staff_pages_and_errors_are_safe_and_never_cached(
    app: Flask, client: FlaskClient, household_code: str
) -> None:
    answers = {"login page": client.get("/login"), "no such page": client.get("/nowhere")}
    login(client, "reviewer_a")
    answers["home"] = client.get("/")
    answers["case"] = client.get(f"/cases/{household_code}")
    answers["campaign"] = client.get("/campaign")
    answers["other township's case"] = app.test_client().get(f"/cases/{household_code}")
    for name, response in answers.items():
        assert response.status_code in (200, 302, 404), name
        assert_safe(response)
        assert response.headers["Cache-Control"] == "no-store", name
        assert "Permissions-Policy" in response.headers


def test_api_answers_are_safe_and_never_cached(client: FlaskClient, household_code: str) -> None:
    token = device_login(client).get_json()["token"]
    for url in ("/api/v1/meta", "/api/v1/visits/due", "/api/v1/no-such-thing", "/api/v1/version"):
        response = client.get(url, headers=bearer(token))
        assert_safe(response)
        assert response.headers["Cache-Control"] == "no-store", url


def test_the_due_list_revalidates_without_any_cache_keeping_it(
    client: FlaskClient, household_code: str
) -> None:
    token = device_login(client).get_json()["token"]
    first = client.get("/api/v1/visits/due", headers=bearer(token))
    assert first.headers["Cache-Control"] == "no-store" and first.headers["ETag"]
    again = client.get(
        "/api/v1/visits/due", headers={**bearer(token), "If-None-Match": first.headers["ETag"]}
    )
    assert again.status_code == 304 and again.headers["Cache-Control"] == "no-store"
    assert_safe(again)


def test_public_pages_stay_cacheable_and_get_the_same_policy(
    app: Flask, client: FlaskClient
) -> None:
    for _ in range(5):
        factories.make_household(state=CaseState.APPROVED)
    db.session.commit()
    changes.refresh(force=True)
    for url in ("/public", "/public/data", "/api/v1/public/stats", "/public/cases/7K3QF-M9X2A-A"):
        response = client.get(url)
        assert_safe(response)
        if response.status_code == 200:
            assert response.headers["Cache-Control"] == "public, max-age=60"
            again = client.get(url, headers={"If-None-Match": response.headers["ETag"]})
            assert again.status_code == 304
            assert_safe(again)
        else:  # an error page is no shared cache's business
            assert response.headers["Cache-Control"] == "no-store"


def test_the_recipients_page_keeps_its_camera_policy_and_sends_no_referrer(
    client: FlaskClient,
) -> None:
    household = factories.make_household(state=CaseState.APPROVED)
    head = household.members[0]
    head.proof_of_life_required = True
    db.session.commit()
    _, token = issue(head.id)
    page = client.get(f"/m/{token}")
    assert_safe(page, referrer="no-referrer")
    directives = policy(page)
    assert directives["media-src"] == "'self' blob:"
    assert directives["img-src"] == "'self' blob: data:"
    assert page.headers["Permissions-Policy"].startswith("camera=(self)")
    assert page.headers["Cache-Control"] == "no-store"
    # The token also travels in the API's query string and in error pages under /m/.
    for url in (f"/api/v1/proof-of-life/status?link_token={token}", "/m/" + "A" * 24):
        assert_safe(client.get(url), referrer="no-referrer")


def test_static_files_are_not_marked_uncacheable(client: FlaskClient) -> None:
    response = client.get("/static/dibao.css")
    assert response.status_code == 200
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "no-store" not in response.headers.get("Cache-Control", "")
    response.close()


def test_hsts_and_a_secure_cookie_only_over_https(client: FlaskClient) -> None:
    plain = client.get("/login?lang=en")
    assert "Strict-Transport-Security" not in plain.headers
    cookie = plain.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie

    secure = client.get("/login?lang=en", base_url="https://localhost")
    assert secure.headers["Strict-Transport-Security"] == "max-age=31536000"
    cookie = secure.headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    # The login keeps its cookie Secure too.
    answer = client.post(
        "/login",
        data={"username": "reviewer_a", "password": factories.PASSWORD},
        base_url="https://localhost",
    )
    assert answer.status_code == 302 and "Secure" in answer.headers["Set-Cookie"]


FORWARDED_HTTPS = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}


def test_behind_a_trusted_proxy_the_forwarded_scheme_counts(app: Flask, tmp_path: Path) -> None:
    proxied = make_app(app.config["SQLALCHEMY_DATABASE_URI"], tmp_path, DIBAO_TRUSTED_PROXIES=1)
    response = proxied.test_client().get("/login?lang=en", headers=FORWARDED_HTTPS)
    assert response.headers["Strict-Transport-Security"] == "max-age=31536000"
    assert "Secure" in response.headers["Set-Cookie"]


def test_without_a_trusted_proxy_forwarded_headers_are_ignored(client: FlaskClient) -> None:
    response = client.get("/login?lang=en", headers=FORWARDED_HTTPS)
    assert "Strict-Transport-Security" not in response.headers
    assert "Secure" not in response.headers["Set-Cookie"]


def test_no_template_has_inline_script_style_or_event_handlers() -> None:
    """What the policy would block: checked at the source, so a new template cannot
    slip one in (the browser test below checks the rendered pages)."""
    for path in TEMPLATES.rglob("*.html"):
        text = path.read_text("utf-8")
        for tag in re.findall(r"<script\b[^>]*>", text):
            # Only external scripts, or JSON data blocks (never executed).
            assert "src=" in tag or 'type="application/json"' in tag, (path, tag)
        assert not re.search(r"<style\b", text), path
        assert not re.search(r"\sstyle\s*=", text), path
        assert not re.search(r"\son[a-z]+\s*=", text), path
        assert "javascript:" not in text, path


def test_the_policy_allows_no_source_outside_the_site() -> None:
    for directive, sources in PAGE_POLICY.items():
        for source in sources.split():
            assert source in ("'self'", "'none'", "data:"), (directive, source)


# --- in a real browser ------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"
REPORT_VIOLATIONS = """
window.__violations = [];
document.addEventListener('securitypolicyviolation', function (e) {
  window.__violations.push(e.violatedDirective + ' ' + e.blockedURI + ' ' + e.sourceFile);
});
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, Any]]]:
    instance: Path = tmp_path_factory.mktemp("headers-browser")
    ensure_dev_secrets(instance)
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("SECRET_KEY", "DIBAO_DATA_KEY", "DATABASE_URL", "CELERY_BROKER_URL")
    }
    env.update(
        DATABASE_URL=f"sqlite:///{instance}/dibao.sqlite3", DIBAO_INSTANCE_PATH=str(instance)
    )

    def cli(*args: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "server.cli", *args],
            env=env,
            check=True,
            timeout=300,
            capture_output=True,
            text=True,
        ).stdout

    cli("db", "upgrade")
    seeded = json.loads(cli("seed", "--households", "60", "--seed", "3", "--json"))
    cli("public", "refresh", "--force")
    port = free_port()
    process = start_gunicorn(env, port)
    yield f"http://127.0.0.1:{port}", seeded
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.slow
def test_every_page_renders_under_its_policy_in_a_browser(
    site: tuple[str, dict[str, Any]],
) -> None:
    from playwright.sync_api import sync_playwright

    base, seeded = site
    reviewer = next(u for u in seeded["users"] if u["role"] == "township_reviewer")
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        context = browser.new_context(locale="zh-CN")
        context.add_init_script(REPORT_VIOLATIONS)
        page = context.new_page()

        def console(message: Any) -> None:
            # The browser's own favicon request is the only 404 expected.
            url = str(message.location.get("url", ""))
            if message.type in ("error", "warning") and not url.endswith("/favicon.ico"):
                problems.append(f"{message.type}: {message.text} {message.location}")

        page.on("console", console)

        def visit(path: str) -> None:
            response = page.goto(base + path)
            assert response is not None and response.ok, path
            problems.extend(f"{path}: {v}" for v in page.evaluate("window.__violations"))

        visit("/public")
        bars = page.locator("svg.bar")
        assert bars.count() > 0
        assert max(bars.nth(i).bounding_box()["width"] for i in range(bars.count())) > 10  # type: ignore[index]
        code = page.locator("table.cases code").first.inner_text()
        visit(f"/public/cases/{code}")
        visit("/public/data")
        visit("/login")
        page.fill("input[name=username]", reviewer["username"])
        page.fill("input[name=password]", reviewer["password"])
        page.click("button[type=submit]")
        assert page.locator("text=退出登录").count() == 1
        problems.extend(page.evaluate("window.__violations"))
        visit("/")
        first_case = page.locator("a[href^='/cases/']").first.get_attribute("href")
        assert first_case
        visit(first_case)
        visit("/campaign")
        cookies = {c["name"]: c for c in context.cookies()}
        assert cookies["session"]["httpOnly"] and cookies["session"]["sameSite"] == "Lax"
        browser.close()
    assert problems == []
