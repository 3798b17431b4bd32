from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, Enum, Float, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from server.clock import utcnow
from server.extensions import Model
from server.types import UTCDateTime


class AreaLevel(enum.StrEnum):
    LEAGUE = "league"
    COUNTY = "county"
    TOWNSHIP = "township"
    VILLAGE = "village"


PARENT_LEVEL = {
    AreaLevel.LEAGUE: None,
    AreaLevel.COUNTY: AreaLevel.LEAGUE,
    AreaLevel.TOWNSHIP: AreaLevel.COUNTY,
    AreaLevel.VILLAGE: AreaLevel.TOWNSHIP,
}


class Area(Model):
    """One administrative area. ``path`` lists the codes from the root ("/L/C/T/V/"),
    so "is inside" is a prefix test usable both in Python and in SQL.
    """

    __tablename__ = "areas"
    __table_args__ = (
        CheckConstraint("lat BETWEEN -90 AND 90", name="lat_range"),
        CheckConstraint("lon BETWEEN -180 AND 180", name="lon_range"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(20), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    level: Mapped[AreaLevel] = mapped_column(
        Enum(
            AreaLevel,
            native_enum=False,
            create_constraint=True,
            length=10,
            values_callable=lambda e: [m.value for m in e],
        )
    )
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("areas.id"), index=True)
    path: Mapped[str] = mapped_column(String(255), index=True)
    lat: Mapped[float] = mapped_column(Float)
    lon: Mapped[float] = mapped_column(Float)

    parent: Mapped[Area | None] = relationship(remote_side=[id])

    def contains(self, other: Area) -> bool:
        return other.path.startswith(self.path)

    def __repr__(self) -> str:
        return f"<Area {self.code} {self.level.value} {self.name}>"


def build_path(parent: Area | None, code: str) -> str:
    return f"{parent.path if parent else '/'}{code}/"


class AreaBoundary(Model):
    """An area's outline as an operator loaded it (``dibao areas boundaries FILE``):
    WGS-84 longitude/latitude as in the file, simplified; one per area, replaced by
    the next load. ``rings`` holds polygons, each a list of rings (outer first, then
    holes), each a closed list of ``[lon, lat]``. The bounding box finds the outlines
    a map's view crosses without reading them.
    """

    __tablename__ = "area_boundaries"
    __table_args__ = (
        CheckConstraint("min_lat <= max_lat AND min_lon <= max_lon", name="bbox_ordered"),
        CheckConstraint("vertices > 0", name="vertices_positive"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    area_id: Mapped[int] = mapped_column(ForeignKey("areas.id"), unique=True)
    rings: Mapped[list[Any]] = mapped_column(JSON)
    vertices: Mapped[int] = mapped_column(Integer)
    min_lat: Mapped[float] = mapped_column(Float)
    max_lat: Mapped[float] = mapped_column(Float)
    min_lon: Mapped[float] = mapped_column(Float)
    max_lon: Mapped[float] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(255))
    loaded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    area: Mapped[Area] = relationship()

    def __repr__(self) -> str:
        return f"<AreaBoundary of area {self.area_id}: {self.vertices} vertices>"
