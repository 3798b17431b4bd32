"""The data-key ring (docs/decisions/0010-data-key-rotation.md): token versions, decrypting
under old keys, look-ups matching under every key, and the registry of what a rotation
moves."""

from __future__ import annotations

import ast
import base64
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from server.cases.models import CaseState, Member
from server.cases.service import find_members_by_id_number
from server.clock import utcnow
from server.config import ConfigError, build_config
from server.crypto import DecryptionError, FieldCipher, _derive, key_id, token_key
from server.extensions import db
from server.keyring.registry import (
    LOOKUP_HASHES,
    NOT_LOOKUP_HASHES,
    encrypted_columns,
    table,
)
from server.keyring.rotation import rotate
from sms import optouts
from sms.models import SmsOptOut
from tests import factories
from tests.conftest import DATA_KEY
from tests.mobile_api.test_api_devices import bearer, device_login
from tests.visits.test_api_surveys import at_daytime, new_application

ROOT = Path(__file__).resolve().parents[1]
OLD, NEW = secrets.token_bytes(32), secrets.token_bytes(32)


def v1_token(key: bytes, plaintext: bytes, context: str) -> bytes:
    """A token as dibao wrote them before key ids: 0x01 | nonce | sealed."""
    nonce = os.urandom(12)
    aead = AESGCM(_derive(key, b"dibao field encryption v1"))
    return b"\x01" + nonce + aead.encrypt(nonce, plaintext, context.encode())


def test_new_tokens_are_version_2_and_name_their_key() -> None:
    cipher = FieldCipher(NEW, [OLD])
    token = cipher.encrypt("张三", "members.name")
    assert token[:1] == b"\x02" and token[1:5] == key_id(NEW)
    assert len(token) == 1 + 4 + 12 + len("张三".encode()) + 16
    assert token_key(token) == key_id(NEW).hex() == cipher.current_key_id
    assert cipher.decrypt(token, "members.name") == "张三"
    assert cipher.key_ids == [key_id(NEW).hex(), key_id(OLD).hex()]


def test_version_1_tokens_decrypt_under_the_current_or_an_old_key() -> None:
    under_old = v1_token(OLD, b"152201196005170012", "members.id_number")
    under_new = v1_token(NEW, b"13912345678", "members.phone")
    assert token_key(under_old) == "v1"
    ring = FieldCipher(NEW, [OLD])
    assert ring.decrypt(under_old, "members.id_number") == "152201196005170012"
    assert ring.decrypt(under_new, "members.phone") == "13912345678"
    with pytest.raises(DecryptionError, match="version 1"):
        FieldCipher(NEW).decrypt(under_old, "members.id_number")


def test_a_token_under_an_old_key_decrypts_only_while_the_key_is_in_the_ring() -> None:
    token = FieldCipher(OLD).encrypt_bytes(b"\x00\x01face", "face_templates.encoding")
    assert FieldCipher(NEW, [OLD]).decrypt_bytes(token, "face_templates.encoding") == (
        b"\x00\x01face"
    )
    with pytest.raises(DecryptionError) as raised:
        FieldCipher(NEW).decrypt_bytes(token, "face_templates.encoding")
    message = str(raised.value)
    assert key_id(OLD).hex() in message and "DIBAO_DATA_KEYS_OLD" in message
    assert "face" not in message.replace("face_templates", "")


def test_an_unknown_key_id_names_the_key_never_the_data() -> None:
    token = FieldCipher(OLD).encrypt("152201196005170012", "members.id_number")
    with pytest.raises(DecryptionError) as raised:
        FieldCipher(NEW).decrypt(token, "members.id_number")
    assert key_id(OLD).hex() in str(raised.value)
    assert "152201" not in str(raised.value)


@pytest.mark.parametrize("version", [1, 2])
def test_the_column_context_is_still_bound(version: int) -> None:
    ring = FieldCipher(NEW, [OLD])
    token = (
        v1_token(OLD, b"13912345678", "members.phone")
        if version == 1
        else ring.encrypt("13912345678", "members.phone")
    )
    assert ring.decrypt(token, "members.phone") == "13912345678"
    with pytest.raises(DecryptionError):
        ring.decrypt(token, "sms_messages.to_phone")
    tampered = token[:-1] + bytes([token[-1] ^ 1])
    with pytest.raises(DecryptionError):
        ring.decrypt(tampered, "members.phone")
    with pytest.raises(DecryptionError, match="not a dibao ciphertext"):
        ring.decrypt(b"\x03" + token[1:], "members.phone")


