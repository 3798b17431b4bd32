"""What HTTP Digest authentication (RFC 7616) needs to know about a device token.

ODK Collect answers a Basic challenge only over HTTPS; over plain HTTP it answers
Digest. A Digest server must hold a password equivalent: ``HA1 = H(login ":" realm
":" password)``, the password being the device token. The token is only ever seen
when it is issued, so HA1 is computed then, for every algorithm we offer, and stored
encrypted (``DeviceToken.digest_ha1``, AES-GCM like every personal field). HA1 opens
nothing but Digest logins to this realm: the JSON API takes the token itself, whose
SHA-256 is all the database keeps. See docs/decisions/0005-openrosa-digest.md.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import bindparam, select
from sqlalchemy.orm import contains_eager, undefer

from server.auth.models import User
from server.auth.service import is_ascii_login
from server.devices.models import DeviceToken
from server.extensions import db

# Part of every stored HA1: changing it invalidates them all (tablets log in again).
REALM = "dibao"


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# In the order offered: RFC 7616 clients (and ODK Collect) take the first they know.
ALGORITHMS: dict[str, Callable[[bytes], str]] = {"SHA-256": _sha256, "MD5": _md5}


def digest_secrets(username: str, token: str) -> str | None:
    """The HA1 of each algorithm as JSON, to store encrypted; None for a login that is
    not ASCII (no tablet could send it in a Digest header).
    """
    if not is_ascii_login(username):
        return None
    a1 = f"{username}:{REALM}:{token}".encode("ascii")
    return json.dumps({name: hash_(a1) for name, hash_ in ALGORITHMS.items()}, sort_keys=True)


def ha1(record: DeviceToken, algorithm: str) -> str | None:
    if record.digest_ha1 is None:
        return None
    value = json.loads(record.digest_ha1).get(algorithm)
    return value if isinstance(value, str) else None


# Built once (bound per login): building the statement cost a third of the lookup.
_CANDIDATES = (
    select(DeviceToken)
    .join(User, DeviceToken.user_id == User.id)
    .options(contains_eager(DeviceToken.user), undefer(DeviceToken.digest_ha1))
    .where(
        User.username == bindparam("username"),
        DeviceToken.revoked_at.is_(None),
        DeviceToken.expires_at > bindparam("now", type_=DeviceToken.expires_at.type),
    )
    .order_by(DeviceToken.id)
)


def digest_candidates(username: str, now: datetime) -> list[DeviceToken]:
    """The live tokens of the user with this exact login (one per tablet). Those
    issued before Digest existed have no HA1. Their user comes in the same query.
    """
    tokens = db.session.scalars(_CANDIDATES, {"username": username, "now": now}).all()
    return [t for t in tokens if t.is_valid(now)]
