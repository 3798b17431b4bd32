"""Half-yearly figures per county and township (issue 18): households and persons by
class, the average subsidy per person, money paid per month and for the half year, new
approvals, suspensions and terminations, proof-of-life completion per month.

Computed from the case tables by SQL aggregates grouped by township (one query per
kind of figure); a county's figures are the sums of its townships' aggregates. Every
cell then goes through the k rule (``published_cells``): a cell is suppressed when
fewer than k households (but at least one) are behind it, and further cells are
suppressed so that no suppressed cell can be recovered from a total minus the cells
shown (complementary suppression). docs/public.md, "Half-yearly figures".

The printable notices call ``half_year_figures(county_code, half)``; only a cell's
``value`` may be shown (None: suppressed, or nothing to show).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal, NamedTuple
from zoneinfo import ZoneInfo

from sqlalchemy import BigInteger, Select, case, cast, distinct, func, select

from server.areas.models import Area, AreaLevel
from server.cases.models import CaseEvent, Household, HouseholdClass, Member
from server.extensions import db
from server.months import current_month, month_text
from server.payments.models import PaymentMonth, PaymentStatus
from server.proof_of_life.models import MonthStatus, ProofOfLifeMonth
from server.region import region

HALF = re.compile(r"^([0-9]{4})-H([12])$")
ALL = "all"  # the column of all classes together
EVENTS = {"approve": "approvals", "suspend": "suspensions", "terminate": "terminations"}
PAID = (PaymentStatus.PAYABLE, PaymentStatus.RESTORED)
PASSED = (MonthStatus.PASSED, MonthStatus.EXEMPT)

Reason = Literal["k", "complementary"]


@dataclass(frozen=True)
class Cell:
    """One published figure. ``value`` is None when ``suppressed`` (the reason: "k",
    fewer than k households behind it; "complementary", suppressed so that another
    suppressed cell cannot be found by subtraction), or for an average of nothing."""

    value: int | Decimal | None
    suppressed: Reason | None = None

    @property
    def text(self) -> str:
        """The value as written on a page, in a CSV or on a notice ("—": not shown)."""
        if self.value is None:
            return "—"
        if isinstance(self.value, Decimal):
            return f"{self.value:.2f}"
        return str(self.value)


@dataclass(frozen=True)
class AreaFigures:
    """One county's or township's figures for a half year. Money is in yuan."""

    code: str
    name: str
    level: Literal["county", "township"]
    households: dict[str, Cell]  # households paid in the half year, by class code and ALL
    persons: dict[str, Cell]  # their living members, by class code and ALL
    average_per_person: Cell  # money paid / person-months paid: yuan per person a month
    paid: dict[str, Cell]  # money paid, by month "YYYY-MM"
    paid_half: Cell  # money paid in the half year
    approvals: Cell  # households approved in the half year
    suspensions: Cell  # households suspended in the half year
    terminations: Cell  # households terminated in the half year
    pol_required: dict[str, Cell]  # proof-of-life checks asked, by month
    pol_passed: dict[str, Cell]  # of those, passed or exempt, by month

    def pol_rate(self, month: str) -> int | None:
        """Passed or exempt as a whole percentage of those asked (None: not shown)."""
        passed, required = self.pol_passed[month].value, self.pol_required[month].value
        if passed is None or not required:
            return None
        return round(100 * int(passed) / int(required))

    def cells(self) -> Iterator[tuple[str, str, Cell]]:
        """(figure, key, cell) for every cell, in the order of the CSV and the workbook."""
        for code, c in self.households.items():
            yield "households", code, c
        for code, c in self.persons.items():
            yield "persons", code, c
        yield "average_per_person", "", self.average_per_person
        for month, c in self.paid.items():
            yield "paid", month, c
        yield "paid", "half_year", self.paid_half
        yield "approvals", "", self.approvals
        yield "suspensions", "", self.suspensions
        yield "terminations", "", self.terminations
        for month, c in self.pol_required.items():
            yield "pol_required", month, c
        for month, c in self.pol_passed.items():
            yield "pol_passed", month, c


@dataclass(frozen=True)
class Figures:
    """A county's half-year figures: the county's own row and one per township."""

    half: str  # "2026-H2"
    months: tuple[str, ...]  # the half year's six months
    classes: tuple[str, ...]  # class codes, in order
    k: int
    county: AreaFigures
    townships: tuple[AreaFigures, ...]

    def areas(self) -> tuple[AreaFigures, ...]:
        return (self.county, *self.townships)

    def area(self, code: str) -> AreaFigures:
        """The county's or one of its townships' figures (KeyError: not among them)."""
        for one in self.areas():
            if one.code == code:
                return one
        raise KeyError(code)


# --- half years ------------------------------------------------------------------------


def parse_half(text: str) -> tuple[int, int]:
    """("2026-H2") -> (2026, 2); ValueError for anything else."""
    match = HALF.match(text or "")
    if not match:
        raise ValueError(f"{text!r} is not a half year like 2026-H1")
    return int(match.group(1)), int(match.group(2))


def half_months(half: str) -> tuple[str, ...]:
    year, number = parse_half(half)
    first = 1 if number == 1 else 7
    return tuple(month_text(year, m) for m in range(first, first + 6))


def half_of(month: str) -> str:
    return f"{month[:4]}-H{1 if int(month[5:7]) <= 6 else 2}"


def _bounds(half: str, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The half year's first instant and the next half's, in UTC (local midnights)."""
    year, number = parse_half(half)
    start = datetime(year, 1 if number == 1 else 7, 1, tzinfo=zone)
    end = datetime(year + (number == 2), 7 if number == 1 else 1, 1, tzinfo=zone)
    return start.astimezone(UTC), end.astimezone(UTC)


