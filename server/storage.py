"""Content-addressed file storage for photos and frames.

Files are written to ``<root>/tmp/<host>-<pid>/`` while they stream in (hashed as
they are written), fsynced, then renamed to ``<root>/blobs/ab/cd/<sha256>``: a file
under ``blobs`` is always complete and its name is its content's hash. A process
killed mid-write leaves only its own temp folder, which the next process to start
on the host removes (``clean_temp``), as it does any temp file older than an hour.
Nothing here is publicly reachable: files are served only through views that
check the reader's rights and audit the read.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import os
import re
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from flask import current_app
from sqlalchemy import select

logger = logging.getLogger(__name__)

SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


WRITEBACK_STEP = 1024 * 1024


def _writeback_function() -> Callable[[int, int, int], None]:
    """Linux's sync_file_range(SYNC_FILE_RANGE_WRITE): start writing a range of a file
    to disk without waiting (it promises no durability; fsync still does). Elsewhere
    a no-op."""
    if not sys.platform.startswith("linux"):
        return lambda fd, start, end: None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        call = libc.sync_file_range
    except (OSError, AttributeError):
        return lambda fd, start, end: None
    call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    call.restype = ctypes.c_int
    sync_file_range_write = 2

    def start(fd: int, begin: int, end: int) -> None:
        call(fd, begin, end - begin, sync_file_range_write)  # advisory: errors ignored

    return start


start_writeback = _writeback_function()


class TooLarge(Exception):
    """More bytes were written than the limit allows."""


class HashingFile:
    """A temporary file that hashes and counts what is written to it, and
    refuses to grow past ``max_bytes``. Deleted on close unless stored.
    """

    def __init__(self, handle: IO[bytes], path: Path, max_bytes: int | None) -> None:
        self._handle = handle
        self.path = path
        self.max_bytes = max_bytes
        self.size = 0
        self._sha = hashlib.sha256()
        self._writeback_from = 0
        self.stored = False

    def write(self, data: bytes) -> int:
        self.size += len(data)
        if self.max_bytes is not None and self.size > self.max_bytes:
            raise TooLarge(f"more than {self.max_bytes} bytes")
        self._sha.update(data)
        written = self._handle.write(data)
        if self.size - self._writeback_from >= WRITEBACK_STEP:
            # Let the disk work while the rest streams in: the fsync before the commit
            # then waits for the last step only, not for the whole file.
            self._handle.flush()
            start_writeback(self._handle.fileno(), self._writeback_from, self.size)
            self._writeback_from = self.size
        return written

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    def __getattr__(self, name: str) -> Any:
        # read, seek, tell, flush, fileno ... go to the real file.
        return getattr(self._handle, name)

    def close(self) -> None:
        if not self._handle.closed:
            self._handle.close()
        if not self.stored:
            self.path.unlink(missing_ok=True)

    def __del__(self) -> None:
        # A parser that failed half-way may drop us without closing.
        self.close()

    def __enter__(self) -> HashingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BlobStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.blobs = self.root / "blobs"
        self.tmp = self.root / "tmp"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)

    @property
    def _process_tmp(self) -> Path:
        # Per process (and per pid after a fork): tells a dead process's leftovers apart.
        folder = self.tmp / f"{socket.gethostname()}-{os.getpid()}"
        folder.mkdir(exist_ok=True)
        return folder

    def new_temp(self, max_bytes: int | None = None) -> HashingFile:
        fd, name = tempfile.mkstemp(dir=self._process_tmp, prefix="upload-")
        return HashingFile(os.fdopen(fd, "w+b"), Path(name), max_bytes)

    def temp_path(self, suffix: str = "") -> Path:
        """A fresh path in this process's temp folder for a file written by other code."""
        return self._process_tmp / f"derived-{os.urandom(8).hex()}{suffix}"

    def store_file(self, path: Path) -> str:
        """Store a finished file from the temp folder under its content hash."""
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 16):
                digest.update(chunk)
            os.fsync(handle.fileno())
        hexdigest = digest.hexdigest()
        for folder in sorted(self._place(path, hexdigest), key=lambda p: -len(p.parts)):
            _fsync_dir(folder)
        return hexdigest

    def path(self, sha256: str) -> Path:
        if not SHA256_HEX.match(sha256):
            raise ValueError("not a sha256 hex digest")
        return self.blobs / sha256[:2] / sha256[2:4] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def store(self, temp: HashingFile) -> str:
        """Make the temp file durable under its content hash; returns the hash."""
        return self.store_all([temp])[0]

    def store_all(self, temps: list[HashingFile]) -> list[str]:
        """Make several temp files durable under their content hashes, in as few
        journal commits as the file system allows: every file's data is fsynced first
        (the first fsync writes them all out), then all are renamed into place, then
        each directory that changed is fsynced once. A crash at any point leaves each
        blob either absent or complete. Returns the hashes, in order.
        """
        for temp in temps:
            temp.flush()
        # Each fsync waits for its own file's data; issued together they overlap.
        if len(temps) > 1:
            list(_fsync_pool().map(os.fsync, [temp.fileno() for temp in temps]))
        elif temps:
            os.fsync(temps[0].fileno())
        for temp in temps:
            temp.stored = True
            temp.close()
        changed: set[Path] = set()
        digests = []
        for temp in temps:
            digest = temp.sha256
            changed |= self._place(temp.path, digest)
            digests.append(digest)
        # Deepest first: a new directory's own entry is made durable by its parent.
        for folder in sorted(changed, key=lambda p: len(p.parts), reverse=True):
            _fsync_dir(folder)
        return digests

    def _place(self, source: Path, digest: str) -> set[Path]:
        """Rename ``source`` to the blob's path; returns the directories whose entries
        changed (to be fsynced by the caller)."""
        final = self.path(digest)
        if final.exists():
            source.unlink(missing_ok=True)  # the same content is already stored
            # Young again: `dibao store gc` keeps it until the row naming it commits.
            with contextlib.suppress(OSError):
                os.utime(final)
            return set()
        changed = {final.parent}
        for folder in (final.parent.parent, final.parent):
            if not folder.is_dir():
                folder.mkdir(exist_ok=True)
                changed.add(folder.parent)
        os.replace(source, final)
        return changed

    def clean_temp(self, older_than_s: float = 3600) -> int:
        """Delete leftovers of interrupted uploads: everything in the temp folder of a
        process of this host that is no longer running, and any temp file older than
        ``older_than_s`` (longer than any live request). Returns the files removed.
        """
        host = socket.gethostname()
        cutoff = time.time() - older_than_s
        removed = 0
        for folder in self.tmp.iterdir():
            owner_host, _, pid = folder.name.rpartition("-")
            dead = owner_host == host and pid.isdigit() and not _alive(int(pid))
            files = list(folder.iterdir()) if folder.is_dir() else [folder]
            for leftover in files:
                try:
                    if dead or leftover.stat().st_mtime < cutoff:
                        leftover.unlink()
                        removed += 1
                except FileNotFoundError:
                    continue
            if dead and folder.is_dir():
                with contextlib.suppress(OSError):
                    folder.rmdir()
        if removed:
            logger.info("removed %d interrupted upload files", removed)
        return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A killed process whose parent died too can linger as a zombie for a while.
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return "\nState:\tZ" not in status


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _fsync_pool() -> ThreadPoolExecutor:
    """A few threads to issue fsyncs side by side (made on first use, after any fork)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="fsync")
        return _pool


def _forget_pool() -> None:
    global _pool
    _pool = None  # a forked child has none of its parent's threads


os.register_at_fork(after_in_child=_forget_pool)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def blob_store() -> BlobStore:
    """The running application's blob store (made by the app factory)."""
    store: BlobStore = current_app.extensions["dibao.blobs"]
    return store


