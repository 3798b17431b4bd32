"""ODK Collect's whole round trips, with a client that copies its HTTP behaviour
(tests/collect_client.py): HEAD then POST with Digest over plain HTTP, split
submissions sized by the advertised limit, a photo gone from the tablet sent later,
an edited form refused; the size limit agreeing with the nginx example; and the same
against a real gunicorn, also with ``requests``' own Digest implementation.
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests
from defusedxml.ElementTree import fromstring
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image
from requests.auth import HTTPDigestAuth
from sqlalchemy import select

from mobile_api.openrosa import MULTIPART_ALLOWANCE
from server.cases.models import CaseState
from server.config import defaults
from server.extensions import db
from server.visits.models import Survey, SurveyStatus
from tests import factories
from tests.collect_client import OPENROSA, CollectClient, Reply, flask_transport, http_transport
from tests.conftest import DATA_KEY, DatabaseFactory
from tests.mobile_api.test_api_devices import bearer, device_login
from tests.processes import free_port, start_gunicorn
from tests.visits.test_api_surveys import jpeg
from tests.visits.test_openrosa import instance_xml

ROOT = Path(__file__).resolve().parents[2]
RESPONSE_NS = "{http://openrosa.org/http/response}"


@pytest.fixture
def token(client: FlaskClient) -> str:
    value: str = device_login(client).get_json()["token"]
    return value


@pytest.fixture
def household(app: Flask) -> int:
    made = factories.make_household(state=CaseState.APPROVED)
    db.session.commit()
    return made.id


def reply_message(reply: Reply) -> tuple[str | None, str]:
    element = fromstring(reply.body).find(f"{RESPONSE_NS}message")
    assert element is not None
    return element.get("nature"), element.text or ""


def big_jpeg(seed: int, side: int = 820) -> bytes:
    """A real JPEG of about 0.8 MB (noise does not compress)."""
    pixels = random.Random(seed).randbytes(side * side * 3)
    out = io.BytesIO()
    Image.frombytes("RGB", (side, side), pixels).save(out, "JPEG", quality=95)
    return out.getvalue()


def survey(instance: uuid.UUID) -> Survey:
    found = db.session.scalar(select(Survey).where(Survey.client_uuid == str(instance)))
    assert found is not None
    return found


def test_collect_sends_a_visit_over_plain_http_with_digest(
    app: Flask, client: FlaskClient, token: str, household: int
) -> None:
    tablet = CollectClient(flask_transport(client), "caseworker_a", token)
    instance = uuid.uuid4()
    xml = instance_xml(household, instance, housing=["1.jpg", "2.jpg"])
    replies = tablet.submit(xml, {"1.jpg": jpeg(1), "2.jpg": jpeg(2)})
    assert [r.status for r in replies] == [201]
    assert reply_message(replies[0])[0] == "submit_success"
    # HEAD without credentials, its 401 answered with Digest; the POST answers up front
    # (a 401 there would make Collect send the whole body twice).
    assert [(m, s, scheme) for m, _, s, scheme in tablet.log] == [
        ("HEAD", 401, "none"),
        ("HEAD", 204, "Digest"),
        ("POST", 201, "Digest"),
    ]
    assert all("?deviceID=collect%3A" in path for _, path, _, _ in tablet.log)
    head_size = client.head("/openrosa/submission", headers=OPENROSA).headers
    assert "X-OpenRosa-Accept-Content-Length" not in head_size  # only once logged in
    assert int(replies[0].header("X-OpenRosa-Accept-Content-Length") or 0) > 0
    assert survey(instance).status is SurveyStatus.COMPLETE


@pytest.mark.slow
def test_collect_splits_a_large_visit_by_the_advertised_size(
    app: Flask,
    client: FlaskClient,
    token: str,
    household: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(app.config, "DIBAO_MAX_REQUEST_BYTES", 3 * 1024 * 1024)
    tablet = CollectClient(flask_transport(client), "caseworker_a", token)
    photos = {f"{n}.jpg": big_jpeg(n) for n in range(1, 5)}
    assert all(600_000 < len(p) < 1_000_000 for p in photos.values())
    instance = uuid.uuid4()
    xml = instance_xml(household, instance, housing=list(photos))
    replies = tablet.submit(xml, photos)
    statuses = [r.status for r in replies]
    assert len(statuses) >= 2 and statuses[-1] == 201 and set(statuses[:-1]) == {202}, statuses
    advertised = int(replies[0].header("X-OpenRosa-Accept-Content-Length") or 0)
    assert advertised == 3 * 1024 * 1024 - MULTIPART_ALLOWANCE
    for reply in replies:
        assert reply.header("X-OpenRosa-Accept-Content-Length") == str(advertised)
    assert "/4" in reply_message(replies[0])[1]
    stored = survey(instance)
    assert stored.status is SurveyStatus.COMPLETE and len(stored.photos) == 4
    assert [m for m, _, s, _ in tablet.log].count("POST") == len(replies)  # no POST resent


def test_collect_sends_a_photo_that_was_missing_when_the_form_is_sent_again(
    app: Flask, client: FlaskClient, token: str, household: int
) -> None:
    tablet = CollectClient(flask_transport(client), "caseworker_a", token)
    instance = uuid.uuid4()
    xml = instance_xml(household, instance, housing=["1.jpg", "2.jpg", "3.jpg"])
    # 2.jpg is gone from the tablet's instance folder: Collect sends what is there.
    first = tablet.submit(xml, {"1.jpg": jpeg(1), "3.jpg": jpeg(3)})
    assert [r.status for r in first] == [202]
    nature, text = reply_message(first[0])
    assert nature == "submit_success" and "2.jpg" in text and "照片" in text
    assert survey(instance).missing_photos == ["2_jpg"]
    answer = client.get(f"/api/v1/surveys/{instance}", headers=bearer(token)).get_json()
    assert answer["status"] == "awaiting_photos" and answer["missing_photos"] == ["2_jpg"]

    again = tablet.submit(xml, {"1.jpg": jpeg(1), "2.jpg": jpeg(2), "3.jpg": jpeg(3)})
    assert [r.status for r in again] == [201]
    stored = survey(instance)
    assert stored.status is SurveyStatus.COMPLETE and stored.missing_photos == []


def test_collect_sending_an_edited_form_under_the_same_instance_id_gets_409(
    app: Flask, client: FlaskClient, token: str, household: int
) -> None:
    tablet = CollectClient(flask_transport(client), "caseworker_a", token)
    instance = uuid.uuid4()
    xml = instance_xml(household, instance, housing=["1.jpg"])
    assert [r.status for r in tablet.submit(xml, {"1.jpg": jpeg(1)})] == [201]
    edited = xml.replace(b"<notes>", b"<notes>\xe6\x94\xb9 ")
    replies = tablet.submit(edited, {"1.jpg": jpeg(1)})
    assert [r.status for r in replies] == [409]
    nature, text = reply_message(replies[0])
    assert nature == "error" and re.match(r"^[^\x00-\x7f].*? / ", text)
    assert [r.status for r in tablet.submit(xml, {"1.jpg": jpeg(1)})] == [201]


def _nginx_body_size() -> int:
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```nginx\n(.*?)```", text, flags=re.DOTALL)
    assert blocks, "docs/operations.md has no nginx example"
    sizes = re.findall(r"client_max_body_size\s+(\d+)([kKmMgG]?)\s*;", "\n".join(blocks))
    assert len(sizes) == 1, sizes
    number, unit = sizes[0]
    return int(number) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit.lower()]


def test_the_advertised_size_agrees_with_the_nginx_example_and_the_app_limit(
    app: Flask, client: FlaskClient, token: str
) -> None:
    nginx = _nginx_body_size()
    assert nginx == defaults()["DIBAO_MAX_REQUEST_BYTES"] == app.config["DIBAO_MAX_REQUEST_BYTES"]
    head = client.head(
        "/openrosa/submission", headers={**OPENROSA, "Authorization": f"Bearer {token}"}
    )
    advertised = int(head.headers["X-OpenRosa-Accept-Content-Length"])
    # Collect's POST: what it counts (XML + files) plus multipart headers for 100 parts.
    assert advertised + 100 * 512 + 64 * 1024 <= nginx
    assert advertised >= nginx // 2


# -- a real server ---------------------------------------------------------------------


def _cli(env: dict[str, str], *args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout


@pytest.mark.slow
@pytest.mark.slow
def test_collect_and_requests_digest_against_gunicorn(
    databases: DatabaseFactory, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": databases.new("collect"),
        "SECRET_KEY": "collect-test",
        "DIBAO_DATA_KEY": DATA_KEY,
        "DIBAO_INSTANCE_PATH": str(tmp_path),
    }
    _cli(env, "db", "upgrade")
    users = json.loads(_cli(env, "seed", "--households", "30", "--seed", "3", "--json"))
    password = next(u for u in users["users"] if u["username"] == "caseworker1")["password"]
    port = free_port()
    server = start_gunicorn(env, port)
    base = f"http://127.0.0.1:{port}"
    try:
        login = requests.post(
            f"{base}/api/v1/auth/device-tokens",
            json={"username": "caseworker1", "password": password, "device_id": "odk-1"},
            timeout=30,
        )
        assert login.status_code == 201, login.text
        token = login.json()["token"]
        due = requests.get(
            f"{base}/api/v1/visits/due", headers={"Authorization": f"Bearer {token}"}, timeout=30
        ).json()
        household_id = due["items"][0]["household_id"]

        # requests' own RFC 7616 implementation (it reads the joined challenges).
        listed = requests.get(
            f"{base}/openrosa/formList",
            headers=OPENROSA,
            auth=HTTPDigestAuth("caseworker1", token),
            timeout=30,
        )
        assert listed.status_code == 200, listed.text
        assert "<xform>" in listed.text and "xForm" not in listed.text
        wrong = requests.get(
            f"{base}/openrosa/formList",
            headers=OPENROSA,
            auth=HTTPDigestAuth("caseworker1", "dbt_wrong"),
            timeout=30,
        )
        assert wrong.status_code == 401
        assert 'nature="error"' in wrong.text

        # Collect's behaviour over a real socket.
        tablet = CollectClient(http_transport("127.0.0.1", port), "caseworker1", token)
        assert tablet.form_list().status == 200
        instance = uuid.uuid4()
        xml = instance_xml(household_id, instance, housing=["a.jpg", "b.jpg"])
        first = tablet.submit(xml, {"a.jpg": jpeg(1)})
        assert [r.status for r in first] == [202]
        later = tablet.submit(xml, {"a.jpg": jpeg(1), "b.jpg": jpeg(2)})
        assert [r.status for r in later] == [201]
        assert later[0].header("X-OpenRosa-Accept-Content-Length")
        answer = requests.get(
            f"{base}/api/v1/surveys/{instance}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        ).json()
        assert answer["status"] == "complete" and answer["missing_photos"] == []
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