def halves_with_data(now: datetime) -> list[str]:
    """The half years from the first with payment or proof-of-life months up to the
    last with them (not after the current one), newest first. Four index look-ups."""
    this = half_of(current_month(now, region().timezone))
    ends = [
        db.session.scalar(select(func.min(PaymentMonth.month))),
        db.session.scalar(select(func.max(PaymentMonth.month))),
        db.session.scalar(select(func.min(ProofOfLifeMonth.month))),
        db.session.scalar(select(func.max(ProofOfLifeMonth.month))),
    ]
    months = [m for m in ends if m]
    if not months:
        return []
    first, last = half_of(min(months)), min(half_of(max(months)), this)
    halves = []
    year, number = parse_half(first)
    while (half := f"{year}-H{number}") <= last:
        halves.append(half)
        year, number = (year, 2) if number == 1 else (year + 1, 1)
    return halves[::-1]


def counties() -> list[tuple[str, str]]:
    """(code, name) of every county, by code."""
    rows = db.session.execute(
        select(Area.code, Area.name).where(Area.level == AreaLevel.COUNTY).order_by(Area.code)
    ).all()
    return [(code, name) for code, name in rows]


# --- the k rule ------------------------------------------------------------------------


class Line(NamedTuple):
    """Cells and the total they add up to. ``disjoint``: no household is behind two of
    the cells (townships, classes); months are not (a household is paid every month),
    so only the largest of their counts is sure to be distinct households."""

    cells: list[tuple[str, str]]
    total: tuple[str, str]
    disjoint: bool = True


def published_cells(
    basis: dict[tuple[str, str], int], k: int, lines: Iterable[Line]
) -> dict[tuple[str, str], Reason]:
    """Which cells of a table are suppressed, and why.

    ``basis``: each cell's number of households behind it. A cell with at least one and
    fewer than ``k`` is suppressed ("k"). ``lines``: cells and their total (a column of
    townships and its county cell; a row of classes or months and its total). While a
    line's total is shown and its suppressed cells have fewer than ``k`` households
    together (the total minus the shown cells would reveal them; for cells that are not
    disjoint, the largest count stands for them), another cell is suppressed
    ("complementary"): the line's smallest shown non-empty cell (not disjoint: the
    smallest with at least k), with none left, the total. Repeated until no line
    changes (a cell suppressed for one line may open another)."""
    suppressed: dict[tuple[str, str], Reason] = {
        cell: "k" for cell, n in basis.items() if 0 < n < k
    }
    lines = list(lines)
    changed = True
    while changed:
        changed = False
        for line in lines:
            if line.total in suppressed:
                continue
            hidden = [basis.get(c, 0) for c in line.cells if c in suppressed]
            behind = sum(hidden) if line.disjoint else max(hidden, default=0)
            if not hidden or behind >= k:
                continue
            least = 1 if line.disjoint else k
            shown = [c for c in line.cells if c not in suppressed and basis.get(c, 0) >= least]
            pick = min(shown, key=lambda c: (basis[c], c)) if shown else line.total
            suppressed[pick] = "complementary"
            changed = True
    return suppressed


