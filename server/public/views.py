"""The public page (/public), a case's own page, the CSV export, the data dictionary and
the open-data API (/api/v1/public/...). No login, no session, no cookie: every answer
depends only on the URL, the language and the current snapshot, so it carries an ETag
and may be cached by anyone.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from flask import (
    Blueprint,
    Response,
    current_app,
    jsonify,
    redirect,
    request,
    stream_with_context,
    url_for,
)
from flask_babel import gettext as _
from markupsafe import Markup
from werkzeug.exceptions import BadRequest, NotFound

from server.cases import standards
from server.cases.codes import EXAMPLE_CASE_CODE, normalize_case_code
from server.cases.models import CaseState
from server.clock import utcnow
from server.extensions import limiter
from server.labels import STATE_LABELS
from server.months import current_month
from server.public import changes, figures, notices, queries, schemas
from server.public.cache import Cached, ResponseCache
from server.public.queries import Filters, Snapshot
from server.region import region
from server.validation import parse_int
from server.wire import Operation, Query, operation

bp = Blueprint("public", __name__)

PAGE_SIZE = 50
MAX_ARG_LENGTH = 64
CACHE_CONTROL = "public, max-age=60"
# A filter's value in the document (_arg): printable, at most MAX_ARG_LENGTH.
ARG = {"type": "string", "maxLength": MAX_ARG_LENGTH}
LIMITED = "too many requests from this address"


def _rate() -> str:
    return str(current_app.config["DIBAO_PUBLIC_RATE_LIMIT"])


# One budget per address for all public addresses together.
limiter.shared_limit(_rate, scope="public")(bp)


def _arg(name: str) -> str | None:
    value = request.args.get(name, "").strip()
    if not value:
        return None
    if len(value) > MAX_ARG_LENGTH or not value.isprintable():
        raise BadRequest(_("The value of %(name)s is not valid.", name=name))
    return value


def _filters(snapshot: Snapshot | None) -> Filters:
    """The township/village/status/class filters, each checked against what exists."""
    areas = snapshot.areas if snapshot else {}
    township = _arg("township")
    if township and areas.get(township, {}).get("level") != "township":
        raise BadRequest(_("There is no township with the code %(code)s.", code=township))
    village = _arg("village")
    if village:
        area = areas.get(village)
        if not area or area.get("level") != "village":
            raise BadRequest(_("There is no village with the code %(code)s.", code=village))
        if township and area.get("parent") != township:
            raise BadRequest(
                _(
                    "Village %(village)s is not in township %(township)s.",
                    village=village,
                    township=township,
                )
            )
    status = _arg("status")
    if status and status not in {s.value for s in CaseState}:
        raise BadRequest(_("Unknown status %(status)s.", status=status))
    class_code = _arg("class")
    if class_code and class_code not in {c.code for c in region().classes}:
        raise BadRequest(_("Unknown class %(code)s.", code=class_code))
    return Filters(township=township, village=village, status=status, class_code=class_code)


def _limit(default: int) -> int:
    raw = _arg("limit")
    if raw is None:
        return default
    value = parse_int(raw, 1, queries.MAX_PAGE)
    if value is None:
        raise BadRequest(_("limit must be a whole number from 1 to %(max)s.", max=queries.MAX_PAGE))
    return value


def _after() -> str | None:
    raw = _arg("after")
    if raw is None:
        return None
    code = normalize_case_code(raw)
    if code is None:
        raise BadRequest(_("after must be a case code from a previous page's next link."))
    return code


def _page_arguments(snapshot: Snapshot | None) -> tuple[Filters, int, str | None]:
    """The filters, page size and cursor of a list (the page and the JSON list alike)."""
    return _filters(snapshot), _limit(PAGE_SIZE), _after()


def _snapshot() -> Snapshot | None:
    changes.refresh_inline_if_stale()
    return queries.current()


def _language() -> str:
    """The page language as the app's locale selector picks it for public pages
    (``?lang=``, else Accept-Language), without asking Babel to parse a locale."""
    languages: tuple[str, ...] = tuple(current_app.config["LANGUAGES"])
    chosen = request.args.get("lang")
    if chosen in languages:
        return chosen
    return request.accept_languages.best_match(languages) or languages[0]


def _responses() -> ResponseCache:
    cache: ResponseCache | None = current_app.extensions.get("dibao.public_responses")
    if cache is None:
        megabytes = float(current_app.config["DIBAO_PUBLIC_RESPONSE_CACHE_MB"])
        cache = ResponseCache(int(megabytes * 1024 * 1024))
        current_app.extensions["dibao.public_responses"] = cache
    return cache


def _answer(
    snapshot: Snapshot | None,
    render: Callable[[], Response],
    *,
    keep: bool = True,
    day: str = "",
    path: str | None = None,
) -> Response:
    """Same snapshot, same URL, same language: same bytes. So: an ETag from those three
    (If-None-Match -> 304), and the bytes of what was rendered kept for the next one
    (``keep``; not for the streamed CSV). A notice prints the day: ``day`` joins the key;
    and ``path`` (without the query string) stands for the URL when nothing else in the
    query counts, so no made-up query string forces a new render."""
    token = snapshot.token if snapshot else "none"
    key = f"{token}\n{path or request.full_path}\n{_language()}\n{day}"
    etag = hashlib.sha256(key.encode()).hexdigest()[:32]
    if request.if_none_match.contains(etag):
        response = Response(status=304)
    elif keep and (hit := _responses().get(key)) is not None:
        response = Response(hit.body, content_type=hit.content_type)
    else:
        response = render()
        if keep and snapshot is not None and response.status_code == 200:
            _responses().put(key, Cached(response.get_data(), response.content_type or ""))
    response.set_etag(etag)
    response.headers["Cache-Control"] = CACHE_CONTROL
    response.vary.add("Accept-Language")
    return response


def _as_of(snapshot: Snapshot | None) -> str | None:
    return snapshot.stats.get("built_at") if snapshot else None


# --- pages -----------------------------------------------------------------------------


def _render(template: str, **context: Any) -> Response:
    """Render without the app's context processors: Flask-Login's would load the staff
    user from the session cookie, and a public page must not depend on who asks."""
    snapshot: Snapshot | None = context.get("snapshot")
    as_of = None
    if snapshot is not None:
        built = datetime.fromisoformat(snapshot.stats["built_at"])
        as_of = built.astimezone(ZoneInfo(region().timezone)).strftime("%Y-%m-%d %H:%M")
    html = current_app.jinja_env.get_template(template).render(
        request=request, as_of=as_of, labels=_labels(), **context
    )
    return Response(html, mimetype="text/html")


def _labels() -> dict[str, Any]:
    """Every label a page needs, translated once."""
    return {
        "state": {state.value: str(STATE_LABELS[state]) for state in CaseState},
        "pol": {"passed": _("Passed"), "missed": _("Missed"), "pending": _("Pending")},
        "size": {
            band: _("%(band)s person(s)", band=band) for band in region().public.size_band_labels
        },
        "not_shown": _("not shown"),
    }


POL_MARKUP = {
    "passed": Markup('{} <span class="ok">✓ {}</span>'),
    "missed": Markup('{} <span class="bad">✗ {}</span>'),
    "pending": Markup("{} <span>… {}</span>"),
}


def _rows(snapshot: Snapshot, rows: list[Any]) -> list[dict[str, Any]]:
    """The cells of the case table, as text (and escaped markup for the proof-of-life
    record), from the snapshot's rows and labels translated once."""
    labels = _labels()
    states, results = labels["state"], labels["pol"]
    areas = snapshot.areas
    case_url = url_for("public.case_page", case_code="CASE-CODE", lang=_lang_arg())
    out = []
    for row in rows:
        if row.village_code:
            place = f"{areas[row.township_code]['name']} · {areas[row.village_code]['name']}"
        elif row.township_code:
            place = areas[row.township_code]["name"]
        else:
            place = areas.get(row.county_code, {}).get("name", row.county_code)
        history = []
        for item in row.changes.split():
            status, _sep, month = item.partition(":")
            history.append(f"{states.get(status, status)} {month}")
        record = []
        for item in row.proof_of_life.split():
            month, _sep, result = item.partition(":")
            shape = POL_MARKUP.get(result, POL_MARKUP["pending"])
            record.append(shape.format(month, results.get(result, results["pending"])))
        out.append(
            {
                "code": row.case_code,
                "href": case_url.replace("CASE-CODE", row.case_code),
                "masked_name": row.masked_name or "—",
                "place": place,
                "class_code": row.class_code or "—",
                "size": labels["size"].get(row.size_band, row.size_band)
                if row.size_band
                else labels["not_shown"],
                "status": states.get(row.status, row.status),
                "amount": row.amount or "—",
                "history": " → ".join(history),
                "pol": Markup(" ").join(record),
            }
        )
    return out


