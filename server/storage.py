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
import hashlib
import logging
import os
import re
import socket
import tempfile
import time
from pathlib import Path
from typing import IO, Any

logger = logging.getLogger(__name__)

SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


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
        self.stored = False

    def write(self, data: bytes) -> int:
        self.size += len(data)
        if self.max_bytes is not None and self.size > self.max_bytes:
            raise TooLarge(f"more than {self.max_bytes} bytes")
        self._sha.update(data)
        return self._handle.write(data)

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
        return self._place(path, digest.hexdigest())

    def path(self, sha256: str) -> Path:
        if not SHA256_HEX.match(sha256):
            raise ValueError("not a sha256 hex digest")
        return self.blobs / sha256[:2] / sha256[2:4] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def store(self, temp: HashingFile) -> str:
        """Make the temp file durable under its content hash; returns the hash."""
        temp.flush()
        os.fsync(temp.fileno())
        temp.stored = True
        temp.close()
        return self._place(temp.path, temp.sha256)

    def _place(self, source: Path, digest: str) -> str:
        final = self.path(digest)
        if final.exists():
            source.unlink(missing_ok=True)  # the same content is already stored
            return digest
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, final)
        _fsync_dir(final.parent)
        return digest

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


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
