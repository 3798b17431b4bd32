"""Backup, restore, and the photo store's garbage collection (docs/operations.md,
"Backup, restore and the photo store's gc").

A backup is a folder: the database (PostgreSQL: a ``pg_dump`` custom-format archive;
SQLite: a copy made with SQLite's backup API), ``blobs/`` (a copy of every file of the
photo store) and ``manifest.json`` (what is in it, with hashes). The database is copied
first, from one snapshot; the photo store after it. A blob is always written before
the row that names it commits, so every blob the snapshot refers to is already in the
store when it is copied; blobs stored later are copied too (harmless). The backup is
made in ``DIR/.partial`` and ``manifest.json`` is moved in last: a folder without it is
not a backup.

The registry of the columns that hold digests (server/storage.py's ``blob_columns``)
says which blobs rows refer to: the backup checks that each is in the copy, and the gc
deletes only blobs none of them names.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from alembic.script import ScriptDirectory
from flask import current_app
from sqlalchemy import Connection, Engine, create_engine, func, inspect, select, table, text
from sqlalchemy.pool import NullPool

from server.audit import service as audit
from server.extensions import db
from server.storage import SHA256_HEX, BlobStore, referenced_digests

FORMAT = 1
MANIFEST = "manifest.json"
PARTIAL = ".partial"
BLOBS = "blobs"
DUMP_FILES = {"postgresql": "database.dump", "sqlite": "database.sqlite3"}
PG_TOOL_FOLDERS = ("/usr/lib/postgresql/*/bin",)
CHUNK = 1 << 20
# A backup holds photos and the case data: readable by its owner only (the umask may
# narrow this further, never widen it).
PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
# The tables that say which schema a database has, not what it holds (the face
# template clock's one row is made by its migration).
SCHEMA_ONLY_TABLES = {"alembic_version", "face_template_clock"}


class BackupError(Exception):
    """A backup or restore that cannot go on; the message says why and what to do."""


def _kind(engine: Engine) -> str:
    name = engine.dialect.name
    if name not in DUMP_FILES:
        raise BackupError(f"cannot back up a {name} database (PostgreSQL or SQLite only)")
    return name


# --------------------------------------------------------------------------- PostgreSQL tools


def _tool_major(path: str) -> int | None:
    try:
        out = subprocess.run(  # noqa: S603 (a PostgreSQL client found by name)
            [path, "--version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r"\)\s+(\d+)", out)
    return int(found.group(1)) if found else None


def find_pg_tool(name: str, server_major: int, folders: tuple[str, ...] = PG_TOOL_FOLDERS) -> str:
    """The ``pg_dump``/``pg_restore`` to use: on PATH or in a PostgreSQL bin folder,
    the first of major version >= the server's (an older one cannot dump a newer
    server)."""
    candidates: list[str] = []
    if on_path := shutil.which(name):
        candidates.append(on_path)
    found = [p for pattern in folders for p in glob.glob(f"{pattern}/{name}")]
    candidates += sorted(found, key=lambda p: [int(n) for n in re.findall(r"\d+", p)])[::-1]
    seen: list[str] = []
    for candidate in dict.fromkeys(candidates):
        major = _tool_major(candidate)
        if major is not None and major >= server_major:
            return candidate
        seen.append(f"{candidate} (version {major if major is not None else 'unknown'})")
    if not seen:
        raise BackupError(
            f"{name} not found on PATH or in {', '.join(folders)}: install the PostgreSQL "
            f"client of version {server_major} or later (Debian: postgresql-client-{server_major})"
        )
    raise BackupError(
        f"{name} is older than the database server (version {server_major}): found "
        f"{'; '.join(seen)}. Install the PostgreSQL client of version {server_major} or later"
    )


def _libpq(engine: Engine) -> tuple[str, dict[str, str]]:
    """A libpq URI without the password, and an environment that carries it."""
    url = engine.url
    env = {**os.environ}
    if url.password is not None:
        env["PGPASSWORD"] = str(url.password)
    plain = url.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def _server_major(conn: Connection) -> int:
    info = conn.dialect.server_version_info
    if not info:
        raise BackupError("cannot tell the database server's version")
    return int(info[0])


# --------------------------------------------------------------------------- snapshot


@dataclass
class Snapshot:
    kind: str
    dump: Path
    tables: dict[str, int]
    alembic_revision: str | None
    referenced: set[str]


def _read_snapshot(conn: Connection) -> tuple[dict[str, int], str | None, set[str]]:
    """Row counts, schema revision and referenced digests, through one connection."""
    names = sorted(inspect(conn).get_table_names())
    tables = {
        name: int(conn.scalar(select(func.count()).select_from(table(name))) or 0) for name in names
    }
    revision = None
    if "alembic_version" in tables:
        revision = conn.scalar(text("SELECT version_num FROM alembic_version"))
    return tables, revision, referenced_digests(conn)


def _snapshot_postgresql(engine: Engine, folder: Path) -> Snapshot:
    dump = folder / DUMP_FILES["postgresql"]
    uri, env = _libpq(engine)
    with engine.connect() as conn:
        conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            pg_dump = find_pg_tool("pg_dump", _server_major(conn))
            exported = conn.scalar(text("SELECT pg_export_snapshot()"))
            # pg_dump sees exactly this transaction's snapshot (held open meanwhile).
            done = subprocess.run(  # noqa: S603 (arguments, no shell)
                [
                    pg_dump,
                    "--format=custom",
                    f"--snapshot={exported}",
                    "--no-password",
                    f"--file={dump}",
                    f"--dbname={uri}",
                ],
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                raise BackupError(f"pg_dump failed: {done.stderr.strip()}")
            tables, revision, referenced = _read_snapshot(conn)
    return Snapshot("postgresql", dump, tables, revision, referenced)


def _sqlite_path(engine: Engine) -> Path:
    database = engine.url.database
    if not database or database == ":memory:":
        raise BackupError("the configured SQLite database is in memory: nothing to back up")
    return Path(database)


def _sqlite_copy(source: Path, target: Path, *, self_contained: bool) -> None:
    """Copy one SQLite database into another with the backup API (consistent while
    others write); a backup's copy is left self-contained (no write-ahead log)."""
    src = sqlite3.connect(source, timeout=30)
    dst = sqlite3.connect(target, timeout=30)
    try:
        src.backup(dst)
        if self_contained:
            dst.execute("PRAGMA journal_mode = DELETE")
        dst.commit()
    finally:
        dst.close()
        src.close()


