"""Absorb recorded changes into the current snapshot in place (docs/public.md,
"Incremental refresh").

A change rewrites the published rows of the changed cases and of every case in a group
(village, class, size band) whose published form changed because of it. Generalization
is decided per county from the census (``public_census``: cases per village, class and
size band), recounted for the touched villages only, so the decisions are exactly those
a full build of the same data makes.
The statistics are recomputed for the published townships whose rows changed (cells,
households, persons, money) and the real townships of the changed cases (payments,
proof of life). Everything happens in the caller's transaction: a failure leaves the
snapshot and the claimed changes as they were.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import delete, func, select

from server.cases.models import Household, HouseholdClass, Member
from server.clock import utcnow
from server.extensions import bulk_insert, db
from server.public.generalize import Key, generalize
from server.public.models import PublicCase, PublicCensus, PublicSnapshot
from server.public.rules import PublicRules
from server.public.snapshot import (
    Census,
    _Areas,
    _Batch,
    _objection_stats,
    _payment_stats,
    _proof_of_life_stats,
    _Publishing,
    _Tally,
    census,
    census_rows,
    figures,
    fingerprint,
    group_counts,
    id_list,
)

CHUNK = 2000  # ids per IN list


class FullBuildNeeded(Exception):
    """The changes cannot be absorbed in place (rules, areas or classes changed, names
    are shown masked, or a bulk change of unknown cases)."""


@dataclass(frozen=True)
class Absorbed:
    changed_cases: int  # dirty households, deleted ones included
    groups: int  # groups (village, class, size band) whose published form changed
    recomputed: int  # cases whose rows were recomputed
    rows_written: int  # published rows deleted or inserted


def _chunks(values: Iterable[Any]) -> Iterable[list[Any]]:
    items = sorted(values)
    for index in range(0, len(items), CHUNK):
        yield items[index : index + CHUNK]


def _load_census(villages: Iterable[int]) -> Census:
    found: Census = {}
    for part in _chunks(villages):
        for village_id, class_code, band, status, n, persons, fen in db.session.execute(
            select(
                PublicCensus.village_id,
                PublicCensus.class_code,
                PublicCensus.size_band,
                PublicCensus.status,
                PublicCensus.cases,
                PublicCensus.persons,
                PublicCensus.fen,
            ).where(PublicCensus.village_id.in_(part))
        ):
            found[(village_id, class_code, band, status)] = [n, persons, fen]
    return found


def _decisions(areas: _Areas, counts: Census, counties: set[str], k: int) -> dict[Key, Key | None]:
    keyed = group_counts(areas, counts)
    decisions: dict[Key, Key | None] = {}
    for county in counties:
        decisions.update(generalize({g: n for g, n in keyed.items() if g.county == county}, k))
    return decisions


def _cases_of(areas: _Areas, groups: set[Key], rules: PublicRules) -> set[int]:
    """The households in ``groups`` (full keys: village, class, size band)."""
    if not groups:
        return set()
    village_ids = {chain[2]: v for v, chain in areas.chain.items()}
    villages = sorted({village_ids[key.village] for key in groups if key.village is not None})
    found: set[int] = set()
    for part in _chunks(villages):
        sizes = (
            select(Member.household_id, func.count().label("n"))
            .join(Household, Household.id == Member.household_id)
            .where(Household.village_id.in_(part))
            .where(Member.alive.is_(True), Member.left_on.is_(None))
            .group_by(Member.household_id)
            .subquery()
        )
        for household_id, village_id, class_code, size in db.session.execute(
            select(
                Household.id,
                Household.village_id,
                HouseholdClass.code,
                func.coalesce(sizes.c.n, 0),
            )
            .join(HouseholdClass, HouseholdClass.id == Household.class_id)
            .outerjoin(sizes, sizes.c.household_id == Household.id)
            .where(Household.village_id.in_(part))
        ):
            county, township, village = areas.chain[village_id]
            key = Key(county, township, village, class_code, rules.size_band(size))
            if key in groups:
                found.add(household_id)
    return found


def apply(
    snapshot: PublicSnapshot,
    *,
    households: set[int],
    villages: set[int],
    deleted_codes: set[str],
    rules: PublicRules,
    zone: ZoneInfo,
) -> Absorbed:
    """Recompute the rows and statistics of ``snapshot`` that the changes touch."""
    if rules.masked_names:
        raise FullBuildNeeded("masked names")
    now = utcnow()
    this_year = now.astimezone(zone).strftime("%Y")
    areas = _Areas()
    classes = dict(db.session.execute(select(HouseholdClass.id, HouseholdClass.code)).all())
    if snapshot.fingerprint != fingerprint(rules, areas, classes):
        raise FullBuildNeeded("rules, areas or classes changed")

    touched = set(villages)
    for part in _chunks(households):
        touched.update(
            db.session.scalars(select(Household.village_id).where(Household.id.in_(part)))
        )
    if not touched <= areas.chain.keys():
        raise FullBuildNeeded("a case in an area that is not a village")
    # The whole census (a row per village, class, size band and status: small), the
    # touched villages recounted; the decisions of every county (the figures of cases
    # shown at the county only add up over counties).
    counties = {chain[0] for chain in areas.chain.values()}
    old_census = _load_census(areas.chain)
    recounted = census(rules, sorted(touched))
    new_census = {key: v for key, v in old_census.items() if key[0] not in touched}
    new_census.update(recounted)
    old = _decisions(areas, old_census, counties, rules.k)
    new = _decisions(areas, new_census, counties, rules.k)

    # The rows to recompute: the changed cases, and every case of a group whose
    # published form changed (most changes change none).
    regrouped = {key for key in old.keys() | new.keys() if old.get(key) != new.get(key)}
    ids = set(households) | _cases_of(areas, regrouped, rules)

    # The census of the touched villages, as the rows below are published with.
    for part in _chunks(touched):
        db.session.execute(delete(PublicCensus).where(PublicCensus.village_id.in_(part)))
    bulk_insert(PublicCensus, census_rows(recounted))

    publishing = _Publishing(
        snapshot_id=snapshot.id,
        rules=rules,
        areas=areas,
        area_names={code: place.name for code, place in areas.places.items()},
        decisions=new,
        classes=classes,
    )
    gone, added = _rewrite_rows(
        snapshot, publishing, ids, households, deleted_codes, zone=zone, this_year=this_year
    )
    _update_stats(
        snapshot,
        areas,
        new_census,
        new,
        rules,
        touched,
        gone=gone,
        added=added,
        now=now,
        zone=zone,
    )
    return Absorbed(
        len(households) + len(deleted_codes), len(regrouped), len(ids), len(gone) + len(added)
    )


def _rewrite_rows(
    snapshot: PublicSnapshot,
    publishing: _Publishing,
    ids: set[int],
    households: set[int],
    deleted_codes: set[str],
    *,
    zone: ZoneInfo,
    this_year: str,
) -> tuple[list[str], list[dict[str, Any]]]:
    """Recompute the rows of cases ``ids``, compare with the published rows of those
    cases and of the changed or deleted ones, and rewrite the rows that differ in place:
    the codes deleted and the rows inserted."""
    rules = publishing.rules
    new_rows: dict[str, dict[str, Any]] = {}
    for part in _chunks(ids):
        batch = _Batch.load(
            id_list(part), zone=zone, this_year=this_year, masked_names=rules.masked_names
        )
        for row in publishing.rows(batch, _Tally()):
            new_rows[row["case_code"]] = row
    dirty_codes = set(deleted_codes)
    for part in _chunks(households):
        dirty_codes.update(
            db.session.scalars(select(Household.case_code).where(Household.id.in_(part)))
        )
    codes = set(new_rows) | dirty_codes
    columns = [c for c in PublicCase.__table__.c if c.name != "snapshot_id"]
    old_rows: dict[str, dict[str, Any]] = {}
    for part in _chunks(codes):
        for found in db.session.execute(
            select(*columns).where(
                PublicCase.snapshot_id == snapshot.id, PublicCase.case_code.in_(part)
            )
        ).mappings():
            old_rows[found["case_code"]] = {**found}

    gone = [
        code
        for code, row in old_rows.items()
        if code not in new_rows or {**row, "snapshot_id": snapshot.id} != new_rows[code]
    ]
    added = [
        row
        for code, row in new_rows.items()
        if code not in old_rows or {**old_rows[code], "snapshot_id": snapshot.id} != row
    ]
    for part in _chunks(gone):
        deleted = db.session.execute(
            delete(PublicCase).where(
                PublicCase.snapshot_id == snapshot.id, PublicCase.case_code.in_(part)
            )
        )
        if deleted.rowcount != len(part):  # type: ignore[attr-defined]
            raise RuntimeError("public snapshot: rows vanished under an absorb")
    bulk_insert(PublicCase, added)

    return gone, added


def _update_stats(
    snapshot: PublicSnapshot,
    areas: _Areas,
    new_census: Census,
    new: Any,
    rules: PublicRules,
    touched: set[int],
    *,
    gone: list[str],
    added: list[dict[str, Any]],
    now: datetime,
    zone: ZoneInfo,
) -> None:
    """The snapshot's statistics after the rows changed: cells and townships from the
    census, payments and proof of life recounted for the touched townships, a new
    token."""
    this_year = now.astimezone(zone).strftime("%Y")
    stats = json.loads(snapshot.stats)
    stats["cells"], stats["townships"], published = figures(areas, new_census, new, rules.k)
    if snapshot.cases + len(added) - len(gone) != published:
        # The rows and the census disagree (a change written around the ORM).
        raise FullBuildNeeded("the published rows do not add up to the census")
    real = sorted({areas.chain[v][1] for v in touched})
    stats["payments"] = _merge(
        stats["payments"],
        _payment_stats(areas, rules.k, now, zone, townships=real),
        real,
        lambda entry: (entry["month"], entry["township"]),
    )
    stats["proof_of_life"] = _merge(
        stats["proof_of_life"],
        _proof_of_life_stats(rules.k, this_year, townships=real),
        real,
        lambda entry: (entry["month"], entry["township"]),
    )
    stats["objections"] = _objection_stats(snapshot.id, zone)
    stats["areas"] = {
        code: {"name": p.name, "level": p.level, "parent": p.parent}
        for code, p in areas.places.items()
        if p.level in ("county", "township", "village")
    }
    total = sum(entry[0] for entry in new_census.values())
    stats["built_at"] = now.isoformat()
    stats["published"] = published
    stats["withheld"] = total - published
    snapshot.stats = json.dumps(stats, ensure_ascii=False, separators=(",", ":"))
    snapshot.cases = published
    snapshot.withheld = total - published
    snapshot.token = secrets.token_hex(16)
    snapshot.absorbed_at = now


def _merge(
    entries: list[dict[str, Any]],
    fresh: list[dict[str, Any]],
    townships: Sequence[str | None],
    order: Any,
) -> list[dict[str, Any]]:
    replaced = set(townships)
    kept = [e for e in entries if e["township"] not in replaced]
    return sorted([*kept, *fresh], key=order)
