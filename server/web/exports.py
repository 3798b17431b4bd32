"""Console tables as pages and as CSV or Excel files.

A view builds one ``Table`` (its columns, its rows, the filters that chose them) and
answers with ``respond``: the page, or with ``?format=csv`` / ``?format=xlsx`` the
whole table as a file. Every export is audited (who, which table, which filters, how
many rows); columns marked ``personal`` are left out, on the page and in the file, for
roles that do not read personal data. A view that pages its rows on screen builds the
table with every row when ``export_format()`` is set (rows are iterated once, lazily:
a large area streams).
"""

from __future__ import annotations

import csv
import io
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

from flask import Response, abort, render_template, request, stream_with_context
from flask_babel import gettext as _
from flask_login import current_user
from werkzeug.datastructures import MultiDict

from server import clock
from server.audit import service as audit
from server.auth.models import User
from server.console.tables import Column, Table, cell
from server.extensions import db
from server.region import local_time

FORMATS = ("csv", "xlsx")


def export_format() -> str | None:
    """``csv`` or ``xlsx`` when the request asks for a file, None for the page; a
    format we do not make is a 400 that says which ones we do."""
    fmt = request.args.get("format", "").strip().lower()
    if fmt in ("", "html"):
        return None
    if fmt not in FORMATS:
        abort(400, description=_("Unknown export format; use csv or xlsx."))
    return fmt


def respond(table: Table, template: str, **context: Any) -> Response | str:
    """The page (``template`` gets ``table`` and ``columns``), or the file."""
    fmt = export_format()
    columns = table.columns_for(current_user)
    if fmt is None:
        return render_template(template, table=table, columns=columns, **context)
    stamp = clock.utcnow()
    audit.record(
        "export.downloaded",
        actor=current_user,
        object_type="export",
        object_id=table.name,
        format=fmt,
        filters=dict(table.filters),
        columns=[c.key for c in columns],
    )
    db.session.commit()
    filename = f"dibao-{table.name}-{stamp:%Y%m%d-%H%M}.{fmt}"
    if fmt == "csv":
        body = stream_with_context(_csv_lines(columns, table.rows))
        response = Response(body, mimetype="text/csv")
    else:
        response = Response(
            _xlsx_bytes(table, columns, current_user, stamp),
            mimetype="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        )
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    response.headers["Cache-Control"] = "private, no-store"
    return response


def _csv_lines(columns: list[Column], rows: Iterable[Mapping[str, Any]]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    buffer.write("\ufeff")  # Excel opens UTF-8 CSV as UTF-8 only with the BOM
    writer.writerow([str(c.label) for c in columns])
    for row in rows:
        writer.writerow([cell(row.get(c.key)) for c in columns])
        if buffer.tell() > 64 * 1024:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def _xlsx_bytes(table: Table, columns: list[Column], actor: User, stamp: datetime) -> bytes:
    from openpyxl import Workbook

    book = Workbook(write_only=True)
    sheet = book.create_sheet(table.name[:31])
    sheet.append([str(table.title)])
    sheet.append([_("Exported by"), actor.label, _("at"), local_time(stamp)])
    for label, value in table.filters.items():
        sheet.append([str(label), str(value)])
    sheet.append([])
    sheet.append([str(c.label) for c in columns])
    for row in table.rows:
        sheet.append([cell(row.get(c.key)) for c in columns])
    with tempfile.TemporaryFile() as handle:  # write-only mode streams rows to disk
        book.save(handle)
        handle.seek(0)
        return handle.read()


def register(app: Any) -> None:
    """Template helpers: ``console_cell`` (a value for a page cell) and
    ``export_query`` (this page's query string asking for a file)."""
    from urllib.parse import urlencode

    def console_cell(value: Any) -> Any:
        shown = cell(value)
        return "—" if shown == "" else shown

    def export_query(args: MultiDict[str, str], fmt: str) -> str:
        pairs = [(k, v) for k, v in args.items(multi=True) if k not in ("format", "page")]
        return urlencode([*pairs, ("format", fmt)])

    app.jinja_env.filters["console_cell"] = console_cell
    app.jinja_env.filters["export_query"] = export_query