def _table_lines(
    rows: list[str],
    total_row: str,
    columns: list[str],
    total_column: str | None,
    *,
    disjoint_columns: bool = True,
) -> list[Line]:
    """The lines of a table of townships (rows) and their county (``total_row``)."""
    every = [*columns, total_column] if total_column else columns
    lines = [Line([(r, c) for r in rows], (total_row, c)) for c in every]
    if total_column:
        lines += [
            Line([(r, c) for c in columns], (r, total_column), disjoint_columns)
            for r in [*rows, total_row]
        ]
    return lines


# --- the aggregates --------------------------------------------------------------------


def _places(county_code: str) -> tuple[Area, list[tuple[int, str, str]]]:
    county = db.session.scalar(
        select(Area).where(Area.code == county_code, Area.level == AreaLevel.COUNTY)
    )
    if county is None:
        raise LookupError(f"no county {county_code!r}")
    townships = db.session.execute(
        select(Area.id, Area.code, Area.name)
        .where(Area.parent_id == county.id, Area.level == AreaLevel.TOWNSHIP)
        .order_by(Area.code)
    ).all()
    return county, [(i, code, name) for i, code, name in townships]


Counts = dict[tuple[str, str], int]  # (area code, column) -> number
Hidden = dict[tuple[str, str], Reason]


@dataclass(frozen=True)
class _Scope:
    """A county's townships and a half year's months, for the aggregate queries."""

    total: str  # the county's code: the row of the county's sums
    codes: list[str]  # its townships' codes
    township_ids: list[int]
    months: tuple[str, ...]

    def placed(self, query: Select[Any]) -> Select[Any]:
        """``query`` (over Household) grouped by township: its first column."""
        return (
            query.join(_VILLAGE, _VILLAGE.c.id == Household.village_id)
            .join(_TOWNSHIP, _TOWNSHIP.c.id == _VILLAGE.c.parent_id)
            .where(_TOWNSHIP.c.id.in_(self.township_ids))
        )

    def add(self, table: Counts, code: str, column: str, value: int) -> None:
        """Count ``value`` for the township and for the county."""
        for row in (code, self.total):
            table[(row, column)] += value


_TOWNSHIP = Area.__table__.alias("township")
_VILLAGE = Area.__table__.alias("village")


def _paid_households(scope: _Scope) -> Select[Any]:
    """The ids of the households paid in the half year (a subquery)."""
    return select(PaymentMonth.household_id).where(
        PaymentMonth.month.in_(scope.months), PaymentMonth.status.in_(PAID)
    )


def _sizes(scope: _Scope) -> Any:
    """Living members per household paid in the half year (a subquery)."""
    return (
        select(Member.household_id, func.count().label("n"))
        .where(Member.alive.is_(True), Member.left_on.is_(None))
        .where(Member.household_id.in_(_paid_households(scope)))
        .group_by(Member.household_id)
        .subquery()
    )


def _class_counts(scope: _Scope) -> tuple[Counts, Counts]:
    """Households paid in the half year and their living members, by class and ALL."""
    sizes = _sizes(scope)
    paid_rows = _paid_households(scope)
    households: Counts = defaultdict(int)
    persons: Counts = defaultdict(int)
    for code, class_code, n, people in db.session.execute(
        scope.placed(
            select(
                _TOWNSHIP.c.code,
                HouseholdClass.code,
                func.count(),
                func.sum(func.coalesce(sizes.c.n, 0)),
            )
            .select_from(Household)
            .join(HouseholdClass, HouseholdClass.id == Household.class_id)
            .outerjoin(sizes, sizes.c.household_id == Household.id)
            .where(Household.id.in_(paid_rows))
        ).group_by(_TOWNSHIP.c.code, HouseholdClass.code)
    ):
        for column in (class_code, ALL):
            scope.add(households, code, column, int(n))
            scope.add(persons, code, column, int(people or 0))
    return households, persons


