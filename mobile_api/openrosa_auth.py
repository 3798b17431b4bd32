"""Logins on the OpenRosa face, as ODK Collect makes them (docs/odk-collect.md,
docs/decisions/0005-openrosa-digest.md).

Collect (OkHttp with okhttp-digest) answers the first challenge of a 401 it knows:
``Digest`` always, ``Basic`` only over HTTPS. So a 401 offers Basic first over HTTPS
(it needs nothing stored beside the token's hash) and Digest (SHA-256, then MD5,
``qop=auth``) on both schemes. The password is always the device token.

- Basic: the credentials are decoded as UTF-8 when they are valid UTF-8, else as
  ISO-8859-1 (what Collect sends); the token is checked by its hash, the username
  must be the token owner's login.
- Digest (RFC 7616): the nonce is stateless, the server's timestamp and random bytes
  signed with an HMAC keyed by SECRET_KEY, valid NONCE_SECONDS; a correct answer to
  an older nonce gets ``stale=true`` (Collect then retries without asking anyone).
  HA1 per token was stored encrypted when the token was issued (server.devices.digest).
- Bearer: the token itself (scripts, the tablet app).

Logins are ASCII (server.auth.service.LOGIN): a user whose login is not gets a 403
saying so, whichever way the tablet encoded it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from datetime import UTC, datetime
from urllib.parse import unquote, urlsplit

from flask import current_app, request
from werkzeug.http import parse_dict_header

from server.auth.permissions import Capability, can
from server.auth.service import LOGIN_RULE, is_ascii_login
from server.clock import utcnow
from server.devices.digest import ALGORITHMS, REALM, digest_candidates, ha1
from server.devices.models import DeviceToken
from server.devices.service import InvalidToken, authenticate_device, mark_used
from server.errors import DomainError

# Spring Security's default for Digest (ODK Aggregate's): long enough for a HEAD and
# its POST, short enough that a header overheard on plain HTTP soon stops working.
NONCE_SECONDS = 300
# A nonce from a little in the future: another worker's clock.
CLOCK_SKEW_SECONDS = 30
_NONCE_BODY = 16  # 8 bytes timestamp + 8 random
_NONCE_MAC = 16
_NC = re.compile(r"[0-9a-fA-F]{8}")


class StaleNonce(InvalidToken):
    """The Digest answer was right, for a nonce that has expired: ask again."""

    code = "stale_nonce"


class AsciiLoginRequired(DomainError):
    code = "ascii_login_required"
    http_status = 403


class DigestUriMismatch(DomainError):
    """RFC 7616 3.4.6: the answer was computed for another URI than the request's."""

    code = "digest_uri_mismatch"
    http_status = 400


