"""Class standards and half-yearly figures on the public page and in the open data
(issue 18): the figures equal independent SQL over a seeded league, every cell goes
through the k rule (with complementary suppression), the files agree with the page,
and a change of standard scheduled by the league shows with its month."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from flask_migrate import upgrade
from hypothesis import given, settings
from hypothesis import strategies as st
from openpyxl import load_workbook
from pypdf import PdfReader
from sqlalchemy import func, select, text, update

from server import clock
from server.areas.models import Area, AreaLevel
from server.auth.models import User
from server.cases.models import Household
from server.extensions import db
from server.monthly import cycle as campaign
from server.payments import class_table
from server.proof_of_life.models import MonthStatus, ProofOfLifeMonth
from server.public import changes
from server.public.figures import (
    ALL,
    Cell,
    Figures,
    Line,
    county_of,
    half_year_figures,
    published_cells,
)
from server.seed import seed_database
from tests.conftest import make_app

HOUSEHOLDS = 160
MONTH = "2026-10"
HALF = "2026-H2"
NOW = datetime(2026, 11, 23, 4, tzinfo=UTC)


SMALL = 2  # households paid in the small township (fewer than k)


def _largest_township() -> tuple[str, list[int]]:
    """The township with the most households, and its villages' ids."""
    village = Area.__table__.alias("village")
    township = Area.__table__.alias("township")
    code = db.session.execute(
        select(township.c.code)
        .select_from(Household)
        .join(village, village.c.id == Household.village_id)
        .join(township, township.c.id == village.c.parent_id)
        .group_by(township.c.code)
        .order_by(func.count().desc(), township.c.code)
        .limit(1)
    ).scalar_one()
    villages = db.session.scalars(
        select(village.c.id)
        .join(township, township.c.id == village.c.parent_id)
        .where(township.c.code == code)
    ).all()
    return code, list(villages)


