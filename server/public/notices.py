"""Printable notices for notice boards (公告栏): A4 PDFs rendered from HTML by WeasyPrint.

Notice 1 lists the cases of a township or village now in public notice (公示), each as
the public page publishes it: the published snapshot's row (case code, generalized
place, class, household-size band, amount band; server.public.snapshot and
server.public.generalize decide them) plus the day its notice ends. Notice 2 prints the
half-year figures of an area from any object shaped as ``HalfYearFigures``.

The text is set in Noto Sans CJK (Debian's fonts-noto-cjk, found through fontconfig);
WeasyPrint embeds the subset of the font it uses, so the PDF prints the same anywhere.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

from flask import current_app
from sqlalchemy import select

from server.cases.models import CaseState, Household
from server.extensions import db
from server.public import queries
from server.public.queries import Filters, Snapshot

logger = logging.getLogger(__name__)

# Where Debian's fonts-noto-cjk puts the font the notices name (docs/public.md).
FONT_FILE = Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")
NOTICE_LEVELS = ("township", "village")


def render_pdf(template: str, **context: Any) -> bytes:
    """The PDF of an HTML template (rendered with the app's Jinja environment)."""
    # Imported here: WeasyPrint loads Pango at import, which only the notices need.
    from PIL import ImageFile
    from weasyprint import CSS, HTML

    # WeasyPrint's import turns Pillow's process-wide truncated-image loading on; the
    # photo checks (server/images.py) need it off, and the notices hold no images.
    ImageFile.LOAD_TRUNCATED_IMAGES = False

    if not FONT_FILE.exists():
        logger.warning(
            "notice PDFs need the Noto Sans CJK font: apt-get install fonts-noto-cjk (%s)",
            FONT_FILE,
        )
    html = current_app.jinja_env.get_template(template).render(**context)
    style = CSS(filename=str(Path(current_app.static_folder or "", "notice.css")))
    pdf: bytes = HTML(string=html).write_pdf(stylesheets=[style])
    return pdf


def area_chain(snapshot: Snapshot, code: str) -> tuple[str, ...]:
    """The area's code, then its parents' codes (village, township, county)."""
    chain = []
    current: str | None = code
    while current and current in snapshot.areas and current not in chain:
        chain.append(current)
        current = snapshot.areas[current].get("parent")
    return tuple(chain)


def notice_area(snapshot: Snapshot | None, code: str) -> dict[str, Any] | None:
    """The township or village ``code`` as the snapshot names it, or None."""
    if snapshot is None:
        return None
    area = snapshot.areas.get(code)
    if area is None or area.get("level") not in NOTICE_LEVELS:
        return None
    return area


@dataclass(frozen=True)
class NoticeRow:
    code: str
    place: str
    class_code: str
    size_band: str | None
    amount: str | None
    notice_ends_on: date | None


def cases_in_notice(snapshot: Snapshot, code: str) -> list[NoticeRow]:
    """Every published case of the township or village ``code`` now in public notice,
    as published (place, class, size band and amount as generalized), in code order,
    with the day its notice ends."""
    level = snapshot.areas[code]["level"]
    filters = Filters(
        township=code if level == "township" else None,
        village=code if level == "village" else None,
        status=CaseState.IN_PUBLIC_NOTICE.value,
    )
    rows = list(queries.every(snapshot, filters))
    # The one value the snapshot does not hold: the end of each listed case's notice
    # (the date the notice board shows anyway), read by the published case codes only.
    ends: dict[str, date | None] = {
        code: ends_on
        for code, ends_on in db.session.execute(
            select(Household.case_code, Household.notice_ends_on).where(
                Household.case_code.in_([row.case_code for row in rows])
            )
        )
    }
    areas = snapshot.areas
    out = []
    for row in rows:
        if row.village_code:
            place = f"{areas[row.township_code]['name']} · {areas[row.village_code]['name']}"
        else:
            place = areas[row.township_code]["name"]
        out.append(
            NoticeRow(
                code=row.case_code,
                place=place,
                class_code=row.class_code or "—",
                size_band=row.size_band,
                amount=row.amount,
                notice_ends_on=ends.get(row.case_code),
            )
        )
    return out


# --- notice 2: the half-year figures ------------------------------------------------------

Cell = str | int | Decimal | None


class FigureTable(Protocol):
    """One table of the half-year figures: a title, column headings, and rows of cells
    (a cell the k rule withholds is None and prints as "not shown")."""

    @property
    def title(self) -> str: ...

    @property
    def columns(self) -> Sequence[str]: ...

    @property
    def rows(self) -> Sequence[Sequence[Cell]]: ...


class HalfYearFigures(Protocol):
    """The half-year figures of one area, as the notice prints them: its tables, in
    order, already translated and with the k rule applied to every cell."""

    @property
    def tables(self) -> Sequence[FigureTable]: ...


class FiguresSource(Protocol):
    """Finds the figures of a township or county for a half year ("2026-H1"), or None
    when there are none. Set as ``app.extensions[FIGURES_SOURCE]``."""

    def __call__(self, area_code: str, half: str) -> HalfYearFigures | None: ...


FIGURES_SOURCE = "dibao.notice_figures"
HALF = re.compile(r"[0-9]{4}-H[12]")


def figures_source() -> FiguresSource | None:
    source: FiguresSource | None = current_app.extensions.get(FIGURES_SOURCE)
    return source