def test_look_up_hashes_cover_the_ring_and_store_under_the_current_key() -> None:
    ring = FieldCipher(NEW, [OLD])
    hashes = ring.lookup_hashes("13912345678", "sms.opt_out")
    assert hashes == [
        FieldCipher(NEW).lookup_hash("13912345678", "sms.opt_out"),
        FieldCipher(OLD).lookup_hash("13912345678", "sms.opt_out"),
    ]
    assert ring.lookup_hash("13912345678", "sms.opt_out") == hashes[0]
    assert ring.lookup_hashes_by_key("13912345678", "sms.opt_out") == dict(
        zip(hashes, ring.key_ids, strict=True)
    )


def test_the_same_key_twice_in_the_ring_is_refused() -> None:
    with pytest.raises(ValueError, match="same key twice"):
        FieldCipher(NEW, [OLD, OLD])


def _key(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode()


def test_old_keys_are_read_from_the_configuration(tmp_path: Path) -> None:
    config = build_config(
        str(tmp_path),
        {
            "SECRET_KEY": "s",
            "DIBAO_DATA_KEY": _key(NEW),
            "DIBAO_DATA_KEYS_OLD": f" {_key(OLD)} , {base64.b64encode(b'k' * 32).decode()}",
        },
    )
    assert config["DIBAO_DATA_KEYS_OLD_BYTES"] == [OLD, b"k" * 32]
    assert (
        build_config(str(tmp_path), {"SECRET_KEY": "s", "DIBAO_DATA_KEY": _key(NEW)})[
            "DIBAO_DATA_KEYS_OLD_BYTES"
        ]
        == []
    )


@pytest.mark.parametrize(
    ("old", "message"),
    [
        ("c2hvcnQ=", r"DIBAO_DATA_KEYS_OLD \(key 1\) must decode to 32 bytes"),
        (f"{_key(OLD)},%%%", r"DIBAO_DATA_KEYS_OLD \(key 2\)"),
        (_key(NEW), "is the current DIBAO_DATA_KEY"),
        (f"{_key(OLD)},{_key(OLD)}", "listed twice"),
    ],
)
def test_bad_old_keys_are_named_in_the_error(tmp_path: Path, old: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_config(
            str(tmp_path),
            {"SECRET_KEY": "s", "DIBAO_DATA_KEY": _key(NEW), "DIBAO_DATA_KEYS_OLD": old},
        )


# The registry: what a rotation moves.


def _declared_encrypted_columns() -> set[str]:
    """Every ``EncryptedText("...")`` / ``EncryptedBytes("...")`` written in the source."""
    found = set()
    for package in ("server", "sms", "mobile_api"):
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts or path.name == "types.py":
                continue
            for node in ast.walk(ast.parse(path.read_text("utf-8"))):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Name)
                    and node.func.id in ("EncryptedText", "EncryptedBytes")
                    and node.args
                    and isinstance(node.args[0], ast.Constant)
                ):
                    found.add(str(node.args[0].value))
    return found


def test_every_encrypted_column_in_the_source_is_found_by_introspection(app: Flask) -> None:
    found = {column.context for column in encrypted_columns()}
    assert {"members.id_number", "face_templates.encoding", "sms_messages.to_phone"} <= found
    # A column typed EncryptedText/EncryptedBytes in a model the metadata does not see
    # (not imported by server/models.py or the app) would be missed by the rotation.
    assert _declared_encrypted_columns() <= found
    assert len(found) == len(encrypted_columns())  # contexts are unique: one per column


def test_every_hash_column_is_registered_as_a_look_up_hash_or_not(app: Flask) -> None:
    registered = {f"{entry.table}.{entry.column}" for entry in LOOKUP_HASHES}
    named_like_hashes = {
        f"{t.name}.{c.name}"
        for t in db.metadata.tables.values()
        for c in t.columns
        if re.search(r"(^|_)hash$", c.name)
    }
    unknown = named_like_hashes - registered - NOT_LOOKUP_HASHES
    assert unknown == set(), (
        "a new *_hash column: add it to LOOKUP_HASHES (server/keyring/registry.py) if it is "
        "a lookup_hash of personal data, else to NOT_LOOKUP_HASHES"
    )
    assert named_like_hashes >= NOT_LOOKUP_HASHES  # no stale names
    encrypted = {(c.table, c.column) for c in encrypted_columns()}
    for entry in LOOKUP_HASHES:
        assert entry.column in table(entry.table).c
        sources = [(entry.table, entry.source)] if entry.source else list(entry.candidates)
        assert all(source in encrypted for source in sources), entry


# Look-ups during a rotation: rows hashed under the old key are still found.


