"""`dibao backup`, `dibao restore` and `dibao store gc` (server/backup.py), on the
database DIBAO_TEST_DATABASE selects: each test builds systems of its own (a fresh
database and photo store), since a backup reads only what has been committed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import threading
import time
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from flask_migrate import upgrade
from sqlalchemy import func, inspect, select, table

import sms.models  # noqa: F401  (its tables are in the metadata too)
from server import (
    clock,
    models,  # noqa: F401  (every model, so the metadata is complete)
)
from server.audit.models import AuditEntry
from server.auth.models import User
from server.backup import (
    BackupError,
    collect_garbage,
    create_backup,
    find_pg_tool,
    restore_backup,
)
from server.cases.models import CaseState, Household, Member
from server.cli import cli
from server.extensions import db
from server.faces.models import FaceTemplate
from server.proof_of_life import service as pol
from server.proof_of_life.models import ProofOfLifeAttempt, ProofOfLifeFrame
from server.seed import seed_database
from server.seed_history import HistoryOptions
from server.storage import BlobStore, blob_store, referenced_digests, registered_blob_columns
from server.visits.models import SurveyPhoto
from tests import factories
from tests.conftest import DatabaseFactory, login, make_app
from tests.faces.test_faces import FACES
from tests.mobile_api.test_api_devices import bearer, device_login
from tests.proof_of_life.test_proof_of_life_api import next_month
from tests.test_seed import dibao
from tests.visits.test_api_surveys import jpeg, post_multipart, survey_json

# Columns whose names look like a digest but do not name a blob of the photo store.
NOT_BLOBS = {
    ("device_tokens", "digest_ha1"): "an HTTP Digest credential (encrypted)",
    ("device_tokens", "token_hash"): "a hash of a device token",
    ("members", "id_number_hash"): "a keyed hash of an ID number",
    ("members", "phone_hash"): "a keyed hash of a phone number",
    ("objections", "address_hash"): "a keyed hash of an objector's address",
    ("objections", "receipt_hash"): "a hash of an objection's receipt code",
    ("password_links", "token_hash"): "a hash of a one-time password link",
    ("pol_attempts", "frame_hashes"): "perceptual hashes of frames (JSON)",
    ("pol_months", "link_hash"): "a hash of a proof-of-life link token",
    ("photo_hashes", "hash"): "a perceptual hash of a photo",
    ("survey_photos", "phash"): "a perceptual hash of a photo",
    ("sms_opt_outs", "phone_hash"): "a keyed hash of a phone number",
    ("surveys", "content_hash"): "a hash of the submitted survey",
    ("users", "password_hash"): "a password hash",
}
DIGEST_LIKE = re.compile(r"sha|digest|blob|hash|checksum", re.IGNORECASE)


def new_system(databases: DatabaseFactory, folder: Path, label: str) -> tuple[Flask, str]:
    """A migrated, empty database and a photo store of its own."""
    url = databases.new(label)
    app = make_app(url, folder)
    with app.app_context():
        upgrade(directory=app.extensions["migrate"].directory)
    return app, url


def store_files(store_root: Path) -> dict[str, str]:
    """Every file of a photo store's blobs: name -> the hash of its content."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in (store_root / "blobs").rglob("*")
        if p.is_file()
    }


def row_counts(app: Flask) -> dict[str, int]:
    with app.app_context(), db.engine.connect() as conn:
        return {
            name: conn.scalar(select(func.count()).select_from(table(name))) or 0
            for name in inspect(conn).get_table_names()
        }


def store_orphan(store: BlobStore, content: bytes, age_hours: float) -> str:
    temp = store.new_temp()
    temp.write(content)
    digest = store.store(temp)
    stamp = time.time() - age_hours * 3600
    os.utime(store.path(digest), (stamp, stamp))
    return digest


# --------------------------------------------------------------------------- the registry


def test_every_column_holding_a_blob_digest_is_registered() -> None:
    looks_like = {
        (t.name, c.name)
        for t in db.metadata.tables.values()
        for c in t.columns
        if DIGEST_LIKE.search(c.name)
    }
    registered = set(registered_blob_columns())
    # A new digest-like column must be registered (or listed above with its reason):
    # `dibao store gc` would otherwise delete the files it names.
    assert looks_like - set(NOT_BLOBS) == registered
    assert set(NOT_BLOBS) <= looks_like  # the exceptions are real columns
    assert registered >= {
        ("survey_photos", "sha256"),
        ("survey_photos", "thumbnail_sha256"),
        ("pol_frames", "sha256"),
        ("face_templates", "source_sha256"),
    }
    for name, column in registered:
        assert db.metadata.tables[name].c[column].type.length == 64


