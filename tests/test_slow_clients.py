"""The production setup of docs/operations.md survives slow clients: nginx with
deploy/nginx-dibao.conf (TLS, request buffering, body timeouts) in front of gunicorn
with deploy/gunicorn.conf.py. Connections that declare a large body and trickle it
wait on nginx, not on a worker, so /healthz keeps answering within a second.

gunicorn's sync workers alone do not: eight such connections hold every worker until
its timeout (docs/operations.md gives the measurement). Through the same chain the
app sees HTTPS (HSTS, Secure cookie) from the one proxy it trusts
(DIBAO_TRUSTED_PROXIES=1)."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from server.config import ensure_dev_secrets
from tests.processes import free_port, start_gunicorn

ROOT = Path(__file__).resolve().parents[1]
NGINX_SITE = ROOT / "deploy" / "nginx-dibao.conf"
GUNICORN_CONFIG = ROOT / "deploy" / "gunicorn.conf.py"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
MB = 1024 * 1024


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def render_site(
    folder: Path, *, https_port: int, http_port: int, app_port: int, cert: Path, key: Path
) -> Path:
    """deploy/nginx-dibao.conf as shipped, with only its addresses and files replaced."""
    text = NGINX_SITE.read_text("utf-8")
    for old, new in (
        ("listen 443 ssl;", f"listen 127.0.0.1:{https_port} ssl;"),
        ("listen 80;", f"listen 127.0.0.1:{http_port};"),
        ("server 127.0.0.1:8000;", f"server 127.0.0.1:{app_port};"),
        ("/etc/ssl/dibao/fullchain.pem", str(cert)),
        ("/etc/ssl/dibao/privkey.pem", str(key)),
    ):
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    site = folder / "dibao.conf"
    site.write_text(text, "utf-8")
    temp = folder / "temp"
    temp.mkdir()
    # What Debian's /etc/nginx/nginx.conf provides around a site, in a folder of our own.
    main = folder / "nginx.conf"
    main.write_text(
        ("user root;\n" if os.geteuid() == 0 else "")
        + f"""