@pytest.fixture(scope="module")
def league(databases: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    """A seeded league with one closed proof-of-life month (some passed, some missed),
    so there are payment rows."""
    app = make_app(databases.new("public_figures"), tmp_path_factory.mktemp("figures"))
    with app.app_context():
        upgrade(directory=app.extensions["migrate"].directory)
        seed_database(
            households=HOUSEHOLDS,
            seed=5,
            rules=app.config["REGION"],
            today=date(2026, 11, 23),
            hash_passwords=False,
        )
        db.session.commit()
        at = campaign.moments(MONTH)
        campaign.open_month(MONTH, now=at.opens + timedelta(hours=1))
        ids = db.session.scalars(
            select(ProofOfLifeMonth.id).where(ProofOfLifeMonth.month == MONTH)
        ).all()
        db.session.execute(
            update(ProofOfLifeMonth)
            .where(ProofOfLifeMonth.id.in_(ids[::2]))
            .values(status=MonthStatus.PASSED)
        )
        # One township has only SMALL households paid for the month: the others' checks
        # stay pending and are missed at the close (their payment is suspended).
        township, villages = _largest_township()
        asked = db.session.execute(
            select(ProofOfLifeMonth.id, ProofOfLifeMonth.household_id)
            .join(Household, Household.id == ProofOfLifeMonth.household_id)
            .where(ProofOfLifeMonth.month == MONTH, Household.village_id.in_(villages))
            .order_by(ProofOfLifeMonth.household_id)
        ).all()
        paid = sorted({h for _, h in asked})[:SMALL]
        for status, chosen in (
            (MonthStatus.PASSED, [i for i, h in asked if h in paid]),
            (MonthStatus.PENDING, [i for i, h in asked if h not in paid]),
        ):
            db.session.execute(
                update(ProofOfLifeMonth)
                .where(ProofOfLifeMonth.id.in_(chosen))
                .values(status=status)
            )
        db.session.commit()
        app.config["SMALL_TOWNSHIP"] = township
        campaign.close(MONTH, now=at.closes + timedelta(hours=1))
        db.session.commit()
        changes.refresh(force=True)
        db.session.remove()
    yield app
    with app.app_context():
        db.engine.dispose()


def _basis(league: Flask) -> dict[str, Any]:
    """The figures by township and month, from SQL written here (not the module's)."""
    tz = ZoneInfo(league.config["REGION"].timezone)
    start = datetime(2026, 7, 1, tzinfo=tz).astimezone(UTC)
    end = datetime(2027, 1, 1, tzinfo=tz).astimezone(UTC)
    if db.engine.dialect.name == "sqlite":  # UTCDateTime's stored text
        bounds: dict[str, Any] = {
            "start": start.strftime("%Y-%m-%d %H:%M:%S.%f"),
            "end": end.strftime("%Y-%m-%d %H:%M:%S.%f"),
        }
    else:
        bounds = {"start": start, "end": end}
    months = {"first": "2026-07", "last": "2026-12"}
    placed = " JOIN areas v ON v.id = h.village_id JOIN areas t ON t.id = v.parent_id "
    size = (
        "(SELECT count(*) FROM members m WHERE m.household_id = h.id"
        " AND m.alive = true AND m.left_on IS NULL)"
    )
    paid = "p.status IN ('payable', 'restored')"
    out: dict[str, Any] = {
        "households": defaultdict(int),
        "persons": defaultdict(int),
        "fen": defaultdict(int),
        "paid_n": defaultdict(int),
        "person_months": defaultdict(int),
        "events": defaultdict(int),
        "required": defaultdict(int),
        "passed": defaultdict(int),
        "pol_n": defaultdict(int),
    }
    for township, klass, n, people in db.session.execute(
        text(
            f"SELECT t.code, c.code, count(*), sum({size}) FROM households h {placed}"  # noqa: S608
            " JOIN household_classes c ON c.id = h.class_id WHERE EXISTS (SELECT 1 FROM"
            " payment_months p WHERE p.household_id = h.id AND p.month BETWEEN :first"
            f" AND :last AND {paid}) GROUP BY t.code, c.code"
        ),
        months,
    ):
        out["households"][(township, klass)] = n
        out["persons"][(township, klass)] = int(people)
    for township, month, n, fen, people in db.session.execute(
        text(
            f"SELECT t.code, p.month, count(*), sum(p.amount), sum({size})"  # noqa: S608
            f" FROM payment_months p JOIN households h ON h.id = p.household_id {placed}"
            f" WHERE p.month BETWEEN :first AND :last AND {paid} GROUP BY t.code, p.month"
        ),
        months,
    ):
        out["fen"][(township, month)] = int(fen)
        out["paid_n"][(township, month)] = n
        out["person_months"][township] += int(people)
    for township, action, n in db.session.execute(
        text(
            "SELECT t.code, e.action, count(DISTINCT e.household_id) FROM case_events e"  # noqa: S608
            f" JOIN households h ON h.id = e.household_id {placed} WHERE e.at >= :start"
            " AND e.at < :end GROUP BY t.code, e.action"
        ),
        bounds,
    ):
        out["events"][(township, action)] = n
    for township, month, n, n_passed, n_households in db.session.execute(
        text(
            "SELECT t.code, p.month, count(*), sum(CASE WHEN p.status IN ('passed', 'exempt')"  # noqa: S608
            " THEN 1 ELSE 0 END), count(DISTINCT p.household_id) FROM pol_months p"
            f" JOIN households h ON h.id = p.household_id {placed}"
            " WHERE p.month BETWEEN :first AND :last GROUP BY t.code, p.month"
        ),
        months,
    ):
        out["required"][(township, month)] = n
        out["passed"][(township, month)] = int(n_passed)
        out["pol_n"][(township, month)] = n_households
    return out


def _county(league: Flask) -> Figures:
    code = db.session.scalar(select(Area.code).where(Area.level == AreaLevel.COUNTY))
    assert code is not None
    return half_year_figures(code, HALF)


def _check(c: Cell, expected: int | Decimal, basis: int, k: int) -> int | Decimal | None:
    """A cell shows the expected value unless suppressed; fewer than k households
    behind it (but some) always suppresses it."""
    if 0 < basis < k:
        assert c.suppressed == "k", (c, expected, basis)
    if c.suppressed is None:
        assert c.value == expected
    else:
        assert c.value is None
    return c.value


def test_figures_equal_direct_sql(league: Flask) -> None:
    with league.app_context():
        f = _county(league)
        sql = _basis(league)
    k = f.k
    classes = f.classes
    seen_values = 0
    for area in f.areas():
        codes = [t.code for t in f.townships] if area.level == "county" else [area.code]

        def total(table: str, key: str, codes: list[str] = codes) -> int:
            return sum(sql[table][(t, key)] for t in codes)

        all_households = sum(total("households", c) for c in classes)
        for c in classes:
            n = total("households", c)
            _check(area.households[c], n, n, k)
            _check(area.persons[c], total("persons", c), n, k)
        _check(area.households[ALL], all_households, all_households, k)
        _check(area.persons[ALL], sum(total("persons", c) for c in classes), all_households, k)
        half_fen = sum(total("fen", m) for m in f.months)
        for m in f.months:
            value = _check(area.paid[m], Decimal(total("fen", m)) / 100, total("paid_n", m), k)
            seen_values += value is not None and value > 0
            _check(area.pol_required[m], total("required", m), total("pol_n", m), k)
            _check(area.pol_passed[m], total("passed", m), total("pol_n", m), k)
        _check(area.paid_half, Decimal(half_fen) / 100, all_households, k)
        people = sum(sql["person_months"][t] for t in codes)
        if area.paid_half.value is not None and people:
            expected = (Decimal(half_fen) / 100 / people).quantize(Decimal("0.01"))
            assert area.average_per_person.value == expected
        else:
            assert area.average_per_person.value is None
        for action, c in (
            ("approve", area.approvals),
            ("suspend", area.suspensions),
            ("terminate", area.terminations),
        ):
            _check(c, total("events", action), total("events", action), k)
    # The seeded league has money, approvals and proof of life in the half year.
    assert seen_values > 0
    assert f.county.approvals.value and f.county.pol_required[MONTH].value
    assert f.county.households[ALL].value


def test_a_small_township_is_suppressed_and_the_county_does_not_reveal_it(
    league: Flask,
) -> None:
    with league.app_context():
        f = _county(league)
        sql = _basis(league)
    k = f.k
    small = [
        t for t in f.townships if 0 < sum(sql["households"][(t.code, c)] for c in f.classes) < k
    ]
    assert league.config["SMALL_TOWNSHIP"] in {t.code for t in small}
    for township in small:
        assert township.households[ALL].suppressed == "k"
        assert township.persons[ALL].value is None
        assert township.paid_half.value is None
        assert township.average_per_person.value is None
    # Every column of townships: with the county's cell shown, the suppressed cells
    # add up to no household or to at least k (the subtraction reveals no small group).
    columns: list[tuple[str, Any]] = [
        *((f"households {c}", lambda a, c=c: a.households[c]) for c in (*f.classes, ALL)),
        *((f"paid {m}", lambda a, m=m: a.paid[m]) for m in f.months),
        ("paid half", lambda a: a.paid_half),
        ("approvals", lambda a: a.approvals),
        ("suspensions", lambda a: a.suspensions),
        ("terminations", lambda a: a.terminations),
        *((f"pol {m}", lambda a, m=m: a.pol_required[m]) for m in f.months),
    ]
    basis = {
        "households": lambda t, key: (
            sum(sql["households"][(t, c)] for c in f.classes)
            if key == ALL
            else sql["households"][(t, key)]
        ),
    }
    for name, get in columns:
        if get(f.county).value is None:
            continue
        hidden = [t for t in f.townships if get(t).value is None]
        if not hidden:
            continue
        assert len(hidden) >= 2, name
        if name.startswith("households"):
            key = name.split()[1]
            assert sum(basis["households"](t.code, key) for t in hidden) >= k, name


@given(
    st.lists(st.lists(st.integers(0, 12), min_size=3, max_size=3), min_size=1, max_size=6),
    st.integers(2, 6),
    st.booleans(),
)
@settings(max_examples=300, deadline=None)
def test_published_cells_leave_no_small_group_to_subtraction(
    table: list[list[int]], k: int, months: bool
) -> None:
    """Property: in any table of townships (rows) and classes or months (columns) with
    its totals, every cell of fewer than k households is suppressed, and every line whose
    total is shown hides cells of no household or of at least k together (months: one
    of the hidden months has at least k, since the same households recur)."""
    rows = [f"t{i}" for i in range(len(table))]
    columns = ["a", "b", "c"]
    basis = {(r, c): table[i][j] for i, r in enumerate(rows) for j, c in enumerate(columns)}
    for i, r in enumerate(rows):
        # Months: the half year's households are at least the largest month's.
        basis[(r, "all")] = max(table[i]) if months else sum(table[i])
    for c in [*columns, "all"]:
        basis[("county", c)] = sum(basis[(r, c)] for r in rows)
    lines = [Line([(r, c) for r in rows], ("county", c)) for c in [*columns, "all"]]
    lines += [
        Line([(r, c) for c in columns], (r, "all"), disjoint=not months) for r in [*rows, "county"]
    ]
    hidden = published_cells(basis, k, lines)
    for cell, n in basis.items():
        if 0 < n < k:
            assert hidden[cell] == "k"
    for line in lines:
        if line.total in hidden:
            continue
        counts = [basis[c] for c in line.cells if c in hidden]
        group = sum(counts) if line.disjoint else max(counts, default=0)
        assert not counts or group >= k


def _get(league: Flask, url: str) -> Any:
    answer = league.test_client().get(url)
    assert answer.status_code == 200, (url, answer.status_code)
    return answer


def test_page_csv_xlsx_and_json_agree(league: Flask) -> None:
    with league.app_context():
        f = _county(league)
    page = _get(league, f"/public/figures/{HALF}").get_data(as_text=True)
    assert "半年" in page  # Chinese first
    assert f.county.name in page
    english = _get(league, f"/public/figures/{HALF}?lang=en").get_data(as_text=True)
    assert "Half-yearly figures" in english
    rows = list(
        csv.reader(
            io.StringIO(
                _get(league, f"/public/figures/{HALF}.csv").get_data(as_text=True).lstrip("\ufeff")
            )
        )
    )
    header, body = rows[0], rows[1:]
    book = load_workbook(io.BytesIO(_get(league, f"/public/figures/{HALF}.xlsx").data))
    sheet = [
        ["" if v is None else str(v) for v in row] for row in book[HALF].iter_rows(values_only=True)
    ]
    assert sheet[0] == header
    assert sheet[1:] == body
    document = _get(league, f"/api/v1/public/figures/{HALF}").get_json()
    assert document["half"] == HALF and document["k"] == f.k
    areas = {a["code"]: a for county in document["counties"] for a in county["areas"]}
    cells = {(r[2], r[5], r[6]): r[7] for r in body}
    for area in f.areas():
        doc = areas[area.code]
        assert area.name in page
        for c in f.classes:
            shown = area.households[c]
            assert cells[(area.code, "households", c)] == (
                "" if shown.value is None else shown.text
            )
            assert doc["households"][c] == shown.value
        for m in f.months:
            paid = area.paid[m]
            assert cells[(area.code, "paid", m)] == ("" if paid.value is None else paid.text)
            assert doc["paid"][m] == (None if paid.value is None else paid.text)
            pol = next(p for p in doc["proof_of_life"] if p["month"] == m)
            assert pol["required"] == area.pol_required[m].value
        assert doc["approvals"] == area.approvals.value
        assert cells[(area.code, "paid", "half_year")] == (
            "" if area.paid_half.value is None else area.paid_half.text
        )
    # The page shows the county's half-year total as the files do.
    assert f.county.paid_half.text in page
    assert _get(league, "/public/figures").get_data(as_text=True).count(HALF) >= 1
    client = league.test_client()
    assert client.get("/public/figures/2026-H3").status_code == 404
    assert client.get("/public/figures/2019-H1").status_code == 404
    assert client.get("/api/v1/public/figures/nonsense").status_code == 404


def test_standards_show_a_scheduled_change_with_its_month(league: Flask) -> None:
    with league.app_context():
        admin = db.session.scalar(select(User).where(User.username == "admin"))
        assert admin is not None
        month = class_table.first_open_month(clock.utcnow())
        later = f"{int(month[:4]) + 1}{month[4:]}"
        class_table.schedule_change(
            admin,
            class_code="A",
            effective_month=later,
            monthly_standard="987.00",
            fixed_monthly="654.00",
            reason="raise decided by the league's meeting",
        )
        db.session.commit()
        changes.refresh(force=True)
        db.session.remove()
    page = _get(league, "/public/standards").get_data(as_text=True)
    assert later in page and "987.00" in page
    assert "raise decided" not in page and "admin" not in page
    english = _get(league, "/public/standards?lang=en").get_data(as_text=True)
    assert f"from {later}" in english
    index = _get(league, "/public").get_data(as_text=True)
    assert "987.00" in index and later in index
    document = _get(league, "/api/v1/public/standards").get_json()
    assert document["allowance_method"] == league.config["REGION"].allowance_method
    assert {"class": "A", "effective_month": later}.items() <= document["scheduled"][0].items()
    assert any(v["effective_month"] == later for v in document["history"])
    assert all(v["effective_month"] <= document["month"] for v in document["current"])
    assert "raise decided" not in str(document)
    rows = list(
        csv.DictReader(
            io.StringIO(
                _get(league, "/public/standards.csv").get_data(as_text=True).lstrip("\ufeff")
            )
        )
    )
    scheduled = [r for r in rows if r["status"] == "scheduled"]
    assert [(r["class"], r["effective_month"], r["monthly_standard"]) for r in scheduled] == [
        ("A", later, "987.00")
    ]
    assert {r["class"] for r in rows if r["status"] == "current"} == {
        c.code for c in league.config["REGION"].classes
    }


def test_a_township_or_village_finds_its_county_figures(league: Flask) -> None:
    """What a notice for a township or village prints: its township's published row."""
    with league.app_context():
        f = _county(league)
        township = f.townships[0]
        village = db.session.scalar(
            select(Area.code).where(
                Area.level == AreaLevel.VILLAGE, Area.parent.has(Area.code == township.code)
            )
        )
        assert village is not None
        for code in (f.county.code, township.code, village):
            assert county_of(code) == f.county.code
        again = half_year_figures(county_of(village), HALF)
        assert again.area(township.code) == township
        with pytest.raises(LookupError):
            county_of("no-such-area")
        with pytest.raises(ValueError, match="half year"):
            half_year_figures(f.county.code, "2026-H3")


def test_the_figures_notice_prints_the_published_cells(league: Flask) -> None:
    """The notice-board PDF of a township's half year prints the cells of the figures page:
    the shown ones with their values, the withheld ones as "not shown" (a small
    township's money is never on paper either)."""
    with league.app_context():
        f = _county(league)
    small = league.config["SMALL_TOWNSHIP"]
    shown = next(t for t in f.townships if t.code != small and t.paid_half.suppressed is None)
    body = _get(league, f"/public/notices/{shown.code}/figures/{HALF}.pdf")
    assert body.status_code == 200 and body.mimetype == "application/pdf"
    text = PdfReader(io.BytesIO(body.data)).pages[0].extract_text()
    for page in PdfReader(io.BytesIO(body.data)).pages[1:]:
        text += page.extract_text()
    assert shown.name in text and HALF in text
    assert f"{shown.paid_half.value}" in text
    assert f"{shown.households[ALL].value}" in text
    hidden = _get(league, f"/public/notices/{small}/figures/{HALF}.pdf")
    assert hidden.status_code == 200
    hidden_text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(hidden.data)).pages)
    assert "不显示" in hidden_text
    small_figures = f.area(small)
    assert small_figures.paid_half.value is None and small_figures.paid_half.suppressed
    county = _get(league, f"/public/notices/{f.county.code}/figures/{HALF}.pdf")
    assert county.status_code == 200
    missing = league.test_client().get(f"/public/notices/{shown.code}/figures/2019-H1.pdf")
    assert missing.status_code == 404
