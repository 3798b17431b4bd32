"""Logging in on the OpenRosa face as ODK Collect does: Digest over plain HTTP (MD5 and
SHA-256, stateless nonces that go stale), Basic over HTTPS with ISO-8859-1
credentials, and ASCII logins (tests/collect_client.py copies Collect's behaviour).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from defusedxml.ElementTree import fromstring
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, text

from server.auth.models import Role, User
from server.auth.passwords import hash_password
from server.auth.service import check_login, create_user
from server.devices.models import DeviceToken
from server.devices.service import hash_token, issue_device_token
from server.errors import ValidationFailed
from server.extensions import db
from tests import factories
from tests.collect_client import (
    OPENROSA,
    CollectClient,
    DeviceRefused,
    digest_response,
    flask_transport,
    parse_challenge,
)
from tests.mobile_api.test_api_devices import device_login

RESPONSE_NS = "{http://openrosa.org/http/response}"


@pytest.fixture
def token(client: FlaskClient) -> str:
    response = device_login(client)
    assert response.status_code == 201, response.get_json()
    value: str = response.get_json()["token"]
    return value


def collect(client: FlaskClient, token: str, *, https: bool = False, **kw: Any) -> CollectClient:
    username = kw.pop("username", "caseworker_a")
    return CollectClient(flask_transport(client, https=https), username, token, https=https, **kw)


def error_message(body: bytes) -> str:
    root = fromstring(body)
    assert root.tag == f"{RESPONSE_NS}OpenRosaResponse"
    element = root.find(f"{RESPONSE_NS}message")
    assert element is not None and element.get("nature") == "error"
    text = element.text or ""
    # Chinese first, then " / " and English.
    assert re.match(r"^[^\x00-\x7f].*? / \S", text), text
    return text


def challenge_of(client: FlaskClient, *, https: bool = False) -> list[str]:
    base = "https://localhost" if https else "http://localhost"
    response = client.get("/openrosa/formList", headers=OPENROSA, base_url=base)
    assert response.status_code == 401
    error_message(response.data)
    return response.headers.getlist("WWW-Authenticate")


def test_a_401_offers_digest_over_http_and_basic_first_over_https(
    app: Flask, client: FlaskClient
) -> None:
    plain = [parse_challenge(c) for c in challenge_of(client)]
    assert [(s, p["algorithm"]) for s, p in plain] == [("Digest", "SHA-256"), ("Digest", "MD5")]
    for _, params in plain:
        assert params["realm"] == "dibao" and params["qop"] == "auth" and params["nonce"]
        assert "stale" not in params
    secure = [parse_challenge(c) for c in challenge_of(client, https=True)]
    assert [s for s, _ in secure] == ["Basic", "Digest", "Digest"]
    assert secure[0][1]["realm"] == "dibao"


def test_collect_logs_in_over_plain_http_with_digest_and_reuses_the_nonce(
    app: Flask, client: FlaskClient, token: str
) -> None:
    tablet = collect(client, token)
    first = tablet.form_list()
    assert first.status == 200, first.body
    again = tablet.form_list()
    assert again.status == 200
    # 401 once, then answered with Digest; the next request answers up front (nc=2).
    assert [(status, scheme) for _, _, status, scheme in tablet.log] == [
        (401, "none"),
        (200, "Digest"),
        (200, "Digest"),
    ]
    assert tablet._digest is not None and tablet._digest["algorithm"] == "SHA-256"
    record = db.session.scalars(select(DeviceToken)).one()
    assert record.last_used_at is not None


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256", "md5"])
def test_digest_works_with_md5_and_sha256(
    app: Flask, client: FlaskClient, token: str, algorithm: str
) -> None:
    challenge = parse_challenge(challenge_of(client)[0])[1]
    uri = "/openrosa/formList?formID=household_survey"
    header = digest_header(token, challenge["nonce"], uri, algorithm=algorithm)
    response = client.get(uri, headers={**OPENROSA, "Authorization": header})
    assert response.status_code == 200, response.data


def digest_header(
    token: str,
    nonce: str,
    uri: str,
    *,
    method: str = "GET",
    algorithm: str = "SHA-256",
    username: str = "caseworker_a",
    realm: str = "dibao",
    response_uri: str | None = None,
) -> str:
    response = digest_response(
        algorithm=algorithm,
        username=username,
        realm=realm,
        password=token,
        method=method,
        uri=response_uri or uri,
        nonce=nonce,
        nc="00000001",
        cnonce="0a4f113b",
    )
    return (
        f'Digest username="{username}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
        f'response="{response}", qop=auth, nc=00000001, cnonce="0a4f113b", '
        f"algorithm={algorithm}"
    )


def test_an_expired_nonce_is_stale_and_collect_answers_again_without_asking(
    app: Flask, client: FlaskClient, token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    tablet = collect(client, token)
    assert tablet.form_list().status == 200
    old_nonce = tablet._digest["nonce"] if tablet._digest else ""
    later = datetime.now(UTC) + timedelta(minutes=6)
    monkeypatch.setitem(app.config, "DIBAO_CLOCK", lambda: later)
    # okhttp-digest gives up on a second 401 unless it says stale=true: 401 then 200
    # shows the server said so.
    assert tablet.form_list().status == 200
    assert [status for _, _, status, _ in tablet.log] == [401, 200, 401, 200]
    assert tablet._digest is not None and tablet._digest["nonce"] != old_nonce

    right = client.get(
        "/openrosa/formList",
        headers={
            **OPENROSA,
            "Authorization": digest_header(token, old_nonce, "/openrosa/formList"),
        },
    )
    assert right.status_code == 401
    assert all("stale=true" in c for c in right.headers.getlist("WWW-Authenticate"))
    error_message(right.data)
    # A wrong answer to an old nonce is not "stale": stale means "right, but old".
    wrong = client.get(
        "/openrosa/formList",
        headers={
            **OPENROSA,
            "Authorization": digest_header("dbt_wrong", old_nonce, "/openrosa/formList"),
        },
    )
    assert wrong.status_code == 401
    assert all("stale" not in c for c in wrong.headers.getlist("WWW-Authenticate"))


def test_wrong_digest_credentials_are_refused_once_without_a_loop(
    app: Flask, client: FlaskClient, token: str
) -> None:
    for tablet in (
        collect(client, "dbt_not-the-token"),
        collect(client, token, username="caseworker_b"),
        collect(client, token, username="nobody"),
        collect(client, token, username="Caseworker_A"),  # Digest hashes the login as typed
    ):
        reply = tablet.form_list()
        assert reply.status == 401
        assert [status for _, _, status, _ in tablet.log] == [401, 401]
        error_message(reply.body)


def test_a_caseworker_moved_to_another_role_is_refused_with_digest_and_basic(
    app: Flask, client: FlaskClient, token: str
) -> None:
    """The token stays live, the role no longer uses tablets: every scheme refuses it."""
    tablet = collect(client, token)
    assert tablet.form_list().status == 200
    user = db.session.scalars(select(User).where(User.username == "caseworker_a")).one()
    user.role = Role.TOWNSHIP_REVIEWER
    db.session.commit()
    reply = tablet.form_list()
    assert reply.status == 401
    assert "log the tablet in again" in error_message(reply.body)
    fresh = collect(client, token)
    assert fresh.form_list().status == 401
    over_https = collect(client, token, https=True)
    assert over_https.form_list().status == 401
    assert [scheme for _, _, _, scheme in over_https.log] == ["none", "Basic"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "change",
    [
        {"realm": "other"},
        {"nonce": "not-a-nonce"},
        {"qop": "auth-int"},
        {"algorithm": "SHA-512-256"},
        {"nc": "zz"},
        {"cnonce": ""},
        {"response": "ééé"},
    ],
    ids=lambda c: next(iter(c)),
)
def test_a_malformed_or_forged_digest_answer_is_refused(
    app: Flask, client: FlaskClient, token: str, change: dict[str, str]
) -> None:
    nonce = parse_challenge(challenge_of(client)[0])[1]["nonce"]
    header = digest_header(token, nonce, "/openrosa/formList")
    for key, value in change.items():
        header = re.sub(rf'{key}=("[^"]*"|[^,]*)', f'{key}="{value}"', header)
    response = client.get("/openrosa/formList", headers={**OPENROSA, "Authorization": header})
    assert response.status_code == 401, header
    error_message(response.data)


def test_a_digest_answer_for_another_uri_is_refused(
    app: Flask, client: FlaskClient, token: str
) -> None:
    nonce = parse_challenge(challenge_of(client)[0])[1]["nonce"]
    header = digest_header(token, nonce, "/openrosa/forms/household_survey.xml")
    response = client.get("/openrosa/formList", headers={**OPENROSA, "Authorization": header})
    assert response.status_code == 400
    error_message(response.data)
    # A nonce of the right shape signed with another SECRET_KEY is not ours.
    key = hmac.new(b"another-secret", b"dibao openrosa digest nonce v1", hashlib.sha256)
    body = int(datetime.now(UTC).timestamp()).to_bytes(8, "big") + b"12345678"
    mac = hmac.new(key.digest(), body, hashlib.sha256).digest()[:16]
    forged = base64.urlsafe_b64encode(body + mac).decode().rstrip("=")
    assert len(forged) == len(nonce)
    other = client.get(
        "/openrosa/formList",
        headers={**OPENROSA, "Authorization": digest_header(token, forged, "/openrosa/formList")},
    )
    assert other.status_code == 401
    assert all("stale" not in c for c in other.headers.getlist("WWW-Authenticate"))


def test_a_token_issued_before_digest_is_told_to_log_in_again(
    app: Flask, client: FlaskClient, token: str
) -> None:
    record = db.session.scalars(select(DeviceToken)).one()
    assert record.digest_ha1 is not None and token not in record.digest_ha1
    record.digest_ha1 = None  # as the migration leaves older tokens
    db.session.commit()
    reply = collect(client, token).form_list()
    assert reply.status == 401
    assert "log the tablet in again" in error_message(reply.body)
    # Over HTTPS Collect uses Basic, which needs no HA1.
    assert collect(client, token, https=True).form_list().status == 200


def test_collect_over_https_answers_basic_in_iso_8859_1(
    app: Flask, client: FlaskClient, token: str
) -> None:
    tablet = collect(client, token, https=True)
    assert tablet.form_list().status == 200
    assert tablet.form_list().status == 200
    assert [(s, scheme) for _, _, s, scheme in tablet.log] == [
        (401, "none"),
        (200, "Basic"),
        (200, "Basic"),
    ]


def basic(username: str, password: str, encoding: str) -> dict[str, str]:
    raw = f"{username}:{password}".encode(encoding, "replace")
    return {**OPENROSA, "Authorization": "Basic " + base64.b64encode(raw).decode()}


def test_basic_credentials_are_read_as_utf8_or_iso_8859_1(
    app: Flask, client: FlaskClient, token: str
) -> None:
    user = db.session.scalar(select(User).where(User.username == "caseworker_a"))
    assert user is not None
    for encoding in ("utf-8", "iso-8859-1"):
        response = client.get("/openrosa/formList", headers=basic("caseworker_a", token, encoding))
        assert response.status_code == 200
    # A password that is not ASCII is simply wrong (never a 500 from comparing it).
    for encoding in ("utf-8", "iso-8859-1"):
        response = client.get(
            "/openrosa/formList", headers=basic("caseworker_a", "dbt_é密", encoding)
        )
        assert response.status_code == 401
        error_message(response.data)
    # Raw bytes that are neither (and not base64) are refused the same way.
    for value in ("Basic %%%", "Basic " + base64.b64encode(b"\xff\xfe\x00").decode()):
        response = client.get("/openrosa/formList", headers={**OPENROSA, "Authorization": value})
        assert response.status_code == 401


def test_a_chinese_name_typed_as_the_username_is_told_to_use_the_login(
    app: Flask, client: FlaskClient, token: str
) -> None:
    tablet = collect(client, token, https=True, username="王丽")  # Collect sends "??"
    reply = tablet.form_list()
    assert reply.status == 403
    assert "ASCII" in error_message(reply.body)
    # Over plain HTTP Collect's OkHttp refuses to put it in a Digest header at all.
    with pytest.raises(DeviceRefused):
        collect(client, token, username="王丽").form_list()


@pytest.fixture
def chinese_login(app: Flask) -> tuple[str, str]:
    """An account created before logins had to be ASCII, and its tablet token."""
    township = factories.areas().township_a
    db.session.add(
        User(
            username="张三",
            password_hash=hash_password(factories.PASSWORD),
            role=Role.CASEWORKER,
            area=township,
        )
    )
    issued = issue_device_token(
        username="张三", password=factories.PASSWORD, device_id="t-9", device_name="tablet"
    )
    db.session.commit()
    assert issued.record.digest_ha1 is None  # no tablet could send that login in Digest
    return "张三", issued.token


def test_an_existing_non_ascii_login_gets_a_clear_error(
    app: Flask, client: FlaskClient, chinese_login: tuple[str, str]
) -> None:
    username, token = chinese_login
    replies = [
        collect(client, token, https=True, username=username).form_list().body,  # "??"
        client.get("/openrosa/formList", headers=basic(username, token, "utf-8")).data,
        client.get(
            "/openrosa/formList", headers={**OPENROSA, "Authorization": f"Bearer {token}"}
        ).data,
        client.get(
            "/openrosa/formList",
            headers={
                **OPENROSA,
                "Authorization": "Digest username*=UTF-8''%E5%BC%A0%E4%B8%89, realm=\"dibao\", "
                'nonce="x", uri="/openrosa/formList", response="0", qop=auth, nc=00000001, '
                'cnonce="1"',
            },
        ).data,
    ]
    for body in replies:
        text = error_message(body)
        assert "ASCII" in text and "login" in text
    # The JSON API, which sends no credentials in that form, keeps working.
    assert (
        client.get("/api/v1/visits/due", headers={"Authorization": f"Bearer {token}"}).status_code
        == 200
    )


def test_an_older_login_outside_the_rule_is_told_so_whatever_the_scheme(
    app: Flask, client: FlaskClient
) -> None:
    db.session.add(
        User(
            username="wang li",
            password_hash=hash_password(factories.PASSWORD),
            role=Role.CASEWORKER,
            area=factories.areas().township_a,
        )
    )
    token = issue_device_token(
        username="wang li", password=factories.PASSWORD, device_id="t-8", device_name="tablet"
    ).token
    db.session.commit()
    for https in (True, False):
        reply = collect(client, token, https=https, username="wang li").form_list()
        assert reply.status == 403, https
        assert "ASCII login" in error_message(reply.body)


def test_an_empty_username_is_a_failed_login_not_a_login_rule(
    app: Flask, client: FlaskClient, token: str
) -> None:
    for encoding in ("utf-8", "iso-8859-1"):
        response = client.get("/openrosa/formList", headers=basic("", token, encoding))
        assert response.status_code == 401
    nonce = parse_challenge(challenge_of(client)[0])[1]["nonce"]
    header = digest_header(token, nonce, "/openrosa/formList").replace(
        'username="caseworker_a", ', ""
    )
    response = client.get("/openrosa/formList", headers={**OPENROSA, "Authorization": header})
    assert response.status_code == 401


def test_new_logins_must_be_ascii_and_names_may_be_chinese(app: Flask) -> None:
    for bad in ("张三", "wang li", "wang:li", "josé", "?", "", "a" * 65, "-lead"):
        with pytest.raises(ValidationFailed, match="login may hold only"):
            check_login(bad)
    user = create_user(
        username=" wang.li ",
        password="a-long-password",
        role="caseworker",
        area_code="152201100",
        display_name="王丽",
    )
    assert (user.username, user.display_name, user.label) == ("wang.li", "王丽", "王丽")
    with pytest.raises(ValidationFailed, match="login may hold only"):
        create_user(
            username="王丽", password="a-long-password", role="caseworker", area_code="152201100"
        )
    with pytest.raises(ValidationFailed, match="display name"):
        create_user(
            username="wang.li2",
            password="a-long-password",
            role="caseworker",
            area_code="152201100",
            display_name="x" * 65,
        )


def test_the_stored_digest_secret_is_encrypted_and_is_not_the_token(
    app: Flask, client: FlaskClient, token: str
) -> None:
    record = db.session.scalars(select(DeviceToken)).one()
    assert record.token_hash == hash_token(token)
    raw = db.session.execute(
        text("SELECT digest_ha1 FROM device_tokens WHERE id = :id"), {"id": record.id}
    ).scalar_one()
    assert raw is not None and b"SHA-256" not in bytes(raw) and token.encode() not in bytes(raw)
