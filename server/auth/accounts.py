"""The administrator's work on staff accounts: list, create, change role and area,
deactivate and reactivate, and one-time links to set a password.

Scoped like everything else: an administrator manages the users of their own area and
below, and a user outside it is "does not exist" (``require_visible``). No
administrator ever types or sees a password: a new account, and a reset, get a
one-time link (``issue_password_link``) that the administrator hands over; the user
sets the password there (``set_password_with_link``).

A link is ``<link id>.<random>`` signed with the app's secret key (itsdangerous);
the database keeps only the SHA-256 of the whole token. It works once, until it
expires (``DIBAO_PASSWORD_LINK_HOURS``, the app's clock), and only while it is the
user's newest link: issuing one supersedes the others. Neither the token nor the
link is logged or put in an audit row.

A deactivated user is refused at once everywhere: the session loader
(server/auth/views.py) and the device-token check (``DeviceToken.is_valid``) read
``active`` on every request. The last active administrator of a league is never
deactivated, demoted or moved out of it. Functions flush, never commit.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from flask import current_app
from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import func, select

from server import clock
from server.areas.models import Area, AreaLevel
from server.audit import service as audit
from server.auth.models import ROLE_AREA_LEVELS, PasswordLink, Role, User
from server.auth.passwords import hash_password
from server.auth.permissions import (
    Capability,
    in_area,
    require,
    require_visible,
    scope_to_actor,
)
from server.auth.service import MIN_PASSWORD_LENGTH, check_login
from server.errors import DomainError, IllegalTransition, ValidationFailed
from server.extensions import db

MAX_PASSWORD_LENGTH = 256
_SALT = "dibao-password-link"
NO_PASSWORD = "!"  # noqa: S105  not a hash: verify_password never matches it


class LinkRefused(DomainError):
    """A password link that is unknown, badly signed, used, superseded or expired: one
    answer for all (the page says the link no longer works)."""

    code = "link_refused"
    http_status = 404


@dataclass(frozen=True)
class IssuedLink:
    token: str  # shown once to the administrator, never stored nor logged
    record: PasswordLink


# --------------------------------------------------------------------------- reading


def get_user(actor: User, user_id: int) -> User:
    """The user ``user_id`` if inside the actor's area (404 like missing), then the
    role check."""
    found = require_visible(actor, db.session.get(User, user_id), lambda u: u.area, "user")
    require(actor, Capability.MANAGE_ACCOUNTS, "your role does not manage accounts")
    return found


def list_users(
    actor: User,
    *,
    role: Role | None = None,
    area_code: str | None = None,
    active: bool | None = None,
) -> list[User]:
    require(actor, Capability.MANAGE_ACCOUNTS, "your role does not manage accounts")
    query = scope_to_actor(select(User).join(Area, User.area_id == Area.id), actor)
    if role is not None:
        query = query.where(User.role == role)
    if area_code:
        area = _area_in(actor, area_code)
        query = query.where(Area.path.startswith(area.path, autoescape=True))
    if active is not None:
        query = query.where(User.active.is_(active))
    return list(db.session.scalars(query.order_by(Area.path, User.username)))


def assignable_areas(actor: User) -> list[Area]:
    """The areas a user may be given by ``actor``: counties and above in their area
    (and townships, for the township roles)."""
    levels = (AreaLevel.LEAGUE, AreaLevel.COUNTY, AreaLevel.TOWNSHIP)
    return list(
        db.session.scalars(
            scope_to_actor(select(Area).where(Area.level.in_(levels)), actor).order_by(Area.path)
        )
    )


# --------------------------------------------------------------------------- changes


def _area_in(actor: User, area_code: str) -> Area:
    """The area with this code inside the actor's area; the same error for a missing
    one and one outside."""
    area = db.session.scalar(select(Area).where(Area.code == (area_code or "").strip()))
    if area is None or not in_area(actor, area):
        raise ValidationFailed(f"no area with code {area_code!r}", field="area")
    return area


def _role(value: Role | str) -> Role:
    try:
        return Role(value)
    except ValueError as exc:
        raise ValidationFailed(
            f"unknown role {value!r}; one of {', '.join(r.value for r in Role)}", field="role"
        ) from exc


def _check_fit(role: Role, area: Area) -> None:
    if area.level not in ROLE_AREA_LEVELS[role]:
        allowed = " or ".join(level.value for level in ROLE_AREA_LEVELS[role])
        raise ValidationFailed(
            f"a {role.value} is scoped to a {allowed}, {area.code} is a {area.level.value}",
            field="area",
            allowed=allowed,
        )


def _league_of(area: Area) -> str:
    """The path of the league above (or at) ``area``."""
    return "/".join(area.path.strip("/").split("/")[:1])


def _keeps_an_admin(user: User, *, role: Role, area: Area, active: bool) -> None:
    """Refuse a change that would leave ``user``'s league with no active administrator."""
    if user.role is not Role.ADMIN or not user.active:
        return
    league = _league_of(user.area)
    if role is Role.ADMIN and active and _league_of(area) == league:
        return
    others = db.session.scalar(
        select(func.count(User.id))
        .join(Area, User.area_id == Area.id)
        .where(
            User.role == Role.ADMIN,
            User.active.is_(True),
            User.id != user.id,
            Area.path.startswith("/" + league + "/", autoescape=True),
        )
    )
    if not others:
        raise IllegalTransition(
            "the league's last active administrator stays: make another one first",
            reason="last_admin",
        )


