"""Benchmark: seconds to render the printable notice of the cases in public notice
(server/public/notices.py, WeasyPrint) for an area with N cases (default 50), in Chinese
and in English, and the PDF's size and pages.

The rows are made up (codes, places, bands, end dates: no database); the template, the
fonts and the PDF pipeline are the ones the route /public/notices/<area>.pdf uses. The
first render of a process also loads Pango and the font (reported apart).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/notices.py [--cases 50] [--repeat 5]

This is a script, not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import base64
import io
import secrets
import statistics
import tempfile
import time
from datetime import date, timedelta

from pypdf import PdfReader

from server import create_app
from server.public.notices import NoticeRow, render_pdf
from server.region import region


def rows(n: int) -> list[NoticeRow]:
    return [
        NoticeRow(
            code=f"{index:05d}-ABCDE-{index % 10}",
            place="义勒力特镇 · 红旗村" if index % 3 else "义勒力特镇",
            class_code="ABC"[index % 3],
            size_band=("1", "2", "3-4", "5+")[index % 4],
            amount=f"{300 + 100 * (index % 4)}-{400 + 100 * (index % 4)}",
            notice_ends_on=date(2026, 12, 10) + timedelta(days=index % 7),
        )
        for index in range(n)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    options = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="dibao-notices-")
    app = create_app(
        {
            "DATABASE_URL": f"sqlite:///{folder}/unused.db",
            "SECRET_KEY": "benchmark",
            "TESTING": True,
            "DIBAO_DATA_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
            "DIBAO_INSTANCE_PATH": folder,
        }
    )
    table = rows(options.cases)
    for lang in ("zh_CN", "en"):
        with app.test_request_context(f"/public/notices/152201100.pdf?lang={lang}"):
            context = {
                "rows": table,
                "case_url": "https://dibao.example.cn/public/cases/CASE-CODE",
                "size_labels": {},
                "not_shown": "—",
                "notice_days": region().deadlines.public_notice_days,
                "area": {"level": "township", "name": "义勒力特镇", "parent": "152201"},
                "area_name": "义勒力特镇",
                "office": region().public.office_for(("152201100", "152201")),
                "printed_on": "2026-12-04",
                "lang": lang,
                "chinese": lang == "zh_CN",
                "k": region().public.k,
            }
            seconds = []
            for _ in range(options.repeat + 1):
                started = time.perf_counter()
                pdf = render_pdf("public/notice_cases.html", **context)
                seconds.append(time.perf_counter() - started)
            pages = len(PdfReader(io.BytesIO(pdf)).pages)
            print(
                f"{lang}: {options.cases} cases, first render {seconds[0]:.2f} s, then median "
                f"{statistics.median(seconds[1:]):.2f} s (min {min(seconds[1:]):.2f}, "
                f"max {max(seconds[1:]):.2f}) over {options.repeat}; "
                f"{len(pdf) / 1024:.0f} KiB, {pages} A4 pages"
            )


if __name__ == "__main__":
    main()
