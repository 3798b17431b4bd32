"""What a published case looks like in JSON and CSV: an allow-list, field by field.

Built from ``PublicCase`` rows only (which hold nothing else); a field is published
only when it is named here. docs/public.md and the data-dictionary page describe each.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field

from server.cases.models import CaseState
from server.public.queries import Snapshot
from server.public.rules import AmountMode
from server.wire import IsoDatetime, Output

MONTH = Annotated[str, Field(pattern=r"^[0-9]{4}-[0-9]{2}$")]
Count = Annotated[int, Field(ge=0)]


class PlaceOut(Output):
    code: str
    name: str


Place = Annotated[
    PlaceOut | None, Field(description="null where generalized away (fewer than k cases alike)")
]


class StatusChangeOut(Output):
    status: CaseState
    month: MONTH


class ProofOfLifeMonthOut(Output):
    month: MONTH
    result: Literal["passed", "missed", "pending"]


class PublicCaseOut(Output):
    """A published case (docs/public.md). ``masked_name`` is sent only where the region
    shows masked names."""

    # masked_name is left out where not shown: the one field that may be absent.
    model_config = ConfigDict(json_schema_serialization_defaults_required=False)

    case_code: str
    county: Place
    township: Place
    village: Place
    class_: str | None = Field(alias="class")
    household_size: str | None = Field(examples=["1", "3-4", "5+"])
    status: CaseState
    monthly_amount: str | None = Field(
        description="exact (523.40), banded (500-600) or null, per region"
    )
    status_changes: list[StatusChangeOut]
    proof_of_life: list[ProofOfLifeMonthOut]
    masked_name: str | None = Field(default=None, description="only if the region shows them")


class PublicCaseAnswer(PublicCaseOut):
    """``GET /api/v1/public/cases/{case_code}``: the case and its snapshot's time."""

    as_of: IsoDatetime | None


class PublicCasesPage(Output):
    """A page of published cases."""

    items: list[PublicCaseOut]
    next: str | None = Field(description="the next page's URL; null on the last page")
    total: Count
    as_of: IsoDatetime | None = Field(description="when the snapshot was built")


class CaseCountsOut(Output):
    published: Count
    withheld: Count


class TownshipStatsOut(Output):
    township: str | None = Field(description="null: cases shown at the county only")
    name: str | None
    households: dict[CaseState, Count]
    active: Count
    persons: Count | None = Field(description="null where fewer than k are active")
    monthly_amount: str | None


class PaymentStatsOut(Output):
    township: str
    month: MONTH
    households: Count
    paid_households: Count | None
    amount_paid: str | None
    suspended: Count | None


class ProofOfLifeStatsOut(Output):
    township: str
    month: MONTH
    recipients: Count
    passed: Count | None
    missed: Count | None
    pending: Count | None


