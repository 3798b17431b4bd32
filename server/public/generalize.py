"""k-anonymity by generalization: the published place, class and size band of each group.

A case's quasi-identifiers are its place (township, village), class and household-size
band. Every published combination must be shared by at least k published cases. Groups
too small at the village are shown at the township; what is still too small there
loses its size band, then its class, then its township; if the cases left at the
county are still fewer than k, the county's smallest published group joins them. Only
a county with fewer than k cases in all is withheld. Only counts go in, so the decision is
the same for every case of a group and never depends on who is in it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import NamedTuple


class Key(NamedTuple):
    county: str
    township: str | None
    village: str | None
    class_code: str | None
    band: str | None


_LADDER = (
    lambda key: Key(key.county, key.township, None, key.class_code, key.band),
    lambda key: Key(key.county, key.township, None, key.class_code, None),
    lambda key: Key(key.county, key.township, None, None, None),
    lambda key: Key(key.county, None, None, None, None),
)


def generalize(counts: Mapping[Key, int], k: int) -> dict[Key, Key | None]:
    """For each full key (county, township, village, class, band) with its number of
    cases, the published key, or None when its cases are withheld."""
    decision: dict[Key, Key | None] = {}
    pending = {key: key for key in counts if counts[key] > 0}
    for step in (None, *_LADDER):
        published: Counter[Key] = Counter()
        for original, current in pending.items():
            target = current if step is None else step(current)
            pending[original] = target
            published[target] += counts[original]
        still: dict[Key, Key] = {}
        for original, target in pending.items():
            if published[target] >= k:
                decision[original] = target
            else:
                still[original] = target
        pending = still
        if not pending:
            break
    # What is left stands at the county, with fewer than k cases: join it with the
    # county's smallest published group (taken whole, so every group left keeps k).
    for original in pending:
        decision[original] = None
    for county in {target.county for target in pending.values()}:
        left = [o for o, t in pending.items() if t.county == county]
        published_here: Counter[Key] = Counter()
        for original, shown in decision.items():
            if shown is not None and shown.county == county:
                published_here[shown] += counts[original]
        if not published_here:
            continue  # the whole county has fewer than k cases: withheld
        smallest = min(published_here, key=lambda g: (published_here[g], _detail(g), g))
        everyone = Key(county, None, None, None, None)
        for original in left:
            decision[original] = everyone
        for original, shown in list(decision.items()):
            if shown == smallest:
                decision[original] = everyone
    return decision


def _detail(key: Key) -> int:
    """How much a published key shows (fewer first: cheaper to give up)."""
    return sum(field is not None for field in key)


def masked_surnames(groups: Mapping[tuple[Key, str], int], k: int) -> set[tuple[Key, str]]:
    """Which (published group, surname) pairs may show the masked surname: at least k
    cases of the group share it, and the cases left without one are either none or at
    least k (one unnamed case among named ones would single it out)."""
    shown: set[tuple[Key, str]] = set()
    by_group: dict[Key, list[tuple[str, int]]] = {}
    for (group, surname), n in groups.items():
        by_group.setdefault(group, []).append((surname, n))
    for group, entries in by_group.items():
        allowed = [(s, n) for s, n in entries if s and n >= k]
        hidden = sum(n for s, n in entries) - sum(n for _, n in allowed)
        if 0 < hidden < k:
            continue
        shown.update((group, s) for s, _ in allowed)
    return shown
