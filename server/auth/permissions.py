"""Who may see what: every staff user is scoped to one area and everything below it.

The rule: **outside your area is "does not exist"**. An object in another area gets
exactly the answer of an object that was never there (same status, code, message and
details), and the area check comes before any other question about the object (its
state, its members, whether the actor's role may act on it). Every lookup by an id or
code that a caller sends goes through ``require_visible`` or ``require_in_area``, and
both build their error with ``not_found``, so the two answers cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from flask_login import login_required
from sqlalchemy import Select

from server.areas.models import Area
from server.auth.models import User
from server.errors import OutOfArea

Q = TypeVar("Q", bound="Select[*tuple[Any, ...]]")
P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


def in_area(actor: User, area: Area) -> bool:
    return actor.area.contains(area)


def not_found(what: str, **details: Any) -> OutOfArea:
    """The one error for both "there is no such {what}" and "it lies outside your area"."""
    return OutOfArea(f"no such {what}", **details)


def require_in_area(actor: User, area: Area, what: str = "case", **details: Any) -> None:
    """Raise OutOfArea (shown as 'not found') unless ``area`` lies inside the actor's
    area: the same answer as for something that does not exist. Callers that also
    answer "missing" themselves must pass the same ``what`` and ``details``; prefer
    ``require_visible``, which does both.
    """
    if not actor.is_active or not in_area(actor, area):
        raise not_found(what, **details)


def require_visible(
    actor: User,
    found: T | None,
    area_of: Callable[[T], Area],
    what: str,
    **details: Any,
) -> T:
    """``found`` when it exists and lies inside the actor's area; otherwise the same
    OutOfArea for both cases. Call it before any other check on the object.
    """
    if found is None:
        raise not_found(what, **details)
    require_in_area(actor, area_of(found), what, **details)
    return found


def scope_to_actor(query: Q, actor: User) -> Q:
    """Restrict a query that joins ``Area`` to the areas inside the actor's area."""
    scoped: Q = query.where(Area.path.startswith(actor.area.path, autoescape=True))
    return scoped


def staff_required(view: Callable[P, R]) -> Callable[P, R]:
    """Flask-Login's ``login_required`` with its type kept."""
    wrapped: Callable[P, R] = login_required(view)
    return wrapped
