"""The recipient's page in a real browser: headless Chromium (Debian's) with a fake
front camera playing frames of a real person, against the real server (gunicorn,
SQLite), from the link the CLI prints to the verdict of the real face pipeline."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from playwright.sync_api import sync_playwright

from server.config import ensure_dev_secrets
from tests.pol_camera import write_y4m
from tests.pol_frames import FACES, clip_frame, clip_numbers
from tests.processes import free_port, start_gunicorn

CHROMIUM = "/usr/bin/chromium"
CHALLENGES = "turn_right,open_mouth"  # what the live clip's frames 092-132 show


@dataclass
class Server:
    base: str
    instance: Path
    process: subprocess.Popen[bytes]

    def env(self) -> dict[str, str]:
        return _env(self.instance, self.base)

    def cli(self, *args: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "server.cli", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        ).stdout

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        request = urllib.request.Request(
            self.base + path, data=body, method=method, headers=headers or {}
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as error:
            return error.code, json.load(error)


def _env(instance: Path, base: str) -> dict[str, str]:
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
            # Allowed only with the demo's own secrets: the fake camera plays one fixed
            # sequence, so the page must ask for what it shows.
            "DIBAO_POL_FIXED_CHALLENGES": CHALLENGES,
        }
    )
    return env


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    instance = tmp_path_factory.mktemp("browser-instance")
    ensure_dev_secrets(instance)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = _env(instance, base)
    subprocess.run(
        [sys.executable, "-m", "server.cli", "db", "upgrade"], env=env, check=True, timeout=300
    )
    process = start_gunicorn(env, port)
    running = Server(base, instance, process)
    yield running
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)


def _designated_member(server: Server) -> tuple[int, str]:
    """Seed a county, log a tablet in, enroll a designated head's face from lin_1.png;
    returns the member id and the tablet's token."""
    seeded = json.loads(server.cli("seed", "--households", "30", "--seed", "11", "--json"))
    password = next(u["password"] for u in seeded["users"] if u["username"] == "caseworker1")
    status, login = server.request(
        "POST",
        "/api/v1/auth/device-tokens",
        json.dumps(
            {"username": "caseworker1", "password": password, "device_id": "browser-test"}
        ).encode(),
        {"Content-Type": "application/json"},
    )
    assert status == 201, login
    token = login["token"]
    status, due = server.request(
        "GET", "/api/v1/visits/due", headers={"Authorization": f"Bearer {token}"}
    )
    assert status == 200 and due["items"], due
    member_id = next(
        m["member_id"]
        for item in due["items"]
        if item["kind"] == "periodic_review"
        for m in item["members"]
        if m["relation"] == "head"
    )
    boundary = uuid.uuid4().hex
    photo = (FACES / "lin_manuel_miranda" / "lin_1.png").read_bytes()
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="photo"; filename="lin.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + photo
        + f"\r\n--{boundary}--\r\n".encode()
    )
    status, made = server.request(
        "POST",
        f"/api/v1/members/{member_id}/face-templates",
        body,
        {
            "Authorization": f"Bearer {token}",
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        },
    )
    assert status == 201, made
    return member_id, token


def _camera(path: Path) -> Path:
    """A 10 fps clip timed to the page's capture plan (frames at 0.6-1.2 s on the face
    instruction, 2.3-3.2 s on the first challenge, 4.3-4.9 s on the second, after the
    camera is ready): the face held still for 2.5 s, the real turn to his right over
    1.8 s, then the open mouth held; robust to a second of delay before capture starts."""
    frontal = clip_frame(92)
    turning = [clip_frame(n) for n in clip_numbers(96, 128) if n != 116]  # 116: no face
    mouth = clip_frame(132)
    frames: list[Image.Image] = [frontal] * 25
    for image in turning:
        frames += [image] * 2
    frames += [mouth] * (80 - len(frames))
    return write_y4m(frames, path, fps=10)


def _browser_args(camera: Path) -> list[str]:
    return [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={camera}",
    ]


def test_a_recipient_passes_from_the_sms_link_on_a_phone_sized_page(
    server: Server, tmp_path: Path
) -> None:
    assert Path(CHROMIUM).is_file(), "install Debian's chromium: apt-get install chromium"
    member_id, _ = _designated_member(server)
    url = (
        server.cli("proof-of-life", "link", "--member-id", str(member_id)).strip().splitlines()[-1]
    )
    assert url.startswith(server.base + "/m/")
    camera = _camera(tmp_path / "camera.y4m")

    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=_browser_args(camera)
        )
        try:
            # An English browser locale: the page is still Chinese first.
            context = browser.new_context(
                viewport={"width": 360, "height": 740},
                is_mobile=True,
                has_touch=True,
                locale="en-US",
            )
            page = context.new_page()
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.on(
                "console",
                lambda message: (
                    problems.append(f"console {message.type}: {message.text}")
                    if message.type == "error"
                    else None
                ),
            )
            page.goto(url)
            assert page.locator("html").get_attribute("lang") == "zh-CN"
            page.locator("#btn-start").click(timeout=20_000)
            page.locator("#v-result").wait_for(state="visible", timeout=90_000)
            title = page.locator("#res-title").inner_text()
            lines = page.locator("#res-lines").inner_text()
            page.screenshot(path=str(tmp_path / "result.png"))
        finally:
            browser.close()

    assert problems == []
    status, state = server.request(
        "GET", "/api/v1/proof-of-life/status?link_token=" + url.rsplit("/", 1)[1]
    )
    assert status == 200
    assert (title, state["status"]) == ("本月认证已完成", "passed"), (title, lines, state)
