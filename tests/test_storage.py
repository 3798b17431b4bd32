"""The content-addressed blob store: what lands under blobs/, what is left in tmp/."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from server.storage import BlobStore, TooLarge


def test_store_all_places_every_file_under_its_hash_and_empties_tmp(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    contents = [os.urandom(5000) for _ in range(3)] + [b"same"] * 2
    temps = [store.new_temp() for _ in contents]
    for temp, data in zip(temps, contents, strict=True):
        temp.write(data)

    digests = store.store_all(temps)

    assert digests == [hashlib.sha256(d).hexdigest() for d in contents]
    for digest, data in zip(digests, contents, strict=True):
        assert store.path(digest).read_bytes() == data
        assert store.path(digest).parent.parent.parent == store.blobs
    assert not [p for p in store.tmp.rglob("*") if p.is_file()]
    # The same content twice is one file.
    assert len([p for p in store.blobs.rglob("*") if p.is_file()]) == 4


def test_storing_content_already_present_keeps_one_file(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    first = store.new_temp()
    first.write(b"photo bytes")
    digest = store.store(first)
    again = store.new_temp()
    again.write(b"photo bytes")

    assert store.store(again) == digest
    assert store.path(digest).read_bytes() == b"photo bytes"
    assert not [p for p in store.tmp.rglob("*") if p.is_file()]


def test_a_temp_file_refuses_to_grow_past_its_limit_and_vanishes_on_close(
    tmp_path: Path,
) -> None:
    store = BlobStore(tmp_path)
    temp = store.new_temp(max_bytes=10)
    temp.write(b"0123456789")
    with pytest.raises(TooLarge):
        temp.write(b"x")
    temp.close()
    assert not temp.path.exists()


@pytest.mark.slow
def test_leftovers_of_a_dead_process_are_removed_at_start(tmp_path: Path) -> None:
    # A child process opens a temp file and dies without closing it.
    script = (
        "import os, sys; from server.storage import BlobStore; "
        "t = BlobStore(sys.argv[1]).new_temp(); t.write(b'half'); t.flush(); os._exit(9)"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=False)
    assert [p for p in (tmp_path / "tmp").rglob("*") if p.is_file()]

    removed = BlobStore(tmp_path).clean_temp()

    assert removed == 1
    assert not [p for p in (tmp_path / "tmp").rglob("*") if p.is_file()]