# Blobs are content-addressed: one file may be the bytes of rows of several packages
# (a proof-of-life frame that is also a visit photo). Each package that keeps blobs
# registers how to ask whether a digest is still its own; whoever deletes a blob asks
# them all first (without importing them: the packages sit above this module).
_blob_users: list[Callable[[str], bool]] = []


def blob_user(uses: Callable[[str], bool]) -> Callable[[str], bool]:
    """Register ``uses(sha256) -> bool`` (usable as a decorator)."""
    if uses not in _blob_users:
        _blob_users.append(uses)
    return uses


def blob_in_use(sha256: str) -> bool:
    """Whether any registered package still keeps the blob ``sha256``."""
    return any(uses(sha256) for uses in _blob_users)


# Every column that holds a blob's digest, registered by the package that owns the
# model (``blob_columns(SurveyPhoto.sha256, ...)`` after the class). The backup checks
# that every digest a snapshot refers to is in the copy, and ``dibao store gc`` deletes
# only blobs none of these columns names: a column missing here would lose photos.
# tests/test_backup.py fails when a mapped column that looks like a digest is missing.
_blob_columns: list[Any] = []


def blob_columns(*columns: Any) -> None:
    """Register model columns (``Model.column``) whose values are blob digests."""
    for column in columns:
        if not any(column is known for known in _blob_columns):
            _blob_columns.append(column)


def registered_blob_columns() -> list[tuple[str, str]]:
    """(table, column) of every registered digest column, sorted."""
    return sorted((c.table.name, c.name) for c in (_column(k) for k in _blob_columns))


def referenced_digests(connection: Any) -> set[str]:
    """Every digest a row refers to, read through ``connection`` (a SQLAlchemy
    Connection or Session: the backup reads them inside its snapshot)."""
    found: set[str] = set()
    for registered in _blob_columns:
        column = _column(registered)
        query = select(column).where(column.is_not(None)).distinct()
        found.update(value for value in connection.execute(query).scalars() if value)
    return found


def _column(registered: Any) -> Any:
    # An ORM attribute (Model.sha256) or a Core column: the table's Column either way.
    prop = getattr(registered, "property", None)
    return prop.columns[0] if prop is not None else registered