# --------------------------------------------------------------------------- uploads


def visit_photo(seed: int) -> bytes:
    return jpeg(seed, size=(160, 120))


def upload_visit(client: FlaskClient, token: str, household_id: int, seed: int) -> Any:
    photos = {"house": visit_photo(seed)}
    return post_multipart(client, token, survey_json(household_id, photos), photos)


def upload_every_kind(
    app: Flask, ids: list[int], username: str = "caseworker_a", password: str = factories.PASSWORD
) -> None:
    """A visit photo (and its thumbnail), proof-of-life frames and a face enrollment,
    through the API as a tablet and a phone send them, for three households of
    ``username``'s area."""
    client = app.test_client()
    with app.app_context():
        members = [
            db.session.scalars(
                select(Member.id).where(Member.household_id == i).order_by(Member.id)
            ).first()
            for i in ids
        ]
        head = db.session.get(Member, members[1])
        assert head is not None
        head.proof_of_life_required = True
        db.session.commit()
        link = pol.link_token(pol.month_record(head, next_month()))
        db.session.commit()
        frames_min = pol.rules().frames_min
    token = device_login(client, username, password=password).get_json()["token"]
    assert upload_visit(client, token, ids[0], 7).status_code == 201
    session = client.post("/api/v1/proof-of-life/sessions", json={"link_token": link}).get_json()
    frames = [jpeg(i, size=(640, 480)) for i in range(frames_min)]
    answer = client.post(
        f"/api/v1/proof-of-life/sessions/{session['session_id']}/frames",
        data={
            "nonce": session["nonce"],
            "offsets_ms": json.dumps([i * 300 for i in range(len(frames))]),
            "frames": [(io.BytesIO(f), f"{i}.jpg", "image/jpeg") for i, f in enumerate(frames)],
        },
        content_type="multipart/form-data",
    )
    assert answer.status_code < 300, answer.get_json()
    enrolled = client.post(
        f"/api/v1/members/{members[2]}/face-templates",
        data={
            "photo": (
                io.BytesIO((FACES / "obama" / "obama_1.jpg").read_bytes()),
                "face.jpg",
                "image/jpeg",
            )
        },
        headers=bearer(token),
        content_type="multipart/form-data",
    )
    assert enrolled.status_code == 201, enrolled.get_json()
    with app.app_context():
        sent = hashlib.sha256(visit_photo(7)).hexdigest()
        photo = db.session.scalars(select(SurveyPhoto).where(SurveyPhoto.sha256 == sent)).one()
        assert photo.thumbnail_sha256
        frames = select(func.count()).select_from(ProofOfLifeFrame).join(ProofOfLifeAttempt)
        assert db.session.scalar(frames.where(ProofOfLifeAttempt.member_id == members[1]))
        face = select(FaceTemplate.source_sha256).where(FaceTemplate.member_id == members[2])
        assert db.session.scalar(face) is not None


# --------------------------------------------------------------------------- gc


@pytest.mark.slow
def test_gc_deletes_only_unreferenced_files_older_than_the_grace_period(
    databases: DatabaseFactory, tmp_path: Path
) -> None:
    app, _ = new_system(databases, tmp_path / "system", "gc")
    with app.app_context():
        factories.base_data()
        db.session.commit()
    with app.app_context():
        ids = [factories.make_household(state=CaseState.APPROVED).id for _ in range(3)]
        db.session.commit()
    upload_every_kind(app, ids)
    with app.app_context():
        store = blob_store()
        with db.engine.connect() as conn:
            referenced = referenced_digests(conn)
        old = store_orphan(store, b"left by an upload whose row never committed", 48)
        young = store_orphan(store, b"an upload whose row is about to commit", 1)
        frames_min = pol.rules().frames_min
    # Every kind of upload is referenced: photo, thumbnail, frames, the face photo.
    assert len(referenced) >= 2 + frames_min + 1
    root = Path(app.instance_path) / "store"
    before = store_files(root)
    assert referenced | {old, young} == set(before)
    runner = app.test_cli_runner()

    dry = runner.invoke(cli, ["store", "gc", "--list"])
    assert dry.exit_code == 0, dry.output
    assert old in dry.output and young not in dry.output
    assert "would delete (dry run; --apply deletes) 1 unreferenced files" in dry.output
    assert "kept 1 younger than 24 h" in dry.output
    assert store_files(root) == before  # a dry run changes nothing

    applied = runner.invoke(cli, ["store", "gc", "--apply"])
    assert applied.exit_code == 0, applied.output
    assert "deleted 1 unreferenced files" in applied.output
    assert store_files(root) == {k: v for k, v in before.items() if k != old}
    with app.app_context():
        entry = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "store.gc")).one()
        assert entry.actor_id is None and entry.details["removed"] == 1
        assert entry.details["kept_young"] == 1

    # With no grace, the young one goes too, and still nothing referenced.
    with app.app_context():
        report = collect_garbage(blob_store(), grace_seconds=0, apply=True)
        db.session.commit()
    assert report.removed == 1 and report.orphans == [
        (young, len(b"an upload whose row is about to commit"))
    ]
    assert store_files(root) == {k: v for k, v in before.items() if k in referenced}