worker_processes 1;
daemon off;
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    include {site};
}}
""",
        "utf-8",
    )
    return main


def wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise
            time.sleep(0.1)


@dataclass
class Site:
    https: str
    http: str
    context: ssl.SSLContext
    folder: Path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    folder = tmp_path_factory.mktemp("production")
    instance = folder / "instance"
    ensure_dev_secrets(str(instance))
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("SECRET_KEY", "DIBAO_DATA_KEY", "DATABASE_URL", "CELERY_BROKER_URL")
    }
    env.update(
        DATABASE_URL=f"sqlite:///{instance}/dibao.sqlite3",
        DIBAO_INSTANCE_PATH=str(instance),
        DIBAO_TRUSTED_PROXIES="1",
    )
    subprocess.run(
        [sys.executable, "-m", "server.cli", "db", "upgrade"], env=env, check=True, timeout=300
    )
    app_port, https_port, http_port = free_port(), free_port(), free_port()
    app = start_gunicorn(env, app_port, workers=None, options=("-c", str(GUNICORN_CONFIG)))
    cert, key = self_signed(folder)
    config = render_site(
        folder, https_port=https_port, http_port=http_port, app_port=app_port, cert=cert, key=key
    )
    nginx = subprocess.Popen(
        [NGINX, "-p", str(folder), "-c", str(config), "-e", str(folder / "error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_port(https_port, nginx)
        context = ssl.create_default_context(cafile=str(cert))
        yield Site(
            f"https://127.0.0.1:{https_port}", f"http://127.0.0.1:{http_port}", context, folder
        )
    finally:
        os.killpg(nginx.pid, signal.SIGTERM)
        nginx.wait(timeout=30)
        os.killpg(app.pid, signal.SIGTERM)
        app.wait(timeout=30)


def get(site: Site, path: str, timeout: float = 5) -> tuple[int, dict[str, str], bytes]:
    with urllib.request.urlopen(site.https + path, timeout=timeout, context=site.context) as r:
        return r.status, dict(r.headers), r.read()


class SlowClient:
    """A connection that declares ``declared`` bytes of body, sends 1 KB, then a few
    bytes now and then."""

    def __init__(self, site: Site, declared: int) -> None:
        host, port = site.https.removeprefix("https://").split(":")
        raw = socket.create_connection((host, int(port)), timeout=10)
        self.sock = site.context.wrap_socket(raw, server_hostname=host)
        self.sock.sendall(
            b"POST /api/v1/auth/device-tokens HTTP/1.1\r\n"
            + f"Host: {host}\r\nContent-Type: application/json\r\n".encode()
            + f"Content-Length: {declared}\r\n\r\n".encode()
            + b"{"
            + b" " * 1023
        )

    def trickle(self) -> bool:
        try:
            self.sock.sendall(b" " * 16)
            return True
        except OSError:
            return False  # nginx answered and closed (413 for a body over its limit)

    def close(self) -> None:
        self.sock.close()


@pytest.mark.slow
@pytest.mark.slow
def test_healthz_answers_within_a_second_while_slow_clients_hold_connections(
    site: Site,
) -> None:
    # Sixteen: the eight at 100 MB (over nginx's limit: refused at the headers)
    # and eight more that nginx must buffer (50 MB, under its limit), several per worker.
    clients = [SlowClient(site, 100 * MB) for _ in range(8)]
    clients += [SlowClient(site, 50 * MB) for _ in range(8)]
    stop = threading.Event()
    open_after: list[int] = []

    def keep_trickling() -> None:
        while not stop.wait(0.2):
            open_after[:] = [sum(client.trickle() for client in clients)]

    trickler = threading.Thread(target=keep_trickling, daemon=True)
    trickler.start()
    try:
        time.sleep(1)  # every slow client has been read by nginx and is waiting
        for _ in range(5):
            started = time.monotonic()
            status, _headers, body = get(site, "/healthz", timeout=5)
            elapsed = time.monotonic() - started
            assert status == 200 and json.loads(body)["status"] == "ok"
            assert elapsed < 1.0, f"/healthz took {elapsed:.2f} s"
            time.sleep(0.3)
        # The buffered ones are still connected, still trickling: nginx holds them.
        assert open_after and open_after[0] >= 8
    finally:
        stop.set()
        trickler.join(timeout=5)
        for client in clients:
            client.close()


def test_through_the_proxy_the_app_sees_https(site: Site) -> None:
    status, headers, _ = get(site, "/login?lang=en")
    assert status == 200
    assert headers["Strict-Transport-Security"] == "max-age=31536000"
    assert "Secure" in headers["Set-Cookie"] and "HttpOnly" in headers["Set-Cookie"]
    # Plain HTTP is sent to HTTPS by nginx, before the app.
    request = urllib.request.Request(site.http + "/login", method="GET")
    opener = urllib.request.build_opener(NoRedirect())
    with pytest.raises(urllib.error.HTTPError) as redirect:
        opener.open(request, timeout=5)
    assert redirect.value.code == 301
    assert redirect.value.headers["Location"].startswith("https://")
    redirect.value.close()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def test_the_documented_nginx_site_is_the_tested_one() -> None:
    docs = (ROOT / "docs" / "operations.md").read_text("utf-8")
    assert "deploy/nginx-dibao.conf" in docs and "deploy/gunicorn.conf.py" in docs
    assert "export DIBAO_TRUSTED_PROXIES=1" in docs
    block = docs.split("```nginx\n", 1)[1].split("```", 1)[0]
    shipped = {line.split("#")[0].strip() for line in NGINX_SITE.read_text("utf-8").splitlines()}
    for line in block.strip().splitlines():
        assert line.strip() in shipped, line
