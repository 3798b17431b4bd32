"""Numbers that asked for no more messages (STOP, 退订). Kept by a keyed hash of the
normalized number only: the opt-out list itself reveals no phone number."""

from __future__ import annotations

from flask import current_app
from sqlalchemy import delete, select

from server import clock
from server.crypto import FieldCipher, normalize_phone
from server.extensions import db
from sms.models import SmsOptOut

CONTEXT = "sms.opt_out"

__all__ = [
    "CONTEXT",
    "is_opted_out",
    "normalize_phone",
    "opt_in",
    "opt_out",
    "opted_out",
    "phone_key",
    "phone_keys",
]


def _cipher() -> FieldCipher:
    cipher: FieldCipher = current_app.extensions["dibao.cipher"]
    return cipher


def phone_key(raw: str) -> str:
    """The number's hash under the current key (what a new opt-out stores)."""
    return _cipher().lookup_hash(normalize_phone(raw), CONTEXT)


def phone_keys(raw: str) -> list[str]:
    """The number's hash under every key of the ring (what a look-up matches: during a
    key rotation an opt-out may still be stored under an old key)."""
    return _cipher().lookup_hashes(normalize_phone(raw), CONTEXT)


def is_opted_out(raw: str) -> bool:
    return (
        db.session.scalar(
            select(SmsOptOut.id).where(SmsOptOut.phone_hash.in_(phone_keys(raw))).limit(1)
        )
        is not None
    )


def opted_out(phones: dict[int, str]) -> set[int]:
    """Which of these numbers (by any integer key) opted out, in one query."""
    if not phones:
        return set()
    if db.session.scalar(select(SmsOptOut.id).limit(1)) is None:
        return set()  # nobody opted out: no number to hash
    cipher = _cipher()  # looked up once, not per number
    keys = {
        key: cipher.lookup_hashes(normalize_phone(phone), CONTEXT) for key, phone in phones.items()
    }
    wanted = sorted({digest for digests in keys.values() for digest in digests})
    out = set(
        db.session.scalars(select(SmsOptOut.phone_hash).where(SmsOptOut.phone_hash.in_(wanted)))
    )
    return {key for key, digests in keys.items() if not out.isdisjoint(digests)}


def opt_out(raw: str, *, source: str) -> None:
    if not normalize_phone(raw) or is_opted_out(raw):
        return
    db.session.add(SmsOptOut(phone_hash=phone_key(raw), source=source, opted_out_at=clock.utcnow()))
    db.session.flush()


def opt_in(raw: str) -> None:
    db.session.execute(delete(SmsOptOut).where(SmsOptOut.phone_hash.in_(phone_keys(raw))))
    db.session.flush()
