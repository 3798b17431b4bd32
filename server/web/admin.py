"""The administrator's pages: accounts, tablet logins and the class table.

Every page needs ``MANAGE_ACCOUNTS`` (the class table: ``MANAGE_STANDARDS``) and shows
only the administrator's area; a user or tablet outside it is "does not exist" (404),
checked before the role. A one-time password link is shown once, in the answer to the
POST that made it: never in a URL, a flash message, a log line or an audit row.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from flask_login import current_user
from sqlalchemy import select

from server import clock
from server.areas.models import AreaLevel
from server.auth import accounts
from server.auth.models import ROLE_AREA_LEVELS, Role, User
from server.auth.permissions import Capability, require, staff_required
from server.auth.service import LOGIN_RULE
from server.cases import standards
from server.cases.models import HouseholdClass
from server.devices import service as devices
from server.errors import DomainError
from server.extensions import db
from server.labels import error_message
from server.months import current_month
from server.payments import class_table
from server.region import region
from server.validation import query_enum

bp = Blueprint("admin", __name__, url_prefix="/admin")


def admin_error(exc: DomainError) -> str:
    """The user's-language sentence for an error of these pages."""
    details = exc.details
    field = details.get("field")
    reason = details.get("reason")
    if reason == "last_admin":
        return _("The league's last active administrator stays: make another one first.")
    if reason == "self":
        return _("You cannot deactivate your own account.")
    if exc.code == "not_permitted":
        return _("Your role may not do this.")
    if field == "username":
        if details.get("taken"):
            return _("This login is taken.")
        return _(
            "A login may hold only %(rule)s; put a Chinese name in the display name.",
            rule=LOGIN_RULE,
        )
    if field == "display_name":
        return _("The display name must be 1-64 printable characters.")
    if field == "role":
        return _("Unknown role.")
    if field == "area":
        if "allowed" in details:
            return _(
                "This role works at the level %(levels)s: pick an area of that level.",
                levels=details["allowed"],
            )
        return _("No such area within yours.")
    if field == "effective_month":
        if "earliest" in details:
            return _(
                "A change can take effect from %(month)s at the earliest: past and paid "
                "months keep their standard.",
                month=details["earliest"],
            )
        if "taken" in details:
            return _("This class already has a change from %(month)s.", month=details["taken"])
        return _("The effective month must be YYYY-MM.")
    if field in ("monthly_standard", "fixed_monthly"):
        return _("Enter an amount in yuan (0 to 100000, at most 2 decimals).")
    if field == "class_code":
        return _("No such class.")
    if exc.code == "reason_required":
        return _("A change of the class table needs a reason.")
    return error_message(exc)


def _attempt(action: Callable[[], object], done: str, back: str) -> ResponseReturnValue:
    """Run one change: commit and say so, or roll back and say why; back to ``back``.
    A 404 (outside the area, missing) and a 403 (the role) are raised as they are."""
    try:
        action()
    except DomainError as exc:
        db.session.rollback()
        if exc.http_status in (403, 404):
            raise
        flash(admin_error(exc), "error")
    else:
        db.session.commit()
        flash(done, "info")
    return redirect(back), 303


def _link_page(user: User, issued: accounts.IssuedLink, *, new: bool) -> ResponseReturnValue:
    link = url_for("auth.set_password", token=issued.token, _external=True)
    page = render_template(
        "admin/link.html", user=user, link=link, expires_at=issued.record.expires_at, new=new
    )
    return page, 201 if new else 200


# --------------------------------------------------------------------------- users


@bp.get("/users")
@staff_required
def users_page() -> ResponseReturnValue:
    role = query_enum("role", Role)
    active_text = request.args.get("active", "")
    active = {"yes": True, "no": False}.get(active_text)
    area_code = request.args.get("area", "").strip() or None
    try:
        users = accounts.list_users(current_user, role=role, area_code=area_code, active=active)
    except DomainError as exc:
        if exc.http_status == 403:
            raise
        flash(admin_error(exc), "error")
        users = accounts.list_users(current_user, role=role, active=active)
    return render_template(
        "admin/users.html",
        users=users,
        roles=list(Role),
        areas=accounts.assignable_areas(current_user),
        role=role,
        area_code=area_code,
        active=active_text,
    )


