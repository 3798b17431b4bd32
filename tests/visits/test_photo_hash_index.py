"""The photo reuse index: multi-index hashing (server/visits/integrity/hamming_index.py)
finds what a linear scan finds, and the worker's resident index
(server/visits/photo_hash_index.py) over the real photo_hashes table returns the
linear scan's candidates as rows come, get replaced and go. The upload path through
it: tests/visits/test_integrity_photos.py (a reused photo flagged through the API)."""

from __future__ import annotations

import multiprocessing
import uuid
from datetime import UTC, datetime

import numpy as np
import pytest
from flask import Flask
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, insert, select

from server.cases.models import CaseState
from server.extensions import db
from server.visits.integrity.hamming_index import (
    HammingIndex,
    parts_for,
    probes_per_query,
)
from server.visits.integrity.photo_match import (
    PhotoRules,
    QueryHashes,
    StoredHashes,
    nearest,
)
from server.visits.models import PhotoHash, PhotoKind, Survey, SurveyPhoto, SurveyStatus
from server.visits.photo_hash_index import PhotoHashIndex, _Rows
from server.visits.photo_index import linear_reuse_candidates
from tests import factories

U64 = np.uint64


def _flip(value: np.uint64, bits: int, rng: np.random.Generator) -> np.uint64:
    """``value`` with ``bits`` distinct random bits flipped: exactly that far away."""
    mask = 0
    for b in rng.choice(64, size=bits, replace=False):
        mask |= 1 << int(b)
    return U64(int(value) ^ mask)


def _planted(
    rng: np.random.Generator, size: int, queries: np.ndarray, radii: list[int]
) -> np.ndarray:
    """``size`` random hashes, and for each query and radius r one at exactly r, one at
    r + 1 and one equal to the query."""
    stored = list(rng.integers(0, 2**64, size=size, dtype=U64))
    for q in queries:
        stored.append(q)
        for r in radii:
            stored.append(_flip(q, r, rng))
            stored.append(_flip(q, r + 1, rng))
    out = np.array(stored, dtype=U64)
    rng.shuffle(out)
    return out