def _money(scope: _Scope) -> tuple[Counts, Counts, Counts]:
    """Money paid (whole fen, summed in SQL) per month and "half"; households paid per
    month; person-months paid (column "half")."""
    sizes = _sizes(scope)
    fen: Counts = defaultdict(int)
    paid_n: Counts = defaultdict(int)
    person_months: Counts = defaultdict(int)
    for code, month, n, cents, people in db.session.execute(
        scope.placed(
            select(
                _TOWNSHIP.c.code,
                PaymentMonth.month,
                func.count(),
                func.sum(cast(PaymentMonth.amount, BigInteger)),
                func.sum(func.coalesce(sizes.c.n, 0)),
            )
            .select_from(PaymentMonth)
            .join(Household, Household.id == PaymentMonth.household_id)
            .outerjoin(sizes, sizes.c.household_id == Household.id)
            .where(PaymentMonth.month.in_(scope.months), PaymentMonth.status.in_(PAID))
        ).group_by(_TOWNSHIP.c.code, PaymentMonth.month)
    ):
        scope.add(fen, code, month, int(cents or 0))
        scope.add(fen, code, "half", int(cents or 0))
        scope.add(paid_n, code, month, int(n))
        scope.add(person_months, code, "half", int(people or 0))
    return fen, paid_n, person_months


def _events(scope: _Scope, half: str) -> Counts:
    """Households approved, suspended, terminated in the half year (local time)."""
    start, end = _bounds(half, ZoneInfo(region().timezone))
    events: Counts = defaultdict(int)
    for code, action, n in db.session.execute(
        scope.placed(
            select(_TOWNSHIP.c.code, CaseEvent.action, func.count(distinct(CaseEvent.household_id)))
            .select_from(CaseEvent)
            .join(Household, Household.id == CaseEvent.household_id)
            .where(CaseEvent.action.in_(EVENTS), CaseEvent.at >= start, CaseEvent.at < end)
        ).group_by(_TOWNSHIP.c.code, CaseEvent.action)
    ):
        scope.add(events, code, EVENTS[action], int(n))
    return events


def _proof_of_life(scope: _Scope) -> tuple[Counts, Counts, Counts]:
    """Per month: checks asked, passed or exempt, and the households asked."""
    required: Counts = defaultdict(int)
    passed: Counts = defaultdict(int)
    households: Counts = defaultdict(int)
    for code, month, n_households, n, n_passed in db.session.execute(
        scope.placed(
            select(
                _TOWNSHIP.c.code,
                ProofOfLifeMonth.month,
                func.count(distinct(ProofOfLifeMonth.household_id)),
                func.count(),
                func.sum(case((ProofOfLifeMonth.status.in_(PASSED), 1), else_=0)),
            )
            .select_from(ProofOfLifeMonth)
            .join(Household, Household.id == ProofOfLifeMonth.household_id)
            .where(ProofOfLifeMonth.month.in_(scope.months))
        ).group_by(_TOWNSHIP.c.code, ProofOfLifeMonth.month)
    ):
        scope.add(required, code, month, int(n))
        scope.add(passed, code, month, int(n_passed or 0))
        scope.add(households, code, month, int(n_households))
    return required, passed, households


def _hidden(
    scope: _Scope,
    basis: Counts,
    columns: list[str],
    total_column: str | None,
    k: int,
    *,
    disjoint_columns: bool = True,
) -> Hidden:
    """The k rule over one table of the county's townships."""
    rows = [*scope.codes, scope.total]
    every = [*columns, total_column] if total_column else columns
    return published_cells(
        {(r, c): basis.get((r, c), 0) for r in rows for c in every},
        k,
        _table_lines(
            scope.codes, scope.total, columns, total_column, disjoint_columns=disjoint_columns
        ),
    )


def _cell(hidden: Hidden, key: tuple[str, str], value: int | Decimal) -> Cell:
    reason = hidden.get(key)
    return Cell(None, reason) if reason else Cell(value)


def _yuan(fen: int) -> Decimal:
    return (Decimal(fen) / 100).quantize(Decimal("0.01"))


def county_of(area_code: str) -> str:
    """The code of the county of a county, township or village (LookupError: none)."""
    area = db.session.scalar(select(Area).where(Area.code == area_code))
    while area is not None and area.level not in (AreaLevel.COUNTY, AreaLevel.LEAGUE):
        area = area.parent
    if area is None or area.level is not AreaLevel.COUNTY:
        raise LookupError(f"no county above {area_code!r}")
    return area.code


