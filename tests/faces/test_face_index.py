"""The resident 1:N face index (server/faces/index.py): exactly the brute-force matches,
kept current by the template versions, reloaded after a key rotation or a restore."""

from __future__ import annotations

import base64
import secrets

import numpy as np
import numpy.typing as npt
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, text

from server.cases.models import CaseState
from server.crypto import FieldCipher
from server.extensions import db
from server.faces.engine import MODEL_NAME
from server.faces.index import FaceIndex, face_index
from server.faces.models import FaceTemplate
from server.visits import faces
from server.visits.integrity import face_match
from tests import factories
from tests.conftest import DATA_KEY
from tests.faces.test_faces import portrait_visit, token  # noqa: F401  (a fixture)

Vector = npt.NDArray[np.float64]


def _households(count: int) -> list[tuple[int, int]]:
    """(household id, member id) of ``count`` new households."""
    made = [factories.make_household(state=CaseState.APPROVED) for _ in range(count)]
    db.session.commit()
    return [(h.id, h.members[0].id) for h in made]


def _add(encoding: Vector, household: tuple[int, int], *, active: bool = True) -> FaceTemplate:
    template = FaceTemplate(
        member_id=household[1],
        household_id=household[0],
        encoding=np.asarray(encoding, np.float64).tobytes(),
        model_name=MODEL_NAME,
        model_version="test",
        active=active,
    )
    db.session.add(template)
    return template


def _committed(encoding: Vector, household: tuple[int, int]) -> int:
    template = _add(encoding, household)
    db.session.commit()
    return template.id


def _random_faces(rng: np.random.Generator, count: int) -> npt.NDArray[np.float64]:
    """Like dlib encodings: a common offset, spread unevenly over the axes, norm ~1."""
    offset = np.linspace(-0.12, 0.12, 128)
    spread = np.linspace(0.02, 0.11, 128)
    faces_ = offset + rng.standard_normal((count, 128)) * spread
    return np.asarray(faces_, np.float64)


def _at(rng: np.random.Generator, centre: Vector, distance: float) -> Vector:
    direction = rng.standard_normal(128)
    return np.asarray(centre + direction / np.linalg.norm(direction) * distance, np.float64)


def _brute_rows(query: Vector, threshold: float, exclude: int) -> dict[int, float]:
    """Template id -> distance: every active row scanned (the old way)."""
    rows = db.session.execute(
        select(FaceTemplate.id, FaceTemplate.encoding).where(
            FaceTemplate.active.is_(True), FaceTemplate.household_id != exclude
        )
    ).all()
    found = face_match.search([query], [r.encoding for r in rows], threshold)
    return {rows[i].id: d for i, d in found.items()}


def _index_rows(query: Vector, threshold: float, exclude: int) -> dict[int, float]:
    """Template id -> distance: the index's candidates, rechecked."""
    ids = face_index().candidates(db.session, [query], threshold, exclude_household=exclude)
    rows = db.session.execute(
        select(FaceTemplate.id, FaceTemplate.encoding).where(
            FaceTemplate.id.in_(ids), FaceTemplate.active.is_(True)
        )
    ).all()
    found = face_match.search([query], [r.encoding for r in rows], threshold)
    return {rows[i].id: d for i, d in found.items()}


def _both(queries: list[Vector], household: int, threshold: float) -> tuple[object, object]:
    return (
        faces.other_household_distances(queries, household, MODEL_NAME, threshold),
        faces.other_household_distances_brute_force(queries, household, MODEL_NAME, threshold),
    )


def test_the_index_finds_exactly_what_the_brute_force_scan_finds(app: Flask) -> None:
    rng = np.random.default_rng(19)
    homes = _households(6)
    queries = _random_faces(rng, 12)
    for i, encoding in enumerate(_random_faces(rng, 1500)):
        _add(encoding, homes[i % len(homes)])
    # Planted around each query: just inside and just outside the tolerances, down to
    # the last float32 and float64 steps, and the query itself.
    planted = 0
    for q in queries:
        for tolerance in (0.5, 0.55, 0.6):
            for delta in (-1e-3, -1e-6, -1e-7, -1e-9, -1e-12, 0.0, 1e-12, 1e-9, 1e-7, 1e-6):
                _add(_at(rng, q, tolerance + delta), homes[int(rng.integers(len(homes)))])
                planted += 1
        _add(q, homes[int(rng.integers(len(homes)))])
    db.session.commit()

    matched = 0
    for q in queries:
        exclude = homes[int(rng.integers(len(homes)))][0]
        for tolerance in (0.5, 0.55, 0.6):
            expected = _brute_rows(q, tolerance, exclude)
            assert _index_rows(q, tolerance, exclude) == expected
            matched += len(expected)
            index_result, brute_result = _both([q, _at(rng, q, 0.1)], exclude, tolerance)
            assert index_result == brute_result
    # The planted points did straddle the tolerances (some in, some out).
    assert 0 < matched < planted * 3
    assert face_index().loads >= 1