def _linear(stored: np.ndarray, queries: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    d = np.bitwise_count(stored[:, None] ^ queries[None, :]).min(axis=1)
    near = np.flatnonzero(d <= radius)
    return near, d[near]


@pytest.mark.parametrize(
    ("parts", "size"),
    # Small tables search sorted keys; 4 x 16 bits at 12,000 and 6 x 11 bits at 3,000
    # have dense offsets arrays.
    [(None, 3000), (2, 3000), (3, 3000), (4, 3000), (4, 12_000), (5, 3000), (6, 3000), (8, 3000)],
)
def test_the_index_finds_exactly_what_the_linear_scan_finds(parts: int | None, size: int) -> None:
    rng = np.random.default_rng(19)
    queries = rng.integers(0, 2**64, size=12, dtype=U64)
    radii = [0, 3, 7, 10, 14] if parts != 2 else [0, 3, 6]
    stored = _planted(rng, size, queries, radii)
    index = HammingIndex(stored, parts)
    for radius in radii:
        positions, dist = index.within(queries, radius)
        expected, expected_dist = _linear(stored, queries, radius)
        assert positions.tolist() == expected.tolist()
        assert dist.tolist() == expected_dist.tolist()
        # The planted hashes: at r found, at r + 1 not.
        assert len(expected) >= len(queries) * (1 + sum(r <= radius for r in radii))


def test_a_widening_search_is_complete_up_to_what_it_guarantees() -> None:
    rng = np.random.default_rng(7)
    queries = rng.integers(0, 2**64, size=40, dtype=U64)
    stored = _planted(rng, 20_000, queries, [2, 5, 9])
    index = HammingIndex(stored)
    assert index.parts == parts_for(len(stored))
    search = index.search(queries, cap=20)
    seen = []
    while search.guaranteed < 20:
        search.step()
        positions, dist = search.found()
        expected, expected_dist = _linear(stored, queries, search.guaranteed)
        assert positions.tolist() == expected.tolist()
        assert dist.tolist() == expected_dist.tolist()
        seen.append(search.guaranteed)
    assert seen == list(range(seen[0], 21))


@pytest.mark.parametrize("threads", [2, 3])
def test_a_search_split_over_threads_finds_what_one_thread_finds(threads: int) -> None:
    """Enough query hashes for the large steps to be split (600 x 120 probes at 2 bits
    of a 16-bit key: 3 runs of 24,000): the same hashes at the same distances, step by
    step, with the bound (``cap``) lowered part way as the resident index does."""
    rng = np.random.default_rng(5)
    queries = rng.integers(0, 2**64, size=600, dtype=U64)
    stored = _planted(rng, 30_000, queries[:20], [2, 6, 9])
    index = HammingIndex(stored, 4)
    one, split = index.search(queries, cap=14), index.search(queries, cap=14, threads=threads)
    while one.guaranteed < 11:
        if one.guaranteed == 7:
            one.cap = split.cap = 11
        one.step()
        split.step()
        assert split.guaranteed == one.guaranteed
        for got, expected in zip(split.found(), one.found(), strict=True):
            assert got.tolist() == expected.tolist()
    expected, expected_dist = _linear(stored, queries, 11)
    assert split.found(11)[0].tolist() == expected.tolist()
    assert split.found(11)[1].tolist() == expected_dist.tolist()


def _split_search_in_child(stored: np.ndarray, queries: np.ndarray, expected: list[int]) -> None:
    search = HammingIndex(stored, 4).search(queries, cap=14, threads=2)
    search.widen_to(9)
    assert search.found(9)[0].tolist() == expected


def test_a_process_forked_after_a_split_search_can_split_its_own() -> None:
    """The threads belong to the process that started them: a child forked after the
    parent split a search (a preloading server) starts its own instead of waiting on
    the parent's forever."""
    rng = np.random.default_rng(6)
    queries = rng.integers(0, 2**64, size=600, dtype=U64)
    stored = _planted(rng, 30_000, queries[:10], [3, 8])
    _split_search_in_child(stored, queries, _linear(stored, queries, 9)[0].tolist())
    child = multiprocessing.get_context("fork").Process(
        target=_split_search_in_child,
        args=(stored, queries, _linear(stored, queries, 9)[0].tolist()),
    )
    child.start()
    child.join(timeout=120)
    if child.is_alive():
        child.kill()
    assert child.exitcode == 0


def test_duplicates_are_each_found_and_duplicate_queries_count_once() -> None:
    rng = np.random.default_rng(3)
    base = rng.integers(0, 2**64, size=5, dtype=U64)
    # Each hash stored many times (a crowded bucket), among random ones.
    stored = np.concatenate([np.repeat(base, 40), rng.integers(0, 2**64, size=4000, dtype=U64)])
    rng.shuffle(stored)
    queries = np.concatenate([base, base, [_flip(base[0], 2, rng)]]).astype(U64)
    for parts in (None, 3, 4):
        index = HammingIndex(stored, parts)
        for radius in (0, 2, 9):
            positions, dist = index.within(queries, radius)
            expected, expected_dist = _linear(stored, queries, radius)
            assert positions.tolist() == expected.tolist()
            assert dist.tolist() == expected_dist.tolist()
            assert len(positions) >= 200


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    centres=st.integers(1, 30),
    size=st.integers(0, 400),
    parts=st.sampled_from([None, 2, 3, 4, 5, 6, 8]),
    radius=st.integers(0, 16),
)
def test_property_the_index_equals_the_linear_scan_on_clustered_hashes(
    seed: int, centres: int, size: int, parts: int | None, radius: int
) -> None:
    """Hashes drawn around a few centres (each a few bits off), queries among and near
    them: what pHashes of similar pictures look like."""
    rng = np.random.default_rng(seed)
    middle = rng.integers(0, 2**64, size=centres, dtype=U64)
    stored = np.array(
        [_flip(middle[rng.integers(centres)], int(rng.integers(0, 9)), rng) for _ in range(size)],
        dtype=U64,
    )
    queries = np.array(
        [_flip(middle[rng.integers(centres)], int(rng.integers(0, 9)), rng) for _ in range(5)],
        dtype=U64,
    )
    index = HammingIndex(stored, parts)
    positions, dist = index.within(queries, radius)
    expected, expected_dist = _linear(stored, queries, radius) if size else ([], [])
    assert positions.tolist() == list(expected)
    assert dist.tolist() == list(expected_dist)