def authenticate() -> DeviceToken:
    """The device token the request's Authorization header proves; a DomainError
    (401 with challenges, 403, 400) otherwise."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer" and value.strip():
        return _owner_checked(authenticate_device(value.strip()))
    if scheme == "basic":
        return _basic(value.strip())
    if scheme == "digest":
        return _digest(value.strip())
    raise InvalidToken("log in with your username and the tablet's device token as the password")


def challenges(*, stale: bool = False) -> list[str]:
    """The WWW-Authenticate values of a 401, one challenge each (Collect reads the
    first header that starts with "Digest", so they must not share a header)."""
    nonce = make_nonce(utcnow())
    offered = [f'Basic realm="{REALM}", charset="UTF-8"'] if request.is_secure else []
    for algorithm in ALGORITHMS:
        offered.append(
            f'Digest realm="{REALM}", qop="auth", algorithm={algorithm}, nonce="{nonce}", '
            f"charset=UTF-8{', stale=true' if stale else ''}"
        )
    return offered


# -- Basic -----------------------------------------------------------------------------


def decode_basic(value: str) -> tuple[str, str]:
    """(username, password) of a Basic credential. RFC 7617 leaves the charset to the
    server: UTF-8 when the bytes are valid UTF-8 (unambiguous for ASCII, and what
    curl and browsers send), else ISO-8859-1 (ODK Collect's, OkHttp's default).
    """
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidToken("the Basic credentials are not base64") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("iso-8859-1")
    username, colon, password = text.partition(":")
    if not colon:
        raise InvalidToken("the Basic credentials have no ':' between username and password")
    return username.strip(), password.strip()


def _basic(value: str) -> DeviceToken:
    username, password = decode_basic(value)
    device = _owner_checked(authenticate_device(password))
    if username.casefold() != device.user.username.casefold():
        if _lost_in_encoding(username):
            # A name typed in Chinese arrives as "??" from Collect: say what to type.
            raise AsciiLoginRequired(
                f"type your login ({LOGIN_RULE}), not your name, as the username",
                reason="username_not_ascii",
            )
        raise InvalidToken("the username does not match the device token")
    return device


def _lost_in_encoding(username: str) -> bool:
    """A username that is not what was typed: Collect's ISO-8859-1 turns a Chinese
    character into "?", other clients send it as it is; no login holds either."""
    return not username.isascii() or "?" in username


def _owner_checked(device: DeviceToken) -> DeviceToken:
    if not is_ascii_login(device.user.username):
        raise AsciiLoginRequired(
            f"this account's login is not one ODK Collect can send (only {LOGIN_RULE}): "
            "ask an administrator for an ASCII login",
            reason="account_login_not_ascii",
        )
    return device


# -- Digest ----------------------------------------------------------------------------


def _digest(value: str) -> DeviceToken:
    params = parse_dict_header(value)
    username = _header_text(params.get("username") or "")
    if _lost_in_encoding(username):
        raise AsciiLoginRequired(
            f"a tablet login holds only {LOGIN_RULE}; ask an administrator for one",
            reason="username_not_ascii",
        )
    nonce = params.get("nonce") or ""
    uri = params.get("uri") or ""
    response = params.get("response") or ""
    algorithm = params.get("algorithm") or "MD5"  # RFC 7616 3.3: absent means MD5
    known = {name.lower(): name for name in ALGORITHMS}
    if (
        params.get("realm") != REALM
        or params.get("qop") != "auth"
        or not _NC.fullmatch(params.get("nc") or "")
        or not params.get("cnonce")
        or not username
        or not nonce
        or not uri
        or not response
        or algorithm.lower() not in known
    ):
        raise InvalidToken(
            f'Digest credentials need username, realm="{REALM}", qop=auth, nc, cnonce, '
            f"nonce, uri, response and an algorithm of {', '.join(ALGORITHMS)}"
        )
    if not _same_target(uri):
        raise DigestUriMismatch("the Digest uri is not this request's")
    issued_at = nonce_time(nonce)
    if issued_at is None:
        raise InvalidToken("the Digest nonce was not issued by this server")

    now = utcnow()
    hash_ = ALGORITHMS[known[algorithm.lower()]]
    # The client hashed the bytes it sent; WSGI gives them as ISO-8859-1 characters.
    ha2 = hash_(_wire(f"{request.method}:{uri}"))
    tail = f":{nonce}:{params['nc']}:{params['cnonce']}:auth:{ha2}"
    answer = _wire(response.lower())
    tokens = digest_candidates(username, now)
    if tokens:
        _owner_checked(tokens[0])  # an older login outside the rule: say so
    matched = None
    for record in tokens:
        secret = ha1(record, known[algorithm.lower()])
        if secret is not None and hmac.compare_digest(
            hash_(_wire(secret + tail)).encode("ascii"), answer
        ):
            matched = record
    if matched is None:
        if tokens and all(ha1(t, known[algorithm.lower()]) is None for t in tokens):
            raise InvalidToken(
                "this tablet's device token predates Digest logins: log the tablet in "
                "again for a new token, or use HTTPS"
            )
        raise InvalidToken("wrong username or device token, or the token expired or was revoked")
    if not can(matched.user, Capability.USE_TABLETS):
        # As for a bearer token (authenticate_device): a user whose role changed since
        # the tablet logged in keeps no tablet access.
        raise InvalidToken("the token is unknown, expired or revoked; log the tablet in again")
    age = (now - issued_at).total_seconds()
    if age > NONCE_SECONDS:
        raise StaleNonce("the Digest nonce has expired; answer the new challenge")
    mark_used(matched, now)
    return matched


def _header_text(value: str) -> str:
    """A header parameter as text: WSGI gives header bytes as ISO-8859-1 characters;
    a client that put UTF-8 bytes there meant UTF-8."""
    try:
        return value.encode("iso-8859-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


def _wire(text: str) -> bytes:
    return text.encode("iso-8859-1", "replace")


def _same_target(uri: str) -> bool:
    """Whether the Digest ``uri`` (origin form, or absolute) names this request."""
    parts = urlsplit(uri)
    path = request.script_root + request.path
    query = request.query_string.decode("iso-8859-1")
    return unquote(parts.path) == path and unquote(parts.query) == unquote(query)


# -- nonces ----------------------------------------------------------------------------


def _nonce_key() -> bytes:
    secret = current_app.config["SECRET_KEY"]
    key = secret if isinstance(secret, bytes) else str(secret).encode("utf-8")
    return hmac.new(key, b"dibao openrosa digest nonce v1", hashlib.sha256).digest()


def make_nonce(now: datetime) -> str:
    body = int(now.timestamp()).to_bytes(8, "big") + os.urandom(8)
    mac = hmac.new(_nonce_key(), body, hashlib.sha256).digest()[:_NONCE_MAC]
    return base64.urlsafe_b64encode(body + mac).decode("ascii").rstrip("=")


def nonce_time(nonce: str) -> datetime | None:
    """When this server issued the nonce; None if it did not (or from the future)."""
    try:
        raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
    except (binascii.Error, ValueError):
        return None
    if len(raw) != _NONCE_BODY + _NONCE_MAC:
        return None
    body, mac = raw[:_NONCE_BODY], raw[_NONCE_BODY:]
    expected = hmac.new(_nonce_key(), body, hashlib.sha256).digest()[:_NONCE_MAC]
    if not hmac.compare_digest(mac, expected):
        return None
    issued = datetime.fromtimestamp(int.from_bytes(body[:8], "big"), tz=UTC)
    if (issued - utcnow()).total_seconds() > CLOCK_SKEW_SECONDS:
        return None
    return issued