@pytest.mark.slow
def test_storing_a_file_already_in_the_store_makes_it_young_again(
    databases: DatabaseFactory, tmp_path: Path
) -> None:
    app, _ = new_system(databases, tmp_path / "system", "young")
    with app.app_context():
        store = blob_store()
        digest = store_orphan(store, b"the same bytes uploaded again", 48)
        again = store_orphan(store, b"the same bytes uploaded again", 0)
        assert again == digest
        report = collect_garbage(store, grace_seconds=24 * 3600, apply=True)
        assert (report.removed, report.young) == (0, 1)
        assert store.exists(digest)


# --------------------------------------------------------------------------- refusals


def test_pg_dump_missing_or_older_than_the_server_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(BackupError, match=r"older than the database server \(version 99\)"):
        find_pg_tool("pg_dump", 99)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BackupError, match="pg_dump not found on PATH"):
        find_pg_tool("pg_dump", 15, folders=(str(tmp_path / "none"),))


def test_backup_refuses_a_folder_with_anything_in_it(
    databases: DatabaseFactory, tmp_path: Path
) -> None:
    app, _ = new_system(databases, tmp_path / "system", "full")
    target = tmp_path / "backup"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with app.app_context(), pytest.raises(BackupError, match="is not empty"):
        create_backup(target, engine=db.engine, store=blob_store(), now=clock.utcnow())
    assert [p.name for p in target.iterdir()] == ["notes.txt"]


def test_a_referenced_file_missing_from_the_store_fails_the_backup_and_leaves_nothing(
    databases: DatabaseFactory, tmp_path: Path
) -> None:
    app, _ = new_system(databases, tmp_path / "system", "missing")
    lost = "ab" * 32
    with app.app_context():
        factories.base_data()
        household = factories.make_household(state=CaseState.APPROVED)
        db.session.add(
            FaceTemplate(
                member_id=household.members[0].id,
                household_id=household.id,
                source_sha256=lost,
                encoding=b"\0" * 1024,
                model_name="test",
                model_version="1",
            )
        )
        db.session.commit()
        target = tmp_path / "backup"
        with pytest.raises(BackupError, match=f"1 photo files .* missing .*: {lost}"):
            create_backup(target, engine=db.engine, store=blob_store(), now=clock.utcnow())
    assert list(target.iterdir()) == []  # no .partial, no dump, no manifest


def test_a_backup_of_another_kind_of_database_or_an_unknown_schema_is_refused(
    databases: DatabaseFactory, tmp_path: Path
) -> None:
    app, _ = new_system(databases, tmp_path / "system", "kind")
    target = tmp_path / "backup"
    files = {"sqlite": "database.sqlite3", "postgresql": "database.dump"}
    with app.app_context():
        create_backup(target, engine=db.engine, store=blob_store(), now=clock.utcnow())
        manifest = json.loads((target / "manifest.json").read_text())
        other = "sqlite" if manifest["database"] == "postgresql" else "postgresql"

        def rewrite(**changes: Any) -> None:
            (target / "manifest.json").write_text(json.dumps({**manifest, **changes}))

        rewrite(database=other, dump={**manifest["dump"], "file": files[other]})
        with pytest.raises(BackupError, match=f"backup of a {other} database"):
            restore_backup(target, engine=db.engine, store=blob_store(), force=True)
        # A schema revision this version does not know (a backup of a newer dibao).
        rewrite(alembic_revision="ffffffffffff")
        with pytest.raises(BackupError, match=r"revision ffffffffffff\) is unknown"):
            restore_backup(target, engine=db.engine, store=blob_store(), force=True)
    with pytest.raises(BackupError, match=r"has no manifest\.json"), app.app_context():
        restore_backup(tmp_path, engine=db.engine, store=blob_store(), force=False)