@contextmanager
def data_key(app: Flask, current: bytes, *old: bytes) -> Iterator[FieldCipher]:
    """Run part of a test as a process configured with this key ring."""
    original = app.extensions["dibao.cipher"]
    app.extensions["dibao.cipher"] = cipher = FieldCipher(current, old)
    try:
        yield cipher
    finally:
        app.extensions["dibao.cipher"] = original


def test_the_duplicate_id_check_finds_members_hashed_under_the_old_key(
    app: Flask, client: FlaskClient
) -> None:
    survey = at_daytime(new_application())
    id_number = survey["members"][0]["id_number"]
    with data_key(app, OLD):
        household = factories.make_household(state=CaseState.APPROVED)
        household.members[0].id_number = id_number
        household.members[0].id_number_hash = FieldCipher(OLD).lookup_hash(
            id_number, "members.id_number"
        )
        db.session.flush()
        household_id = household.id
    with data_key(app, NEW, OLD):
        assert [m.household_id for m in find_members_by_id_number(id_number)] == [household_id]
        token = device_login(client).get_json()["token"]
        response = client.post("/api/v1/surveys", json=survey, headers=bearer(token))
        assert response.status_code == 201, response.get_json()
        flags = {f["code"]: f for f in response.get_json()["flags"]}
        assert flags["member_registered_elsewhere"]["value"] == str(household_id)
        # The new member is stored under the new key; both are found under either.
        found = find_members_by_id_number(id_number)
        assert len(found) == 2
        hashes = set(
            db.session.scalars(
                select(Member.id_number_hash).where(Member.id.in_([m.id for m in found]))
            )
        )
        assert hashes == set(FieldCipher(NEW, [OLD]).lookup_hashes(id_number, "members.id_number"))
    with data_key(app, NEW):  # the old key dropped before the rotation: the old row is lost
        assert len(find_members_by_id_number(id_number)) == 1


def test_an_opt_out_made_under_the_old_key_still_stops_messages(app: Flask) -> None:
    with data_key(app, OLD):
        optouts.opt_out("+86 139 0000 1111", source="sms")
    with data_key(app, NEW, OLD):
        assert optouts.is_opted_out("13900001111")
        assert optouts.opted_out({1: "13900001111", 2: "13900002222"}) == {1}
        optouts.opt_out("13900001111", source="sms")  # already out: no second row
        assert len(db.session.scalars(select(SmsOptOut)).all()) == 1
        optouts.opt_in("0086 13900001111")
        assert not optouts.is_opted_out("13900001111")


def test_rotating_an_opt_out_also_stored_under_the_current_key_keeps_one_row(
    app: Flask,
) -> None:
    """A race can leave a number opted out under both keys (the hash column is unique):
    the rotation removes the old copy instead of failing."""
    before = base64.urlsafe_b64decode(DATA_KEY)  # what the test database holds
    with data_key(app, OLD, before):
        factories.make_household(head_phone="13911112222")
        optouts.opt_out("13911112222", source="sms")
        optouts.opt_out("13911113333", source="sms")  # nobody's number
    with data_key(app, NEW, OLD, before) as ring:
        current = ring.lookup_hash("13911112222", "sms.opt_out")
        db.session.add(SmsOptOut(phone_hash=current, source="sms", opted_out_at=utcnow()))
        db.session.flush()
        report = rotate(batch=50)
        [opt_outs] = [c for c in report.columns if c.name == "sms_opt_outs.phone_hash"]
        assert (opt_outs.updated, opt_outs.deleted, opt_outs.unmatched) == (0, 1, 1)
        assert current in db.session.scalars(select(SmsOptOut.phone_hash)).all()
        assert len(db.session.scalars(select(SmsOptOut)).all()) == 2
        assert optouts.is_opted_out("13911112222") and optouts.is_opted_out("13911113333")
    with data_key(app, NEW):  # the unmatched one is lost with the old key, as reported
        assert optouts.is_opted_out("13911112222") and not optouts.is_opted_out("13911113333")


def test_no_query_compares_a_hash_column_with_the_current_keys_hash_alone() -> None:
    """``column == lookup_hash(...)`` misses rows still hashed under an old key during a
    rotation: look-ups use ``column.in_(lookup_hashes(...))`` (decision 0010)."""
    writers = {"lookup_hash", "id_number_hash", "phone_key"}  # current key only: writes
    offenders = []
    for package in ("server", "sms", "mobile_api"):
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text("utf-8"))):
                if not isinstance(node, ast.Compare) or not any(
                    isinstance(op, ast.Eq | ast.NotEq) for op in node.ops
                ):
                    continue
                for side in (node.left, *node.comparators):
                    func = side.func if isinstance(side, ast.Call) else None
                    name = getattr(func, "attr", None) or getattr(func, "id", None)
                    if name in writers:
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []
