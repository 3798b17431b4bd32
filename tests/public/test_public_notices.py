"""Printable notices: the cases in public notice of a township or village, and the
half-year figures, as A4 PDFs read back as text (pypdf)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image
from pypdf import PdfReader
from sqlalchemy import select, update

from server.cases.models import CaseState, Household, Member
from server.extensions import db
from server.images import ImageRejected, decode, open_image
from server.public import changes, notices
from server.public.rules import Office, PublicConfigError, parse_public_rules
from tests import factories
from tests.conftest import make_app

ENDS = date(2026, 12, 10)


def pdf_text(body: bytes) -> str:
    reader = PdfReader(io.BytesIO(body))
    return "\n".join(page.extract_text() for page in reader.pages)


def fonts(body: bytes) -> dict[str, Any]:
    """Every font of the PDF by its base name, with its descriptor's embedded file."""
    found = {}
    for page in PdfReader(io.BytesIO(body)).pages:
        for font in page["/Resources"]["/Font"].values():
            font = font.get_object()
            descendants = font.get("/DescendantFonts")
            inner = descendants[0].get_object() if descendants else font
            descriptor = inner["/FontDescriptor"].get_object()
            found[str(font["/BaseFont"])] = next(
                (
                    descriptor[k]
                    for k in ("/FontFile", "/FontFile2", "/FontFile3")
                    if k in descriptor
                ),
                None,
            )
    return found


def in_notice(n: int, **kwargs: Any) -> list[str]:
    made = [factories.make_household(state=CaseState.IN_PUBLIC_NOTICE, **kwargs) for _ in range(n)]
    db.session.flush()
    db.session.execute(
        update(Household).where(Household.id.in_([h.id for h in made])).values(notice_ends_on=ENDS)
    )
    db.session.commit()
    return [h.case_code for h in made]


def secrets() -> set[str]:
    found: set[str] = set()
    for name, id_number, phone in db.session.execute(
        select(Member.name, Member.id_number, Member.phone)
    ):
        found.update({name, id_number})
        if phone:
            found.add(phone)
    found.update(db.session.scalars(select(Household.address)))
    return found


def test_the_notice_lists_the_cases_in_notice_as_published_and_nothing_more(
    app: Flask, client: FlaskClient
) -> None:
    area = factories.areas()
    township, village_a, village_a2 = (
        area.township_a.code,
        area.village_a.code,
        area.village_a2.code,
    )
    shown = in_notice(5, village=area.village_a)
    # Class B: three in notice at 红旗村, two applied at 东升嘎查; fewer than k at each
    # village, five at the township: shown for the township.
    small = in_notice(3, village=area.village_a, class_code="B")
    others = [factories.make_household(village=area.village_a2, class_code="B") for _ in range(2)]
    others += [
        factories.make_household(village=area.village_a, state=CaseState.APPROVED) for _ in range(5)
    ]
    db.session.commit()
    other_codes = [h.case_code for h in others]
    changes.refresh(force=True)

    answer = client.get(f"/public/notices/{township}.pdf")
    assert answer.status_code == 200 and answer.mimetype == "application/pdf"
    body = answer.get_data()
    text = pdf_text(body)
    assert "低保申请公示" in text and "义勒力特镇" in text and "红旗村" in text
    assert "0482-8888888" in text and "如何提出异议" in text
    listed = {code for code in shown + small if code in text}
    assert listed == set(shown + small)
    assert not any(code in text for code in other_codes)
    assert ENDS.isoformat() in text
    assert "http://127.0.0.1:5000/public/cases/" + shown[0] in text.replace("\n", "")
    assert not [s for s in secrets() if s in text]
    # Noto Sans CJK, embedded (a font file in the descriptor), is what the text is set in.
    embedded = fonts(body)
    assert any("Noto-Sans-CJK-SC" in name for name in embedded), embedded
    assert all(file is not None for file in embedded.values()), embedded

    # Cached per snapshot, language and day: the same bytes again, or 304 on the ETag.
    again = client.get(f"/public/notices/{township}.pdf")
    assert again.get_data() == body and again.headers["ETag"] == answer.headers["ETag"]
    unchanged = client.get(
        f"/public/notices/{township}.pdf", headers={"If-None-Match": answer.headers["ETag"]}
    )
    assert unchanged.status_code == 304 and "Set-Cookie" not in answer.headers

    # The public page of the township and of a village links to its notice.
    page = client.get(f"/public?township={township}").get_data(as_text=True)
    assert f'href="/public/notices/{township}.pdf?lang=zh_CN"' in page and "可打印的公示" in page
    page = client.get(f"/public?village={village_a}&lang=en").get_data(as_text=True)
    assert f'href="/public/notices/{village_a}.pdf?lang=en"' in page

    # A village's notice: only the cases shown at the village (the k rule moved the
    # three of class B to the township).
    village_text = pdf_text(client.get(f"/public/notices/{village_a2}.pdf").get_data())
    assert not any(code in village_text for code in shown + small)
    assert "本地区今日没有正在公示的申请" in village_text
    village_text = pdf_text(client.get(f"/public/notices/{village_a}.pdf").get_data())
    assert {code for code in shown + small if code in village_text} == set(shown)

    english = " ".join(
        pdf_text(client.get(f"/public/notices/{township}.pdf?lang=en").get_data()).split()
    )
    assert "Public notice of subsistence allowance applications" in english
    assert "How to object" in english and shown[0] in english


def test_an_unknown_area_is_404(app: Flask, client: FlaskClient) -> None:
    in_notice(5)
    changes.refresh(force=True)
    for url in (
        "/public/notices/999999.pdf",
        f"/public/notices/{factories.areas().county.code}.pdf",  # a county: no board list
        f"/public/notices/{factories.areas().township_a.code}/figures/2026-H1.pdf",
        f"/public/notices/{factories.areas().township_a.code}/figures/2026-H3.pdf",
    ):
        assert client.get(url).status_code == 404, url


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[notices.Cell]]


@dataclass
class Figures:
    tables: list[Table]


def test_the_figures_notice_prints_any_figures_object(app: Flask, client: FlaskClient) -> None:
    in_notice(5)
    changes.refresh(force=True)
    township = factories.areas().township_a.code
    asked: list[tuple[str, str]] = []

    def source(area_code: str, half: str) -> Figures | None:
        asked.append((area_code, half))
        if half != "2026-H2":
            return None
        table = Table(
            "按类别统计",
            ["类别", "户数", "人数", "月人均补助（元）"],
            [["A", 12, 20, Decimal("410.50")], ["B", None, None, None]],
        )
        return Figures([table])

    # What the merger connects: any callable of this shape (typed as the protocol).
    typed: notices.FiguresSource = source
    registered = app.extensions[notices.FIGURES_SOURCE]  # the public figures (the app's)
    app.extensions[notices.FIGURES_SOURCE] = typed
    try:
        answer = client.get(f"/public/notices/{township}/figures/2026-H2.pdf")
        assert answer.status_code == 200
        text = pdf_text(answer.get_data())
        assert "低保半年统计" in text and "按类别统计" in text and "410.50" in text
        assert "不显示" in text and "2026-H2" in text and "0482-8888888" in text
        assert client.get(f"/public/notices/{township}/figures/2026-H1.pdf").status_code == 404
        assert asked == [(township, "2026-H2"), (township, "2026-H1")]
    finally:
        app.extensions[notices.FIGURES_SOURCE] = registered


def test_the_office_comes_from_the_region_file_nearest_area_first() -> None:
    rules = parse_public_rules(
        {
            "offices": {
                "default": {"name": "民政局", "address": "大街1号", "hotline": "0482-1"},
                "152201100": {"name": "镇民政所", "address": "镇上2号", "hotline": "0482-2"},
            }
        }
    )
    village = ("152201100201", "152201100", "152201")
    assert rules.office_for(village) == Office("镇民政所", "镇上2号", "0482-2")
    assert rules.office_for(("152201101201", "152201101", "152201")) == Office(
        "民政局", "大街1号", "0482-1"
    )
    assert parse_public_rules({}).office_for(village) is None
    for bad, message in (
        ({"offices": {"default": {"name": "x", "address": "y"}}}, "default.hotline"),
        ({"offices": {"default": {"name": "x", "address": "y", "hotline": " "}}}, "hotline"),
        (
            {"offices": {"default": {"name": "x", "address": "y", "hotline": "1", "fax": "2"}}},
            "fax",
        ),
        ({"offices": ["x"]}, "public.offices must be a table"),
    ):
        with pytest.raises(PublicConfigError, match=message):
            parse_public_rules(bad)


def test_notices_have_their_own_rate_limit_besides_the_public_one(
    databases: Any, tmp_path: Path
) -> None:
    limited = make_app(
        databases.new("notice_limits"),
        tmp_path,
        RATELIMIT_ENABLED=True,
        DIBAO_PUBLIC_NOTICE_RATE_LIMIT="2 per minute",
    )
    from flask_migrate import upgrade

    with limited.app_context():
        upgrade(directory=limited.extensions["migrate"].directory)
    client = limited.test_client()
    # No snapshot yet: every notice is a 404, and still counted.
    statuses = [client.get("/public/notices/152201100.pdf").status_code for _ in range(3)]
    assert statuses == [404, 404, 429]
    assert client.get("/public/notices/152201100/figures/2026-H1.pdf").status_code == 429
    # A made-up query string is the same notice: no way around the limit or the cache.
    assert client.get("/public/notices/152201100.pdf?x=1").status_code == 429
    assert client.get("/api/v1/public/stats").status_code == 200


def test_notices_count_against_the_public_limit_too(databases: Any, tmp_path: Path) -> None:
    limited = make_app(
        databases.new("notice_public_limits"),
        tmp_path,
        RATELIMIT_ENABLED=True,
        DIBAO_PUBLIC_RATE_LIMIT="2 per minute",
        DIBAO_PUBLIC_NOTICE_RATE_LIMIT="100 per minute",
    )
    from flask_migrate import upgrade

    with limited.app_context():
        upgrade(directory=limited.extensions["migrate"].directory)
    client = limited.test_client()
    assert client.get("/api/v1/public/stats").status_code == 200
    assert client.get("/public/notices/152201100.pdf").status_code == 404
    assert client.get("/public/notices/152201101.pdf").status_code == 429


def test_rendering_a_notice_leaves_cut_off_photos_rejected(app: Flask, client: FlaskClient) -> None:
    """WeasyPrint's import turns on Pillow's process-wide loading of truncated images;
    after a notice is rendered a cut-off photo must still be refused as corrupt."""
    in_notice(1)
    changes.refresh(force=True)
    township = factories.areas().township_a.code
    assert client.get(f"/public/notices/{township}.pdf").status_code == 200
    buffer = io.BytesIO()
    pixels = np.random.default_rng(1).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format="PNG")
    cut = buffer.getvalue()[: len(buffer.getvalue()) * 2 // 3]
    with pytest.raises(ImageRejected), open_image(cut, 10_000_000) as (fmt, img):
        decode(img, fmt, 10_000_000)
