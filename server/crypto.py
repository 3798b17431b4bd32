"""Field encryption for personal data at rest, and keyed hashes for look-ups.

AES-256-GCM with a random 96-bit nonce per value. The column name is bound as
associated data, so a ciphertext copied into another column fails to decrypt.
Look-up hashes use a separate key derived from the data key (HKDF), so the
hash column leaks nothing the encryption key would not.

A key ring makes the data key rotatable (docs/decisions/0010-data-key-rotation.md):
the current key encrypts and hashes every new value; older keys still decrypt
and still find look-ups until ``dibao keys rotate`` has moved everything.

Token formats:
  version 1: 0x01 | nonce (12) | sealed           (no key id: tried under every key)
  version 2: 0x02 | key id (4) | nonce (12) | sealed
"""

from __future__ import annotations

import hmac
import operator
import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import date

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

V1 = b"\x01"
V2 = b"\x02"
KEY_ID_BYTES = 4
_NONCE_BYTES = 12
_TAG_BYTES = 16


class DecryptionError(ValueError):
    """A stored value does not decrypt under the configured keys (wrong key or tampering)."""


class DecryptionCount:
    """How many values were decrypted inside a :func:`counting_decryptions` block."""

    def __init__(self) -> None:
        self.count = 0


# The counters open in this context: empty (the usual case) costs one look-up per value.
_counters: ContextVar[tuple[DecryptionCount, ...]] = ContextVar("dibao_decryptions", default=())


@contextmanager
def counting_decryptions() -> Iterator[DecryptionCount]:
    """Count the values decrypted in this block (this thread or task, and the code it
    calls; nested blocks each count): tests and benchmarks assert that a path reads
    no personal data, or how much."""
    counter = DecryptionCount()
    reset = _counters.set((*_counters.get(), counter))
    try:
        yield counter
    finally:
        _counters.reset(reset)


def _derive(key: bytes, purpose: bytes, length: int = 32) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=purpose).derive(key)


def key_id(data_key: bytes) -> bytes:
    """A key's public fingerprint (4 bytes): names the key in a token without revealing it."""
    return _derive(data_key, b"dibao key id v1", KEY_ID_BYTES)


class _Key:
    def __init__(self, data_key: bytes) -> None:
        if len(data_key) != 32:
            raise ValueError("the data key must be 32 bytes")
        self.id = key_id(data_key)
        self.aead = AESGCM(_derive(data_key, b"dibao field encryption v1"))
        self.lookup_key = _derive(data_key, b"dibao lookup hash v1")

    def lookup_hash(self, value: str, context: str) -> str:
        message = context.encode("utf-8") + b"\x00" + value.encode("utf-8")
        return hmac.digest(self.lookup_key, message, "sha256").hex()  # one call, no object


class FieldCipher:
    """The key ring: ``data_key`` is current, ``old_keys`` still decrypt and still match
    look-ups (every look-up must go through :meth:`lookup_hashes`)."""

    def __init__(self, data_key: bytes, old_keys: Iterable[bytes] = ()) -> None:
        self._current = _Key(data_key)
        self._keys = [self._current] + [_Key(k) for k in old_keys]
        ids = [k.id for k in self._keys]
        if len(set(ids)) != len(ids):
            raise ValueError("the key ring holds the same key twice (or two keys share a key id)")
        self._by_id = {k.id: k for k in self._keys}
        self._prefix = V2 + self._current.id

    @property
    def current_key_id(self) -> str:
        return self._current.id.hex()

    @property
    def key_ids(self) -> list[str]:
        """Every key id of the ring, the current one first."""
        return [k.id.hex() for k in self._keys]

    @property
    def current_prefix(self) -> bytes:
        """The first bytes of every token made under the current key (version 2, key id)."""
        return self._prefix

    def encrypt(self, plaintext: str, context: str) -> bytes:
        return self.encrypt_bytes(plaintext.encode("utf-8"), context)

    def decrypt(self, token: bytes, context: str) -> str:
        return self.decrypt_bytes(token, context).decode("utf-8")

    def encrypt_bytes(self, plaintext: bytes, context: str) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._current.aead.encrypt(nonce, plaintext, context.encode("utf-8"))
        return self._prefix + nonce + sealed

    def decrypt_bytes(self, token: bytes, context: str) -> bytes:
        for counter in _counters.get():
            counter.count += 1
        version = token[:1]
        if version == V2 and len(token) >= 1 + KEY_ID_BYTES + _NONCE_BYTES + _TAG_BYTES:
            kid = token[1 : 1 + KEY_ID_BYTES]
            key = self._by_id.get(kid)
            if key is None:
                raise DecryptionError(
                    f"stored {context} is under key id {kid.hex()}, which is in neither "
                    "DIBAO_DATA_KEY nor DIBAO_DATA_KEYS_OLD"
                )
            return self._open(key, token[1 + KEY_ID_BYTES :], context)
        if version == V1 and len(token) >= 1 + _NONCE_BYTES + _TAG_BYTES:
            for key in self._keys:  # no key id: the current key first, then the old ones
                try:
                    return self._open(key, token[1:], context)
                except DecryptionError:
                    continue
            raise DecryptionError(f"stored {context} (version 1) decrypts with no key of the ring")
        raise DecryptionError(f"stored {context} is not a dibao ciphertext")

    @staticmethod
    def _open(key: _Key, body: bytes, context: str) -> bytes:
        nonce, sealed = body[:_NONCE_BYTES], body[_NONCE_BYTES:]
        try:
            return key.aead.decrypt(nonce, sealed, context.encode("utf-8"))
        except InvalidTag as exc:
            raise DecryptionError(
                f"stored {context} does not decrypt with key {key.id.hex()}"
            ) from exc

    def lookup_hash(self, value: str, context: str) -> str:
        """A keyed, deterministic hash (hex) for storing: always under the current key."""
        return self._current.lookup_hash(value, context)

    def lookup_hashes(self, value: str, context: str) -> list[str]:
        """The value's hash under every key of the ring (the current first): what a
        look-up matches (``column.in_(...)``), since during a rotation a row may still
        hold a hash made under an old key."""
        return [k.lookup_hash(value, context) for k in self._keys]

    def lookup_hashes_by_key(self, value: str, context: str) -> dict[str, str]:
        """hash -> key id (hex) for every key of the ring."""
        return {k.lookup_hash(value, context): k.id.hex() for k in self._keys}


