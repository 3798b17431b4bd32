"""Issuing, checking and revoking device tokens. Functions flush, never commit."""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import select

from server import clock
from server.areas.models import Area
from server.audit import service as audit
from server.auth.models import User
from server.auth.permissions import (
    Capability,
    can,
    require,
    require_visible,
    roles_with,
    scope_to_actor,
)
from server.auth.service import authenticate
from server.devices.digest import digest_secrets
from server.devices.models import DeviceToken
from server.errors import DomainError
from server.extensions import db

logger = logging.getLogger(__name__)

TOKEN_PREFIX = "dbt_"  # noqa: S105  a marker, not a secret
PREFIX_LENGTH = 12  # "dbt_" + 8 random characters
# Writing last_used_at on every request would turn every read into a write.
LAST_USED_RESOLUTION = timedelta(minutes=5)
DEVICE_ROLES = roles_with(Capability.USE_TABLETS)


class InvalidCredentials(DomainError):
    code = "invalid_credentials"
    http_status = 401


class InvalidToken(DomainError):
    code = "invalid_token"
    http_status = 401


@dataclass(frozen=True)
class IssuedToken:
    token: str
    record: DeviceToken


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def issue_device_token(
    *, username: str, password: str, device_id: str, device_name: str
) -> IssuedToken:
    """Log a tablet in. A new login from the same device replaces its old token."""
    user = authenticate(username, password, channel="device")
    if user is None:
        raise InvalidCredentials("wrong username or password")
    require(user, Capability.USE_TABLETS, "only caseworkers log tablets in", role=user.role.value)
    now = clock.utcnow()
    for old in db.session.scalars(
        select(DeviceToken).where(
            DeviceToken.user_id == user.id,
            DeviceToken.device_id == device_id,
            DeviceToken.revoked_at.is_(None),
        )
    ):
        old.revoked_at = now
        old.revoked_by_id = user.id
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    lifetime = timedelta(days=int(current_app.config["DIBAO_DEVICE_TOKEN_DAYS"]))
    record = DeviceToken(
        user=user,
        device_id=device_id,
        device_name=device_name,
        token_hash=hash_token(token),
        token_prefix=token[:PREFIX_LENGTH],
        digest_ha1=digest_secrets(user.username, token),
        created_at=now,
        expires_at=now + lifetime,
    )
    db.session.add(record)
    db.session.flush()
    audit.record(
        "device.token_issued",
        actor=user,
        object_type="device_token",
        object_id=record.id,
        device_id=device_id,
    )
    return IssuedToken(token=token, record=record)


def authenticate_device(token: str) -> DeviceToken:
    """The valid token record for a bearer token; InvalidToken otherwise."""
    if not token.startswith(TOKEN_PREFIX):
        raise InvalidToken("not a device token")
    record = db.session.scalar(
        select(DeviceToken).where(DeviceToken.token_hash == hash_token(token))
    )
    now = clock.utcnow()
    # A user whose role changed since keeps no tablet access (and so never meets a
    # role check that could tell an object of another area from a missing one).
    if record is None or not record.is_valid(now) or not can(record.user, Capability.USE_TABLETS):
        raise InvalidToken("the token is unknown, expired or revoked; log the tablet in again")
    mark_used(record, now)
    return record


def mark_used(record: DeviceToken, now: datetime) -> None:
    if record.last_used_at is None or now - record.last_used_at > LAST_USED_RESOLUTION:
        record.last_used_at = now


def revoke_tokens(
    *,
    revoked_by: User | None,
    token_prefix: str | None = None,
    username: str | None = None,
    device_id: str | None = None,
) -> list[DeviceToken]:
    """Revoke the live tokens matching a token prefix, or a user (and device)."""
    if not token_prefix and not username:
        raise ValueError("name a token prefix or a username")
    query = select(DeviceToken).where(DeviceToken.revoked_at.is_(None))
    if token_prefix:
        query = query.where(DeviceToken.token_prefix == token_prefix[:PREFIX_LENGTH])
    if username:
        query = query.join(User, DeviceToken.user_id == User.id).where(User.username == username)
    if device_id:
        query = query.where(DeviceToken.device_id == device_id)
    now = clock.utcnow()
    revoked = list(db.session.scalars(query))
    for record in revoked:
        record.revoked_at = now
        record.revoked_by_id = revoked_by.id if revoked_by else None
        audit.record(
            "device.token_revoked",
            actor=revoked_by,
            object_type="device_token",
            object_id=record.id,
            user_id=record.user_id,
        )
    db.session.flush()
    return revoked


def list_tokens(username: str | None = None) -> list[DeviceToken]:
    query = select(DeviceToken).order_by(DeviceToken.created_at.desc())
    if username:
        query = query.join(User, DeviceToken.user_id == User.id).where(User.username == username)
    return list(db.session.scalars(query))


# --------------------------------------------------------------------------- admin pages


def tokens_in_area(actor: User, *, live_only: bool = False) -> list[DeviceToken]:
    """The tablet logins of the users in the actor's area (the admin's list)."""
    require(actor, Capability.MANAGE_ACCOUNTS, "your role does not manage tablets")
    query = scope_to_actor(
        select(DeviceToken)
        .join(User, DeviceToken.user_id == User.id)
        .join(Area, User.area_id == Area.id),
        actor,
    )
    if live_only:
        query = query.where(DeviceToken.revoked_at.is_(None))
    return list(db.session.scalars(query.order_by(DeviceToken.created_at.desc())).unique())


def revoke_token(actor: User, token_id: int) -> DeviceToken:
    """Revoke one tablet login (by its id) of a user in the actor's area; the tablet's
    next request is refused (401). Revoking a revoked one changes nothing."""
    record = require_visible(
        actor, db.session.get(DeviceToken, token_id), lambda t: t.user.area, "tablet"
    )
    require(actor, Capability.MANAGE_ACCOUNTS, "your role does not manage tablets")
    if record.revoked_at is None:
        record.revoked_at = clock.utcnow()
        record.revoked_by_id = actor.id
        db.session.flush()
        audit.record(
            "device.token_revoked",
            actor=actor,
            object_type="device_token",
            object_id=record.id,
            user_id=record.user_id,
        )
    return record