class PublicStatsOut(Output):
    """Aggregates per township and month; a cell of fewer than k households has its
    figures withheld (null). Before the first snapshot: only ``as_of`` and ``cases``."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=False)

    as_of: IsoDatetime | None
    cases: CaseCountsOut
    k: Count | None = None
    monthly_amount: AmountMode | None = None
    townships: list[TownshipStatsOut] | None = None
    payments: list[PaymentStatsOut] | None = None
    proof_of_life: list[ProofOfLifeStatsOut] | None = None

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


# masked_name is written only where the region shows masked names (csv_columns()).
CSV_COLUMNS = (
    "case_code",
    "county_code",
    "county",
    "township_code",
    "township",
    "village_code",
    "village",
    "class",
    "household_size",
    "status",
    "monthly_amount",
    "masked_name",
    "status_changes",
    "proof_of_life",
)


def csv_columns(*, masked_names: bool) -> tuple[str, ...]:
    return CSV_COLUMNS if masked_names else tuple(c for c in CSV_COLUMNS if c != "masked_name")


def _place(snapshot: Snapshot, code: str | None) -> dict[str, str] | None:
    if not code:
        return None
    area = snapshot.areas.get(code)
    return {"code": code, "name": area["name"] if area else code}


def _pairs(text: str, first: str, second: str) -> list[dict[str, str]]:
    """ "a:b c:d" (how the snapshot stores a list) as [{first: a, second: b}, ...]."""
    return [dict(zip((first, second), item.split(":", 1), strict=True)) for item in text.split()]


def status_changes(row: Any) -> list[dict[str, str]]:
    return _pairs(row.changes, "status", "month")


def proof_of_life(row: Any) -> list[dict[str, str]]:
    return _pairs(row.proof_of_life, "month", "result")


def case_document(row: Mapping[str, Any], names: Mapping[str, str], *, masked_names: bool) -> str:
    """The case as the JSON API publishes it, from a ``public_cases`` row's values."""

    def place(code: str | None) -> dict[str, str] | None:
        return {"code": code, "name": names.get(code, code)} if code else None

    case = PublicCaseOut.model_validate(
        {
            "case_code": row["case_code"],
            "county": place(row["county_code"]),
            "township": place(row["township_code"]),
            "village": place(row["village_code"]),
            "class": row["class_code"],
            "household_size": row["size_band"],
            "status": row["status"],
            "monthly_amount": row["amount"],
            "status_changes": _pairs(row["changes"], "status", "month"),
            "proof_of_life": _pairs(row["proof_of_life"], "month", "result"),
            "masked_name": row["masked_name"] if masked_names else None,
        }
    )
    # Compact UTF-8 JSON, as json.dumps(..., ensure_ascii=False, separators=(",", ":"))
    # writes it (_withhold_surnames in snapshot.py edits it as text), four times faster.
    return case.model_dump_json(by_alias=True, exclude=None if masked_names else {"masked_name"})


def case_csv(snapshot: Snapshot, row: Any, *, masked_names: bool) -> list[str]:
    def name(code: str | None) -> str:
        place = _place(snapshot, code)
        return place["name"] if place else ""

    values = [
        row.case_code,
        row.county_code,
        name(row.county_code),
        row.township_code or "",
        name(row.township_code),
        row.village_code or "",
        name(row.village_code),
        row.class_code or "",
        row.size_band or "",
        row.status,
        row.amount or "",
        row.masked_name or "",
        row.changes,
        row.proof_of_life,
    ]
    if not masked_names:
        del values[CSV_COLUMNS.index("masked_name")]
    return values


# --- class standards and half-yearly figures (issue 18) --------------------------------

Yuan = Annotated[str, Field(pattern=r"^[0-9]+\.[0-9]{2}$")]
Shown = Annotated[int | None, Field(ge=0, description="null: suppressed (the k rule)")]
ShownYuan = Annotated[
    str | None, Field(pattern=r"^[0-9]+\.[0-9]{2}$", description="null: suppressed")
]


class StandardVersionOut(Output):
    """One version of a class's amounts: in effect from ``effective_month`` (a month
    after today's: a change already decided, in effect from then)."""

    class_: str = Field(alias="class")
    name: str
    name_en: str
    effective_month: MONTH
    monthly_standard: Yuan
    fixed_monthly: Yuan


class PublicStandardsOut(Output):
    """The class standards now, the allowance method, and every version (no one's name,
    no reason: decisions, not who made them)."""

    month: MONTH
    allowance_method: Literal["gap", "fixed"]
    current: list[StandardVersionOut]
    scheduled: list[StandardVersionOut]
    history: list[StandardVersionOut]


class FiguresPolOut(Output):
    month: MONTH
    required: Shown
    passed_or_exempt: Shown


class FiguresAreaOut(Output):
    code: str
    name: str
    level: Literal["county", "township"]
    households: dict[str, Shown]
    persons: dict[str, Shown]
    average_per_person: ShownYuan
    paid: dict[str, ShownYuan]
    paid_half_year: ShownYuan
    approvals: Shown
    suspensions: Shown
    terminations: Shown
    proof_of_life: list[FiguresPolOut]


class FiguresCountyOut(Output):
    code: str
    name: str
    areas: list[FiguresAreaOut]


class PublicFiguresOut(Output):
    """A half year's figures per county and township; null cells are suppressed (fewer
    than k households behind them, or complementary suppression)."""

    half: Annotated[str, Field(pattern=r"^[0-9]{4}-H[12]$")]
    months: list[MONTH]
    classes: list[str]
    k: Count
    counties: list[FiguresCountyOut]
