"""Numbers that asked for no more messages (STOP, 退订). Kept by a keyed hash of the
normalized number only: the opt-out list itself reveals no phone number."""

from __future__ import annotations

from flask import current_app
from sqlalchemy import delete, select

from server import clock
from server.crypto import FieldCipher, normalize_phone
from server.extensions import db
from sms.models import SmsOptOut

_CONTEXT = "sms.opt_out"


def phone_key(raw: str) -> str:
    cipher: FieldCipher = current_app.extensions["dibao.cipher"]
    return cipher.lookup_hash(normalize_phone(raw), _CONTEXT)


def is_opted_out(raw: str) -> bool:
    return (
        db.session.scalar(select(SmsOptOut.id).where(SmsOptOut.phone_hash == phone_key(raw)))
        is not None
    )


def opted_out(phones: dict[int, str]) -> set[int]:
    """Which of these numbers (by any integer key) opted out, in one query."""
    if not phones:
        return set()
    keys = {key: phone_key(phone) for key, phone in phones.items()}
    out = set(
        db.session.scalars(
            select(SmsOptOut.phone_hash).where(SmsOptOut.phone_hash.in_(list(keys.values())))
        )
    )
    return {key for key, digest in keys.items() if digest in out}


def opt_out(raw: str, *, source: str) -> None:
    if not normalize_phone(raw) or is_opted_out(raw):
        return
    db.session.add(SmsOptOut(phone_hash=phone_key(raw), source=source, opted_out_at=clock.utcnow()))
    db.session.flush()


def opt_in(raw: str) -> None:
    db.session.execute(delete(SmsOptOut).where(SmsOptOut.phone_hash == phone_key(raw)))
    db.session.flush()
