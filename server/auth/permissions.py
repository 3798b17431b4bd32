"""Who may see what: every staff user is scoped to one area and everything below it."""

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


def in_area(actor: User, area: Area) -> bool:
    return actor.area.contains(area)


def require_in_area(actor: User, area: Area, what: str = "case") -> None:
    """Raise OutOfArea (shown as 'not found') unless ``area`` lies inside the actor's
    area: the same answer as for something that does not exist.
    """
    if not actor.is_active or not in_area(actor, area):
        raise OutOfArea(f"no such {what}")


def scope_to_actor(query: Q, actor: User) -> Q:
    """Restrict a query that joins ``Area`` to the areas inside the actor's area."""
    scoped: Q = query.where(Area.path.startswith(actor.area.path, autoescape=True))
    return scoped


def staff_required(view: Callable[P, R]) -> Callable[P, R]:
    """Flask-Login's ``login_required`` with its type kept."""
    wrapped: Callable[P, R] = login_required(view)
    return wrapped
