"""`dibao keys rotate` end to end (docs/decisions/0010-data-key-rotation.md): a database
written under an old key moved to a new one while tablets upload, then read with the new
key alone; a rotation stopped half-way and run again."""

from __future__ import annotations

import base64
import os
import re
import secrets
import threading
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from flask import Flask
from flask_migrate import upgrade
from sqlalchemy import func, select, update
from sqlalchemy.orm import undefer

from server.audit.models import AuditEntry
from server.cases.models import CaseState, Household, Member
from server.cli import keys_group
from server.crypto import FieldCipher, _derive, normalize_id_number, token_key
from server.extensions import db
from server.faces.models import FaceTemplate
from server.keyring.registry import encrypted_columns, raw
from server.keyring.rotation import rotate, status
from server.visits.models import Survey
from sms import optouts
from sms.models import MessageKind, SmsMessage, SmsOptOut
from tests import factories
from tests.conftest import DatabaseFactory, make_app
from tests.mobile_api.test_api_devices import bearer, device_login
from tests.visits.test_api_surveys import at_daytime, new_application, survey_json

pytestmark = pytest.mark.slow  # each test builds, seeds and rotates its own database

OLD, NEW = secrets.token_bytes(32), secrets.token_bytes(32)
HOUSEHOLDS = 24
TABLES = (Household, Member, Survey, FaceTemplate, SmsMessage, SmsOptOut)


def b64(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).decode()


def v1_token(key: bytes, plaintext: str, context: str) -> bytes:
    """A value as stored before tokens named their key."""
    nonce = os.urandom(12)
    sealed = AESGCM(_derive(key, b"dibao field encryption v1")).encrypt(
        nonce, plaintext.encode(), context.encode()
    )
    return b"\x01" + nonce + sealed


def seed_under_old_key(databases: DatabaseFactory, tmp_path: Path) -> str:
    """Households, faces, messages, opt-outs and visits written by a service whose only
    key is OLD (some values still version 1)."""
    url = databases.new("keys")
    old = make_app(url, tmp_path / "old", DIBAO_DATA_KEY=b64(OLD))
    with old.app_context():
        upgrade(directory=old.extensions["migrate"].directory)
        factories.base_data()
        households = [
            factories.make_household(state=CaseState.APPROVED, head_phone=f"139{n:08d}")
            for n in range(HOUSEHOLDS)
        ]
        db.session.flush()
        for n, household in enumerate(households):
            head = household.members[0]
            encoding = bytes([n]) * 1024
            db.session.add(
                FaceTemplate(
                    member_id=head.id,
                    household_id=household.id,
                    encoding=encoding,
                    model_name="test",
                    model_version="1",
                )
            )
            db.session.add(
                SmsMessage(
                    member_id=head.id,
                    household_id=household.id,
                    month="2026-11",
                    kind=MessageKind.REMINDER,
                    to_phone=f"138{n:08d}",
                    body=f"请在25日前完成认证 {n}",
                )
            )
        optouts.opt_out("13900000000", source="sms")  # a member's phone
        optouts.opt_out("+86 13800000001", source="sms")  # a message's number only
        optouts.opt_out("13700000000", source="sms")  # nobody's: cannot be moved
        db.session.commit()
        addresses = raw("households", "id", "address")
        for household in households[:5]:
            db.session.execute(
                update(addresses)
                .where(addresses.c.id == household.id)
                .values(address=v1_token(OLD, f"旧地址{household.id}", "households.address"))
            )
        db.session.commit()
        household_ids = [h.id for h in households]
    client = old.test_client()
    token = device_login(client).get_json()["token"]
    for household_id in household_ids[:3]:
        response = client.post(
            "/api/v1/surveys", json=at_daytime(survey_json(household_id, {})), headers=bearer(token)
        )
        assert response.status_code == 201, response.get_json()
    return url


def plaintexts(application: Flask) -> dict[tuple[str, str, Any], bytes]:
    """Every encrypted value of the database, decrypted with the app's key ring."""
    out = {}
    with application.app_context():
        cipher: FieldCipher = application.extensions["dibao.cipher"]
        for column in encrypted_columns():
            t = raw(column.table, column.primary_key, column.column)
            query = select(t.c[column.primary_key], t.c[column.column]).where(
                t.c[column.column].is_not(None)
            )
            for row_id, value in db.session.execute(query):
                plain = cipher.decrypt_bytes(bytes(value), column.context)
                out[(column.table, column.column, row_id)] = plain
        db.session.remove()
    return out


