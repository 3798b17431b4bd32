"""Death-register files for the tests: CSV in the encodings registries use, and xlsx."""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import date, datetime

from openpyxl import Workbook

HEADER = ("身份证号", "姓名", "死亡日期")


def csv_bytes(
    rows: Sequence[Sequence[object]],
    *,
    header: Sequence[str] = HEADER,
    encoding: str = "utf-8",
) -> bytes:
    lines = [",".join(header)] + [",".join(str(c) for c in row) for row in rows]
    return ("\r\n".join(lines) + "\r\n").encode(encoding)


def xlsx_bytes(rows: Sequence[Sequence[object]], *, header: Sequence[str] = HEADER) -> bytes:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(list(header))
    for row in rows:
        sheet.append(list(row))
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def excel_date(day: date) -> datetime:
    return datetime(day.year, day.month, day.day)  # noqa: DTZ001  (Excel dates are naive)