def _rows_of(full: np.ndarray, centre: np.ndarray, households: np.ndarray) -> dict[str, _Rows]:
    photo_ids = np.arange(1, len(full) + 1, dtype=np.int64)
    return {
        "full": _Rows(photo_ids * 2 - 1, photo_ids, households, full),
        "centre": _Rows(photo_ids * 2, photo_ids, households, centre),
    }


def _stored(rows: dict[str, _Rows]) -> StoredHashes:
    return StoredHashes(
        np.concatenate([rows["full"].photo_ids, rows["centre"].photo_ids]).tolist(),
        ["full"] * len(rows["full"]) + ["centre"] * len(rows["centre"]),
        np.concatenate([rows["full"].hashes, rows["centre"].hashes]).view(np.int64).tolist(),
    )


@pytest.mark.parametrize("parts", [None, 3, 4, 6])
def test_ties_between_photos_at_the_same_distance_are_broken_as_the_linear_scan_does(
    parts: int | None,
) -> None:
    """More photos at the cut-off distance than slots left: the lowest photo ids, as
    the linear scan keeps them; a photo near by both kinds counts once, at its smaller
    distance; the searching photo's own household is never a candidate."""
    rng = np.random.default_rng(11)
    query = _query(rng)
    size = 3000
    full = rng.integers(0, 2**64, size=size, dtype=U64)
    centre = rng.integers(0, 2**64, size=size, dtype=U64)
    households = np.arange(1, size + 1, dtype=np.int64) % 50 + 1
    spots = rng.choice(size, size=60, replace=False)
    for n, at in enumerate(spots):
        r = (3, 5, 5, 5, 5, 8)[n % 6]  # many at 5 bits: a tie across the cut-off
        if n % 2:
            full[at] = _flip(query.full[n % 8], r, rng)
        else:
            centre[at] = _flip(query.centre[n % 40], r, rng)
        if n % 7 == 0:  # near by both kinds
            full[at] = _flip(query.full[(n + 1) % 8], r + 1, rng)
    full[spots[0]] = query.full[0]  # a duplicate of the query, in household 1's photo
    households[spots[0]] = 1
    rows = _rows_of(full, centre, households)
    index = PhotoHashIndex(parts=parts)
    index.load_rows(rows)
    own = {k: r.take(r.households != 1) for k, r in rows.items()}
    for radius, limit in ((14, 16), (5, 12), (5, 200), (8, 3), (0, 16)):
        found, _ = index._search(query, radius, limit, household_id=1, photo_id=0)
        assert found == nearest(query, _stored(own), radius, limit)
    found, _ = index._search(query, 14, 30, household_id=1, photo_id=0)
    assert [c.distance for c in found].count(5) > 10


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    size=st.integers(1, 3000),
    near=st.integers(0, 120),
    parts=st.sampled_from([None, 3, 4, 6]),
    radius=st.integers(0, 14),
    limit=st.integers(1, 24),
    households=st.integers(1, 8),
)
def test_property_the_resident_search_equals_the_linear_scan_as_its_cap_falls(
    seed: int, size: int, near: int, parts: int | None, radius: int, limit: int, households: int
) -> None:
    """Random photos, ``near`` of them planted a few bits from a query hash (many at
    the same distance: ties at the cut-off), in a few households (the searching one's
    and the searching photo excluded). The search lowers the distance it keeps hits up
    to as eligible photos come in (the bound of the ``limit`` nearest); its candidates
    stay the linear scan's, ties, exclusions and photos near by both kinds included."""
    rng = np.random.default_rng(seed)
    query = _query(rng)
    full = rng.integers(0, 2**64, size=size, dtype=U64)
    centre = rng.integers(0, 2**64, size=size, dtype=U64)
    for at in rng.choice(size, size=min(near, size), replace=False):
        bits = int(rng.choice([0, 2, 4, 4, 5, 5, 6, 9, 12]))
        if rng.random() < 0.3:
            full[at] = _flip(query.full[int(rng.integers(8))], bits, rng)
        if rng.random() < 0.8:
            centre[at] = _flip(query.centre[int(rng.integers(40))], bits, rng)
    owners = rng.integers(1, households + 1, size=size).astype(np.int64)
    rows = _rows_of(full, centre, owners)
    index = PhotoHashIndex(parts=parts)
    index.load_rows(rows)
    excluded = int(rng.integers(1, size + 1))  # the searching photo itself
    found, _ = index._search(query, radius, limit, household_id=1, photo_id=excluded)
    eligible = {k: r.take((r.households != 1) & (r.photo_ids != excluded)) for k, r in rows.items()}
    assert found == nearest(query, _stored(eligible), radius, limit)


