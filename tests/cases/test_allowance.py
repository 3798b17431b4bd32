"""The allowance formula, checked by properties over many generated households."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.cases.allowance import compute_allowance

money = st.decimals(min_value=Decimal("0"), max_value=Decimal("5000"), places=2)
incomes = st.lists(money, min_size=1, max_size=8)
standards = st.decimals(min_value=Decimal("100"), max_value=Decimal("2000"), places=2)
minimums = st.decimals(min_value=Decimal("0"), max_value=Decimal("100"), places=2)


def gap(incomes: list[Decimal], standard: Decimal, minimum: Decimal = Decimal("30.00")):  # type: ignore[no-untyped-def]
    return compute_allowance(
        method="gap",
        monthly_standard=standard,
        fixed_monthly=Decimal("0"),
        minimum_monthly=minimum,
        member_incomes=incomes,
    )


@pytest.mark.slow
@given(incomes, standards, minimums)
def test_gap_amount_is_exact_to_the_fen_and_never_below_the_minimum(
    member_incomes: list[Decimal], standard: Decimal, minimum: Decimal
) -> None:
    result = gap(member_incomes, standard, minimum)
    size = len(member_incomes)
    per_capita = sum(member_incomes) / size
    assert result.household_size == size
    assert result.eligible == (per_capita < standard)
    if result.eligible:
        expected = max((standard - per_capita) * size, minimum)
        assert abs(result.monthly_amount - expected) <= Decimal("0.005")
        assert result.monthly_amount >= minimum
        assert result.monthly_amount <= max(standard * size, minimum)
    else:
        assert result.monthly_amount == Decimal("0.00")
    assert result.monthly_amount == result.monthly_amount.quantize(Decimal("0.01"))


@given(incomes, standards, st.integers(min_value=0, max_value=7), money)
def test_more_income_never_means_more_allowance(
    member_incomes: list[Decimal], standard: Decimal, who: int, raise_by: Decimal
) -> None:
    richer = list(member_incomes)
    richer[who % len(richer)] += raise_by
    assert gap(richer, standard).monthly_amount <= gap(member_incomes, standard).monthly_amount


@given(incomes, standards)
def test_an_extra_member_without_income_never_lowers_the_allowance(
    member_incomes: list[Decimal], standard: Decimal
) -> None:
    before = gap(member_incomes, standard)
    after = gap([*member_incomes, Decimal("0.00")], standard)
    assert after.monthly_amount >= before.monthly_amount


@given(incomes, standards, money)
def test_fixed_method_pays_the_class_amount_to_every_eligible_household(
    member_incomes: list[Decimal], standard: Decimal, fixed: Decimal
) -> None:
    result = compute_allowance(
        method="fixed",
        monthly_standard=standard,
        fixed_monthly=fixed,
        minimum_monthly=Decimal("30.00"),
        member_incomes=member_incomes,
    )
    assert result.monthly_amount == (fixed if result.eligible else Decimal("0.00"))


@pytest.mark.parametrize(
    ("member_incomes", "standard", "expected"),
    [
        (["0.00"], "662.00", "662.00"),
        (["200.00", "100.00", "0.00"], "662.00", "1686.00"),
        (["650.00"], "662.00", "30.00"),  # gap 12.00, floored at the minimum
        (["662.00"], "662.00", "0.00"),  # at the standard: not eligible
        (["100.00", "100.00", "100.01"], "662.00", "1685.99"),
    ],
)
def test_known_households(member_incomes: list[str], standard: str, expected: str) -> None:
    result = gap([Decimal(i) for i in member_incomes], Decimal(standard))
    assert result.monthly_amount == Decimal(expected)


def test_a_household_without_living_members_gets_nothing() -> None:
    assert gap([], Decimal("662.00")).eligible is False


def test_negative_income_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        gap([Decimal("-1.00")], Decimal("662.00"))
