"""The supervisor's maps (issue 15, item 4): visit traces drawn as inline SVG, no
tiles and no script; each page's table exports as CSV or Excel."""

from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, abort
from flask.typing import ResponseReturnValue
from flask_login import current_user

from server.auth.permissions import staff_required
from server.console import traces
from server.months import month_after
from server.validation import parse_date, parse_month
from server.web.exports import respond

bp = Blueprint("console_maps", __name__, url_prefix="/console/maps")


@bp.get("/caseworker/<id:user_id>/<day>")
@staff_required
def caseworker_day(user_id: int, day: str) -> ResponseReturnValue:
    parsed = parse_date(day)
    if parsed is None:
        abort(404)
    view = traces.caseworker_day(current_user, user_id, parsed)
    return respond(
        view.table,
        "console/map_caseworker.html",
        view=view,
        user_id=user_id,
        previous=(parsed - timedelta(days=1)).isoformat(),
        next=(parsed + timedelta(days=1)).isoformat(),
    )


@bp.get("/township/<code>/<month>")
@staff_required
def township_month(code: str, month: str) -> ResponseReturnValue:
    parsed = parse_month(month)
    if parsed is None:
        abort(404)
    view = traces.area_month(current_user, code, parsed)
    return respond(
        view.table,
        "console/map_township.html",
        view=view,
        code=code,
        previous=month_after(parsed, -1),
        next=month_after(parsed, 1),
    )


@bp.get("/household/<case_code>")
@staff_required
def household(case_code: str) -> ResponseReturnValue:
    view = traces.household_history(current_user, case_code)
    return respond(view.table, "console/map_household.html", view=view)