def create_user(
    actor: User,
    *,
    username: str,
    display_name: str | None,
    role: Role | str,
    area_code: str,
) -> IssuedLink:
    """A new account without a password, and its one-time link to set one."""
    require(actor, Capability.MANAGE_ACCOUNTS, "your role does not manage accounts")
    username = check_login(username or "")
    display_name = (display_name or "").strip() or None
    if display_name is not None and (len(display_name) > 64 or not display_name.isprintable()):
        raise ValidationFailed(
            "the display name must be 1-64 printable characters", field="display_name"
        )
    new_role = _role(role)
    area = _area_in(actor, area_code)
    _check_fit(new_role, area)
    if db.session.scalar(select(User.id).where(User.username == username)) is not None:
        raise ValidationFailed(f"username {username!r} is taken", field="username", taken=True)
    user = User(
        username=username,
        display_name=display_name,
        # No password until the link is used: "!" matches no Argon2 hash.
        password_hash=NO_PASSWORD,
        role=new_role,
        area=area,
        active=True,
        created_at=clock.utcnow(),
    )
    db.session.add(user)
    db.session.flush()
    audit.record(
        "user.create",
        actor=actor,
        object_type="user",
        object_id=user.id,
        role=new_role.value,
        area=area.code,
    )
    return issue_password_link(actor, user)


def change_role_and_area(actor: User, user: User, *, role: Role | str, area_code: str) -> None:
    """Set ``user``'s role and area (both inside the actor's area, the level fitting)."""
    require(actor, Capability.MANAGE_ACCOUNTS, "your role does not manage accounts")
    new_role = _role(role)
    area = _area_in(actor, area_code)
    _check_fit(new_role, area)
    if new_role is user.role and area.id == user.area_id:
        return
    _keeps_an_admin(user, role=new_role, area=area, active=user.active)
    before_role, before_area = user.role, user.area.code
    user.role, user.area = new_role, area
    db.session.flush()
    audit.record(
        "user.role_changed",
        actor=actor,
        object_type="user",
        object_id=user.id,
        role_before=before_role.value,
        role=new_role.value,
        area_before=before_area,
        area=area.code,
    )


def set_active(actor: User, user: User, *, active: bool) -> None:
    """Deactivate (sessions and tablets refused from the next request) or reactivate."""
    require(actor, Capability.MANAGE_ACCOUNTS, "your role does not manage accounts")
    if user.active is active:
        return
    if not active:
        if user.id == actor.id:
            raise IllegalTransition("you cannot deactivate your own account", reason="self")
        _keeps_an_admin(user, role=user.role, area=user.area, active=False)
    user.active = active
    db.session.flush()
    audit.record(
        "user.activated" if active else "user.deactivated",
        actor=actor,
        object_type="user",
        object_id=user.id,
    )


# --------------------------------------------------------------------------- links


def _serializer() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.config["SECRET_KEY"], salt=_SALT)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def issue_password_link(actor: User, user: User) -> IssuedLink:
    """A new one-time link for ``user`` (the older ones stop working)."""
    require(actor, Capability.MANAGE_ACCOUNTS, "your role does not manage accounts")
    now = clock.utcnow()
    for older in db.session.scalars(
        select(PasswordLink).where(
            PasswordLink.user_id == user.id,
            PasswordLink.used_at.is_(None),
            PasswordLink.superseded_at.is_(None),
        )
    ):
        older.superseded_at = now
    hours = int(current_app.config["DIBAO_PASSWORD_LINK_HOURS"])
    record = PasswordLink(
        user_id=user.id,
        token_hash="-" * 64,  # replaced below, once the id is known
        created_at=now,
        created_by_id=actor.id,
        expires_at=now + timedelta(hours=hours),
    )
    db.session.add(record)
    db.session.flush()
    token = str(_serializer().dumps([record.id, secrets.token_urlsafe(24)]))
    record.token_hash = _hash(token)
    db.session.flush()
    audit.record(
        "user.password_link_issued",
        actor=actor,
        object_type="user",
        object_id=user.id,
        link_id=record.id,
        expires_at=record.expires_at.isoformat(),
    )
    return IssuedLink(token=token, record=record)


def open_link(token: str) -> PasswordLink:
    """The link this token names, if it still works; LinkRefused otherwise."""
    try:
        payload = _serializer().loads(token)
    except BadSignature as exc:
        raise LinkRefused("this link does not work (any more)") from exc
    link_id = payload[0] if isinstance(payload, list) and payload else None
    record = db.session.get(PasswordLink, link_id) if isinstance(link_id, int) else None
    if (
        record is None
        or not hmac.compare_digest(record.token_hash.encode(), _hash(token).encode())
        or record.used_at is not None
        or record.superseded_at is not None
        or clock.utcnow() >= record.expires_at
        or not record.user.active
    ):
        raise LinkRefused("this link does not work (any more)")
    return record


def set_password_with_link(token: str, password: str, repeated: str) -> User:
    """Set the password of the link's user; the link is used up."""
    record = open_link(token)
    if password != repeated:
        raise ValidationFailed("the two passwords differ", field="password")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationFailed(
            f"password must have at least {MIN_PASSWORD_LENGTH} characters",
            field="password",
            min_length=MIN_PASSWORD_LENGTH,
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise ValidationFailed(
            f"password must have at most {MAX_PASSWORD_LENGTH} characters", field="password"
        )
    user = record.user
    user.password_hash = hash_password(password)
    record.used_at = clock.utcnow()
    db.session.flush()
    audit.record(
        "user.password_set",
        actor=user,
        object_type="user",
        object_id=user.id,
        link_id=record.id,
    )
    return user