def row_counts(application: Flask) -> dict[str, int]:
    with application.app_context():
        counts = {
            model.__tablename__: db.session.scalar(select(func.count()).select_from(model)) or 0
            for model in TABLES
        }
        db.session.remove()
    return counts


class Uploader(threading.Thread):
    """A tablet registering new applications in its own thread, one each time the test
    asks (``wait_for_one_more``), while the rotation runs. Not back to back: on SQLite a
    writer that never lets go starves the rotation's writes past the busy timeout (a
    tablet does not upload in a tight loop either)."""

    def __init__(self, application: Flask) -> None:
        super().__init__(daemon=True)
        self.application = application
        self.stopping = threading.Event()
        self.uploaded = threading.Condition()
        self.wanted = threading.Semaphore(0)
        self.created = 0
        self.failures: list[Any] = []

    def run(self) -> None:
        client = self.application.test_client()
        token = device_login(client).get_json()["token"]
        while not self.stopping.is_set():
            if not self.wanted.acquire(timeout=0.1):
                continue
            with self.application.app_context():
                survey = at_daytime(new_application())
            response = client.post("/api/v1/surveys", json=survey, headers=bearer(token))
            with self.uploaded:
                if response.status_code == 201:
                    self.created += 1
                else:
                    self.failures.append(response.get_json())
                self.uploaded.notify_all()

    def wait_for_one_more(self) -> None:
        with self.uploaded:
            seen = self.created + len(self.failures)
            self.wanted.release()
            assert self.uploaded.wait_for(
                lambda: self.created + len(self.failures) > seen, timeout=60
            )

    def finish(self) -> None:
        self.stopping.set()
        self.join(timeout=60)


def change_phone(application: Flask, member_id: int, phone: str) -> None:
    """The app edits a member's phone in its own thread and transaction."""

    def edit() -> None:
        with application.app_context():
            member = db.session.get(Member, member_id)
            assert member is not None
            member.phone = phone
            db.session.commit()
            db.session.remove()

    thread = threading.Thread(target=edit)
    thread.start()
    thread.join(timeout=60)


def test_rotation_while_tablets_upload_leaves_everything_readable_by_the_new_key_alone(
    databases: DatabaseFactory, tmp_path: Path
) -> None:
    url = seed_under_old_key(databases, tmp_path)
    ring = make_app(url, tmp_path / "ring", DIBAO_DATA_KEY=b64(NEW), DIBAO_DATA_KEYS_OLD=b64(OLD))
    before, counts = plaintexts(ring), row_counts(ring)
    assert any(token_key(v) == "v1" for v in _tokens(ring, "households", "address"))

    uploader = Uploader(ring)
    uploader.start()
    edited: dict[int, str] = {}
    batches_waited = 0

    def before_write(column: str, ids: list[Any]) -> None:
        nonlocal batches_waited
        if column == "members.phone" and not edited:
            # Between the rotation's read and its write, the app changes a phone (not
            # the first: household 0's head opted out).
            edited[ids[-1]] = "13600000000"
            change_phone(ring, ids[-1], "13600000000")
        if batches_waited < 4:  # uploads land while the rotation runs
            batches_waited += 1
            uploader.wait_for_one_more()

    try:
        with ring.app_context():
            report = rotate(batch=7, before_write=before_write)
            db.session.remove()
    finally:
        uploader.finish()
    assert uploader.failures == []
    assert uploader.created >= 4
    assert report.complete and report.remaining == 0
    by_name = {c.name: c for c in report.columns}
    assert by_name["members.phone"].skipped == 1  # the app's write was not overwritten
    assert by_name["members.id_number_hash"].updated == 2 * HOUSEHOLDS
    assert by_name["sms_opt_outs.phone_hash"].updated == 2
    assert by_name["sms_opt_outs.phone_hash"].unmatched == 1
    assert report.totals()["unreadable"] == 0

    # The old key dropped from the configuration: everything still reads.
    new_only = make_app(url, tmp_path / "new", DIBAO_DATA_KEY=b64(NEW))
    after = plaintexts(new_only)
    for (table_name, column, row_id), value in before.items():
        if (table_name, column) == ("members", "phone") and row_id in edited:
            assert after[(table_name, column, row_id)] == edited[row_id].encode()
        else:
            assert after[(table_name, column, row_id)] == value, (table_name, column, row_id)
    new_id = FieldCipher(NEW).current_key_id
    for column in encrypted_columns():
        assert {token_key(v) for v in _tokens(new_only, column.table, column.column)} <= {new_id}
    assert row_counts(new_only) == {
        **counts,
        "households": counts["households"] + uploader.created,
        "members": counts["members"] + 2 * uploader.created,
        "surveys": counts["surveys"] + uploader.created,
    }
    _check_read_through_the_models(new_only)


