"""The region's publication rules (the ``[public]`` section of the region file)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

AmountMode = Literal["exact", "banded", "hidden"]


class PublicConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Office:
    """The office a printable notice names: where to object in person, and its hotline."""

    name: str
    address: str
    hotline: str


@dataclass(frozen=True)
class PublicRules:
    # Every published combination of (place, class, household-size band) is shared by
    # at least k published cases; smaller groups are generalized (docs/public.md).
    k: int = 5
    amount: AmountMode = "banded"
    amount_band: Decimal = Decimal("100")
    # Lower bounds of the household-size bands: (1, 2, 3, 5) -> "1", "2", "3-4", "5+".
    size_bands: tuple[int, ...] = (1, 2, 3, 5)
    # Show the head's surname masked (张*), only where k published cases share it.
    masked_names: bool = False
    # Kept for region files that set it; changes are absorbed within seconds and a
    # full build runs every ``rebuild_hours`` (docs/public.md, "Incremental refresh").
    refresh_minutes: int = 5
    # A full build of the snapshot at least this often (changes are absorbed in place
    # in between).
    rebuild_hours: int = 24
    # The offices named on printable notices, by area code (a township or county), and
    # "default" for every other area ([public.offices.<code>] in the region file).
    offices: Mapping[str, Office] = field(default_factory=dict, hash=False)

    def office_for(self, codes: tuple[str, ...]) -> Office | None:
        """The office of the first of ``codes`` (an area, then its parents) that has
        one, else the default office, else None."""
        for code in (*codes, "default"):
            if code in self.offices:
                return self.offices[code]
        return None

    def size_band(self, size: int) -> str:
        bounds = self.size_bands
        size = max(size, bounds[0])  # 0 (every member died): the smallest band
        for index, low in enumerate(bounds):
            high = bounds[index + 1] - 1 if index + 1 < len(bounds) else None
            if high is None:
                return f"{low}+"
            if low <= size <= high:
                return str(low) if low == high else f"{low}-{high}"
        raise AssertionError("unreachable: the last band has no upper bound")

    @property
    def size_band_labels(self) -> tuple[str, ...]:
        return tuple(self.size_band(low) for low in self.size_bands)

    def published_amount(self, amount: Decimal | None) -> str | None:
        if amount is None or self.amount == "hidden":
            return None
        if self.amount == "exact":
            return f"{amount:.2f}"
        width = self.amount_band
        low = (amount // width) * width
        return f"{low:.0f}-{low + width:.0f}"


def parse_public_rules(data: dict[str, Any]) -> PublicRules:
    default = PublicRules()
    unknown = sorted(set(data) - {f for f in PublicRules.__dataclass_fields__})
    if unknown:
        raise PublicConfigError(f"public: unknown settings {unknown}")
    k = data.get("k", default.k)
    if isinstance(k, bool) or not isinstance(k, int) or not 2 <= k <= 100:
        raise PublicConfigError(f"public.k: {k!r} must be a whole number from 2 to 100")
    amount = data.get("amount", default.amount)
    if amount not in ("exact", "banded", "hidden"):
        raise PublicConfigError(f"public.amount: {amount!r} must be exact, banded or hidden")
    raw_band = data.get("amount_band", default.amount_band)
    try:
        band = Decimal(str(raw_band))
    except ArithmeticError as exc:
        raise PublicConfigError(f"public.amount_band: {raw_band!r} is not an amount") from exc
    if isinstance(raw_band, bool) or not band.is_finite() or band < 1:
        raise PublicConfigError(f"public.amount_band: {raw_band!r} must be at least 1")
    bounds = data.get("size_bands", list(default.size_bands))
    if (
        not isinstance(bounds, list)
        or not bounds
        or any(isinstance(b, bool) or not isinstance(b, int) for b in bounds)
        or bounds[0] != 1
        or any(b <= a for a, b in itertools.pairwise(bounds))
    ):
        raise PublicConfigError(
            f"public.size_bands: {bounds!r} must be increasing whole numbers starting at 1"
        )
    masked = data.get("masked_names", default.masked_names)
    if not isinstance(masked, bool):
        raise PublicConfigError("public.masked_names must be true or false")
    minutes = data.get("refresh_minutes", default.refresh_minutes)
    if isinstance(minutes, bool) or not isinstance(minutes, int) or not 1 <= minutes <= 1440:
        raise PublicConfigError("public.refresh_minutes must be a whole number from 1 to 1440")
    hours = data.get("rebuild_hours", default.rebuild_hours)
    if isinstance(hours, bool) or not isinstance(hours, int) or not 1 <= hours <= 720:
        raise PublicConfigError("public.rebuild_hours must be a whole number from 1 to 720")
    return PublicRules(
        offices=_parse_offices(data.get("offices", {})),
        k=k,
        amount=amount,
        amount_band=band,
        size_bands=tuple(bounds),
        masked_names=masked,
        refresh_minutes=minutes,
        rebuild_hours=hours,
    )


def _parse_offices(data: Any) -> dict[str, Office]:
    if not isinstance(data, dict):
        raise PublicConfigError("public.offices must be a table of offices by area code")
    offices = {}
    for code, entry in data.items():
        where = f"public.offices.{code}"
        if not isinstance(entry, dict):
            raise PublicConfigError(f"{where} must be a table with name, address and hotline")
        unknown = sorted(set(entry) - {"name", "address", "hotline"})
        if unknown:
            raise PublicConfigError(f"{where}: unknown settings {unknown}")
        values = {}
        for key in ("name", "address", "hotline"):
            value = entry.get(key)
            if not isinstance(value, str) or not value.strip():
                raise PublicConfigError(f"{where}.{key} must be a non-empty text")
            values[key] = value.strip()
        offices[str(code)] = Office(**values)
    return offices