def _summary_html(snapshot: Snapshot) -> Markup:
    """The aggregate tables of /public, rendered once per snapshot, language and process."""
    language = _language()
    fragment = snapshot.fragments.get(language)
    if fragment is None:
        template = current_app.jinja_env.get_template("public/_summary.html")
        # An autoescaped template's output: already safe HTML.
        fragment = Markup(  # noqa: S704
            template.render(
                snapshot=snapshot, summary=_summary(snapshot), labels=_labels(), lang=language
            )
        )
        snapshot.fragments[language] = fragment
    return fragment


def _bars(values: list[int | None]) -> list[int]:
    top = max((v or 0 for v in values), default=0)
    return [round(100 * (v or 0) / top) if top else 0 for v in values]


def _summary(snapshot: Snapshot) -> dict[str, Any]:
    """The aggregate tables, shaped for the page (money and completion per month are
    summed over the cells that are shown, so no hidden cell can be found by subtraction)."""
    stats = snapshot.stats
    months: dict[str, dict[str, Any]] = {}
    for cell in stats["payments"]:
        if cell["amount_paid"] is None:
            continue
        entry = months.setdefault(cell["month"], {"households": 0, "fen": 0})
        entry["households"] += cell["paid_households"]
        # Money is whole fen (docs/decisions/0001): sum integers, never floats.
        entry["fen"] += int(Decimal(cell["amount_paid"]) * 100)
    money = [
        {"month": m, **months[m], "amount": f"{Decimal(months[m]['fen']) / 100:.2f}"}
        for m in sorted(months)
    ]
    for row, width in zip(money, _bars([r["fen"] // 100 for r in money]), strict=True):
        row["bar"] = width
    pol_months = sorted({c["month"] for c in stats["proof_of_life"]})
    pol: dict[str, dict[str, Any]] = {}
    for cell in stats["proof_of_life"]:
        township = pol.setdefault(cell["township"], {})
        if cell["passed"] is None:
            township[cell["month"]] = None
        else:
            township[cell["month"]] = round(100 * cell["passed"] / cell["recipients"])
    townships = [dict(t) for t in stats["townships"]]
    for row, width in zip(townships, _bars([t["active"] for t in townships]), strict=True):
        row["bar"] = width
    return {"money": money, "pol_months": pol_months, "pol": pol, "townships": townships}


@bp.get("/public")
def index() -> Response | Any:
    raw_code = request.args.get("code", "").strip()
    if raw_code:
        code = normalize_case_code(raw_code[:MAX_ARG_LENGTH])
        if code is None:
            raise BadRequest(
                _(
                    "%(code)s is not a case code. A case code looks like %(example)s.",
                    code=raw_code[:MAX_ARG_LENGTH],
                    example=EXAMPLE_CASE_CODE,
                )
            )
        return redirect(url_for("public.case_page", case_code=code, lang=request.args.get("lang")))
    snapshot = _snapshot()
    filters, limit, after = _page_arguments(snapshot)

    def render() -> Response:
        rows: list[Any] = []
        next_after = None
        if snapshot is not None:
            rows, next_after = queries.page(snapshot, filters, after, limit)
        return _render(
            "public/index.html",
            snapshot=snapshot,
            example_code=EXAMPLE_CASE_CODE,
            filters=filters,
            rows=_rows(snapshot, rows) if snapshot else [],
            total=snapshot.total(filters) if snapshot else 0,
            next_url=_url(
                "public.index",
                filters,
                after=next_after,
                limit=limit if limit != PAGE_SIZE else None,
                lang=_lang_arg(),
            )
            if next_after
            else None,
            summary_html=_summary_html(snapshot) if snapshot else "",
            villages=snapshot.villages(filters.township) if snapshot else [],
            states=list(CaseState),
            classes=region().classes,
            masked_names=region().public.masked_names,
            standards=_standards(),
        )

    return _answer(snapshot, render)


def _url(endpoint: str, filters: Filters, **values: Any) -> str:
    arguments: dict[str, Any] = {**filters.as_query(), **values}
    return url_for(endpoint, **arguments)


def _lang_arg() -> str | None:
    lang = request.args.get("lang")
    return lang if lang in current_app.config["LANGUAGES"] else None


@bp.get("/public/cases/<case_code>")
def case_page(case_code: str) -> Response:
    code = normalize_case_code(case_code[:MAX_ARG_LENGTH])
    if code is None:
        raise NotFound(_("%(code)s is not a case code.", code=case_code[:MAX_ARG_LENGTH]))
    snapshot = _snapshot()

    def render() -> Response:
        row = queries.one(snapshot, code) if snapshot else None
        if row is None:
            raise NotFound(_("No published case has the code %(code)s.", code=code))
        return _render(
            "public/case.html",
            snapshot=snapshot,
            row=row,
            changes=schemas.status_changes(row),
            pol=schemas.proof_of_life(row),
            masked_names=region().public.masked_names,
            objections=snapshot.stats.get("objections", {}).get(code) if snapshot else None,
        )

    return _answer(snapshot, render)


@bp.get("/public/data")
def dictionary() -> Response:
    snapshot = _snapshot()

    def render() -> Response:
        return _render(
            "public/dictionary.html",
            snapshot=snapshot,
            rules=region().public,
            states=list(CaseState),
            classes=region().classes,
            columns=schemas.csv_columns(masked_names=region().public.masked_names),
        )

    return _answer(snapshot, render)


@bp.get("/public/cases.csv")
def cases_csv() -> Response:
    snapshot = _snapshot()
    filters = _filters(snapshot)
    masked = region().public.masked_names

    def render() -> Response:
        def lines() -> Iterator[str]:
            buffer = io.StringIO()
            writer = csv.writer(buffer)
            writer.writerow(schemas.csv_columns(masked_names=masked))
            yield "\ufeff" + _drain(buffer)  # the BOM: spreadsheet programs read UTF-8
            if snapshot is None:
                return
            for count, row in enumerate(queries.every(snapshot, filters), start=1):
                writer.writerow(schemas.case_csv(snapshot, row, masked_names=masked))
                if count % 500 == 0:
                    yield _drain(buffer)
            yield _drain(buffer)

        response = Response(stream_with_context(lines()), mimetype="text/csv")
        response.headers["Content-Disposition"] = 'attachment; filename="dibao-public-cases.csv"'
        return response

    return _answer(snapshot, render, keep=False)


def _drain(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text


# --- open data API ----------------------------------------------------------------------


@bp.get("/api/v1/public/cases")
@operation(
    Operation(
        summary="Published cases, 50 per page, in case-code order (no login)",
        security="none",
        etag=True,
        query=(
            Query("township", ARG, "township area code"),
            Query("village", ARG, "village area code (in the township, if both)"),
            Query("status", ARG, "case status"),
            Query("class", ARG, "class code"),
            Query(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": queries.MAX_PAGE},
                f"cases per page (default {PAGE_SIZE})",
            ),
            Query("after", ARG, "the cursor from a previous page's next"),
        ),
        responses={200: schemas.PublicCasesPage, 304: "If-None-Match matched: nothing changed"},
        errors={400: "a filter names nothing that exists, or a bad limit or cursor", 429: LIMITED},
    )
)
def api_cases() -> Response:
    snapshot = _snapshot()
    filters, limit, after = _page_arguments(snapshot)

    def render() -> Response:
        rows: list[Any] = []
        next_after = None
        if snapshot is not None:
            rows, next_after = queries.page(snapshot, filters, after, limit, queries.API_COLUMNS)
        next_url = None
        if next_after:
            next_url = url_for(
                "public.api_cases",
                **filters.as_query(),
                limit=limit,
                after=next_after,
                _external=True,
            )
        # The items are stored JSON documents (server.public.schemas.case_document), put
        # in place of the empty list of the envelope the model writes.
        envelope = schemas.PublicCasesPage(
            items=[],
            next=next_url,
            total=snapshot.total(filters) if snapshot else 0,
            as_of=datetime.fromisoformat(as_of) if (as_of := _as_of(snapshot)) else None,
        )
        head = json.dumps(envelope.dump(), ensure_ascii=False, separators=(",", ":"))
        empty = '{"items":[],'
        if not head.startswith(empty):
            raise RuntimeError("PublicCasesPage must start with its items")
        body = '{"items":[' + ",".join(row.document for row in rows) + "]," + head[len(empty) :]
        return Response(body, mimetype="application/json")

    return _answer(snapshot, render)


@bp.get("/api/v1/public/cases/<case_code>")
@operation(
    Operation(
        summary="One published case (no login)",
        security="none",
        etag=True,
        responses={
            200: schemas.PublicCaseAnswer,
            304: "If-None-Match matched: nothing changed",
        },
        errors={404: "not a case code, or no published case has it", 429: LIMITED},
    )
)
def api_case(case_code: str) -> Response:
    code = normalize_case_code(case_code[:MAX_ARG_LENGTH])
    if code is None:
        raise NotFound(_("%(code)s is not a case code.", code=case_code[:MAX_ARG_LENGTH]))
    snapshot = _snapshot()

    def render() -> Response:
        row = queries.one(snapshot, code, queries.API_COLUMNS) if snapshot else None
        if row is None:
            raise NotFound(_("No published case has the code %(code)s.", code=code))
        # The stored document and the field PublicCaseAnswer adds to it.
        document: str = row.document
        body = f'{document[:-1]},"as_of":{json.dumps(_as_of(snapshot))}}}'
        return Response(body, mimetype="application/json")

    return _answer(snapshot, render)


@bp.get("/api/v1/public/stats")
@operation(
    Operation(
        summary="Aggregates per township and month (no login)",
        security="none",
        etag=True,
        responses={200: schemas.PublicStatsOut, 304: "If-None-Match matched: nothing changed"},
        errors={429: LIMITED},
    )
)
def api_stats() -> Response:
    snapshot = _snapshot()

    def render() -> Response:
        if snapshot is None:
            empty = schemas.PublicStatsOut(
                as_of=None, cases=schemas.CaseCountsOut(published=0, withheld=0)
            )
            return jsonify(empty.dump())
        stats = snapshot.stats
        names = {code: area["name"] for code, area in snapshot.areas.items()}
        answer = schemas.PublicStatsOut.model_validate(
            {
                "as_of": stats["built_at"],
                "k": stats["k"],
                "monthly_amount": stats["amount"],
                "cases": {"published": stats["published"], "withheld": stats["withheld"]},
                "townships": [
                    {**t, "name": names.get(t["township"]) if t["township"] else None}
                    for t in stats["townships"]
                ],
                "payments": stats["payments"],
                "proof_of_life": stats["proof_of_life"],
            }
        )
        return jsonify(answer.dump())

    return _answer(snapshot, render)


# --- class standards and half-yearly figures (issue 18) --------------------------------


def _standards() -> dict[str, Any]:
    """The class standards in effect this month, the changes already decided for later
    months, and every version (server.cases.standards.published_history)."""
    month = current_month(utcnow(), region().timezone)
    versions = standards.published_history()
    current: dict[str, standards.PublishedVersion] = {}
    for version in versions:  # by class, oldest first: the last one not after this month
        if version.class_code not in current or version.effective_month <= month:
            current[version.class_code] = version
    return {
        "month": month,
        "allowance_method": region().allowance_method,
        "current": [current[code] for code in sorted(current)],
        "scheduled": [v for v in versions if v.effective_month > month],
        "history": versions,
    }


@bp.get("/public/standards")
def standards_page() -> Response:
    snapshot = _snapshot()

    def render() -> Response:
        return _render("public/standards.html", snapshot=snapshot, standards=_standards())

    return _answer(snapshot, render)


STANDARDS_CSV = (
    "class",
    "name",
    "name_en",
    "effective_month",
    "monthly_standard",
    "fixed_monthly",
    "status",
)


@bp.get("/public/standards.csv")
def standards_csv() -> Response:
    snapshot = _snapshot()

    def render() -> Response:
        shown = _standards()
        current = set(shown["current"])
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(STANDARDS_CSV)
        for version in shown["history"]:
            if version in current:
                status = "current"
            elif version.effective_month > shown["month"]:
                status = "scheduled"
            else:
                status = "past"
            writer.writerow([*version.as_json().values(), status])
        response = Response("\ufeff" + buffer.getvalue(), mimetype="text/csv")
        response.headers["Content-Disposition"] = 'attachment; filename="dibao-standards.csv"'
        return response

    return _answer(snapshot, render)


@bp.get("/api/v1/public/standards")
@operation(
    Operation(
        summary="The class standards, the allowance method and every change (no login)",
        security="none",
        etag=True,
        responses={200: schemas.PublicStandardsOut, 304: "If-None-Match matched: nothing changed"},
        errors={429: LIMITED},
    )
)
def api_standards() -> Response:
    snapshot = _snapshot()

    def render() -> Response:
        shown = _standards()
        answer = schemas.PublicStandardsOut.model_validate(
            {
                "month": shown["month"],
                "allowance_method": shown["allowance_method"],
                "current": [v.as_json() for v in shown["current"]],
                "scheduled": [v.as_json() for v in shown["scheduled"]],
                "history": [v.as_json() for v in shown["history"]],
            }
        )
        return jsonify(answer.dump())

    return _answer(snapshot, render)


def _half(half: str) -> None:
    """A half year that has figures, else 404."""
    try:
        figures.parse_half(half)
    except ValueError:
        raise NotFound(_("%(half)s is not a half year like 2026-H1.", half=half[:16])) from None
    if half not in figures.halves_with_data(utcnow()):
        raise NotFound(_("There are no figures for %(half)s.", half=half))


def _figures(snapshot: Snapshot | None, half: str) -> list[figures.Figures]:
    """Every county's figures for ``half``, computed once per snapshot and process."""
    key = f"figures:{half}"
    if snapshot is not None and key in snapshot.fragments:
        found: list[figures.Figures] = snapshot.fragments[key]
        return found
    computed = [figures.half_year_figures(code, half) for code, _name in figures.counties()]
    if snapshot is not None:
        snapshot.fragments[key] = computed
    return computed


@bp.get("/public/figures")
def figures_index() -> Response:
    snapshot = _snapshot()

    def render() -> Response:
        return _render(
            "public/figures_index.html",
            snapshot=snapshot,
            halves=figures.halves_with_data(utcnow()),
        )

    return _answer(snapshot, render)


@bp.get("/public/figures/<half>")
def figures_page(half: str) -> Response:
    snapshot = _snapshot()

    def render() -> Response:
        _half(half)
        return _render(
            "public/figures.html",
            snapshot=snapshot,
            half=half,
            counties=_figures(snapshot, half),
            classes={c.code: c for c in region().classes},
        )

    return _answer(snapshot, render)


@bp.get("/public/figures/<half>.csv")
def figures_csv(half: str) -> Response:
    snapshot = _snapshot()

    def render() -> Response:
        _half(half)
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(figures.CSV_COLUMNS)
        for one in _figures(snapshot, half):
            writer.writerows(figures.table_rows(one))
        response = Response("\ufeff" + buffer.getvalue(), mimetype="text/csv")
        response.headers["Content-Disposition"] = f'attachment; filename="dibao-figures-{half}.csv"'
        return response

    return _answer(snapshot, render)


XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@bp.get("/public/figures/<half>.xlsx")
def figures_xlsx(half: str) -> Response:
    snapshot = _snapshot()

    def render() -> Response:
        _half(half)
        from openpyxl import Workbook

        book = Workbook(write_only=True)
        sheet = book.create_sheet(half)
        sheet.append(list(figures.CSV_COLUMNS))
        for one in _figures(snapshot, half):
            for row in figures.table_rows(one):
                sheet.append(row)
        with tempfile.TemporaryFile() as handle:
            book.save(handle)
            handle.seek(0)
            body = handle.read()
        response = Response(body, mimetype=XLSX)
        response.headers["Content-Disposition"] = (
            f'attachment; filename="dibao-figures-{half}.xlsx"'
        )
        return response

    return _answer(snapshot, render)


@bp.get("/api/v1/public/figures/<half>")
@operation(
    Operation(
        summary="A half year's figures per county and township (no login)",
        security="none",
        etag=True,
        responses={200: schemas.PublicFiguresOut, 304: "If-None-Match matched: nothing changed"},
        errors={404: "not a half year like 2026-H1, or one without figures", 429: LIMITED},
    )
)
def api_figures(half: str) -> Response:
    snapshot = _snapshot()

    def render() -> Response:
        _half(half)
        computed = _figures(snapshot, half)
        answer = schemas.PublicFiguresOut.model_validate(
            {
                "half": half,
                "months": list(figures.half_months(half)),
                "classes": [c.code for c in region().classes],
                "k": region().public.k,
                "counties": [figures.as_json(one) for one in computed],
            }
        )
        return jsonify(answer.dump())

    return _answer(snapshot, render)


# --- printable notices (docs/public.md, "Printable notices") ------------------------------


def _today() -> str:
    return utcnow().astimezone(ZoneInfo(region().timezone)).date().isoformat()


def _pdf(body: bytes, filename: str) -> Response:
    response = Response(body, mimetype="application/pdf")
    response.headers["Content-Disposition"] = f'inline; filename="{filename}"'
    return response


def _notice_context(snapshot: Snapshot, area_code: str) -> dict[str, Any]:
    area = snapshot.areas[area_code]
    chain = notices.area_chain(snapshot, area_code)
    township = snapshot.areas.get(area["parent"]) if area["level"] == "village" else None
    return {
        "area": area,
        "area_name": f"{township['name']} · {area['name']}" if township else area["name"],
        "office": region().public.office_for(chain),
        "printed_on": _today(),
        "lang": _language(),
        "chinese": _language() == "zh_CN",
        "k": region().public.k,
    }


def _notice_rate() -> str:
    return str(current_app.config["DIBAO_PUBLIC_NOTICE_RATE_LIMIT"])


@bp.get("/public/notices/<area_code>.pdf")
@limiter.shared_limit(_notice_rate, scope="public-notice", override_defaults=False)
def notice_pdf(area_code: str) -> Response:
    """Notice 1: the cases of a township or village now in public notice, for its board."""
    snapshot = _snapshot()
    area = notices.notice_area(snapshot, area_code[:MAX_ARG_LENGTH])
    if snapshot is None or area is None:
        raise NotFound(
            _(
                "There is no township or village with the code %(code)s.",
                code=area_code[:MAX_ARG_LENGTH],
            )
        )
    today = _today()

    def render() -> Response:
        base = str(current_app.config["PUBLIC_BASE_URL"]).rstrip("/")
        rows = notices.cases_in_notice(snapshot, area_code)
        body = notices.render_pdf(
            "public/notice_cases.html",
            rows=rows,
            case_url=base + url_for("public.case_page", case_code="CASE-CODE"),
            size_labels=_labels()["size"],
            not_shown=_labels()["not_shown"],
            notice_days=region().deadlines.public_notice_days,
            **_notice_context(snapshot, area_code),
        )
        return _pdf(body, f"notice-{area_code}-{today}.pdf")

    return _answer(snapshot, render, day=today, path=request.path)


@bp.get("/public/notices/<area_code>/figures/<half>.pdf")
@limiter.shared_limit(_notice_rate, scope="public-notice", override_defaults=False)
def figures_pdf(area_code: str, half: str) -> Response:
    """Notice 2: an area's half-year figures ("2026-H1"), from the figures source."""
    snapshot = _snapshot()
    code = area_code[:MAX_ARG_LENGTH]
    area = snapshot.areas.get(code) if snapshot else None
    source = notices.figures_source()
    if snapshot is None or area is None or area.get("level") not in ("county", "township"):
        raise NotFound(_("There is no county or township with the code %(code)s.", code=code))
    if not notices.HALF.fullmatch(half):
        raise NotFound(
            _("%(half)s is not a half year such as 2026-H1.", half=half[:MAX_ARG_LENGTH])
        )
    found = source(code, half) if source else None
    if found is None:
        raise NotFound(_("There are no figures for %(half)s.", half=half))
    today = _today()

    def render() -> Response:
        body = notices.render_pdf(
            "public/notice_figures.html",
            figures=found,
            half=half,
            not_shown=_labels()["not_shown"],
            **_notice_context(snapshot, code),
        )
        return _pdf(body, f"figures-{code}-{half}.pdf")

    return _answer(snapshot, render, day=today, path=request.path)


# --- notice 2: the half-year figures as the notice prints them --------------------------


@dataclass(frozen=True)
class NoticeTable:
    """One table of a figures notice (server.public.notices.FigureTable)."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str | int | Decimal | None, ...], ...]


@dataclass(frozen=True)
class NoticeFigures:
    """A county's or township's half-year figures as notice tables
    (server.public.notices.HalfYearFigures)."""

    tables: tuple[NoticeTable, ...]


def _shown(cell: figures.Cell) -> int | Decimal | None:
    """A cell's value, or None where the k rule withholds it ("not shown")."""
    return None if cell.suppressed else cell.value


def notice_figures(area_code: str, half: str) -> NoticeFigures | None:
    """The figures of a county or township for ``half``, the same cells (k rule and
    complementary suppression included) as /public/figures/<half>; None when there are
    none. The figures notice's source (``notices.FIGURES_SOURCE``)."""
    try:
        figures.parse_half(half)
        county = figures.county_of(area_code)
    except (ValueError, LookupError):
        return None
    if half not in figures.halves_with_data(utcnow()):
        return None
    for computed in _figures(_snapshot(), half):
        if computed.county.code != county:
            continue
        try:
            area = computed.area(area_code)
        except KeyError:
            return None
        return _notice_tables(computed, area)
    return None


def _notice_tables(computed: figures.Figures, area: figures.AreaFigures) -> NoticeFigures:
    classes = [*computed.classes, figures.ALL]
    by_class = NoticeTable(
        _("Households and persons by class"),
        (_("Class"), _("Households"), _("Persons")),
        tuple(
            (
                _("All classes") if code == figures.ALL else code,
                _shown(area.households[code]),
                _shown(area.persons[code]),
            )
            for code in classes
            if code in area.households
        ),
    )
    by_month = NoticeTable(
        _("Money paid and proof of life by month"),
        (
            _("Month"),
            _("Money paid (yuan)"),
            _("Proof-of-life checks asked"),
            _("Passed or exempt"),
        ),
        tuple(
            (
                month,
                _shown(area.paid[month]),
                _shown(area.pol_required[month]),
                _shown(area.pol_passed[month]),
            )
            for month in computed.months
            if month in area.paid
        ),
    )
    half = NoticeTable(
        _("The half year"),
        (_("Figure"), _("Value")),
        (
            (_("Money paid in the half year (yuan)"), _shown(area.paid_half)),
            (_("Average subsidy per person a month (yuan)"), _shown(area.average_per_person)),
            (_("Households approved"), _shown(area.approvals)),
            (_("Households suspended"), _shown(area.suspensions)),
            (_("Households terminated"), _shown(area.terminations)),
        ),
    )
    return NoticeFigures((by_class, by_month, half))