def _tokens(application: Flask, table_name: str, column: str) -> list[bytes]:
    with application.app_context():
        t = raw(table_name, column)
        tokens = [bytes(v) for (v,) in db.session.execute(select(t.c[column])) if v is not None]
        db.session.remove()
    return tokens


def _check_read_through_the_models(application: Flask) -> None:
    """The app with the new key alone: every model reads, every look-up matches."""
    cipher = FieldCipher(NEW)
    with application.app_context():
        for member in db.session.scalars(select(Member)):
            assert member.id_number_hash == cipher.lookup_hash(
                normalize_id_number(member.id_number), "members.id_number"
            )
            assert member.name and (member.phone is None or member.phone.isdigit())
        assert all(h.address for h in db.session.scalars(select(Household).options(undefer("*"))))
        assert all(s.payload for s in db.session.scalars(select(Survey).options(undefer("*"))))
        assert all(len(f.encoding) == 1024 for f in db.session.scalars(select(FaceTemplate)))
        assert all(m.to_phone and m.body for m in db.session.scalars(select(SmsMessage)))
        assert optouts.is_opted_out("13900000000") and optouts.is_opted_out("13800000001")
        columns = {c.name: c.counts for c in status(hashes=True)}
        assert columns["members.id_number_hash"] == {
            cipher.current_key_id: columns_total("members")
        }
        assert columns["sms_opt_outs.phone_hash"] == {cipher.current_key_id: 2, "unmatched": 1}
        actions = [e.action for e in db.session.scalars(select(AuditEntry).order_by(AuditEntry.id))]
        assert [a for a in actions if a.startswith("keys.")] == [
            "keys.rotate_start",
            "keys.rotate_finish",
        ]
        finish = db.session.scalars(
            select(AuditEntry).where(AuditEntry.action == "keys.rotate_finish")
        ).one()
        assert finish.details["complete"] is True and finish.details["remaining"] == 0
        assert set(finish.details) == {"key_id", "complete", "batches", "remaining", "counts"}
        db.session.remove()


def columns_total(table_name: str) -> int:
    return db.session.scalar(select(func.count()).select_from(db.metadata.tables[table_name])) or 0


def test_a_stopped_rotation_continues_where_it_stopped_when_run_again(
    databases: DatabaseFactory, tmp_path: Path
) -> None:
    url = seed_under_old_key(databases, tmp_path)
    ring = make_app(url, tmp_path / "ring", DIBAO_DATA_KEY=b64(NEW), DIBAO_DATA_KEYS_OLD=b64(OLD))
    before = plaintexts(ring)
    runner = ring.test_cli_runner()
    stopped = runner.invoke(keys_group, ["rotate", "--batch", "5", "--max-batches", "2"])
    assert stopped.exit_code == 0, stopped.output
    assert "stopped after --max-batches" in stopped.output
    half = runner.invoke(keys_group, ["status"])
    assert half.exit_code == 0, half.output
    new_id, old_id = FieldCipher(NEW, [OLD]).key_ids
    moved = re.search(r"(\d+) values moved in 2 batches", stopped.output)
    assert moved is not None and 0 < int(moved[1]) <= 10, stopped.output
    with ring.app_context():
        counts = [c.counts for c in status() if c.kind == "encrypted"]
        db.session.remove()
    assert sum(c.get(new_id, 0) for c in counts) == int(moved[1])  # what was moved ...
    assert sum(c.get(old_id, 0) + c.get("v1", 0) for c in counts) > 0  # ... the rest not yet
    assert f"{old_id} (old): " in half.output and "v1: 5" in half.output
    assert "keep the old keys" in half.output

    finished = runner.invoke(keys_group, ["rotate", "--batch", "5"])
    assert finished.exit_code == 0, finished.output
    assert "every encrypted value is under the current key" in finished.output
    assert "1 look-up hashes match no known value" in finished.output
    done = runner.invoke(keys_group, ["status", "--hashes"])
    assert done.exit_code == 0, done.output
    assert f"{old_id} (old):" not in done.output
    forgotten = make_app(url, tmp_path / "forgotten", DIBAO_DATA_KEY=b64(OLD))
    unknown = forgotten.test_cli_runner().invoke(keys_group, ["status"])
    assert f"{new_id} (no such key configured: unreadable): " in unknown.output
    assert "everything is under the current key" in done.output
    again = runner.invoke(keys_group, ["rotate"])  # nothing left: a no-op
    assert "0 values moved" in again.output
    assert plaintexts(make_app(url, tmp_path / "new", DIBAO_DATA_KEY=b64(NEW))) == before