def test_a_damaged_file_in_the_store_fails_the_backup(
    databases: DatabaseFactory, tmp_path: Path
) -> None:
    app, _ = new_system(databases, tmp_path / "system", "damaged")
    with app.app_context():
        store = blob_store()
        digest = store_orphan(store, b"a photo as it was stored", 0)
        store.path(digest).write_bytes(b"a photo as the disk returns it")
        target = tmp_path / "backup"
        with pytest.raises(
            BackupError,
            match=r"1 files of the photo store do not match their names \(damaged on disk\): "
            + digest,
        ):
            create_backup(target, engine=db.engine, store=store, now=clock.utcnow())
    assert list(target.iterdir()) == []


@pytest.mark.slow
def test_a_restore_that_does_not_match_the_manifest_says_so_and_fails(
    databases: DatabaseFactory, tmp_path: Path
) -> None:
    source, _ = new_system(databases, tmp_path / "source", "counted")
    backup = tmp_path / "backup"
    with source.app_context():
        factories.base_data()
        db.session.commit()
        users = db.session.scalar(select(func.count()).select_from(User))
        create_backup(backup, engine=db.engine, store=blob_store(), now=clock.utcnow())
    # The manifest says one user more than the dump holds (hashes of dump and files agree).
    manifest = json.loads((backup / "manifest.json").read_text())
    manifest["tables"]["users"] += 1
    (backup / "manifest.json").write_text(json.dumps(manifest))
    target, _ = new_system(databases, tmp_path / "target", "target")
    result = target.test_cli_runner().invoke(cli, ["restore", str(backup)])
    assert result.exit_code == 1
    assert re.search(rf"users +expected +{users + 1} +restored +{users} +MISMATCH", result.output)
    assert "1 mismatched" in result.output
    assert "does not match the backup" in result.output


# --------------------------------------------------------------------------- backup and restore


def seeded_system(databases: DatabaseFactory, folder: Path) -> tuple[Flask, str, dict[str, str]]:
    app, url = new_system(databases, folder, "source")
    with app.app_context():
        report = seed_database(
            households=20,
            seed=5,
            rules=app.config["REGION"],
            today=date(2026, 11, 20),
            history=HistoryOptions(months=2, photos=True),
        )
        db.session.commit()
    return app, url, {u["username"]: u["password"] for u in report.users}


def households_of(app: Flask, username: str) -> list[int]:
    from server.areas.models import Area

    with app.app_context():
        user = db.session.scalar(select(User).where(User.username == username))
        assert user is not None
        return list(
            db.session.scalars(
                select(Household.id)
                .join(Area, Area.id == Household.village_id)
                .where(Area.path.startswith(user.area.path), Household.state == CaseState.APPROVED)
                .order_by(Household.id)
            )
        )


class Uploads:
    """Visit uploads through the API in a thread of their own, until stopped."""

    def __init__(self, app: Flask, username: str, password: str) -> None:
        self.client = app.test_client()
        self.households = households_of(app, username)
        assert self.households
        answer = device_login(self.client, username, password=password)
        assert answer.status_code == 201, answer.get_json()
        self.token = answer.get_json()["token"]
        self.statuses: list[int] = []
        self.first = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        number = 0
        while not self.stop.is_set():
            household = self.households[number % len(self.households)]
            answer = upload_visit(self.client, self.token, household, 5000 + number)
            self.statuses.append(answer.status_code)
            number += 1
            self.first.set()

    def __enter__(self) -> Uploads:
        self.thread.start()
        assert self.first.wait(120)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(120)


