"""Personal proof-of-life links: ``/m/<token>``, one per member and month.

The token is an HMAC (SHA-256, key derived from SECRET_KEY) of the member, the month and
the link's generation, cut to 18 bytes (144 bits) and base64url-encoded: 24 characters,
short enough for one SMS. It reveals nothing (it is a MAC of an id, not the id) and is
never stored: the month row keeps its SHA-256 for the look-up and the token is derived
again whenever it must be sent. Revoking a link bumps the generation, so the old token
no longer matches; the link expires when the month's window closes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

TOKEN_PATTERN = re.compile(r"^[A-Za-z0-9_-]{24}$")


def link_key(secret_key: str) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"dibao proof-of-life link v1"
    ).derive(secret_key.encode("utf-8"))


def make_token(key: bytes, member_id: int, month: str, generation: int) -> str:
    message = f"{member_id}\x00{month}\x00{generation}".encode("ascii")
    digest = hmac.new(key, message, hashlib.sha256).digest()[:18]
    return base64.urlsafe_b64encode(digest).decode("ascii")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def well_formed(token: str) -> bool:
    return bool(TOKEN_PATTERN.match(token))
