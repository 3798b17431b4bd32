"""The monthly allowance, computed in this one place.

Gap method: (standard - per-capita income) x household size, floored at the
region's minimum; a household whose per-capita income reaches the standard is
not eligible. Fixed method: the class's fixed monthly amount.
All arithmetic in Decimal; the result is rounded to the fen (half up).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from server.region import AllowanceMethod

CENT = Decimal("0.01")


@dataclass(frozen=True)
class AllowanceResult:
    eligible: bool
    monthly_amount: Decimal
    household_size: int
    per_capita_income: Decimal
    method: AllowanceMethod


def compute_allowance(
    *,
    method: AllowanceMethod,
    monthly_standard: Decimal,
    fixed_monthly: Decimal,
    minimum_monthly: Decimal,
    member_incomes: Sequence[Decimal],
) -> AllowanceResult:
    """``member_incomes``: the monthly income of each living member of the household."""
    size = len(member_incomes)
    if size == 0:
        return AllowanceResult(False, Decimal("0.00"), 0, Decimal("0.00"), method)
    if any(i < 0 for i in member_incomes):
        raise ValueError("a member's income cannot be negative")
    total = sum(member_incomes, Decimal("0"))
    per_capita = total / size
    per_capita_rounded = per_capita.quantize(CENT, rounding=ROUND_HALF_UP)
    if per_capita >= monthly_standard:
        return AllowanceResult(False, Decimal("0.00"), size, per_capita_rounded, method)
    if method == "fixed":
        amount = fixed_monthly
    else:
        # (standard - total/size) * size == standard*size - total: exact, no division.
        amount = max(monthly_standard * size - total, minimum_monthly)
    return AllowanceResult(
        True, amount.quantize(CENT, rounding=ROUND_HALF_UP), size, per_capita_rounded, method
    )
