"""Console pages of lane V (issue 15, items 3 and 5): visits by review state,
caseworker activity, the monthly back-check sample (docs/supervision.md)."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from flask_login import current_user

from server import clock
from server.auth.permissions import Capability, can, staff_required
from server.console import visits as queries
from server.console.scope import area_in_scope, trail
from server.errors import DomainError
from server.extensions import db
from server.labels import error_message
from server.months import current_month
from server.region import region
from server.validation import query_enum, query_int, query_month
from server.visits import backchecks
from server.visits.models import BackCheckOutcome, ReviewStatus
from server.web.exports import export_format, respond

bp = Blueprint("console_visits", __name__, url_prefix="/console")


def _this_month() -> str:
    return current_month(clock.utcnow(), region().timezone)


@bp.get("/visits")
@staff_required
def visits() -> ResponseReturnValue:
    """Visits of the area by review state (reviewers and console readers). The area
    first (outside it answers like a missing one), then the role."""
    area = area_in_scope(current_user, request.args.get("area"))
    if not (
        can(current_user, Capability.READ_CONSOLE) or can(current_user, Capability.REVIEW_VISITS)
    ):
        abort(403, description=_("Your role does not read the visit review list."))
    status = query_enum("status", ReviewStatus)
    month = query_month("month", "") or None
    counts = queries.review_counts(area, month)
    total = counts[status] if status is not None else sum(counts.values())
    pages = max(1, -(-total // queries.PAGE_ROWS))
    page = min(query_int("page", 1), pages)
    sort = "risk" if request.args.get("sort") == "risk" else None
    table = queries.review_table(
        current_user,
        area,
        status,
        month,
        everything=export_format() is not None,
        page=page,
        sort=sort,
    )
    return respond(
        table,
        "console/visits.html",
        area=area,
        trail=trail(current_user, area),
        status=status,
        month=month,
        counts=counts,
        statuses=list(ReviewStatus),
        total=total,
        page=page,
        pages=pages,
        sort=sort,
    )


@bp.get("/activity")
@staff_required
def activity() -> ResponseReturnValue:
    """Each caseworker's month; a caseworker sees only their own row."""
    area = area_in_scope(current_user, request.args.get("area"))
    if not (
        can(current_user, Capability.READ_CONSOLE) or can(current_user, Capability.USE_TABLETS)
    ):
        abort(403, description=_("Your role does not read caseworker activity."))
    month = query_month("month", _this_month())
    table = queries.activity_table(current_user, area, month)
    return respond(
        table,
        "console/activity.html",
        area=area,
        trail=trail(current_user, area),
        month=month,
        region_shared_spot_m=region().supervision.shared_spot_m,
    )


def _back_check_reader() -> None:
    if not (
        can(current_user, Capability.READ_CONSOLE)
        or can(current_user, Capability.RECORD_BACK_CHECKS)
    ):
        abort(403, description=_("Your role does not read back-checks."))


@bp.get("/backchecks")
@staff_required
def back_check_list() -> ResponseReturnValue:
    area = area_in_scope(current_user, request.args.get("area"))
    _back_check_reader()
    month = query_month("month", _this_month())
    table = queries.back_check_table(area, month)
    return respond(
        table,
        "console/backchecks.html",
        area=area,
        trail=trail(current_user, area),
        month=month,
        draws=queries.back_check_draws(area, month),
        own_draw=any(d.area_id == area.id for d in queries.back_check_draws(area, month)),
        outcomes=list(BackCheckOutcome),
        sample_size=region().supervision.back_check_sample,
    )


@bp.post("/backchecks/draw")
@staff_required
def draw_back_checks() -> ResponseReturnValue:
    area = area_in_scope(current_user, request.form.get("area"))
    month = request.form.get("month", "").strip()
    back = url_for("console_visits.back_check_list", area=area.code, month=month or None)
    try:
        drawn, new = backchecks.draw(area, month, actor=current_user)
    except DomainError as exc:
        db.session.rollback()
        if exc.http_status == 404:
            raise
        flash(error_message(exc), "error")
        return redirect(back), 303
    db.session.commit()
    if new:
        flash(_("Drew %(n)s visits for back-checks.", n=len(drawn.checks)), "info")
    else:
        flash(_("This month's sample was already drawn; nothing was added."), "info")
    return redirect(back), 303


@bp.post("/backchecks/<id:back_check_id>")
@staff_required
def record_back_check(back_check_id: int) -> ResponseReturnValue:
    try:
        check = backchecks.record_outcome(
            current_user,
            back_check_id,
            request.form.get("outcome", ""),
            request.form.get("note"),
        )
    except DomainError as exc:
        db.session.rollback()
        if exc.http_status == 404:
            raise
        flash(error_message(exc), "error")
    else:
        month = check.draw.month
        db.session.commit()
        flash(_("Back-check recorded."), "info")
        return redirect(
            url_for("console_visits.back_check_list", area=request.form.get("area"), month=month)
        ), 303
    return redirect(
        url_for(
            "console_visits.back_check_list",
            area=request.form.get("area"),
            month=request.form.get("month"),
        )
    ), 303