@pytest.mark.slow
def test_a_backup_made_while_photos_arrive_restores_into_a_fresh_system(
    databases: DatabaseFactory, tmp_path: Path
) -> None:
    source, url, passwords = seeded_system(databases, tmp_path / "source")
    caseworker = next(
        f"caseworker{n}" for n in range(1, 6) if len(households_of(source, f"caseworker{n}")) >= 3
    )
    upload_every_kind(
        source, households_of(source, caseworker)[:3], caseworker, passwords[caseworker]
    )
    backup = tmp_path / "backup"
    with Uploads(source, caseworker, passwords[caseworker]) as uploads:
        made = dibao("backup", str(backup), database_url=url, instance=tmp_path / "source")
    assert made.returncode == 0, made.stderr
    assert uploads.statuses and set(uploads.statuses) == {201}
    manifest = json.loads((backup / "manifest.json").read_text())
    assert sorted(p.name for p in backup.iterdir()) == sorted(
        ["blobs", "manifest.json", manifest["dump"]["file"]]
    )
    assert manifest["format"] == 1 and manifest["alembic_revision"]
    # Photos and case data: readable by the owner only.
    assert {oct(p.stat().st_mode & 0o077) for p in [backup, *backup.rglob("*")]} == {"0o0"}
    assert manifest["database"] == databases.dialect
    assert manifest["tables"]["survey_photos"] >= 1 and manifest["tables"]["alembic_version"] == 1
    dump = (backup / manifest["dump"]["file"]).read_bytes()
    assert hashlib.sha256(dump).hexdigest() == manifest["dump"]["sha256"]
    copied = store_files(backup)
    assert {b["sha256"]: b["sha256"] for b in manifest["blobs"]} == copied
    assert all(not (backup / "blobs").joinpath(n[:2], n[2:4], n).is_symlink() for n in copied)
    source_root = Path(source.instance_path) / "store" / "blobs"
    for name in list(copied)[:5]:  # a copy, not a link to the store's file
        original = source_root / name[:2] / name[2:4] / name
        assert (
            os.stat(original).st_ino
            != os.stat(backup / "blobs" / name[:2] / name[2:4] / name).st_ino
        )
    with source.app_context():
        audit = db.session.scalars(
            select(AuditEntry).where(AuditEntry.action == "backup.created")
        ).one()
        assert audit.details["blobs"] == len(manifest["blobs"])

    # A second backup into the same folder: refused, the first untouched.
    before = sorted(p.relative_to(backup) for p in backup.rglob("*"))
    again = dibao("backup", str(backup), database_url=url, instance=tmp_path / "source")
    assert again.returncode != 0 and "is not empty" in again.stderr
    assert sorted(p.relative_to(backup) for p in backup.rglob("*")) == before

    # Into a fresh, empty database and photo store.
    target_url = databases.new("target")
    target_folder = tmp_path / "target"
    restored = dibao("restore", str(backup), database_url=target_url, instance=target_folder)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "0 mismatched" in restored.stdout and "0 bad" in restored.stdout
    target = make_app(target_url, target_folder)
    counts = row_counts(target)
    expected = {**manifest["tables"]}
    expected["audit_log"] += 1  # the restore's own row, written after the check
    assert counts == expected
    with target.app_context():
        last = db.session.scalars(select(AuditEntry).order_by(AuditEntry.id.desc())).first()
        assert last is not None and last.action == "backup.restored" and last.actor_id is None
        referenced = referenced_digests(db.session)
        photo = db.session.scalars(select(SurveyPhoto).order_by(SurveyPhoto.id)).first()
        assert photo is not None and photo.sha256
        photo_id, photo_sha = photo.id, photo.sha256
        case_code = db.session.scalar(select(Household.case_code).order_by(Household.id))
    in_store = store_files(target_folder / "store")
    assert referenced <= set(in_store)
    assert all(name == content for name, content in in_store.items())

    # The restored system serves: a case page and a photo.
    staff = target.test_client()
    assert login(staff, "approver", passwords["approver"]).status_code == 302
    assert staff.get(f"/cases/{case_code}").status_code == 200
    with staff.get(f"/photos/{photo_id}") as served:
        assert served.status_code == 200
        assert hashlib.sha256(served.data).hexdigest() == photo_sha

    # Onto data without --force: refused, nothing changed.
    counts = row_counts(target)  # the reads above are audited
    again = dibao("restore", str(backup), database_url=target_url, instance=target_folder)
    assert again.returncode != 0 and "has data" in again.stderr
    assert row_counts(target) == counts

    # A tampered photo file or dump: refused before the database is touched.
    for damage in ("blob", "dump"):
        tampered = tmp_path / f"tampered-{damage}"
        shutil.copytree(backup, tampered)
        if damage == "blob":
            victim = next(p for p in (tampered / "blobs").rglob("*") if p.is_file())
        else:
            victim = tampered / manifest["dump"]["file"]
        content = bytearray(victim.read_bytes())
        content[len(content) // 2] ^= 0xFF  # one byte changed
        victim.write_bytes(bytes(content))
        refused = dibao(
            "restore", str(tampered), "--force", database_url=target_url, instance=target_folder
        )
        assert refused.returncode != 0
        assert "does not match its manifest; nothing was restored" in refused.stderr
        assert row_counts(target) == counts

    # With --force it replaces the data: the counts are the backup's again.
    forced = dibao(
        "restore", str(backup), "--force", database_url=target_url, instance=target_folder
    )
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert row_counts(target) == expected
