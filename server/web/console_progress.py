"""The progress home (``/console/``) and the list of cases behind each of its numbers
(``/console/cases``): issue 15, item 1."""

from __future__ import annotations

import logging

from flask import Blueprint, abort, current_app, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from flask_login import current_user
from markupsafe import Markup
from sqlalchemy.exc import IntegrityError, OperationalError

from server import clock
from server.areas.models import Area
from server.auth.permissions import Capability, can, staff_required
from server.console import progress as numbers
from server.console import summary
from server.console.charts import bar_chart
from server.console.scope import area_in_scope, trail
from server.extensions import db
from server.months import local_date
from server.region import region
from server.validation import query_int, query_month
from server.web.exports import export_format, respond

log = logging.getLogger(__name__)

bp = Blueprint("console_progress", __name__, url_prefix="/console")


def _scope() -> Area:
    """The area asked for (404 outside the user's area), then the capability (403)."""
    area = area_in_scope(current_user, request.args.get("area"))
    if not can(current_user, Capability.READ_CONSOLE):
        abort(403, description=_("Your role has no access to the supervisor console."))
    return area


@bp.get("/")
@staff_required
def home() -> ResponseReturnValue:
    area = _scope()
    if export_format() is not None:
        # The file is counted now (never from the kept numbers): a row per child area.
        found = numbers.progress(area, now=clock.utcnow())
        return respond(found.table(), "console/progress.html")
    found = _numbers(area)
    as_of = found.as_of or found.period.now
    return render_template(
        "console/progress.html",
        area=area,
        as_of=as_of,
        today=local_date(as_of, region().timezone).isoformat(),
        refreshed=int(current_app.config["DIBAO_CONSOLE_SUMMARY_SECONDS"])
        if found.from_summary
        else None,
        numbers=Markup(_render_numbers(found)),  # noqa: S704  rendered by Jinja (autoescaped)
        crumbs=trail(current_user, area),
    )


def _numbers(area: Area) -> numbers.Progress:
    """The page's numbers: the stored summary when one serves (refreshed first, in its
    own transaction, when this process does the refreshing: DIBAO_CONSOLE_REFRESH
    "inline"), else counted live."""
    now = clock.utcnow()
    max_age = float(current_app.config["DIBAO_CONSOLE_SUMMARY_SECONDS"])
    if max_age <= 0:
        return numbers.progress(area, now=now)
    found = summary.stored(area, now=now, max_age=max_age)
    if found is None and current_app.config["DIBAO_CONSOLE_REFRESH"] == "inline":
        db.session.commit()  # the reads so far end: the refresh writes from a fresh start
        try:
            summary.refresh(now)
            db.session.commit()
        except (IntegrityError, OperationalError):
            # Another process refreshing at the same moment (SQLite: the database is
            # busy): this page is counted live, the next one reads theirs.
            db.session.rollback()
            log.warning("console summary: refresh collided with another; counted live")
        else:
            found = summary.stored(area, now=now, max_age=max_age)
    return found if found is not None else numbers.progress(area, now=now)


def _render_numbers(found: numbers.Progress) -> str:
    area = found.area
    charts = [
        (
            trend,
            bar_chart(
                str(trend.title),
                [
                    (
                        month,
                        value,
                        url_for(".cases", area=area.code, filter=trend.filter.key, month=month),
                    )
                    for month, value in trend.points
                ],
            ),
        )
        for trend in found.trends
    ]

    def days_left(child_id: int | None) -> str:
        left = found.days_left(child_id)
        return "—" if left is None else str(left)

    return render_template(
        "console/_progress_numbers.html",
        progress=found,
        charts=charts,
        # The at-risk members' time: whole days until the earliest window closes.
        days_left={"label": _("Days left"), "cell": days_left},
    )


@bp.get("/cases")
@staff_required
def cases() -> ResponseReturnValue:
    area = _scope()
    chosen = numbers.find_filter(request.args.get("filter", "").strip())
    if chosen is None:
        abort(400, description=_("Unknown number: choose one on the progress page."))
    # A trend's bar: the same number for an earlier month.
    month = query_month("month", "") or None
    p = numbers.period(clock.utcnow(), month)
    per_page = current_app.config["HOME_PAGE_SIZE"]
    total = numbers.count_rows(area, chosen, p)
    pages = max(1, -(-total // per_page))
    page = min(query_int("page", 1), pages)
    paged = export_format() is None
    table = numbers.cases_table(
        area,
        chosen,
        p,
        case_url=lambda code: url_for("cases.case_detail", case_code=code),
        limit=per_page if paged else None,
        offset=(page - 1) * per_page if paged else 0,
    )
    return respond(
        table,
        "console/cases.html",
        area=area,
        chosen=chosen,
        period=p,
        month=month,
        total=total,
        page=page,
        pages=pages,
        crumbs=trail(current_user, area),
    )