def test_the_resident_index_with_nothing_loaded_finds_nothing() -> None:
    z = np.zeros(0, dtype=U64)
    index = PhotoHashIndex()
    index.load_rows(_rows_of(z, z, np.zeros(0, dtype=np.int64)))
    query = _query(np.random.default_rng(0))
    found, rows = index._search(query, 14, 16, household_id=1, photo_id=0)
    assert found == []
    assert all(len(r) == 0 for r in rows.values())


def test_the_cost_model_chooses_16_bit_substrings_at_millions_of_hashes() -> None:
    assert [parts_for(n) for n in (3_000_000, 10_000_000, 20_000_000)] == [4, 4, 4]
    assert [parts_for(n) for n in (1_000_000, 2_000_000)] == [5, 5]  # measured faster
    assert probes_per_query(4, 10) == 3 * (1 + 16 + 120) + 1 + 16
    assert probes_per_query(3, 10) > 8 * probes_per_query(4, 10)


def test_an_empty_index_and_no_queries_find_nothing() -> None:
    empty = HammingIndex(np.zeros(0, dtype=U64))
    assert empty.within(np.array([5], dtype=U64), 10)[0].tolist() == []
    some = HammingIndex(np.array([1, 2, 3], dtype=U64))
    assert some.within(np.zeros(0, dtype=U64), 10)[0].tolist() == []
    assert some.within(np.array([0], dtype=U64), 1)[0].tolist() == [0, 1]


# --------------------------------------------------------------------------- on the table


def _survey(household_id: int) -> Survey:
    caseworker = factories.user("caseworker_a")
    now = datetime(2026, 12, 1, 9, tzinfo=UTC)
    survey = Survey(
        client_uuid=str(uuid.uuid4()),
        content_hash="0" * 64,
        household_id=household_id,
        caseworker_id=caseworker.id,
        kind="periodic_review",
        status=SurveyStatus.COMPLETE,
        started_at=now,
        finished_at=now,
        gps_lat=0.0,
        gps_lon=0.0,
        payload="{}",
    )
    db.session.add(survey)
    db.session.flush()
    return survey


def _photos(survey: Survey, count: int) -> list[int]:
    """``count`` new photos of the survey (no blobs: only their index rows)."""
    names = [uuid.uuid4().hex for _ in range(count)]
    db.session.execute(
        insert(SurveyPhoto),
        [{"survey_id": survey.id, "photo_id": n, "kind": PhotoKind.HOUSING} for n in names],
    )
    return list(
        db.session.scalars(
            select(SurveyPhoto.id).where(SurveyPhoto.photo_id.in_(names)).order_by(SurveyPhoto.id)
        )
    )


def _signed(value: np.uint64) -> int:
    return int(np.array([value], dtype=U64).view(np.int64)[0])


