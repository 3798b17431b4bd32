"""Failed logins are limited per username tightly and per address loosely, on the
dashboard and the tablet API together; a refused client is told, in Chinese or
English, how many seconds to wait. With Redis configured every worker shares the
counters (checked against gunicorn with two workers and the real Redis)."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from server.config import ConfigError, build_config, ensure_dev_secrets
from tests import factories
from tests.conftest import DATA_KEY, make_app
from tests.processes import free_port, start_gunicorn

REDIS = "redis://127.0.0.1:6379/0"


def limited(app: Flask, tmp_path: Path, **settings: Any) -> FlaskClient:
    return make_app(
        app.config["SQLALCHEMY_DATABASE_URI"],
        tmp_path,
        RATELIMIT_ENABLED=True,
        RATELIMIT_KEY_PREFIX="test-" + secrets.token_hex(4),
        **settings,
    ).test_client()


def page_login(client: FlaskClient, username: str, password: str, address: str, **kw: Any) -> Any:
    return client.post(
        "/login",
        data={"username": username, "password": password},
        environ_base={"REMOTE_ADDR": address},
        **kw,
    )


def tablet_login(client: FlaskClient, username: str, password: str, address: str, **kw: Any) -> Any:
    return client.post(
        "/api/v1/auth/device-tokens",
        json={"username": username, "password": password, "device_id": "t"},
        environ_base={"REMOTE_ADDR": address},
        **kw,
    )


@pytest.mark.slow
def test_wrong_passwords_from_one_office_do_not_lock_out_its_colleagues(
    app: Flask, tmp_path: Path
) -> None:
    client = limited(app, tmp_path)  # the defaults: 5 per username, 100 per address
    office = "10.1.1.1"
    for attempt in range(12):  # twelve typos, over several people's usernames
        username = ("reviewer_a", "caseworker_a", "approver", "supervisor")[attempt % 4]
        assert page_login(client, username, "typo", office).status_code == 401
    # Everyone can still log in from the office.
    assert page_login(client, "caseworker_b", factories.PASSWORD, office).status_code == 302
    assert tablet_login(client, "caseworker_a", factories.PASSWORD, office).status_code == 201


def test_one_username_is_limited_tightly_from_any_address(app: Flask, tmp_path: Path) -> None:
    client = limited(app, tmp_path, DIBAO_LOGIN_RATE_LIMIT="3 per minute")
    statuses = [
        page_login(client, "Reviewer_A ", "guess", f"10.0.0.{i}").status_code for i in range(3)
    ]
    assert statuses == [401, 401, 401]
    refused = page_login(client, "reviewer_a", factories.PASSWORD, "10.0.0.99")
    assert refused.status_code == 429  # even the right password waits
    html = refused.get_data(as_text=True)
    seconds = int(refused.headers["Retry-After"])
    assert 1 <= seconds <= 60
    message = re.search(r"登录失败次数过多，请等待 (\d+) 秒后再试。", html)
    assert message is not None and abs(int(message.group(1)) - seconds) <= 1
    assert 'value="reviewer_a"' in html  # the form is shown again, filled in
    english = page_login(client, "reviewer_a", "guess", "10.0.0.98", query_string={"lang": "en"})
    assert re.search(
        r"Too many failed logins\. Please wait \d+ seconds and try again\.",
        english.get_data(as_text=True),
    )
    # Other people are not affected.
    assert page_login(client, "reviewer_b", factories.PASSWORD, "10.0.0.1").status_code == 302


def test_successful_logins_do_not_count(app: Flask, tmp_path: Path) -> None:
    client = limited(app, tmp_path, DIBAO_LOGIN_RATE_LIMIT="2 per minute")
    for _ in range(4):
        assert page_login(client, "reviewer_a", factories.PASSWORD, "10.0.0.1").status_code == 302


def test_the_dashboard_and_the_tablets_draw_on_one_budget(app: Flask, tmp_path: Path) -> None:
    client = limited(app, tmp_path, DIBAO_LOGIN_RATE_LIMIT="3 per minute")
    assert page_login(client, "caseworker_a", "guess", "10.0.0.1").status_code == 401
    assert tablet_login(client, "caseworker_a", "guess", "10.0.0.2").status_code == 401
    assert page_login(client, "caseworker_a", "guess", "10.0.0.3").status_code == 401
    refused = tablet_login(client, "caseworker_a", factories.PASSWORD, "10.0.0.4")
    assert refused.status_code == 429
    error = refused.get_json()["error"]
    seconds = int(refused.headers["Retry-After"])
    assert error["code"] == "rate_limited" and error["details"] == {"retry_after": seconds}
    assert error["message"] == f"请求过于频繁，请等待 {seconds} 秒后再试。"
    english = tablet_login(
        client, "caseworker_a", "guess", "10.0.0.5", headers={"Accept-Language": "en"}
    )
    assert re.fullmatch(
        r"Too many requests\. Please wait \d+ seconds and try again\.",
        english.get_json()["error"]["message"],
    )
    assert page_login(client, "caseworker_a", "guess", "10.0.0.6").status_code == 429


def test_one_address_is_limited_loosely(app: Flask, tmp_path: Path) -> None:
    client = limited(app, tmp_path, DIBAO_LOGIN_ADDRESS_RATE_LIMIT="4 per minute")
    for index in range(4):
        assert page_login(client, f"nobody{index}", "guess", "10.2.2.2").status_code == 401
    assert page_login(client, "reviewer_a", factories.PASSWORD, "10.2.2.2").status_code == 429
    assert tablet_login(client, "caseworker_a", "guess", "10.2.2.2").status_code == 429
    assert page_login(client, "reviewer_a", factories.PASSWORD, "10.2.2.3").status_code == 302


@pytest.mark.parametrize(("proxies", "separate"), [(1, True), (0, False)])
def test_the_address_is_the_proxys_view_only_when_the_proxy_is_trusted(
    app: Flask, tmp_path: Path, proxies: int, separate: bool
) -> None:
    client = limited(
        app, tmp_path, DIBAO_LOGIN_ADDRESS_RATE_LIMIT="2 per minute", DIBAO_TRUSTED_PROXIES=proxies
    )

    def attempt(forwarded_for: str) -> int:
        answer = page_login(
            client,
            f"x{secrets.token_hex(3)}",
            "guess",
            "127.0.0.1",
            headers={"X-Forwarded-For": forwarded_for},
        )
        status: int = answer.status_code
        return status

    assert [attempt("198.51.100.1"), attempt("198.51.100.1")] == [401, 401]
    assert attempt("198.51.100.1") == 429
    # Another client behind the proxy: its own budget, unless X-Forwarded-For is not
    # trusted (then everyone is the proxy's address, and a client cannot pick its own).
    assert attempt("198.51.100.2") == (401 if separate else 429)


def test_other_limits_answer_in_the_same_words(app: Flask, tmp_path: Path) -> None:
    client = limited(app, tmp_path, DIBAO_POL_RATE_LIMIT="1 per minute")
    assert client.get("/api/v1/proof-of-life/status?link_token=x").status_code == 404
    api = client.get("/api/v1/proof-of-life/status?link_token=x")
    assert api.status_code == 429 and api.get_json()["error"]["code"] == "rate_limited"
    assert int(api.headers["Retry-After"]) >= 1
    assert client.get("/m/" + "A" * 24).status_code == 404
    page = client.get("/m/" + "A" * 24)
    assert page.status_code == 429 and "请求过于频繁" in page.get_data(as_text=True)


# --- configuration -----------------------------------------------------------------------


@pytest.fixture
def base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    for name in ("RATELIMIT_STORAGE_URI", "CELERY_BROKER_URL", "DIBAO_TRUSTED_PROXIES"):
        monkeypatch.delenv(name, raising=False)
    return {"SECRET_KEY": "s", "DIBAO_DATA_KEY": DATA_KEY}


def test_the_limiter_uses_the_brokers_redis_unless_told_otherwise(
    tmp_path: Path, base: dict[str, Any]
) -> None:
    assert build_config(str(tmp_path), base)["RATELIMIT_STORAGE_URI"] == "memory://"
    with_redis = build_config(str(tmp_path), {**base, "CELERY_BROKER_URL": REDIS})
    assert with_redis["RATELIMIT_STORAGE_URI"] == REDIS
    other = {**base, "CELERY_BROKER_URL": "amqp://guest@localhost//"}
    assert build_config(str(tmp_path), other)["RATELIMIT_STORAGE_URI"] == "memory://"
    chosen = {**base, "CELERY_BROKER_URL": REDIS, "RATELIMIT_STORAGE_URI": "redis://r:6379/3"}
    assert build_config(str(tmp_path), chosen)["RATELIMIT_STORAGE_URI"] == "redis://r:6379/3"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("DIBAO_LOGIN_RATE_LIMIT", "five a minute", "DIBAO_LOGIN_RATE_LIMIT must be a rate"),
        ("DIBAO_LOGIN_ADDRESS_RATE_LIMIT", "", "DIBAO_LOGIN_ADDRESS_RATE_LIMIT must be a rate"),
        ("DIBAO_TRUSTED_PROXIES", "one", "DIBAO_TRUSTED_PROXIES must be a whole number"),
        ("DIBAO_TRUSTED_PROXIES", "-1", "between 0 and 5"),
        ("RATELIMIT_STORAGE_URI", "localhost:6379", "RATELIMIT_STORAGE_URI must be"),
        ("RATELIMIT_STORAGE_URI", "ftp://x", "RATELIMIT_STORAGE_URI must be"),
    ],
)
def test_bad_limit_settings_stop_the_start(
    tmp_path: Path, base: dict[str, Any], key: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        build_config(str(tmp_path), {**base, key: value})


# --- two gunicorn workers, one Redis -----------------------------------------------------


@pytest.mark.slow
@pytest.mark.slow
def test_the_login_limit_holds_across_two_workers_sharing_redis(tmp_path: Path) -> None:
    import redis

    instance = tmp_path / "instance"
    ensure_dev_secrets(str(instance))
    prefix = "test-" + secrets.token_hex(6)  # this run's keys only
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("SECRET_KEY", "DIBAO_DATA_KEY", "DATABASE_URL", "RATELIMIT_STORAGE_URI")
    }
    env.update(
        DATABASE_URL=f"sqlite:///{instance}/dibao.sqlite3",
        DIBAO_INSTANCE_PATH=str(instance),
        CELERY_BROKER_URL=REDIS,  # no RATELIMIT_STORAGE_URI: the broker's Redis is used
        RATELIMIT_KEY_PREFIX=prefix,
        DIBAO_LOGIN_RATE_LIMIT="5 per minute",
    )
    subprocess.run(
        [sys.executable, "-m", "server.cli", "db", "upgrade"], env=env, check=True, timeout=300
    )
    port = free_port()
    server = start_gunicorn(env, port, workers=2)
    store = redis.Redis.from_url(REDIS)
    try:
        statuses = []
        pids = set()
        for _ in range(10):
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/api/v1/auth/device-tokens",
                data=json.dumps({"username": "nobody", "password": "x", "device_id": "t"}).encode(),
                headers={"Content-Type": "application/json", "Connection": "close"},
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as answer:
                    statuses.append(answer.status)
            except urllib.error.HTTPError as error:
                statuses.append(error.code)
                error.close()
            pids |= _worker_pids(server.pid)
        assert statuses == [401] * 5 + [429] * 5
        assert len(pids) == 2  # two workers were up throughout
        keys = [key.decode() for key in store.scan_iter(match=f"LIMITS:LIMITER/{prefix}/*")]
        assert any("/login-username/" in key for key in keys), keys
        assert any("/login-address/" in key for key in keys), keys
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        for key in store.scan_iter(match=f"LIMITS:LIMITER/{prefix}/*"):
            store.delete(key)
        store.close()


def _worker_pids(master: int) -> set[int]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return {int(pid) for pid in children}