def token_key(token: bytes) -> str:
    """Which key a stored token names: its key id (hex), "v1" for a version 1 token
    (no key id), or "invalid"."""
    if token[:1] == V2 and len(token) > KEY_ID_BYTES:
        return token[1 : 1 + KEY_ID_BYTES].hex()
    if token[:1] == V1:
        return "v1"
    return "invalid"


def equal_secret(a: str | bytes, b: str | bytes) -> bool:
    """Compare a secret with what a client sent, in time independent of where they differ.

    ``hmac.compare_digest`` refuses ``str`` holding anything but ASCII (TypeError): a
    client sending a non-ASCII token must get "no match", not a 500. Both sides are
    UTF-8 bytes here (lone surrogates kept, so nothing fails to encode).
    """
    left = a.encode("utf-8", "surrogatepass") if isinstance(a, str) else a
    right = b.encode("utf-8", "surrogatepass") if isinstance(b, str) else b
    return hmac.compare_digest(left, right)


def normalize_id_number(raw: str) -> str:
    """ID numbers compare case- and space-insensitively (the check letter X)."""
    return "".join(raw.split()).upper()


_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
ID_NUMBER_PATTERN = re.compile(r"^\d{17}[\dX]$")


def id_check_digit(first17: str) -> str:
    """GB 11643-1999 check character of an 18-digit resident ID number."""
    if len(first17) != len(_ID_WEIGHTS):
        raise ValueError("an ID number has 17 digits before the check character")
    total = sum(map(operator.mul, map(int, first17), _ID_WEIGHTS))
    return "10X98765432"[total % 11]


def birth_date_from_id_number(raw: str) -> date | None:
    """The birth date an 18-digit ID number carries (digits 7-14), when the number is
    valid: the right shape, its check character right and its date a real one."""
    value = normalize_id_number(raw)
    if not ID_NUMBER_PATTERN.match(value) or id_check_digit(value[:17]) != value[17]:
        return None
    try:
        return date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return None


def normalize_phone(raw: str) -> str:
    """Digits only; a Chinese mobile number without its +86 / 0086 prefix. Phones
    compare (and are hashed for look-ups: SMS opt-outs, members.phone_hash) in this form.
    """
    digits = re.sub(r"\D", "", raw)
    for prefix in ("0086", "86"):
        if digits.startswith(prefix) and len(digits) == len(prefix) + 11:
            return digits[len(prefix) :]
    return digits


def mask_id_number(value: str) -> str:
    """An ID number as pages show it by default: 110105********1234."""
    if len(value) <= 10:
        return "*" * len(value)
    return value[:6] + "*" * (len(value) - 10) + value[-4:]


def mask_phone(value: str | None) -> str:
    """A phone number as pages show it by default: 138****5678."""
    if not value:
        return ""
    if len(value) <= 7:
        return "*" * len(value)
    return value[:3] + "*" * (len(value) - 7) + value[-4:]
