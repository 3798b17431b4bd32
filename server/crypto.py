"""Field encryption for personal data at rest, and keyed hashes for look-ups.

AES-256-GCM with a random 96-bit nonce per value. The column name is bound as
associated data, so a ciphertext copied into another column fails to decrypt.
Look-up hashes use a separate key derived from the data key (HKDF), so the
hash column leaks nothing the encryption key would not.
"""

from __future__ import annotations

import hashlib
import hmac
import operator
import os
import re
from datetime import date

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_VERSION = b"\x01"
_NONCE_BYTES = 12


class DecryptionError(ValueError):
    """A stored value does not decrypt under the configured key (wrong key or tampering)."""


def _derive(key: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(key)


class FieldCipher:
    def __init__(self, data_key: bytes) -> None:
        if len(data_key) != 32:
            raise ValueError("the data key must be 32 bytes")
        self._aead = AESGCM(_derive(data_key, b"dibao field encryption v1"))
        self._lookup_key = _derive(data_key, b"dibao lookup hash v1")

    def encrypt(self, plaintext: str, context: str) -> bytes:
        return self.encrypt_bytes(plaintext.encode("utf-8"), context)

    def decrypt(self, token: bytes, context: str) -> str:
        return self.decrypt_bytes(token, context).decode("utf-8")

    def encrypt_bytes(self, plaintext: bytes, context: str) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext, context.encode("utf-8"))

    def decrypt_bytes(self, token: bytes, context: str) -> bytes:
        if len(token) < 1 + _NONCE_BYTES + 16 or token[:1] != _VERSION:
            raise DecryptionError(f"stored {context} is not a dibao ciphertext")
        nonce, sealed = token[1 : 1 + _NONCE_BYTES], token[1 + _NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, sealed, context.encode("utf-8"))
        except InvalidTag as exc:
            raise DecryptionError(f"stored {context} does not decrypt with this key") from exc

    def lookup_hash(self, value: str, context: str) -> str:
        """A keyed, deterministic hash (hex) for equality look-ups and duplicate detection."""
        message = context.encode("utf-8") + b"\x00" + value.encode("utf-8")
        return hmac.new(self._lookup_key, message, hashlib.sha256).hexdigest()


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
