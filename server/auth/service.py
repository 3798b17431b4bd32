"""Creating staff accounts and checking logins."""

from __future__ import annotations

import logging
import re

from sqlalchemy import select

from server import clock
from server.areas.models import Area
from server.audit import service as audit
from server.auth.models import ROLE_AREA_LEVELS, Role, User
from server.auth.passwords import hash_password, needs_rehash, verify_password
from server.errors import ValidationFailed
from server.extensions import db

logger = logging.getLogger(__name__)

MIN_PASSWORD_LENGTH = 10
# Logins travel in HTTP headers: ODK Collect encodes Basic credentials as ISO-8859-1
# (a Chinese character becomes "?") and OkHttp refuses any non-ASCII header value.
LOGIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
LOGIN_RULE = "letters A-Z a-z, digits and . _ - @ (1-64, starting with a letter or digit)"


def is_ascii_login(username: str) -> bool:
    return LOGIN.fullmatch(username) is not None


def check_login(username: str) -> str:
    """The login, stripped; ValidationFailed unless it is ASCII-safe (LOGIN)."""
    username = username.strip()
    if not is_ascii_login(username):
        raise ValidationFailed(
            f"a login may hold only {LOGIN_RULE}; put a Chinese name in the display name",
            field="username",
        )
    return username


def create_user(
    *,
    username: str,
    password: str,
    role: Role | str,
    area_code: str,
    display_name: str | None = None,
    created_by: User | None = None,
) -> User:
    """Add a staff account; flushes, the caller commits. Raises ValidationFailed."""
    username = check_login(username)
    display_name = (display_name or "").strip() or None
    if display_name is not None and (len(display_name) > 64 or not display_name.isprintable()):
        raise ValidationFailed(
            "the display name must be 1-64 printable characters", field="display_name"
        )
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationFailed(
            f"password must have at least {MIN_PASSWORD_LENGTH} characters", field="password"
        )
    try:
        role = Role(role)
    except ValueError as exc:
        raise ValidationFailed(
            f"unknown role {role!r}; one of {', '.join(r.value for r in Role)}", field="role"
        ) from exc
    area = db.session.scalar(select(Area).where(Area.code == area_code))
    if area is None:
        raise ValidationFailed(f"no area with code {area_code!r}", field="area")
    if area.level not in ROLE_AREA_LEVELS[role]:
        allowed = " or ".join(level.value for level in ROLE_AREA_LEVELS[role])
        raise ValidationFailed(
            f"a {role.value} is scoped to a {allowed}, {area_code} is a {area.level.value}",
            field="area",
        )
    if db.session.scalar(select(User.id).where(User.username == username)) is not None:
        raise ValidationFailed(f"username {username!r} is taken", field="username")
    user = User(
        username=username,
        display_name=display_name,
        password_hash=hash_password(password),
        role=role,
        area=area,
    )
    db.session.add(user)
    db.session.flush()
    audit.record(
        "user.create",
        actor=created_by,
        object_type="user",
        object_id=user.id,
        role=role.value,
        area=area.code,
    )
    return user


def authenticate(username: str, password: str, channel: str = "web") -> User | None:
    """The active user with these credentials, or None. Audits both outcomes."""
    user = db.session.scalar(select(User).where(User.username == username.strip()))
    ok = verify_password(user.password_hash if user else None, password)
    if not ok or user is None or not user.active:
        audit.record(
            "auth.login_failed",
            actor=user,
            object_type="user",
            object_id=user.id if user else None,
            channel=channel,
        )
        logger.info("failed login for user id %s", user.id if user else None)
        return None
    if needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    user.last_login_at = clock.utcnow()
    audit.record("auth.login", actor=user, object_type="user", object_id=user.id, channel=channel)
    return user