@bp.route("/users/new", methods=["GET", "POST"])
@staff_required
def new_user_page() -> ResponseReturnValue:
    require(current_user, Capability.MANAGE_ACCOUNTS, "your role does not manage accounts")
    form = request.form
    error = None
    if request.method == "POST":
        try:
            issued = accounts.create_user(
                current_user,
                username=form.get("username", ""),
                display_name=form.get("display_name"),
                role=form.get("role", ""),
                area_code=form.get("area", ""),
            )
        except DomainError as exc:
            db.session.rollback()
            error = admin_error(exc)
        else:
            db.session.commit()
            return _link_page(issued.record.user, issued, new=True)
    return render_template(
        "admin/new_user.html",
        form=form,
        error=error,
        roles=list(Role),
        role_levels=ROLE_AREA_LEVELS,
        areas=accounts.assignable_areas(current_user),
        login_rule=LOGIN_RULE,
    ), (422 if error else 200)


@bp.get("/users/<id:user_id>")
@staff_required
def user_page(user_id: int) -> ResponseReturnValue:
    user = accounts.get_user(current_user, user_id)
    tablets = [t for t in devices.tokens_in_area(current_user) if t.user_id == user.id]
    return render_template(
        "admin/user.html",
        user=user,
        tablets=tablets,
        roles=list(Role),
        areas=accounts.assignable_areas(current_user),
    )


@bp.post("/users/<id:user_id>/role")
@staff_required
def change_role(user_id: int) -> ResponseReturnValue:
    user = accounts.get_user(current_user, user_id)
    return _attempt(
        lambda: accounts.change_role_and_area(
            current_user,
            user,
            role=request.form.get("role", ""),
            area_code=request.form.get("area", ""),
        ),
        _("Role and area saved."),
        url_for("admin.user_page", user_id=user_id),
    )


@bp.post("/users/<id:user_id>/active")
@staff_required
def set_active(user_id: int) -> ResponseReturnValue:
    user = accounts.get_user(current_user, user_id)
    wanted = request.form.get("active")
    if wanted not in ("yes", "no"):
        abort(400, description=_("Say yes or no."))
    return _attempt(
        lambda: accounts.set_active(current_user, user, active=wanted == "yes"),
        _("Account reactivated.") if wanted == "yes" else _("Account deactivated."),
        url_for("admin.user_page", user_id=user_id),
    )


@bp.post("/users/<id:user_id>/password-link")
@staff_required
def password_link(user_id: int) -> ResponseReturnValue:
    user = accounts.get_user(current_user, user_id)
    if not user.active:
        flash(_("Reactivate the account first."), "error")
        return redirect(url_for("admin.user_page", user_id=user_id)), 303
    issued = accounts.issue_password_link(current_user, user)
    db.session.commit()
    return _link_page(user, issued, new=False)


# --------------------------------------------------------------------------- tablets


@bp.get("/tablets")
@staff_required
def tablets_page() -> ResponseReturnValue:
    live_only = request.args.get("live") == "yes"
    tokens = devices.tokens_in_area(current_user, live_only=live_only)
    return render_template("admin/tablets.html", tokens=tokens, live_only=live_only)


@bp.post("/tablets/<id:token_id>/revoke")
@staff_required
def revoke_tablet(token_id: int) -> ResponseReturnValue:
    return _attempt(
        lambda: devices.revoke_token(current_user, token_id),
        _("Tablet login revoked: the tablet must log in again."),
        url_for("admin.tablets_page"),
    )


# --------------------------------------------------------------------------- class table


@bp.route("/standards", methods=["GET", "POST"])
@staff_required
def standards_page() -> ResponseReturnValue:
    require(current_user, Capability.MANAGE_STANDARDS, "your role does not change the class table")
    if request.method == "POST":
        return _attempt(
            lambda: class_table.schedule_change(
                current_user,
                class_code=request.form.get("class_code", ""),
                effective_month=request.form.get("effective_month"),
                monthly_standard=request.form.get("monthly_standard"),
                fixed_monthly=request.form.get("fixed_monthly"),
                reason=request.form.get("reason"),
            ),
            _("Change scheduled."),
            url_for("admin.standards_page"),
        )
    now = clock.utcnow()
    classes = list(db.session.scalars(select(HouseholdClass).order_by(HouseholdClass.code)))
    current = standards.standards_for_month(current_month(now, region().timezone))
    return render_template(
        "admin/standards.html",
        classes=classes,
        current=current,
        histories={c.id: standards.history(c) for c in classes},
        earliest=class_table.first_open_month(now),
        # The table is the league's: a county administrator reads it, changes nothing.
        may_change=current_user.area.level is AreaLevel.LEAGUE,
    )
