"""server/events.py and the blob users of server/storage.py: how a lower package hears
from, or asks, the packages above it without importing them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from server import storage
from server.events import Event


@dataclass(frozen=True)
class Happened:
    what: str


def test_listeners_hear_each_event_once_in_the_order_connected() -> None:
    event: Event[Happened] = Event("test.happened")
    heard: list[str] = []

    def first(e: Happened) -> None:
        heard.append(f"first {e.what}")

    def second(e: Happened) -> None:
        heard.append(f"second {e.what}")

    event.connect(first)
    event.connect(second)
    event.connect(first)  # connecting twice changes nothing
    event.send(Happened("a"))
    assert heard == ["first a", "second a"]


@pytest.fixture
def blob_users() -> Iterator[list[Callable[[str], bool]]]:
    before = list(storage._blob_users)
    yield storage._blob_users
    storage._blob_users[:] = before


def test_a_blob_is_in_use_while_any_registered_package_keeps_it(
    blob_users: list[Callable[[str], bool]],
) -> None:
    blob_users.clear()
    assert not storage.blob_in_use("a" * 64)
    kept = {"b" * 64}
    storage.blob_user(lambda sha256: sha256 in kept)
    assert storage.blob_in_use("b" * 64) and not storage.blob_in_use("a" * 64)


def test_visit_photos_and_payments_are_wired_in() -> None:
    from server.payments.service import _settle_decided_month
    from server.proof_of_life.events import month_decided
    from server.visits.models import _photo_keeps

    assert _photo_keeps in storage._blob_users
    assert _settle_decided_month in month_decided._listeners