def test_a_template_added_or_revoked_shows_at_the_next_search(app: Flask) -> None:
    rng = np.random.default_rng(7)
    homes = _households(3)
    for i, encoding in enumerate(_random_faces(rng, 200)):
        _add(encoding, homes[i % 3])
    db.session.commit()
    q = _random_faces(rng, 1)[0]
    assert _index_rows(q, 0.5, homes[0][0]) == _brute_rows(q, 0.5, homes[0][0]) == {}
    loads = face_index().loads

    near = _add(_at(rng, q, 0.3), homes[1])
    db.session.commit()
    found = _index_rows(q, 0.5, homes[0][0])
    assert list(found) == [near.id] and abs(found[near.id] - 0.3) < 1e-9
    assert face_index().loads == loads  # pulled, not reloaded

    near.active = False  # revoked: it must not vouch or match any more
    db.session.commit()
    assert _index_rows(q, 0.5, homes[0][0]) == {}
    assert near.id not in face_index()._row_of
    assert face_index().loads == loads

    # Written and not yet committed by this session: searched on the side, not kept.
    with db.session.begin_nested():
        pending = _add(_at(rng, q, 0.2), homes[2])
        db.session.flush()
        assert list(_index_rows(q, 0.5, homes[0][0])) == [pending.id]
        assert pending.id not in face_index()._row_of
        pending_id = pending.id
    assert pending_id not in face_index()._row_of


def test_a_key_rotation_reloads_the_index_and_it_still_finds(app: Flask) -> None:
    rng = np.random.default_rng(11)
    homes = _households(2)
    q = _random_faces(rng, 1)[0]
    same = _add(_at(rng, q, 0.2), homes[1])
    db.session.commit()
    assert list(_index_rows(q, 0.5, homes[0][0])) == [same.id]
    loads = face_index().loads
    original = app.extensions["dibao.cipher"]
    app.extensions["dibao.cipher"] = FieldCipher(
        secrets.token_bytes(32), [base64.urlsafe_b64decode(DATA_KEY)]
    )
    try:
        assert list(_index_rows(q, 0.5, homes[0][0])) == [same.id]
        assert face_index().loads == loads + 1
        assert list(_index_rows(q, 0.5, homes[0][0])) == [same.id]
        assert face_index().loads == loads + 1  # once
    finally:
        app.extensions["dibao.cipher"] = original


def _clock_back() -> None:
    db.session.execute(text("UPDATE face_template_clock SET version = version - 1"))
    db.session.execute(
        text(
            "DELETE FROM face_template_versions"
            " WHERE version > (SELECT version FROM face_template_clock)"
        )
    )


def test_a_restore_that_moves_the_versions_back_reloads_the_index(app: Flask) -> None:
    rng = np.random.default_rng(5)
    homes = _households(2)
    q = _random_faces(rng, 1)[0]
    kept_id = _committed(_at(rng, q, 0.25), homes[1])
    lost_id = _committed(_at(rng, q, 0.15), homes[1])
    assert set(_index_rows(q, 0.5, homes[0][0])) == {kept_id, lost_id}
    loads = face_index().loads

    # What a restore of a backup taken before ``lost`` looks like: the row is gone and
    # the clock is back where it was.
    db.session.execute(text("DELETE FROM face_templates WHERE id = :id"), {"id": lost_id})
    _clock_back()
    db.session.commit()
    db.session.expunge_all()
    assert set(_index_rows(q, 0.5, homes[0][0])) == {kept_id}
    assert lost_id not in face_index()._row_of
    assert face_index().loads == loads + 1

    # Restored, then written past the version the index had seen: a forked history
    # (the token of its last version is gone): reloaded again, nothing stale.
    db.session.execute(text("DELETE FROM face_templates WHERE id = :id"), {"id": kept_id})
    _clock_back()
    db.session.commit()
    first = _committed(_at(rng, q, 0.3), homes[1])
    second = _committed(_at(rng, q, 0.35), homes[1])
    assert set(_index_rows(q, 0.5, homes[0][0])) == {first, second}
    assert set(face_index()._row_of) == {first, second}  # SQLite may reuse kept's id
    assert face_index().loads == loads + 2


def test_an_index_on_its_own_matches_a_fresh_one(app: Flask) -> None:
    """Many small pulls end in the same rows as one full load."""
    rng = np.random.default_rng(3)
    homes = _households(4)
    q = _random_faces(rng, 1)[0]
    for step in range(6):
        for encoding in _random_faces(rng, 30):
            _add(encoding, homes[step % 4])
        _add(_at(rng, q, 0.4 + step * 0.02), homes[step % 4], active=step % 2 == 0)
        db.session.commit()
        _index_rows(q, 0.55, -1)
    fresh = FaceIndex()
    assert fresh.candidates(db.session, [q], 0.55) == face_index().candidates(db.session, [q], 0.55)
    assert sorted(fresh._row_of) == sorted(face_index()._row_of)


@pytest.mark.slow
def test_a_duplicate_enrollment_of_real_photos_is_flagged_through_the_index(
    app: Flask,
    client: FlaskClient,
    token: str,  # noqa: F811
) -> None:
    (first, first_member), (second, second_member) = _households(2)
    portrait_visit(client, token, first, first_member, "obama/obama_1.jpg")
    loads = face_index().loads
    body = portrait_visit(client, token, second, second_member, "obama/obama_2.jpg")
    flags = [f for f in body["flags"] if f["code"] == "face_in_other_household"]
    assert len(flags) == 1 and flags[0]["severity"] == "critical"
    assert f"household {first}" in flags[0]["detail"]
    index = face_index()
    assert index.n >= 1 and index.loads == loads  # the first template came by a pull
    encoding = db.session.scalars(
        select(FaceTemplate.encoding).where(FaceTemplate.household_id == second)
    ).one()
    query = [np.frombuffer(encoding, np.float64)]
    assert _both(query, second, 0.55)[0] == _both(query, second, 0.55)[1] != {}