def half_year_figures(county_code: str, half: str) -> Figures:
    """The figures of the county ``county_code`` for ``half`` ("YYYY-H1" or "YYYY-H2"),
    every cell already through the k rule. LookupError: no such county; ValueError: not
    a half year."""
    months = half_months(half)
    county, townships = _places(county_code)
    k = region().public.k
    classes = tuple(c.code for c in region().classes)
    scope = _Scope(county.code, [c for _, c, _ in townships], [i for i, _, _ in townships], months)

    households, persons = _class_counts(scope)
    fen, paid_n, person_months = _money(scope)
    for row in [*scope.codes, scope.total]:  # behind the half year's money: its households
        paid_n[(row, "half")] = households.get((row, ALL), 0)
    events = _events(scope, half)
    required, passed, pol_n = _proof_of_life(scope)

    by_class = _hidden(scope, households, list(classes), ALL, k)
    by_money = _hidden(scope, paid_n, list(months), "half", k, disjoint_columns=False)
    by_event = _hidden(scope, events, list(EVENTS.values()), None, k)
    by_pol = _hidden(scope, pol_n, list(months), None, k)

    def area(code: str, name: str, level: Literal["county", "township"]) -> AreaFigures:
        half_cell = _cell(by_money, (code, "half"), _yuan(fen.get((code, "half"), 0)))
        people = person_months.get((code, "half"), 0)
        if half_cell.value is None:
            average = Cell(None, half_cell.suppressed)
        elif people:
            average = Cell(_yuan(round(Decimal(fen.get((code, "half"), 0)) / people)))
        else:
            average = Cell(None)

        def event(column: str) -> Cell:
            return _cell(by_event, (code, column), events.get((code, column), 0))

        return AreaFigures(
            code=code,
            name=name,
            level=level,
            households={
                c: _cell(by_class, (code, c), households.get((code, c), 0)) for c in [*classes, ALL]
            },
            persons={
                c: _cell(by_class, (code, c), persons.get((code, c), 0)) for c in [*classes, ALL]
            },
            average_per_person=average,
            paid={m: _cell(by_money, (code, m), _yuan(fen.get((code, m), 0))) for m in months},
            paid_half=half_cell,
            approvals=event("approvals"),
            suspensions=event("suspensions"),
            terminations=event("terminations"),
            pol_required={m: _cell(by_pol, (code, m), required.get((code, m), 0)) for m in months},
            pol_passed={m: _cell(by_pol, (code, m), passed.get((code, m), 0)) for m in months},
        )

    return Figures(
        half=half,
        months=months,
        classes=classes,
        k=k,
        county=area(county.code, county.name, "county"),
        townships=tuple(area(code, name, "township") for _, code, name in townships),
    )


CSV_COLUMNS = ("half", "county_code", "area_code", "area", "level", "figure", "key", "value")


def table_rows(figures: Figures) -> Iterator[list[str]]:
    """The rows of the CSV and the workbook (after CSV_COLUMNS): one per cell; a
    suppressed cell's value is empty."""
    for area in figures.areas():
        for figure, key, c in area.cells():
            yield [
                figures.half,
                figures.county.code,
                area.code,
                area.name,
                area.level,
                figure,
                key,
                "" if c.value is None else c.text,
            ]


def as_json(figures: Figures) -> dict[str, object]:
    def values(cells: dict[str, Cell]) -> dict[str, str | int | None]:
        return {key: _json(c) for key, c in cells.items()}

    return {
        "code": figures.county.code,
        "name": figures.county.name,
        "areas": [
            {
                "code": a.code,
                "name": a.name,
                "level": a.level,
                "households": values(a.households),
                "persons": values(a.persons),
                "average_per_person": _json(a.average_per_person),
                "paid": values(a.paid),
                "paid_half_year": _json(a.paid_half),
                "approvals": _json(a.approvals),
                "suspensions": _json(a.suspensions),
                "terminations": _json(a.terminations),
                "proof_of_life": [
                    {
                        "month": m,
                        "required": _json(a.pol_required[m]),
                        "passed_or_exempt": _json(a.pol_passed[m]),
                    }
                    for m in figures.months
                ],
            }
            for a in figures.areas()
        ],
    }


def _json(c: Cell) -> str | int | None:
    if c.value is None:
        return None
    return c.text if isinstance(c.value, Decimal) else int(c.value)
