"""What a published case looks like in JSON and CSV: an allow-list, field by field.

Built from ``PublicCase`` rows only (which hold nothing else); a field is published
only when it is named here. docs/public.md and the data-dictionary page describe each.
"""

from __future__ import annotations

from typing import Any

from server.public.models import PublicCase
from server.public.queries import Snapshot

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


def _place(snapshot: Snapshot, code: str | None) -> dict[str, str] | None:
    if not code:
        return None
    area = snapshot.areas.get(code)
    return {"code": code, "name": area["name"] if area else code}


def status_changes(row: PublicCase) -> list[dict[str, str]]:
    out = []
    for item in row.changes.split():
        status, _, month = item.partition(":")
        out.append({"status": status, "month": month})
    return out


def proof_of_life(row: PublicCase) -> list[dict[str, str]]:
    out = []
    for item in row.proof_of_life.split():
        month, _, result = item.partition(":")
        out.append({"month": month, "result": result})
    return out


def case_json(snapshot: Snapshot, row: PublicCase, *, masked_names: bool) -> dict[str, Any]:
    item: dict[str, Any] = {
        "case_code": row.case_code,
        "county": _place(snapshot, row.county_code),
        "township": _place(snapshot, row.township_code),
        "village": _place(snapshot, row.village_code),
        "class": row.class_code,
        "household_size": row.size_band,
        "status": row.status,
        "monthly_amount": row.amount,
        "status_changes": status_changes(row),
        "proof_of_life": proof_of_life(row),
    }
    if masked_names:
        item["masked_name"] = row.masked_name
    return item


def case_csv(snapshot: Snapshot, row: PublicCase) -> list[str]:
    def name(code: str | None) -> str:
        place = _place(snapshot, code)
        return place["name"] if place else ""

    return [
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
