"""Dashboard login and logout."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import lazy_gettext as _l
from flask_limiter import RateLimitExceeded
from flask_login import login_user, logout_user
from flask_wtf import FlaskForm
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length

from server.auth import accounts
from server.auth.models import Role, User
from server.auth.permissions import staff_required
from server.auth.service import MIN_PASSWORD_LENGTH, authenticate
from server.errors import ValidationFailed
from server.extensions import db, limiter, login_manager
from server.rate_limits import (
    login_limits,
    login_wait_message,
    retry_after_seconds,
    wait_message,
)
from server.validation import parse_id

bp = Blueprint("auth", __name__)

login_manager.login_view = "auth.login"
login_manager.login_message = _l("Please log in.")


def _load_user(user_id: str) -> User | None:
    # The id comes from the signed session cookie; checked all the same.
    key = parse_id(user_id)
    user = db.session.get(User, key) if key is not None else None
    return user if user is not None and user.active else None


login_manager.user_loader(_load_user)


class LoginForm(FlaskForm):  # type: ignore[misc]
    class Meta:
        def wrap_formdata(self, form: Any, formdata: Any) -> Any:
            # A browser form, never JSON: Flask-WTF would take a JSON body's values as
            # they come (objects, lists) where the fields expect text.
            return request.form if request.method == "POST" else None

    username = StringField(_l("Username"), validators=[DataRequired(), Length(max=64)])
    password = PasswordField(_l("Password"), validators=[DataRequired(), Length(max=256)])


def _landing(user: User) -> str:
    """Where a login without a ``next`` goes: the supervisor's home is the console's
    progress page; everyone else's the list of cases."""
    if user.role is Role.SUPERVISOR:
        return url_for("console_progress.home")
    return url_for("cases.home")


def _safe_next(target: str | None, user: User) -> str:
    # Only same-site paths: never redirect a login to another host.
    if (
        target
        and target.startswith("/")
        and not target.startswith("//")
        and not urlsplit(target).netloc
    ):
        return target
    return _landing(user)


@bp.route("/login", methods=["GET", "POST"])
@login_limits
def login() -> ResponseReturnValue:
    form = LoginForm()
    error = None
    if form.validate_on_submit():
        user = authenticate(form.username.data, form.password.data)
        db.session.commit()
        if user is not None:
            login_user(user)
            return redirect(_safe_next(request.args.get("next"), user))
        error = _l("Wrong username or password.")
    status = 401 if error else 200
    return render_template("auth/login.html", form=form, error=error), status


@bp.post("/logout")
@staff_required
def logout() -> ResponseReturnValue:
    logout_user()
    return redirect(url_for("auth.login"))


def _password_link_rate() -> str:
    return str(current_app.config["DIBAO_PASSWORD_LINK_RATE_LIMIT"])


@bp.route("/set-password/<token>", methods=["GET", "POST"])
@limiter.limit(_password_link_rate, scope="password-link", methods=["GET", "POST"])
def set_password(token: str) -> ResponseReturnValue:
    """The one-time link's page: choose a password (server/auth/accounts.py). The token
    is in the path, like the recipients' links: sent with no Referer, never logged."""
    try:
        record = accounts.open_link(token)
    except accounts.LinkRefused:
        return render_template("auth/set_password.html", refused=True), 404
    error = None
    if request.method == "POST":
        try:
            accounts.set_password_with_link(
                token, request.form.get("password", ""), request.form.get("repeated", "")
            )
        except ValidationFailed as exc:
            db.session.rollback()
            error = password_error(exc)
        else:
            db.session.commit()
            logout_user()
            flash(str(_l("Your password is set. Please log in.")), "info")
            return redirect(url_for("auth.login")), 303
    return render_template(
        "auth/set_password.html",
        refused=False,
        user=record.user,
        error=error,
        min_length=MIN_PASSWORD_LENGTH,
    ), (422 if error else 200)


def password_error(exc: ValidationFailed) -> str:
    if "differ" in exc.message:
        return str(_l("The two passwords differ."))
    if "min_length" in exc.details:
        return str(_l("A password needs at least %(count)s characters.", count=MIN_PASSWORD_LENGTH))
    return str(_l("A password may have at most 256 characters."))


@bp.errorhandler(RateLimitExceeded)
def _rate_limited(exc: RateLimitExceeded) -> ResponseReturnValue:
    seconds = retry_after_seconds(exc)
    if request.endpoint == "auth.set_password":
        page = render_template("auth/set_password.html", refused=True, error=wait_message(seconds))
    else:
        # The login page again, saying how long to wait (the form keeps the username).
        page = render_template(
            "auth/login.html", form=LoginForm(), error=login_wait_message(seconds)
        )
    return page, 429, {"Retry-After": str(seconds)}
