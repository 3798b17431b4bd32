"""Moving every encrypted value and every look-up hash to the current data key, while
the service runs (docs/decisions/0010-data-key-rotation.md).

Each batch is its own transaction and each row is updated by compare-and-set
(``UPDATE ... WHERE id = ? AND col = <the token read>``): a row the app changed in
between is not overwritten (the app wrote it under the current key; a later pass picks
it up otherwise). A run stopped anywhere continues where it stopped when run again:
it selects only values not yet under the current key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    CursorResult,
    LargeBinary,
    Result,
    Select,
    bindparam,
    delete,
    func,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.expression import TableClause

from server.audit import service as audit
from server.crypto import KEY_ID_BYTES, V1, V2, DecryptionError, FieldCipher
from server.extensions import db
from server.keyring.registry import (
    LOOKUP_HASHES,
    EncryptedColumn,
    LookupHashColumn,
    context_of,
    encrypted_columns,
    raw,
    table,
)
from server.transactions import commits_per_batch
from server.types import field_cipher

MAX_PASSES = 3  # a pass after one whose compare-and-set missed rows changed meanwhile


@dataclass
class ColumnReport:
    """What a rotation did to one column (counts only: it names no value)."""

    name: str
    updated: int = 0  # moved to the current key
    skipped: int = 0  # changed by the app between read and write: left as the app wrote it
    deleted: int = 0  # opt-outs also stored under the current key: the old copy removed
    unmatched: int = 0  # hashes with no known value: cannot be moved
    failed: set[Any] = field(default_factory=set)  # ids of values no key of the ring opens

    def line(self) -> str:
        parts = [f"{self.updated} moved"]
        for label, count in (
            ("changed meanwhile", self.skipped),
            ("duplicates removed", self.deleted),
            ("unmatched (cannot be moved)", self.unmatched),
            ("unreadable", len(self.failed)),
        ):
            if count:
                parts.append(f"{count} {label}")
        return f"{self.name}: " + ", ".join(parts)


@dataclass
class RotationReport:
    columns: list[ColumnReport]
    batches: int
    complete: bool  # False: stopped after max_batches; run again to finish
    remaining: int  # encrypted values still under an old key or version 1

    def totals(self) -> dict[str, int]:
        return {
            "updated": sum(c.updated for c in self.columns),
            "skipped": sum(c.skipped for c in self.columns),
            "deleted": sum(c.deleted for c in self.columns),
            "unmatched": sum(c.unmatched for c in self.columns),
            "unreadable": sum(len(c.failed) for c in self.columns),
        }


class _Stop(Exception):
    """The batch budget (max_batches) is spent."""


class _Run:
    def __init__(
        self,
        cipher: FieldCipher,
        batch: int,
        max_batches: int | None,
        echo: Callable[[str], None],
        before_write: Callable[[str, list[Any]], None] | None,
    ) -> None:
        self.cipher = cipher
        self.batch = batch
        self.max_batches = max_batches
        self.echo = echo
        self.before_write = before_write
        self.batches = 0
        self.columns: list[ColumnReport] = []

    @commits_per_batch
    def end_batch(self, report: ColumnReport) -> None:
        """Commit the batch (its own transaction), say where we are, stop if told."""
        db.session.commit()
        self.batches += 1
        self.echo(f"batch {self.batches}: {report.line()}")
        if self.max_batches is not None and self.batches >= self.max_batches:
            raise _Stop

    @commits_per_batch
    def pages(self, query: Select[Any], key: ColumnElement[Any]) -> Iterator[Sequence[Any]]:
        """The query's rows in batches by increasing primary key (keyset paging). Each
        read ends its transaction: nothing is locked while the batch is re-encrypted;
        the compare-and-set writes then find out what changed in between."""
        last = None
        while True:
            page = query if last is None else query.where(key > last)
            rows = db.session.execute(page.order_by(key).limit(self.batch)).all()
            db.session.commit()
            if not rows:
                return
            last = rows[-1][0]
            yield rows

    def writing(self, report: ColumnReport, ids: list[Any]) -> None:
        if self.before_write is not None:
            self.before_write(report.name, ids)

    def reencrypt(self, column: EncryptedColumn) -> None:
        report = ColumnReport(f"{column.table}.{column.column}")
        self.columns.append(report)
        t = raw(column.table, column.primary_key, column.column)
        key, value = t.c[column.primary_key], t.c[column.column]
        prefix = self.cipher.current_prefix
        pending = select(key, value).where(value.is_not(None), _head(value, len(prefix)) != prefix)
        statement = (
            update(t)
            .where(key == bindparam("b_id"), value == bindparam("b_old", type_=LargeBinary))
            .values({column.column: bindparam("b_new", type_=LargeBinary)})
        )
        for _ in range(MAX_PASSES):
            skipped = report.skipped
            for rows in self.pages(pending, key):
                changes = []
                for row_id, token in rows:
                    try:
                        plain = self.cipher.decrypt_bytes(bytes(token), column.context)
                    except DecryptionError:
                        report.failed.add(row_id)
                        continue
                    new = self.cipher.encrypt_bytes(plain, column.context)
                    changes.append({"b_id": row_id, "b_old": bytes(token), "b_new": new})
                self.writing(report, [change["b_id"] for change in changes])
                done = _compare_and_set(statement, changes)
                report.updated += done
                report.skipped += len(changes) - done
                self.end_batch(report)
            if report.skipped == skipped:
                return

    def rehash_from_source(self, entry: LookupHashColumn) -> None:
        if entry.source is None:
            raise ValueError(f"{entry.table}.{entry.column} has no source column")
        report = ColumnReport(f"{entry.table}.{entry.column}")
        self.columns.append(report)
        primary_key = _primary_key_name(entry.table)
        t = raw(entry.table, primary_key, entry.column, entry.source)
        key, digest, source = t.c[primary_key], t.c[entry.column], t.c[entry.source]
        source_context = context_of(entry.table, entry.source)
        statement = (
            update(t)
            .where(
                key == bindparam("b_id"),
                digest.is_not_distinct_from(bindparam("b_old", type_=digest.type)),
                source == bindparam("b_source", type_=LargeBinary),
            )
            .values({entry.column: bindparam("b_new", type_=digest.type)})
        )
        for rows in self.pages(select(key, digest, source).where(source.is_not(None)), key):
            changes = []
            for row_id, old, token in rows:
                try:
                    plain = self.cipher.decrypt(bytes(token), source_context)
                except DecryptionError:
                    report.failed.add(row_id)
                    continue
                normalized = entry.normalize(plain)
                # Nothing left to hash (a phone of no digits): the column holds NULL.
                new = self.cipher.lookup_hash(normalized, entry.context) if normalized else None
                if new != old:
                    changes.append(
                        {"b_id": row_id, "b_old": old, "b_source": bytes(token), "b_new": new}
                    )
            if not changes:
                continue
            self.writing(report, [change["b_id"] for change in changes])
            done = _compare_and_set(statement, changes)
            report.updated += done
            report.skipped += len(changes) - done
            self.end_batch(report)

    def rehash_from_candidates(self, entry: LookupHashColumn) -> None:
        """A hash column without its value (the opt-out list): every known value of the
        candidate columns, hashed under every key, tells what an old hash stands for."""
        report = ColumnReport(f"{entry.table}.{entry.column}")
        self.columns.append(report)
        known = {
            digest: hashes[0]
            for hashes in known_hashes(self.cipher, entry).values()
            for digest in hashes
        }
        current = set(known.values())
        primary_key = _primary_key_name(entry.table)
        t = raw(entry.table, primary_key, entry.column)
        key, digest = t.c[primary_key], t.c[entry.column]
        for rows in self.pages(select(key, digest), key):
            moves = []
            for row_id, old in rows:
                if old in current:
                    continue
                if old not in known:
                    report.unmatched += 1
                    continue
                moves.append((row_id, old, known[old]))
            if not moves:
                continue
            self.writing(report, [move[0] for move in moves])
            for row_id, old, new in moves:
                _move_hash(t, key, digest, row_id, old, new, report)
            self.end_batch(report)


def _move_hash(
    t: TableClause,
    key: ColumnElement[Any],
    digest: ColumnElement[Any],
    row_id: Any,
    old: str,
    new: str,
    report: ColumnReport,
) -> None:
    """One row's hash to the current key, by compare-and-set; if the current hash is
    already stored (a unique column: the same number opted out again meanwhile), the
    old row is a duplicate and goes."""
    where = (key == row_id, digest == old)
    try:
        with db.session.begin_nested():
            done = _rowcount(db.session.execute(update(t).where(*where).values({digest.name: new})))
    except IntegrityError:
        done = _rowcount(db.session.execute(delete(t).where(*where)))
        report.deleted += done
    else:
        report.updated += done
    if not done:
        report.skipped += 1


def _head(value: ColumnElement[Any], length: int) -> ColumnElement[bytes]:
    """The first bytes of a stored token (SQLite and PostgreSQL: substr on bytes)."""
    return func.substr(value, literal_column("1"), literal_column(str(length)), type_=LargeBinary)


def _compare_and_set(statement: Any, changes: list[dict[str, Any]]) -> int:
    """Run the compare-and-set UPDATE for every change; how many rows it changed."""
    if not changes:
        return 0
    if db.session.get_bind().dialect.supports_sane_multi_rowcount:
        return _rowcount(db.session.execute(statement, changes))
    return sum(_rowcount(db.session.execute(statement, change)) for change in changes)


def _rowcount(result: Result[Any]) -> int:
    return int(cast(CursorResult[Any], result).rowcount)


def _primary_key_name(table_name: str) -> str:
    [key] = table(table_name).primary_key.columns
    return key.name


def known_hashes(cipher: FieldCipher, entry: LookupHashColumn) -> dict[str, list[str]]:
    """Every distinct normalized value of the candidate columns -> its hash under each
    key of the ring (current first)."""
    values: set[str] = set()
    for table_name, column_name in entry.candidates:
        primary_key = _primary_key_name(table_name)
        t = raw(table_name, primary_key, column_name)
        context = context_of(table_name, column_name)
        query = select(t.c[column_name]).where(t.c[column_name].is_not(None))
        for (token,) in db.session.execute(query.execution_options(yield_per=2000)):
            try:
                value = entry.normalize(cipher.decrypt(bytes(token), context))
            except DecryptionError:
                continue
            if value:
                values.add(value)
    return {value: cipher.lookup_hashes(value, entry.context) for value in values}


@commits_per_batch
def rotate(
    *,
    batch: int = 500,
    max_batches: int | None = None,
    echo: Callable[[str], None] = lambda _line: None,
    before_write: Callable[[str, list[Any]], None] | None = None,
) -> RotationReport:
    """Move every encrypted column and every registered look-up hash to the current
    key; commits every batch. Safe to run again (and to stop: ``max_batches``).

    ``before_write(column, ids)`` runs between a batch's read and its writes (tests
    change rows there, as the app may)."""
    if batch < 1:
        raise ValueError("the batch size must be at least 1")
    cipher = field_cipher()
    audit.record(
        "keys.rotate_start",
        actor=None,
        key_id=cipher.current_key_id,
        old_keys=len(cipher.key_ids) - 1,
        batch=batch,
    )
    db.session.commit()
    run = _Run(cipher, batch, max_batches, echo, before_write)
    complete = True
    try:
        for column in encrypted_columns():
            run.reencrypt(column)
        for entry in LOOKUP_HASHES:
            if entry.source is not None:
                run.rehash_from_source(entry)
            else:
                run.rehash_from_candidates(entry)
    except _Stop:
        complete = False
    report = RotationReport(run.columns, run.batches, complete, remaining=pending_values(cipher))
    audit.record(
        "keys.rotate_finish",
        actor=None,
        key_id=cipher.current_key_id,
        complete=complete,
        batches=run.batches,
        remaining=report.remaining,
        counts=report.totals(),
    )
    db.session.commit()
    return report


def pending_values(cipher: FieldCipher) -> int:
    """Encrypted values not yet under the current key, in every column."""
    prefix = cipher.current_prefix
    total = 0
    for column in encrypted_columns():
        t = raw(column.table, column.column)
        value = t.c[column.column]
        total += (
            db.session.scalar(
                select(func.count())
                .select_from(t)
                .where(value.is_not(None), _head(value, len(prefix)) != prefix)
            )
            or 0
        )
    return total


@dataclass
class ColumnStatus:
    name: str
    kind: str  # "encrypted" or "lookup hash"
    counts: dict[str, int]  # key id (hex), "v1", "unmatched", "unreadable", ... -> rows


def status(*, hashes: bool = False) -> list[ColumnStatus]:
    """How many values of each column are under each key id (or version 1, no key id);
    with ``hashes``, the same for every registered look-up hash (decrypts every source:
    slower)."""
    cipher = field_cipher()
    out = [_encrypted_status(column) for column in encrypted_columns()]
    if hashes:
        out += [_hash_status(cipher, entry) for entry in LOOKUP_HASHES]
    return out


def _encrypted_status(column: EncryptedColumn) -> ColumnStatus:
    t = raw(column.table, column.column)
    value = t.c[column.column]
    present = value.is_not(None)
    total = db.session.scalar(select(func.count()).select_from(t).where(present)) or 0
    counts: dict[str, int] = {}
    v1 = db.session.scalar(select(func.count()).where(present, _head(value, 1) == V1)) or 0
    if v1:
        counts["v1"] = v1
    head = _head(value, 1 + KEY_ID_BYTES)
    for prefix, count in db.session.execute(
        select(head, func.count()).where(present, _head(value, 1) == V2).group_by(text("1"))
    ):
        counts[bytes(prefix)[1:].hex()] = count
    invalid = total - sum(counts.values())
    if invalid:
        counts["invalid"] = invalid
    return ColumnStatus(f"{column.table}.{column.column}", "encrypted", counts)


def _hash_status(cipher: FieldCipher, entry: LookupHashColumn) -> ColumnStatus:
    counts: dict[str, int] = {}
    primary_key = _primary_key_name(entry.table)
    if entry.source is None:
        by_hash = {
            digest: key_id
            for hashes in known_hashes(cipher, entry).values()
            for digest, key_id in zip(hashes, cipher.key_ids, strict=True)
        }
        t = raw(entry.table, primary_key, entry.column)
        for (digest,) in db.session.execute(select(t.c[entry.column])):
            label = by_hash.get(digest, "unmatched")
            counts[label] = counts.get(label, 0) + 1
        return ColumnStatus(f"{entry.table}.{entry.column}", "lookup hash", counts)
    t = raw(entry.table, primary_key, entry.column, entry.source)
    context = context_of(entry.table, entry.source)
    query = select(t.c[entry.column], t.c[entry.source]).where(t.c[entry.source].is_not(None))
    for digest, token in db.session.execute(query.execution_options(yield_per=2000)):
        try:
            plain = entry.normalize(cipher.decrypt(bytes(token), context))
        except DecryptionError:
            label = "unreadable"
        else:
            by_key = cipher.lookup_hashes_by_key(plain, entry.context) if plain else {}
            label = by_key.get(digest, "mismatch") if plain or digest else "none"
        counts[label] = counts.get(label, 0) + 1
    return ColumnStatus(f"{entry.table}.{entry.column}", "lookup hash", counts)
