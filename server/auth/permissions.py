"""Who may see what: every staff user is scoped to one area and everything below it."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import Select

from server.areas.models import Area
from server.auth.models import User
from server.errors import OutOfArea

T = TypeVar("T", bound=tuple[Any, ...])


def in_area(actor: User, area: Area) -> bool:
    return actor.area.contains(area)


def require_in_area(actor: User, area: Area) -> None:
    """Raise OutOfArea (shown as 'not found') unless ``area`` lies inside the actor's area."""
    if not actor.is_active or not in_area(actor, area):
        raise OutOfArea("no such case", area=None)


def scope_to_actor(query: Select[T], actor: User) -> Select[T]:
    """Restrict a query that joins ``Area`` to the areas inside the actor's area."""
    return query.where(Area.path.startswith(actor.area.path, autoescape=True))
