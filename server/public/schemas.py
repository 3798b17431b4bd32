"""What a published case looks like in JSON and CSV: an allow-list, field by field.

Built from ``PublicCase`` rows only (which hold nothing else); a field is published
only when it is named here. docs/public.md and the data-dictionary page describe each.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from server.public.queries import Snapshot

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

    item: dict[str, Any] = {
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
    }
    if masked_names:
        item["masked_name"] = row["masked_name"]
    return json.dumps(item, ensure_ascii=False, separators=(",", ":"))


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
