"""The port through which the monthly cycle tells members what they must do.

The cycle decides who must be told what and when (:class:`Notice`); a notifier (the
SMS adapter, registered with :func:`register`) turns notices into messages, or into a
caseworker task when a member cannot be reached, and says what it did
(:class:`Told`). Without a registered notifier nobody is told.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from flask import Flask, current_app
from sqlalchemy import Select

EXTENSION = "dibao.notifier"


class NoticeKind(enum.StrEnum):
    REMINDER = "reminder"  # the window opened: here is your link, until the close
    FOLLOW_UP = "follow_up"  # the follow-up day: still pending, the close is near
    RESEND = "resend"  # staff asked to send the month's link again (a corrected phone)


class Reach(enum.StrEnum):
    """How far a channel got with a member's notices of a month."""

    SENT = "sent"  # handed to the channel's provider and accepted (it may fail later)
    DELIVERED = "delivered"  # the provider reported it delivered


@dataclass(frozen=True)
class Notice:
    """This member must be told ``kind`` for ``month`` (with their link's token)."""

    kind: NoticeKind
    member_id: int
    household_id: int
    month: str
    name: str
    phone: str | None
    token: str
    closes: datetime


@dataclass
class Told:
    """What a notifier did with a batch of notices."""

    queued: int = 0  # messages queued
    already: int = 0  # members told this before (an earlier run)
    ignored: int = 0  # notices the channel leaves alone (see the notifier)
    tasks: dict[str, int] = field(default_factory=dict)  # caseworker tasks, by reason


@dataclass(frozen=True)
class Undelivered:
    """A message of the month that did not reach the member (no personal data)."""

    household_id: int
    member_id: int
    month: str
    status: str  # the channel's status code ("failed" for SMS)
    at: datetime  # when it was known not to arrive


class Notifier(Protocol):
    def tell(self, notices: Sequence[Notice], *, now: datetime) -> Told:
        """Queue what ``notices`` say (flush, never commit)."""

    def close(self, month: str, *, now: datetime) -> int:
        """The month's window closed: drop what was not sent yet (how many)."""

    def status(self, month: str) -> dict[str, Any]:
        """Counts for people about the month's notices (no personal data)."""

    def undelivered(self, area_path: str, months: Sequence[str]) -> list[Undelivered]:
        """The messages of ``months`` that did not reach households whose village lies
        under ``area_path`` (an ``Area.path`` prefix): the exceptions inbox."""

    def reached(self, month: str, stage: Reach) -> Select[int] | None:
        """The ids of the members whose notices of ``month`` got as far as ``stage``,
        as a query (a reader puts it in its own, area-scoped, counts and lists); None
        when the channel keeps no such record."""


class NobodyTold:
    """No channel registered: nobody is told."""

    def tell(self, notices: Sequence[Notice], *, now: datetime) -> Told:
        return Told(ignored=len(notices))

    def close(self, month: str, *, now: datetime) -> int:
        return 0

    def status(self, month: str) -> dict[str, Any]:
        return {}

    def undelivered(self, area_path: str, months: Sequence[str]) -> list[Undelivered]:
        return []

    def reached(self, month: str, stage: Reach) -> Select[int] | None:
        return None


def register(app: Flask, notifier: Notifier) -> None:
    app.extensions[EXTENSION] = notifier


def notifier() -> Notifier:
    found: Notifier = current_app.extensions.get(EXTENSION) or NobodyTold()
    return found


# --------------------------------------------------------------------------- history


@dataclass(frozen=True)
class PastMessage:
    """A notice told in the past, with what became of it (the demo seeder's history):
    ``status`` is ``sent``, ``delivered`` or ``failed`` (with the provider's
    ``error_code``)."""

    notice: Notice
    status: str
    error_code: int | None
    sent_at: datetime
    delivered_at: datetime | None


class MessageHistory(Protocol):
    """The channel's rows for past messages, which the seeder writes in bulk with the
    rest of its history (``server.seed_history``): the seeder never imports the channel."""

    @property
    def table(self) -> Any:
        """The channel's message table (a SQLAlchemy ``Table``)."""

    def rows(self, messages: Sequence[PastMessage]) -> list[dict[str, Any]]:
        """One row of ``table`` per message, every column given."""


HISTORY_EXTENSION = "dibao.message_history"


def register_history(app: Flask, history: MessageHistory) -> None:
    app.extensions[HISTORY_EXTENSION] = history


def message_history() -> MessageHistory | None:
    found: MessageHistory | None = current_app.extensions.get(HISTORY_EXTENSION)
    return found
