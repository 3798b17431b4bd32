"""The supervisor's maps (issue 15, item 4): visit traces drawn as inline SVG, no
tiles and no script; each page's table exports as CSV or Excel. A map shows where
households live, so every view is audited (``map.viewed``), like a photo."""

from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, abort
from flask.typing import ResponseReturnValue
from flask_login import current_user

from server.audit import service as audit
from server.auth.permissions import staff_required
from server.console import traces
from server.extensions import db
from server.months import month_after
from server.validation import parse_date, parse_month
from server.web.exports import respond

bp = Blueprint("console_maps", __name__, url_prefix="/console/maps")


def _viewed(view: str, object_type: str, object_id: object, **details: str) -> None:
    """The audit row of one map view, committed before the page is rendered."""
    audit.record(
        "map.viewed",
        actor=current_user,
        object_type=object_type,
        object_id=object_id,
        view=view,
        **details,
    )
    db.session.commit()


@bp.get("/caseworker/<id:user_id>/<day>")
@staff_required
def caseworker_day(user_id: int, day: str) -> ResponseReturnValue:
    parsed = parse_date(day)
    if parsed is None:
        abort(404)
    view = traces.caseworker_day(current_user, user_id, parsed)
    _viewed("caseworker_day", "user", user_id, day=parsed.isoformat())
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
    _viewed("area_month", "area", code, month=parsed)
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
    _viewed("household", "case", case_code.strip().upper())
    return respond(view.table, "console/map_household.html", view=view)
