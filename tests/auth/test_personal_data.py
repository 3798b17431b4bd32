"""Personal data at rest: encrypted, looked up by keyed hash, every read audited."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select, text

from server.audit.models import AuditEntry
from server.cases.codes import ALPHABET, new_case_code, normalize_case_code
from server.cases.service import find_members_by_id_number, read_member_details
from server.crypto import DecryptionError, FieldCipher
from server.extensions import db
from tests import factories


def test_the_raw_rows_hold_no_plaintext_name_id_number_phone_or_address(app: object) -> None:
    household = factories.make_household(head_phone="13987654321")
    head = household.members[0]
    id_number, name = head.id_number, head.name
    db.session.flush()

    raw_member = (
        db.session.execute(text("SELECT * FROM members WHERE id = :id"), {"id": head.id})
        .mappings()
        .one()
    )
    raw_household = (
        db.session.execute(text("SELECT * FROM households WHERE id = :id"), {"id": household.id})
        .mappings()
        .one()
    )
    everything = b"".join(
        bytes(v) if isinstance(v, bytes | memoryview) else str(v).encode()
        for v in [*raw_member.values(), *raw_household.values()]
    )
    for secret in (id_number, id_number[-8:], name, "13987654321", "3组12号"):
        assert secret.encode() not in everything
    assert raw_member["id_number_hash"] != id_number


def test_a_member_is_found_by_id_number_in_any_spelling(app: object) -> None:
    household = factories.make_household()
    head = household.members[0]
    spelled = " ".join(head.id_number.lower())
    assert [m.id for m in find_members_by_id_number(spelled)] == [head.id]


def test_the_same_person_in_a_second_household_is_detectable(app: object) -> None:
    first = factories.make_household()
    id_number = first.members[0].id_number
    second = factories.make_household(village=factories.areas().village_b)
    second.members[0].id_number = id_number
    second.members[0].id_number_hash = first.members[0].id_number_hash
    db.session.flush()
    households = {m.household_id for m in find_members_by_id_number(id_number)}
    assert households == {first.id, second.id}


def test_reading_members_personal_data_writes_one_audit_row_per_member(app: object) -> None:
    household = factories.make_household(incomes=("0.00", "0.00", "0.00"))
    reviewer = factories.user("reviewer_a")
    details = read_member_details(reviewer, household)
    assert [d.name for d in details] == [m.name for m in household.members]
    rows = db.session.scalars(
        select(AuditEntry).where(
            AuditEntry.action == "member.read_personal", AuditEntry.actor_id == reviewer.id
        )
    ).all()
    assert sorted(r.object_id for r in rows) == sorted(str(m.id) for m in household.members)
    assert all(r.details == {"household_id": household.id} for r in rows)


def test_ciphertext_moved_to_another_column_or_key_does_not_decrypt() -> None:
    cipher = FieldCipher(b"k" * 32)
    token = cipher.encrypt("152201196005170012", "members.id_number")
    assert cipher.decrypt(token, "members.id_number") == "152201196005170012"
    with pytest.raises(DecryptionError):
        cipher.decrypt(token, "members.phone")
    with pytest.raises(DecryptionError):
        FieldCipher(b"x" * 32).decrypt(token, "members.id_number")
    tampered = token[:-1] + bytes([token[-1] ^ 1])
    with pytest.raises(DecryptionError):
        cipher.decrypt(tampered, "members.id_number")


def test_the_same_value_encrypts_differently_each_time() -> None:
    cipher = FieldCipher(b"k" * 32)
    assert cipher.encrypt("张三", "members.name") != cipher.encrypt("张三", "members.name")


def test_a_members_repr_never_shows_personal_data(app: object) -> None:
    member = factories.make_household().members[0]
    assert member.name not in repr(member) and member.id_number not in repr(member)


@given(st.integers(min_value=0, max_value=2**32))
def test_case_codes_catch_any_single_mistyped_symbol_or_swap(seed: int) -> None:
    import random

    rng = random.Random(seed)
    code = new_case_code(rng)
    assert normalize_case_code(code) == code
    assert normalize_case_code(code.lower().replace("-", " ")) == code
    body = code.replace("-", "")
    position = rng.randrange(len(body))
    wrong = rng.choice([ch for ch in ALPHABET if ch != body[position]])
    mistyped = body[:position] + wrong + body[position + 1 :]
    assert normalize_case_code(mistyped) is None
    swap = rng.randrange(len(body) - 1)
    if body[swap] != body[swap + 1]:
        swapped = body[:swap] + body[swap + 1] + body[swap] + body[swap + 2 :]
        assert normalize_case_code(swapped) is None


def test_case_codes_are_random_not_derived_from_anything() -> None:
    codes = {new_case_code() for _ in range(2000)}
    assert len(codes) == 2000