@contextlib.contextmanager
def _sqlite_engine(path: Path) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{path}", poolclass=NullPool)
    try:
        yield engine
    finally:
        engine.dispose()


def _snapshot_sqlite(engine: Engine, folder: Path) -> Snapshot:
    dump = folder / DUMP_FILES["sqlite"]
    _sqlite_copy(_sqlite_path(engine), dump, self_contained=True)
    with _sqlite_engine(dump) as copy, copy.connect() as conn:
        tables, revision, referenced = _read_snapshot(conn)
    return Snapshot("sqlite", dump, tables, revision, referenced)


# --------------------------------------------------------------------------- files


def file_sha256(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _copy_hashing(source: Path, target: Path) -> tuple[str, int]:
    """Copy a file (never a link: a backup must not share the original's bytes),
    fsync it, and return the copied bytes' hash and size."""
    digest = hashlib.sha256()
    size = 0
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    with source.open("rb") as src, open(fd, "wb") as dst:
        while chunk := src.read(CHUNK):
            digest.update(chunk)
            dst.write(chunk)
            size += len(chunk)
        dst.flush()
        os.fsync(dst.fileno())
    return digest.hexdigest(), size


def _store_blobs(folder: Path) -> Iterator[Path]:
    """Every file under a ``blobs`` folder laid out as the store does (ab/cd/<sha256>)."""
    for path in sorted(folder.glob("??/??/*")):
        name = path.name
        if (
            SHA256_HEX.match(name)
            and path.parent.name == name[2:4]
            and name[:2] == (path.parent.parent.name)
        ):
            yield path


def _copy_store(store: BlobStore, target: Path) -> dict[str, int]:
    copied: dict[str, int] = {}
    damaged: list[str] = []
    for path in _store_blobs(store.blobs):
        name = path.name
        place = target / name[:2] / name[2:4] / name
        for folder in (place.parent.parent, place.parent):
            folder.mkdir(mode=PRIVATE_DIR, exist_ok=True)
        try:
            digest, size = _copy_hashing(path, place)
        except FileNotFoundError:
            continue  # deleted meanwhile (gc, frame purge): checked against the snapshot
        if digest != name:
            damaged.append(name)
        copied[name] = size
    if damaged:
        raise BackupError(
            f"{len(damaged)} files of the photo store do not match their names (damaged "
            f"on disk): {', '.join(damaged)}"
        )
    return copied


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- backup


def create_backup(
    target: Path, *, engine: Engine, store: BlobStore, now: datetime
) -> dict[str, Any]:
    """Write a backup into the empty (or new) folder ``target``; returns the manifest.
    On any failure nothing is left that looks like a backup."""
    kind = _kind(engine)
    target.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    if any(target.iterdir()):
        raise BackupError(f"{target} is not empty: back up into a new or empty folder")
    partial = target / PARTIAL
    partial.mkdir(mode=PRIVATE_DIR)
    moved: list[Path] = []
    try:
        snap = (_snapshot_postgresql if kind == "postgresql" else _snapshot_sqlite)(engine, partial)
        os.chmod(snap.dump, PRIVATE_FILE)
        (partial / BLOBS).mkdir(mode=PRIVATE_DIR)
        blobs = _copy_store(store, partial / BLOBS)
        missing = sorted(snap.referenced - set(blobs))
        if missing:
            raise BackupError(
                f"{len(missing)} photo files the database refers to are missing from the "
                f"photo store ({store.root}); nothing was backed up: {', '.join(missing)}"
            )
        dump_sha, dump_size = file_sha256(snap.dump)
        manifest = {
            "format": FORMAT,
            "created_at": now.isoformat(),
            "alembic_revision": snap.alembic_revision,
            "database": kind,
            "dump": {"file": snap.dump.name, "size": dump_size, "sha256": dump_sha},
            "tables": snap.tables,
            "referenced_blobs": len(snap.referenced),
            "blobs": [{"sha256": digest, "size": blobs[digest]} for digest in sorted(blobs)],
        }
        written = partial / MANIFEST
        fd = os.open(written, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
        with open(fd, "w", encoding="utf-8") as handle:
            json.dump(manifest, handle, indent=1, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        _fsync_dir(partial)
        # The manifest last: only a complete backup has one.
        for name in (snap.dump.name, BLOBS, MANIFEST):
            if (partial / name).exists():
                os.replace(partial / name, target / name)
                moved.append(target / name)
        partial.rmdir()
        _fsync_dir(target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        for path in reversed(moved):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        raise
    audit.record(
        "backup.created",
        actor=None,
        database=kind,
        tables=len(snap.tables),
        rows=sum(snap.tables.values()),
        blobs=len(blobs),
        blob_bytes=sum(blobs.values()),
    )
    return manifest


# --------------------------------------------------------------------------- restore


def read_manifest(source: Path) -> dict[str, Any]:
    path = source / MANIFEST
    if not path.is_file():
        hint = (
            " (an interrupted backup: its .partial folder)" if (source / PARTIAL).exists() else ""
        )
        raise BackupError(f"{source} is not a backup: it has no {MANIFEST}{hint}")
    try:
        manifest: dict[str, Any] = json.loads(path.read_text("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BackupError(f"{path} is not readable JSON: {exc}") from exc
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{path}: unknown backup format {manifest.get('format')!r}")
    for key in ("database", "dump", "tables", "blobs"):
        if key not in manifest:
            raise BackupError(f"{path}: no {key!r}")
    if (
        manifest["database"] not in DUMP_FILES
        or manifest["dump"].get("file") != DUMP_FILES[manifest["database"]]
    ):
        raise BackupError(f"{path}: an unexpected database or dump file")
    return manifest


def verify_backup(source: Path, manifest: dict[str, Any]) -> list[str]:
    """What in the backup folder does not match its manifest (empty: all good)."""
    problems: list[str] = []
    dump = source / manifest["dump"]["file"]
    if not dump.is_file():
        problems.append(f"the database dump {dump.name} is missing")
    else:
        digest, size = file_sha256(dump)
        if (digest, size) != (manifest["dump"]["sha256"], manifest["dump"]["size"]):
            problems.append(f"the database dump {dump.name} does not match the manifest")
    for blob in manifest["blobs"]:
        name = blob["sha256"]
        if not SHA256_HEX.match(name):
            problems.append(f"the manifest names an invalid blob {name!r}")
            continue
        path = source / BLOBS / name[:2] / name[2:4] / name
        if not path.is_file():
            problems.append(f"blob {name} is missing")
        elif file_sha256(path) != (name, blob["size"]):
            problems.append(f"blob {name} does not match its hash or size")
    return problems


def known_revisions() -> set[str]:
    """Every schema revision this version's migrations know (a restored database must
    be at one of them for `dibao db upgrade` to take it further)."""
    config = current_app.extensions["migrate"].migrate.get_config()
    return {script.revision for script in ScriptDirectory.from_config(config).walk_revisions()}


def _count_rows(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        names = inspect(conn).get_table_names()
        return {
            name: int(conn.scalar(select(func.count()).select_from(table(name))) or 0)
            for name in names
        }


def has_data(engine: Engine) -> bool:
    return any(n for name, n in _count_rows(engine).items() if name not in SCHEMA_ONLY_TABLES)


@dataclass
class RestoreReport:
    database: str
    alembic_revision: str | None
    tables: list[tuple[str, int | None, int | None]] = field(default_factory=list)
    blobs: int = 0
    blobs_copied: int = 0
    blob_problems: list[str] = field(default_factory=list)

    @property
    def table_mismatches(self) -> list[tuple[str, int | None, int | None]]:
        return [row for row in self.tables if row[1] != row[2]]

    @property
    def ok(self) -> bool:
        return not self.table_mismatches and not self.blob_problems


def _drop_everything_postgresql(engine: Engine) -> None:
    with engine.begin() as conn:
        for name in inspect(conn).get_table_names():
            conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{name}" CASCADE')


def _restore_postgresql(engine: Engine, dump: Path) -> None:
    with engine.connect() as conn:
        pg_restore = find_pg_tool("pg_restore", _server_major(conn))
    engine.dispose()
    # Tables the archive does not have (e.g. of a later schema) must go too.
    _drop_everything_postgresql(engine)
    uri, env = _libpq(engine)
    done = subprocess.run(  # noqa: S603 (arguments, no shell)
        [
            pg_restore,
            "--clean",
            "--if-exists",
            "--no-owner",
            "--exit-on-error",
            "--single-transaction",
            "--no-password",
            f"--dbname={uri}",
            str(dump),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise BackupError(f"pg_restore failed: {done.stderr.strip()}")


def _restore_blobs(source: Path, manifest: dict[str, Any], store: BlobStore) -> int:
    """Copy the backup's blobs into the store (through its temp folder, so that each
    appears complete); returns how many were copied (the others were there)."""
    copied = 0
    for blob in manifest["blobs"]:
        name = blob["sha256"]
        if store.exists(name) and file_sha256(store.path(name))[0] == name:
            continue
        store.path(name).unlink(missing_ok=True)  # damaged: replaced by the backup's
        temp = store.new_temp()
        with temp, (source / BLOBS / name[:2] / name[2:4] / name).open("rb") as src:
            while chunk := src.read(CHUNK):
                temp.write(chunk)
            if temp.sha256 != name:
                raise BackupError(f"blob {name} changed while it was restored")
            store.store(temp)
        copied += 1
    return copied


def restore_backup(source: Path, *, engine: Engine, store: BlobStore, force: bool) -> RestoreReport:
    """Restore a backup into the configured database and photo store. Everything is
    checked before the database is touched; afterwards every table's row count and
    every blob are compared with the manifest (see the report's ``ok``)."""
    manifest = read_manifest(source)
    kind = _kind(engine)
    if manifest["database"] != kind:
        raise BackupError(
            f"this is a backup of a {manifest['database']} database and the configured "
            f"database is {kind}: restore into the same kind of database"
        )
    revision = manifest.get("alembic_revision")
    if revision not in known_revisions():
        raise BackupError(
            f"this backup's schema (revision {revision}) is unknown to this version of dibao "
            "(made by a newer one?): restore it with the version that made it or a later one"
        )
    problems = verify_backup(source, manifest)
    if problems:
        raise BackupError(
            "the backup does not match its manifest; nothing was restored:\n  "
            + "\n  ".join(problems)
        )
    if not force and has_data(engine):
        raise BackupError(
            "the configured database has data: nothing was restored (--force replaces it)"
        )
    dump = source / manifest["dump"]["file"]
    db.session.remove()
    engine.dispose()
    if kind == "postgresql":
        _restore_postgresql(engine, dump)
    else:
        _sqlite_copy(dump, _sqlite_path(engine), self_contained=False)
    engine.dispose()
    report = RestoreReport(kind, manifest.get("alembic_revision"))
    report.blobs_copied = _restore_blobs(source, manifest, store)
    found = _count_rows(engine)
    expected: dict[str, int] = manifest["tables"]
    report.tables = [
        (name, expected.get(name), found.get(name)) for name in sorted({*expected, *found})
    ]
    for blob in manifest["blobs"]:
        name = blob["sha256"]
        report.blobs += 1
        if not store.exists(name):
            report.blob_problems.append(f"blob {name} is missing from the store")
        elif file_sha256(store.path(name)) != (name, blob["size"]):
            report.blob_problems.append(f"blob {name} in the store does not match its hash")
    return report


def record_restore(report: RestoreReport) -> None:
    """The restore's audit row, in the restored database (after the counts)."""
    audit.record(
        "backup.restored",
        actor=None,
        database=report.database,
        tables=len(report.tables),
        rows=sum(n or 0 for _, _, n in report.tables),
        blobs=report.blobs,
        blobs_copied=report.blobs_copied,
        mismatches=len(report.table_mismatches) + len(report.blob_problems),
    )


# --------------------------------------------------------------------------- gc


@dataclass
class GcReport:
    orphans: list[tuple[str, int]] = field(default_factory=list)  # (digest, bytes)
    young: int = 0  # unreferenced but inside the grace period: kept
    referenced: int = 0
    removed: int = 0
    removed_bytes: int = 0

    @property
    def orphan_bytes(self) -> int:
        return sum(size for _, size in self.orphans)


def _referenced_now() -> set[str]:
    # A connection of its own: a fresh transaction sees every row committed so far.
    with db.engine.connect() as conn:
        return referenced_digests(conn)


def collect_garbage(store: BlobStore, *, grace_seconds: float, apply: bool) -> GcReport:
    """Find (and with ``apply`` delete) the blobs no row refers to, never one whose
    file is younger than the grace period (an upload whose row has not committed yet:
    storing a blob that already exists refreshes its time, server/storage.py)."""
    report = GcReport()
    referenced = _referenced_now()
    report.referenced = len(referenced)
    cutoff = time.time() - grace_seconds
    for path in _store_blobs(store.blobs):
        if path.name in referenced:
            continue
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        if stat.st_mtime > cutoff:
            report.young += 1
        else:
            report.orphans.append((path.name, stat.st_size))
    if apply and report.orphans:
        # Asked again just before deleting: a row committed meanwhile keeps its blob.
        still = _referenced_now()
        for digest, size in report.orphans:
            if digest in still:
                continue
            path = store.path(digest)
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime <= cutoff:
                    path.unlink()
                    report.removed += 1
                    report.removed_bytes += size
        audit.record(
            "store.gc",
            actor=None,
            removed=report.removed,
            removed_bytes=report.removed_bytes,
            kept_young=report.young,
            referenced=report.referenced,
        )
    return report
