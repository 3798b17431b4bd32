"""Console pages of lane X (issue 15): the exceptions inbox of a jurisdiction, everyone's
worklist (待我办理) and the audit-log view; each a table that also exports as CSV and
Excel (``server.web.exports.respond``). The rules of what each lists are in
docs/supervision.md ("Exceptions", "Worklist", "Exports and the audit log")."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, abort, current_app, request
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from flask_login import current_user
from werkzeug.datastructures import MultiDict

from server import clock
from server.areas.models import Area, AreaLevel
from server.auth.permissions import Capability, can, not_found, staff_required
from server.cases import queries
from server.cases.workflow import local_today
from server.console import audit_log, worklist
from server.console.exceptions import SORTS, ExceptionKind, as_dicts, exceptions
from server.console.places import townships
from server.console.scope import area_in_scope, children, trail
from server.console.tables import Column, Table
from server.labels import EXCEPTION_KIND_LABELS
from server.validation import InvalidParameter, query_date, query_enum, query_int
from server.web.exports import export_format, respond

bp = Blueprint("console_work", __name__, url_prefix="/console")

EXCEPTIONS_PER_PAGE = 100
AUDIT_PER_PAGE = 50


@bp.app_template_filter("page_query")
def page_query(args: MultiDict[str, str], page: int) -> str:
    """This page's query string asking for page ``page``."""
    pairs = [(k, v) for k, v in args.items(multi=True) if k not in ("format", "page")]
    return urlencode([*pairs, ("page", str(page))])


def _require(capability: Capability) -> None:
    """403 for a role without ``capability`` (after the area check: outside is 404)."""
    if not can(current_user, capability):
        abort(403)


def _township(area: Area) -> Area | None:
    """The ``?township=CODE`` filter: a township inside ``area`` (or the one ``area``
    lies in); "no such area" (404) for anything else, as for an area elsewhere."""
    code = request.args.get("township", "").strip()
    if not code:
        return None
    found = area_in_scope(current_user, code)
    if found.level is not AreaLevel.TOWNSHIP or not (area.contains(found) or found.contains(area)):
        raise not_found("area", code=code)
    return found


