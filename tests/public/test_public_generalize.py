"""k-anonymity of the published groups (server.public.generalize) and the [public] rules."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.public.generalize import Key, generalize, masked_surnames
from server.public.rules import PublicConfigError, PublicRules, parse_public_rules
from server.region import RegionConfigError, load_region_rules


def key(township: str, village: str, class_code: str = "A", band: str = "2") -> Key:
    return Key("C1", township, village, class_code, band)


def test_groups_of_k_keep_their_village() -> None:
    counts = {key("T1", "V1"): 5, key("T1", "V2"): 7}
    assert generalize(counts, 5) == {k: k for k in counts}


def test_a_small_group_is_shown_at_its_township_with_other_small_groups() -> None:
    counts = {key("T1", "V1"): 5, key("T1", "V2"): 3, key("T1", "V3"): 2}
    decision = generalize(counts, 5)
    assert decision[key("T1", "V1")] == key("T1", "V1")
    assert decision[key("T1", "V2")] == Key("C1", "T1", None, "A", "2")
    assert decision[key("T1", "V3")] == Key("C1", "T1", None, "A", "2")


def test_the_ladder_drops_band_then_class_then_township_then_withholds() -> None:
    counts = {
        key("T1", "V1", "A", "1"): 2,
        key("T1", "V1", "A", "2"): 3,  # A at T1 without band: 5
        key("T1", "V2", "B", "1"): 2,
        key("T1", "V2", "C", "5+"): 3,  # T1 without class: 5
        key("T2", "V3", "A", "1"): 4,
        key("T3", "V4", "B", "2"): 1,  # T2 + T3 at the county: 5
    }
    decision = generalize(counts, 5)
    assert decision[key("T1", "V1", "A", "1")] == Key("C1", "T1", None, "A", None)
    assert decision[key("T1", "V1", "A", "2")] == Key("C1", "T1", None, "A", None)
    assert decision[key("T1", "V2", "B", "1")] == Key("C1", "T1", None, None, None)
    assert decision[key("T1", "V2", "C", "5+")] == Key("C1", "T1", None, None, None)
    assert decision[key("T2", "V3", "A", "1")] == Key("C1", None, None, None, None)
    assert decision[key("T3", "V4", "B", "2")] == Key("C1", None, None, None, None)


def test_a_county_with_fewer_than_k_cases_is_withheld() -> None:
    counts = {key("T1", "V1"): 2, key("T2", "V2"): 2}
    assert generalize(counts, 5) == {key("T1", "V1"): None, key("T2", "V2"): None}


groups = st.dictionaries(
    st.builds(
        Key,
        st.sampled_from(["C1", "C2"]),
        st.sampled_from(["T1", "T2", "T3"]),
        st.sampled_from(["V1", "V2", "V3", "V4"]),
        st.sampled_from(["A", "B", "C"]),
        st.sampled_from(["1", "2", "3-4", "5+"]),
    ),
    st.integers(min_value=1, max_value=12),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(counts=groups, k=st.integers(min_value=2, max_value=10))
def test_every_published_group_has_at_least_k_cases(counts: dict[Key, int], k: int) -> None:
    decision = generalize(counts, k)
    assert set(decision) == set(counts)
    published: Counter[Key] = Counter()
    for original, shown in decision.items():
        if shown is None:
            continue
        published[shown] += counts[original]
        # Generalizing only ever hides a field; it never moves a case elsewhere.
        for field_shown, field_original in zip(shown, original, strict=True):
            assert field_shown in (None, field_original)
    assert all(n >= k for n in published.values())
    withheld = sum(counts[o] for o, shown in decision.items() if shown is None)
    by_county: Counter[str] = Counter()
    for original in counts:
        by_county[original.county] += counts[original]
    # Only a whole county below k is ever withheld.
    assert withheld == sum(n for n in by_county.values() if n < k)


def test_masked_surnames_need_k_alike_and_never_leave_few_unnamed() -> None:
    group = Key("C1", "T1", "V1", "A", "2")
    other = Key("C1", "T1", "V2", "A", "2")
    shown = masked_surnames(
        {(group, "王*"): 5, (group, "李*"): 5, (other, "王*"): 6, (other, "李*"): 1}, 5
    )
    assert shown == {(group, "王*"), (group, "李*")}
    # With the one 李 unnamed, the other group would show 王* on six rows and nothing on
    # one: that one would be singled out, so no name is shown there at all.


def test_size_bands_and_amounts() -> None:
    rules = PublicRules(size_bands=(1, 2, 3, 5), amount="banded", amount_band=Decimal(100))
    assert [rules.size_band(n) for n in (0, 1, 2, 3, 4, 5, 9)] == [
        "1",
        "1",
        "2",
        "3-4",
        "3-4",
        "5+",
        "5+",
    ]
    assert rules.published_amount(Decimal("523.40")) == "500-600"
    assert rules.published_amount(None) is None
    assert PublicRules(amount="exact").published_amount(Decimal("523.4")) == "523.40"
    assert PublicRules(amount="hidden").published_amount(Decimal("523.40")) is None


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"k": 1}, "public.k"),
        ({"k": True}, "public.k"),
        ({"amount": "rounded"}, "public.amount"),
        ({"amount_band": 0}, "public.amount_band"),
        ({"size_bands": [2, 3]}, "public.size_bands"),
        ({"size_bands": [1, 3, 3]}, "public.size_bands"),
        ({"masked_names": "yes"}, "public.masked_names"),
        ({"refresh_minutes": 0}, "public.refresh_minutes"),
        ({"rebuild_hours": 0}, "public.rebuild_hours"),
        ({"rebuild_hours": True}, "public.rebuild_hours"),
        ({"names": True}, "unknown settings"),
    ],
)
def test_bad_public_settings_are_refused(section: dict[str, object], message: str) -> None:
    with pytest.raises(PublicConfigError, match=message):
        parse_public_rules(section)


def test_the_region_file_carries_the_public_rules(tmp_path: pytest.TempPathFactory) -> None:
    built_in = load_region_rules(None).public
    # The defaults, and the office the printable notices name (test_public_notices.py).
    assert built_in == PublicRules(offices=built_in.offices)
    assert built_in.offices["default"].hotline == "0482-8888888"
    from importlib import resources

    text = resources.files("server").joinpath("region_default.toml").read_text("utf-8")
    bad = tmp_path / "region.toml"  # type: ignore[operator]
    bad.write_text(text.replace('amount = "banded"', 'amount = "all"'), "utf-8")
    with pytest.raises(RegionConfigError, match=r"public\.amount"):
        load_region_rules(bad)
