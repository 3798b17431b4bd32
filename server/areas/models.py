from __future__ import annotations

import enum

from sqlalchemy import CheckConstraint, Enum, Float, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from server.extensions import Model


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