def _page_slice(rows: list[Any], per_page: int) -> tuple[list[Any], int, int]:
    """This page's rows (all of them for a file), the page and the number of pages."""
    pages = max(1, -(-len(rows) // per_page))
    if export_format() is not None:
        return rows, 1, pages
    page = min(query_int("page", 1), pages)
    return rows[(page - 1) * per_page : page * per_page], page, pages


# ----------------------------------------------------------------------------- exceptions


@bp.get("/exceptions")
@staff_required
def exceptions_page() -> ResponseReturnValue:
    area = area_in_scope(current_user, request.args.get("area"))
    _require(Capability.READ_CONSOLE)
    township = _township(area)
    kind = query_enum("kind", ExceptionKind)
    raw_sort = request.args.get("sort", "").strip() or "deadline"
    descending = raw_sort.startswith("-")
    sort = raw_sort.lstrip("-")
    if sort not in SORTS:
        raise InvalidParameter(
            _("%(name)s must be one of %(values)s.", name="sort", values=", ".join(SORTS)),
            parameter="sort",
        )
    path = area.path if township is None or township.contains(area) else township.path
    today = local_today()
    rows = exceptions(
        path,
        today=today,
        now=clock.utcnow(),
        kind=kind,
        sort=sort,
        descending=descending,
    )
    total = len(rows)
    chosen, page, pages = _page_slice(rows, EXCEPTIONS_PER_PAGE)
    shown = as_dicts(chosen, today)
    filters = {_("Area"): area.name}
    if township is not None:
        filters[_("Township")] = township.name
    if kind is not None:
        filters[_("Kind")] = str(EXCEPTION_KIND_LABELS[kind.value])
    filters[_("Sorted by")] = _sort_label(sort) + (" ↓" if descending else " ↑")
    table = Table(
        name="exceptions",
        title=_("Exceptions: %(area)s", area=area.name),
        columns=[
            Column("kind_label", _("Kind")),
            Column("case_code", _("Case"), link="case_url"),
            Column("township", _("Township")),
            Column("village", _("Village")),
            Column("deadline", _("Deadline")),
            Column("age", _("Age (days)")),
            Column("detail", _("Detail")),
        ],
        rows=shown,
        filters=filters,
    )
    return respond(
        table,
        "console/exceptions.html",
        area=area,
        trail=trail(current_user, area),
        below=children(area),
        township=township,
        townships=townships(area),
        kind=kind,
        kinds=list(ExceptionKind),
        sort=sort,
        descending=descending,
        sorts=SORTS,
        total=total,
        page=page,
        pages=pages,
    )


def _sort_label(sort: str) -> str:
    return {
        "deadline": _("Deadline"),
        "age": _("Age (days)"),
        "kind": _("Kind"),
        "township": _("Township"),
    }[sort]


# ----------------------------------------------------------------------------- worklist


@bp.get("/worklist")
@staff_required
def worklist_page() -> ResponseReturnValue:
    township = _township(current_user.area)
    today = local_today()
    rows = worklist.worklist(
        current_user,
        today=today,
        now=clock.utcnow(),
        window_days=current_app.config["DIBAO_DUE_WINDOW_DAYS"],
        township=township,
    )
    filters = {_("User"): current_user.label}
    if township is not None:
        filters[_("Township")] = township.name
    table = Table(
        name="worklist",
        title=_("My worklist"),
        columns=[
            Column("kind_label", _("Kind")),
            Column("case_code", _("Case"), link="case_url"),
            Column("township", _("Township")),
            Column("village", _("Village")),
            Column("what", _("To do")),
            Column("deadline", _("Deadline")),
            Column("days_left", _("Days left")),
        ],
        rows=rows,
        filters=filters,
    )
    return respond(
        table,
        "console/worklist.html",
        township=township,
        townships=townships(current_user.area),
        overdue=sum(1 for r in rows if r["overdue"]),
    )


# ----------------------------------------------------------------------------- audit log


@bp.get("/audit")
@staff_required
def audit_page() -> ResponseReturnValue:
    area = area_in_scope(current_user, request.args.get("area"))
    _require(Capability.READ_AUDIT_LOG)
    case_code = request.args.get("case", "").strip()
    household_id = queries.get_case(current_user, case_code).id if case_code else None
    person = _text("person", 64)
    action = _text("action", 60)
    filters = audit_log.AuditFilters(
        person=person,
        household_id=household_id,
        action=action,
        since=query_date("since"),
        until=query_date("until"),
    )
    shown: dict[str, str] = {_("Area"): area.name}
    for label, value in (
        (_("Person"), person),
        (_("Case"), case_code.upper() if case_code else None),
        (_("Action"), action),
        (_("From"), filters.since.isoformat() if filters.since else None),
        (_("Until"), filters.until.isoformat() if filters.until else None),
    ):
        if value:
            shown[label] = value
    if export_format() is not None:
        rows: Any = audit_log.audit_rows(area, filters)
        page, more = 1, False
    else:
        page = query_int("page", 1, maximum=100_000)
        rows, more = audit_log.audit_page(area, filters, page=page, per_page=AUDIT_PER_PAGE)
    table = Table(
        name="audit-log",
        title=_("Audit log: %(area)s", area=area.name),
        columns=[
            Column("at", _("Time")),
            Column("person", _("Person")),
            Column("role", _("Role")),
            Column("action", _("Action")),
            Column("action_code", _("Action code")),
            Column("object", _("Object")),
            Column("case_code", _("Case"), link="case_url"),
            Column("details", _("Details")),
        ],
        rows=rows,
        filters=shown,
    )
    return respond(
        table,
        "console/audit.html",
        area=area,
        actions=audit_log.actions(),
        page=page,
        more=more,
        form={k: request.args.get(k, "") for k in ("person", "case", "action", "since", "until")},
    )


def _text(name: str, limit: int) -> str | None:
    value = request.args.get(name, "").strip()
    if not value:
        return None
    if len(value) > limit or "\x00" in value:
        raise InvalidParameter(
            _("%(name)s may be at most %(limit)s characters long.", name=name, limit=limit),
            parameter=name,
        )
    return value