def _index(photo_ids: list[int], full: np.ndarray, centre: np.ndarray) -> None:
    db.session.execute(
        insert(PhotoHash),
        [
            {"survey_photo_id": p, "kind": kind, "hash": _signed(h)}
            for p, f, c in zip(photo_ids, full, centre, strict=True)
            for kind, h in (("full", f), ("centre", c))
        ],
    )
    db.session.flush()


def _query(rng: np.random.Generator) -> QueryHashes:
    """A new photo's query hashes: 8 full ones (a turn each), 40 centre ones."""
    centre = rng.integers(0, 2**64, size=40, dtype=U64)
    return QueryHashes(
        full=rng.integers(0, 2**64, size=8, dtype=U64),
        full_turn=np.arange(8, dtype=np.int8),
        centre=centre,
        centre_turn=(np.arange(40) % 8).astype(np.int8),
        centre_cropped=(np.arange(40) % 3 > 0),
    )


def _near(query: QueryHashes, rng: np.random.Generator, count: int, radii: list[int]) -> tuple:
    """Hashes of ``count`` photos near the query: at each radius and one bit past it."""
    full, centre = [], []
    for i in range(count):
        r = radii[i % len(radii)] + (i // len(radii)) % 2
        if i % 2:
            full.append(_flip(query.full[i % 8], r, rng))
            centre.append(rng.integers(0, 2**64, dtype=U64))
        else:
            full.append(rng.integers(0, 2**64, dtype=U64))
            centre.append(_flip(query.centre[i % 40], r, rng))
    return np.array(full, dtype=U64), np.array(centre, dtype=U64)


def _same(
    index: PhotoHashIndex, query: QueryHashes, rules: PhotoRules, photo: SurveyPhoto
) -> list[tuple[int, int, int, bool]]:
    found, household_of = index.nearest(
        query,
        rules.candidate_hamming,
        rules.max_candidates,
        household_id=photo.survey.household_id,
        photo_id=photo.id,
    )
    expected, expected_households = linear_reuse_candidates(photo, query, rules)
    assert found == expected
    assert {c.photo_id: household_of[c.photo_id] for c in found} == expected_households
    return [(c.photo_id, c.distance, c.turn, c.cropped) for c in found]


def test_the_resident_index_returns_the_linear_scans_candidates_as_rows_come_and_go(
    app: Flask,
) -> None:
    rng = np.random.default_rng(2026)
    households = [factories.make_household(state=CaseState.APPROVED) for _ in range(4)]
    db.session.flush()
    surveys = [_survey(h.id) for h in households]
    query = _query(rng)
    # Background: random photos; then photos planted at r and r + 1 of the query.
    for survey in surveys[:3]:
        ids = _photos(survey, 150)
        _index(ids, *(rng.integers(0, 2**64, size=(2, 150), dtype=U64)))
    planted = _photos(surveys[1], 24) + _photos(surveys[2], 24)
    _index(planted, *_near(query, rng, 48, [0, 4, 9, 13]))
    # The new photo belongs to the fourth household; one of its own household's
    # photos equals the query: never a candidate.
    mine = _photos(surveys[3], 2)
    _index(mine[:1], query.full[:1], query.centre[:1])
    new_photo = db.session.get(SurveyPhoto, mine[1])
    assert new_photo is not None

    index = PhotoHashIndex()
    for rules in (
        PhotoRules(),
        PhotoRules(candidate_hamming=6, max_candidates=4),
        PhotoRules(candidate_hamming=13, max_candidates=100),
        PhotoRules(candidate_hamming=0),
    ):
        found = _same(index, query, rules, new_photo)
        assert found, rules
    assert index.reloads == 1
    wide = PhotoRules(candidate_hamming=14, max_candidates=200)
    before = _same(index, query, wide, new_photo)
    assert all(d <= 14 for _, d, _, _ in before)

    # Rows added after the load are read by id at the next search.
    extra = _photos(surveys[0], 3)
    _index(extra, [query.full[2], query.full[3], _flip(query.full[4], 2, rng)], query.centre[5:8])
    after = _same(index, query, wide, new_photo)
    assert {p for p, *_ in after} - {p for p, *_ in before} == set(extra)
    assert [d for p, d, *_ in after if p in extra] == [0, 0, 0]

    # A photo indexed again: its new hashes replace the old ones.
    again = extra[0]
    db.session.execute(delete(PhotoHash).where(PhotoHash.survey_photo_id == again))
    _index([again], [rng.integers(0, 2**64, dtype=U64)], [_flip(query.centre[9], 5, rng)])
    replaced = _same(index, query, wide, new_photo)
    assert (again, 5) in [(p, d) for p, d, *_ in replaced]

    # Rows deleted (a photo removed): gone from the candidates without a reload.
    gone = extra[1]
    db.session.execute(delete(PhotoHash).where(PhotoHash.survey_photo_id == gone))
    db.session.flush()
    assert gone not in [p for p, *_ in _same(index, query, wide, new_photo)]
    assert gone not in [p for p, *_ in _same(index, query, PhotoRules(), new_photo)]
    assert index.reloads == 1


def test_the_resident_index_merges_its_recent_rows_and_notices_a_replaced_table(
    app: Flask,
) -> None:
    rng = np.random.default_rng(5)
    households = [factories.make_household(state=CaseState.APPROVED) for _ in range(2)]
    db.session.flush()
    surveys = [_survey(h.id) for h in households]
    query = _query(rng)
    new_photo = db.session.get(SurveyPhoto, _photos(surveys[1], 1)[0])
    assert new_photo is not None
    rules = PhotoRules(max_candidates=50)

    class Small(PhotoHashIndex):
        MERGE_ROWS = 8  # type: ignore[misc]

    index = Small(parts=3)
    assert _same(index, query, rules, new_photo) == []
    for _ in range(4):  # 4 x 10 rows: merged into the main part along the way
        ids = _photos(surveys[0], 5)
        _index(ids, *_near(query, rng, 5, [1, 6, 12]))
        _same(index, query, rules, new_photo)
    assert len(index) == 40
    # The table emptied and filled again under the same ids' range: read afresh.
    db.session.execute(delete(PhotoHash))
    ids = _photos(surveys[0], 3)
    _index(ids, *_near(query, rng, 3, [2]))
    loads = index.reloads
    found = _same(index, query, rules, new_photo)
    assert sorted(p for p, *_ in found) == ids
    assert index.reloads > loads


def test_the_linear_scan_and_the_index_agree_on_an_empty_table(app: Flask) -> None:
    rng = np.random.default_rng(1)
    household = factories.make_household(state=CaseState.APPROVED)
    db.session.flush()
    photo = db.session.get(SurveyPhoto, _photos(_survey(household.id), 1)[0])
    assert photo is not None
    query = _query(rng)
    assert _same(PhotoHashIndex(), query, PhotoRules(), photo) == []
    assert nearest(query, StoredHashes([], [], []), 14, 16) == []


def test_the_search_compiles_without_a_cache_when_numba_has_nowhere_to_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A read-only install run by a user with no home: numba refuses ``cache=True``
    (RuntimeError when the module is imported); the kernel is then compiled without a
    disk cache instead of failing the import, and still computes."""
    import numba

    from server.visits.integrity import hamming_index

    real_njit = numba.njit
    asked: list[bool] = []

    def njit(*args: object, **options: object) -> object:
        if args:  # numba's own use while compiling
            return real_njit(*args, **options)
        asked.append(bool(options.get("cache")))
        if options.get("cache"):
            raise RuntimeError("cannot cache function 'f': no locator available for file 'x'")
        return real_njit(**options)

    monkeypatch.setattr(numba, "njit", njit)

    def add_one(values: np.ndarray) -> np.ndarray:
        return values + 1

    compiled = hamming_index._compiled(add_one)
    assert asked == [True, False]
    assert compiled(np.arange(3, dtype=np.uint64)).tolist() == [1, 2, 3]
