"""The transaction rule (docs/decisions/0006-transactions.md) in code.

A unit of work is a request, a Celery task or a CLI command: its entry point (a view, a
task, a command) commits once, after the services it called have only added and
flushed. A service that must undo part of its own work uses a savepoint
(``db.session.begin_nested()``), never a rollback of the caller's transaction.

The exceptions are named batch operations that commit as they go, so that a long run
holds no lock for long and a crash loses one batch, not the night's work; each is marked
with :func:`commits_per_batch`. ``tests/test_architecture.py`` fails on any other commit
or rollback outside an entry point.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def commits_per_batch(func: F) -> F:
    """Mark ``func`` as a batch operation that commits per batch (decision 0006): it must
    be safe to run again after a crash between two commits, and it is called by an entry
    point with nothing else pending in the session."""
    func.__commits_per_batch__ = True  # type: ignore[attr-defined]
    return func
