"""Visit traces for the maps (issue 15, item 4): one caseworker's day, one township's
month, one household's history. Each answers with the map's drawing (``maps.MapData``
made into SVG), the table beside it (exportable) and the spots from which several
households were "visited".

Sources: homes are ``households.home_lat/lon``, village centroids ``areas.lat/lon``,
fixes ``surveys.gps_lat/lon`` with ``gps_accuracy_m``, all WGS-84 as captured; area
outlines from ``area_boundaries`` (``dibao areas boundaries``). Distances are
geodesic (``server.visits.checks.distance_m``, the visit checks' own); "far from home"
is the visit checks' ``far_from_home_m``; impossible speeds and clusters follow the
region file's ``[maps]``. No names: households appear by case code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

from flask import url_for
from flask_babel import gettext as _
from markupsafe import Markup
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import selectinload

from server.areas.models import Area, AreaBoundary, AreaLevel
from server.auth.models import Role, User
from server.auth.permissions import (
    Capability,
    can,
    not_found,
    require,
    require_visible,
    scope_to_actor,
)
from server.cases.models import Household
from server.cases.queries import get_case
from server.console import maps
from server.console.scope import area_in_scope
from server.console.tables import Column, Table
from server.extensions import db
from server.labels import FLAG_LABELS, VISIT_KIND_LABELS
from server.months import first_of_next_month, parse_month
from server.region import MapRules, local_time, region
from server.visits.checks import distance_m
from server.visits.models import Survey

MAP_LEVELS = (AreaLevel.TOWNSHIP, AreaLevel.VILLAGE)


@dataclass(frozen=True)
class LegendItem:
    symbol: Markup
    label: str


@dataclass(frozen=True)
class ClusterRow:
    name: str
    households: int
    visits: int
    case_codes: list[str]
    caseworkers: list[str]
    farthest_home_m: int  # of the households' homes, from the spot
    first: datetime
    last: datetime


@dataclass
class TraceView:
    title: str
    svg: Markup
    table: Table
    legend: list[LegendItem]
    clusters: list[ClusterRow] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def rules(self) -> MapRules:
        return region().maps

    @property
    def far_m(self) -> float:
        return region().visit_thresholds.far_from_home_m


@dataclass(frozen=True)
class _Visit:
    survey: Survey
    case_code: str
    home_lat: float
    home_lon: float
    village_id: int
    village: str
    caseworker: str
    caseworker_id: int
    from_home_m: float
    far: bool
    flags: list[str]


def _local_range(start: date, end: date) -> tuple[datetime, datetime]:
    """Local midnights of ``start`` and ``end`` (the region's zone), in UTC."""
    zone = ZoneInfo(region().timezone)
    return (
        datetime.combine(start, time(0), zone).astimezone(UTC),
        datetime.combine(end, time(0), zone).astimezone(UTC),
    )


def _visits(query: Any) -> list[_Visit]:
    far_m = region().visit_thresholds.far_from_home_m
    rows = db.session.execute(query.options(selectinload(Survey.flags))).all()
    visits = []
    for survey, code, home_lat, home_lon, village_id, village, caseworker in rows:
        from_home = distance_m(survey.gps_lat, survey.gps_lon, home_lat, home_lon)
        visits.append(
            _Visit(
                survey=survey,
                case_code=code,
                home_lat=home_lat,
                home_lon=home_lon,
                village_id=village_id,
                village=village,
                caseworker=caseworker.label,
                caseworker_id=caseworker.id,
                from_home_m=from_home,
                far=from_home > far_m,
                flags=[f.code for f in survey.flags if f.cleared_at is None],
            )
        )
    return visits


def _survey_query(actor: User) -> Any:
    query = (
        select(
            Survey,
            Household.case_code,
            Household.home_lat,
            Household.home_lon,
            Household.village_id,
            Area.name,
            User,
        )
        .join(Household, Survey.household_id == Household.id)
        .join(Area, Household.village_id == Area.id)
        .join(User, Survey.caseworker_id == User.id)
    )
    return scope_to_actor(query, actor)


def _flag_text(codes: Sequence[str]) -> str:
    return "; ".join(str(FLAG_LABELS.get(c, c)) for c in codes)


def _case_url(code: str) -> str:
    return url_for("cases.case_detail", case_code=code)


def _fix_title(v: _Visit, when: str) -> str:
    parts = [when, v.case_code, _("%(m)s m from home", m=round(v.from_home_m))]
    if v.survey.gps_accuracy_m is not None:
        parts.append(_("accuracy ±%(m)s m", m=round(v.survey.gps_accuracy_m)))
    if v.flags:
        parts.append(_flag_text(v.flags))
    return " · ".join(parts)


def _places(visits: Sequence[_Visit], extra: Sequence[Area] = ()) -> list[maps.Place]:
    ids = {v.village_id for v in visits} | {a.id for a in extra}
    if not ids:
        return []
    villages = db.session.scalars(select(Area).where(Area.id.in_(ids)).order_by(Area.code))
    return [maps.Place(a.lat, a.lon, a.name) for a in villages]


def _homes(visits: Sequence[_Visit]) -> list[maps.Home]:
    seen: dict[str, maps.Home] = {}
    for v in visits:
        if v.case_code not in seen:
            seen[v.case_code] = maps.Home(
                v.home_lat, v.home_lon, v.case_code, _case_url(v.case_code)
            )
    return list(seen.values())


def _outlines(actor: User, data: maps.MapData) -> list[maps.Outline]:
    """Loaded boundaries that cross the view: of the actor's areas and of those above."""
    extent = data.extent()
    if not extent:
        return []
    min_lat, min_lon, max_lat, max_lon = maps.Projection.fit(extent).bounds()
    ancestors = [code for code in actor.area.path.split("/") if code]
    rows = db.session.execute(
        select(AreaBoundary.rings, Area.name)
        .join(Area, AreaBoundary.area_id == Area.id)
        .where(
            and_(
                AreaBoundary.min_lat <= max_lat,
                AreaBoundary.max_lat >= min_lat,
                AreaBoundary.min_lon <= max_lon,
                AreaBoundary.max_lon >= min_lon,
            ),
            or_(
                Area.path.startswith(actor.area.path, autoescape=True),
                Area.code.in_(ancestors),
            ),
        )
        .order_by(Area.path)
    ).all()
    return [maps.Outline(rings, name) for rings, name in rows]


def _clusters(
    visits: Sequence[_Visit], data: maps.MapData, names: dict[int, str]
) -> list[ClusterRow]:
    """Mark on ``data`` and list the spots of many households (``names``: survey id ->
    the cluster's name, filled in)."""
    rules = region().maps
    found = maps.find_clusters(
        [(v.survey.gps_lat, v.survey.gps_lon, v.survey.household_id) for v in visits],
        rules.cluster_radius_m,
        rules.cluster_min_households,
    )
    rows = []
    for number, cluster in enumerate(found, start=1):
        name = f"C{number}"
        centre = visits[cluster.centre].survey
        members = [visits[i] for i in cluster.members]
        for v in members:
            names[v.survey.id] = name
        data.rings.append(
            maps.Ring(
                centre.gps_lat,
                centre.gps_lon,
                rules.cluster_radius_m,
                _("%(name)s: %(n)s households", name=name, n=cluster.households),
            )
        )
        rows.append(
            ClusterRow(
                name=name,
                households=cluster.households,
                visits=len(members),
                case_codes=sorted({v.case_code for v in members}),
                caseworkers=sorted({v.caseworker for v in members}),
                farthest_home_m=round(
                    max(
                        distance_m(centre.gps_lat, centre.gps_lon, v.home_lat, v.home_lon)
                        for v in members
                    )
                ),
                first=min(v.survey.finished_at for v in members),
                last=max(v.survey.finished_at for v in members),
            )
        )
    return rows


def _legend(
    groups: Sequence[tuple[int, str]] = (), legs: bool = False, clusters: bool = True
) -> list[LegendItem]:
    items = [LegendItem(maps.symbol("fix", g), label) for g, label in groups] or [
        LegendItem(maps.symbol("fix"), _("Visit's GPS fix (number: order; ⚠: far or flagged)"))
    ]
    items += [
        LegendItem(maps.symbol("accuracy"), _("Reported GPS accuracy, true to scale")),
        LegendItem(maps.symbol("home"), _("Registered home (case code)")),
        LegendItem(maps.symbol("to-home"), _("From the fix to its home")),
        LegendItem(maps.symbol("far"), _("Fix far from its home (dashed, ⚠)")),
    ]
    if legs:
        items += [
            LegendItem(maps.symbol("leg"), _("Path between visits, with speed")),
            LegendItem(maps.symbol("impossible"), _("Impossible speed (dashed, ⚠)")),
        ]
    if clusters:
        items.append(
            LegendItem(maps.symbol("cluster"), _("Several households visited from one spot"))
        )
    items += [
        LegendItem(maps.symbol("place"), _("Village centre")),
        LegendItem(maps.symbol("outline"), _("Area boundary (when loaded)")),
    ]
    return items


def _finish(actor: User, data: maps.MapData) -> Markup:
    data.outlines = _outlines(actor, data)
    return maps.render_svg(data, north=_("N"))


def _empty_map(area: Area, data: maps.MapData) -> None:
    """A map with no visits still shows where it is."""
    if not data.fixes and not data.places:
        data.places.append(maps.Place(area.lat, area.lon, area.name))


# --------------------------------------------------------------------------- one day


def caseworker_day(actor: User, caseworker_id: int, day: date) -> TraceView:
    """One caseworker's visits of a local day, in order, with the legs between them.
    Outside the actor's area: "no such caseworker"; another's day without
    READ_CONSOLE: not permitted."""
    caseworker = require_visible(
        actor, db.session.get(User, caseworker_id), lambda u: u.area, "caseworker"
    )
    if caseworker.id != actor.id:
        require(
            actor,
            Capability.READ_CONSOLE,
            "only your own day, or the console's readers, on this map",
        )
    rules = region()
    start, end = _local_range(day, day + timedelta(days=1))
    visits = _visits(
        _survey_query(actor)
        .where(
            Survey.caseworker_id == caseworker.id,
            Survey.finished_at >= start,
            Survey.finished_at < end,
        )
        .order_by(Survey.finished_at, Survey.id)
    )
    title = _("%(name)s's visits on %(day)s", name=caseworker.label, day=day.isoformat())
    data = maps.MapData(title=title, homes=_homes(visits), places=_places(visits))
    legs = _legs(visits, rules.maps.impossible_speed_kmh, rules.visit_thresholds.far_from_home_m)
    _day_fixes(data, visits, legs)
    cluster_of: dict[int, str] = {}
    clusters = _clusters(visits, data, cluster_of)
    _empty_map(caseworker.area, data)
    table = _day_table(title, caseworker, day, visits, legs, cluster_of)
    return TraceView(
        title=title,
        svg=_finish(actor, data),
        table=table,
        legend=_legend(legs=True),
        clusters=clusters,
        summary={
            "visits": len(visits),
            "impossible": sum(1 for leg in legs if leg.impossible),
            "far": sum(1 for v in visits if v.far),
            "caseworker": caseworker,
            "day": day.isoformat(),
        },
    )


def _day_fixes(data: maps.MapData, visits: Sequence[_Visit], legs: Sequence[_LegOut]) -> None:
    """The day's fixes, numbered in order, and the legs between them."""
    for number, v in enumerate(visits, start=1):
        data.fixes.append(
            maps.Fix(
                v.survey.gps_lat,
                v.survey.gps_lon,
                v.survey.gps_accuracy_m,
                str(number),
                _fix_title(v, local_time(v.survey.finished_at, "%H:%M")),
                home=(v.home_lat, v.home_lon),
                far=v.far,
                href=_case_url(v.case_code),
                flagged=bool(v.flags),
            )
        )
    for index, leg in enumerate(legs):
        data.legs.append(maps.Leg(index, index + 1, leg.text, impossible=leg.impossible))


def _day_table(
    title: str,
    caseworker: User,
    day: date,
    visits: Sequence[_Visit],
    legs: Sequence[_LegOut],
    cluster_of: dict[int, str],
) -> Table:
    before: list[_LegOut | None] = [None, *legs]
    rows = [
        {
            "number": number,
            "started": local_time(v.survey.started_at, "%H:%M"),
            "finished": local_time(v.survey.finished_at, "%H:%M"),
            "case_code": v.case_code,
            "case_url": _case_url(v.case_code),
            "village": v.village,
            "kind": str(VISIT_KIND_LABELS.get(v.survey.kind, v.survey.kind)),
            "accuracy_m": _rounded(v.survey.gps_accuracy_m),
            "from_home_m": round(v.from_home_m),
            "far": v.far,
            "leg_km": None if leg is None else round(leg.metres / 1000, 2),
            "leg_minutes": None if leg is None else round(leg.seconds / 60),
            "speed_kmh": None if leg is None or leg.speed is None else round(leg.speed, 1),
            "impossible": None if leg is None else leg.impossible,
            "cluster": cluster_of.get(v.survey.id),
            "flags": _flag_text(v.flags),
        }
        for number, (v, leg) in enumerate(zip(visits, before[: len(visits)], strict=True), start=1)
    ]
    table = Table(
        name="map-caseworker-day",
        title=title,
        columns=[
            Column("number", _("No.")),
            Column("started", _("Started")),
            Column("finished", _("Finished")),
            Column("case_code", _("Case"), link="case_url"),
            Column("village", _("Village")),
            Column("kind", _("Visit")),
            Column("accuracy_m", _("GPS accuracy (m)")),
            Column("from_home_m", _("From home (m)")),
            Column("far", _("Far from home")),
            Column("leg_km", _("From the previous visit (km)")),
            Column("leg_minutes", _("Minutes between")),
            Column("speed_kmh", _("Speed (km/h)")),
            Column("impossible", _("Impossible speed")),
            Column("cluster", _("Shared spot")),
            Column("flags", _("Open flags")),
        ],
        rows=rows,
        filters={_("Caseworker"): caseworker.label, _("Day"): day.isoformat()},
    )
    return table


@dataclass(frozen=True)
class _LegOut:
    metres: float
    seconds: float
    speed: float | None
    impossible: bool
    text: str


def _legs(visits: Sequence[_Visit], max_kmh: float, far_m: float) -> list[_LegOut]:
    """From each visit's end to the next one's start: distance, time, speed. With no
    time between them, impossible when farther apart than ``far_m`` (as the visit
    checks' ``impossible_travel``)."""
    legs: list[_LegOut] = []
    for a, b in pairwise(visits):
        sa, sb = a.survey, b.survey
        metres = distance_m(sa.gps_lat, sa.gps_lon, sb.gps_lat, sb.gps_lon)
        seconds = (sb.started_at - sa.finished_at).total_seconds()
        speed = maps.leg_speed_kmh(metres, seconds)
        impossible = metres > far_m if speed is None else speed > max_kmh
        if speed is None:
            km = round(metres / 1000, 1)
            text = _("%(km)s km, no time between", km=km)
        else:
            kmh = round(speed)
            text = _("%(v)s km/h", v=kmh)
        legs.append(_LegOut(metres, seconds, speed, impossible, text))
    return legs


def _rounded(value: float | None) -> int | None:
    return None if value is None else round(value)


# --------------------------------------------------------------------------- one month


def area_month(actor: User, code: str, month: str) -> TraceView:
    """Every visit of a local month in a township (or one village), by caseworker,
    with the spots from which several households were "visited"."""
    area = area_in_scope(actor, code)
    if area.level not in MAP_LEVELS:
        raise not_found("area", code=code)
    require(actor, Capability.READ_CONSOLE, "the township's map is for the console's readers")
    year, number = parse_month(month)
    first = date(year, number, 1)
    start, end = _local_range(first, first_of_next_month(first))
    visits = _visits(
        _survey_query(actor)
        .where(
            Area.path.startswith(area.path, autoescape=True),
            Survey.finished_at >= start,
            Survey.finished_at < end,
        )
        .order_by(Survey.finished_at, Survey.id)
    )
    title = _("Visits in %(area)s, %(month)s", area=area.name, month=month)
    workers = sorted({(v.caseworker, v.caseworker_id) for v in visits})
    group = {worker_id: index for index, (_label, worker_id) in enumerate(workers)}
    villages = list(
        db.session.scalars(select(Area).where(Area.parent_id == area.id))
        if area.level is AreaLevel.TOWNSHIP
        else [area]
    )
    data = maps.MapData(title=title, homes=_homes(visits), places=_places(visits, villages))
    for v in visits:
        when = local_time(v.survey.finished_at, "%m-%d %H:%M")
        data.fixes.append(
            maps.Fix(
                v.survey.gps_lat,
                v.survey.gps_lon,
                v.survey.gps_accuracy_m,
                local_time(v.survey.finished_at, "%d"),
                f"{v.caseworker} · {_fix_title(v, when)}",
                home=(v.home_lat, v.home_lon),
                far=v.far,
                group=group[v.caseworker_id],
                href=_case_url(v.case_code),
                flagged=bool(v.flags),
            )
        )
    cluster_of: dict[int, str] = {}
    clusters = _clusters(visits, data, cluster_of)
    _empty_map(area, data)
    counts: dict[int, int] = {}
    for v in visits:
        counts[v.caseworker_id] = counts.get(v.caseworker_id, 0) + 1
    legend_groups = [
        (group[wid], f"{label}: {_('Visits')} {counts[wid]}") for label, wid in workers
    ]
    table = _month_table(title, area, month, visits, cluster_of)
    return TraceView(
        title=title,
        svg=_finish(actor, data),
        table=table,
        legend=_legend(legend_groups),
        clusters=clusters,
        summary={
            "visits": len(visits),
            "households": len({v.case_code for v in visits}),
            "far": sum(1 for v in visits if v.far),
            "area": area,
        },
    )


def _month_table(
    title: str, area: Area, month: str, visits: Sequence[_Visit], cluster_of: dict[int, str]
) -> Table:
    rows = [
        {
            "finished": local_time(v.survey.finished_at),
            "caseworker": v.caseworker,
            "day_url": url_for(
                "console_maps.caseworker_day",
                user_id=v.caseworker_id,
                day=local_time(v.survey.finished_at, "%Y-%m-%d"),
            ),
            "case_code": v.case_code,
            "case_url": _case_url(v.case_code),
            "village": v.village,
            "kind": str(VISIT_KIND_LABELS.get(v.survey.kind, v.survey.kind)),
            "accuracy_m": _rounded(v.survey.gps_accuracy_m),
            "from_home_m": round(v.from_home_m),
            "far": v.far,
            "cluster": cluster_of.get(v.survey.id),
            "flags": _flag_text(v.flags),
        }
        for v in visits
    ]
    table = Table(
        name="map-township-month",
        title=title,
        columns=[
            Column("finished", _("Finished")),
            Column("caseworker", _("Caseworker"), link="day_url"),
            Column("case_code", _("Case"), link="case_url"),
            Column("village", _("Village")),
            Column("kind", _("Visit")),
            Column("accuracy_m", _("GPS accuracy (m)")),
            Column("from_home_m", _("From home (m)")),
            Column("far", _("Far from home")),
            Column("cluster", _("Shared spot")),
            Column("flags", _("Open flags")),
        ],
        rows=rows,
        filters={_("Area"): f"{area.name} ({area.code})", _("Month"): month},
    )
    return table


# --------------------------------------------------------------------------- one household


def household_history(actor: User, case_code: str) -> TraceView:
    """Every visit's fix of one household, oldest first, around its home."""
    household = get_case(actor, case_code)
    if not (can(actor, Capability.READ_CONSOLE) or actor.role is Role.CASEWORKER):
        require(actor, Capability.READ_CONSOLE, "the household's map is for the console's readers")
    visits = _visits(
        _survey_query(actor)
        .where(Survey.household_id == household.id)
        .order_by(Survey.finished_at, Survey.id)
    )
    title = _("Visits to case %(code)s", code=household.case_code)
    data = maps.MapData(
        title=title,
        homes=[maps.Home(household.home_lat, household.home_lon, household.case_code)],
        places=_places([], [household.village]),
    )
    for number, v in enumerate(visits, start=1):
        when = local_time(v.survey.finished_at, "%Y-%m-%d")
        data.fixes.append(
            maps.Fix(
                v.survey.gps_lat,
                v.survey.gps_lon,
                v.survey.gps_accuracy_m,
                f"{number} ({when})",
                f"{v.caseworker} · {_fix_title(v, when)}",
                home=(v.home_lat, v.home_lon),
                far=v.far,
                flagged=bool(v.flags),
            )
        )
    may_open_days = can(actor, Capability.READ_CONSOLE)
    rows = [
        {
            "number": number,
            "finished": local_time(v.survey.finished_at),
            "caseworker": v.caseworker,
            "day_url": url_for(
                "console_maps.caseworker_day",
                user_id=v.caseworker_id,
                day=local_time(v.survey.finished_at, "%Y-%m-%d"),
            )
            if may_open_days or v.caseworker_id == actor.id
            else None,
            "kind": str(VISIT_KIND_LABELS.get(v.survey.kind, v.survey.kind)),
            "accuracy_m": _rounded(v.survey.gps_accuracy_m),
            "from_home_m": round(v.from_home_m),
            "far": v.far,
            "flags": _flag_text(v.flags),
        }
        for number, v in enumerate(visits, start=1)
    ]
    table = Table(
        name="map-household",
        title=title,
        columns=[
            Column("number", _("No.")),
            Column("finished", _("Finished")),
            Column("caseworker", _("Caseworker"), link="day_url"),
            Column("kind", _("Visit")),
            Column("accuracy_m", _("GPS accuracy (m)")),
            Column("from_home_m", _("From home (m)")),
            Column("far", _("Far from home")),
            Column("flags", _("Open flags")),
        ],
        rows=rows,
        filters={_("Case"): household.case_code},
    )
    return TraceView(
        title=title,
        svg=_finish(actor, data),
        table=table,
        legend=_legend(clusters=False),
        summary={
            "visits": len(visits),
            "far": sum(1 for v in visits if v.far),
            "household": household,
        },
    )
