"""Domain events: a package announces what happened, and a package above it reacts.
The announcing package imports nothing of its listeners, so imports point one way
(down) even where the work flows up (a proof of life decided: the payment follows).

Listeners run synchronously, inside the announcer's transaction, in the order they
were connected; the composition root (``server/__init__.py``) imports the listening
modules so that every application has them connected.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

E = TypeVar("E")


class Event(Generic[E]):
    """One kind of event; its payload is an ``E`` (a small frozen dataclass)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._listeners: list[Callable[[E], None]] = []

    def connect(self, listener: Callable[[E], None]) -> Callable[[E], None]:
        """Call ``listener`` on every ``send`` (connecting twice has no effect);
        usable as a decorator."""
        if listener not in self._listeners:
            self._listeners.append(listener)
        return listener

    def send(self, payload: E) -> None:
        for listener in list(self._listeners):
            listener(payload)

    def __repr__(self) -> str:
        return f"Event({self.name!r})"
