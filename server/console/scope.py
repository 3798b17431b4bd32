"""Which area a console page looks at: the user's own area or one below it."""

from __future__ import annotations

from sqlalchemy import select

from server.areas.models import Area, AreaLevel
from server.auth.models import User
from server.auth.permissions import require_visible
from server.extensions import db

# The level below each level (a village has none).
CHILD_LEVEL = {
    AreaLevel.LEAGUE: AreaLevel.COUNTY,
    AreaLevel.COUNTY: AreaLevel.TOWNSHIP,
    AreaLevel.TOWNSHIP: AreaLevel.VILLAGE,
    AreaLevel.VILLAGE: None,
}


def area_in_scope(actor: User, code: str | None) -> Area:
    """The area with this code when it lies inside the actor's area (the actor's own
    area without a code); "no such area" (404) otherwise, the same answer whether it
    is elsewhere or does not exist."""
    if not code:
        return actor.area
    found = db.session.scalar(select(Area).where(Area.code == code.strip()))
    return require_visible(actor, found, lambda area: area, "area", code=code)


def children(area: Area) -> list[Area]:
    """The areas one level below, by code."""
    return list(
        db.session.scalars(select(Area).where(Area.parent_id == area.id).order_by(Area.code))
    )


def trail(actor: User, area: Area) -> list[Area]:
    """From the actor's own area down to ``area`` (both included): the breadcrumb."""
    chain = [area]
    while chain[-1].id != actor.area.id and chain[-1].parent is not None:
        chain.append(chain[-1].parent)
    return list(reversed(chain))
