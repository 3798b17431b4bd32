"""The maps of visit traces (issue 15, item 4): projection and speed on known points,
the SVG's marks for planted visits, who may open which map, the boundaries command."""

from __future__ import annotations

import copy
import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from server.areas.boundaries import MAX_VERTICES, simplify_ring
from server.areas.models import AreaBoundary
from server.audit.models import AuditEntry
from server.auth.models import Role, User
from server.cases.models import CaseState, Household
from server.cli import cli
from server.console import maps
from server.extensions import db
from server.visits.checks import distance_m
from server.visits.models import Survey, SurveyFlag, SurveyStatus
from tests import factories
from tests.conftest import login

DATA = Path(__file__).parents[1] / "data"
# 2026-11-10 in Beijing: 08:00 local is 00:00 UTC.
DAY = "2026-11-10"
MORNING = datetime(2026, 11, 10, 0, 0, tzinfo=UTC)
M_PER_DEG_LAT = 111_200.0  # near 46 N, within 0.1 %


def north(lat: float, lon: float, metres: float) -> tuple[float, float]:
    return lat + metres / M_PER_DEG_LAT, lon


def east(lat: float, lon: float, metres: float) -> tuple[float, float]:
    import math

    return lat, lon + metres / (M_PER_DEG_LAT * math.cos(math.radians(lat)))


def plant(
    household: Household,
    caseworker: User,
    at: tuple[float, float],
    started: datetime,
    minutes: int = 20,
    accuracy: float | None = 10.0,
    flag: str | None = None,
) -> Survey:
    survey = Survey(
        client_uuid=str(uuid.uuid4()),
        content_hash="0" * 64,
        household_id=household.id,
        caseworker_id=caseworker.id,
        kind="periodic_review",
        status=SurveyStatus.COMPLETE,
        started_at=started,
        finished_at=started + timedelta(minutes=minutes),
        gps_lat=at[0],
        gps_lon=at[1],
        gps_accuracy_m=accuracy,
        payload="{}",
    )
    if flag:
        survey.flags = [SurveyFlag(code=flag, severity="warning", detail="planted")]
    db.session.add(survey)
    db.session.flush()
    return survey


def svg_of(html: str) -> str:
    match = re.search(r"<svg class=\"trace-map\".*?</svg>", html, re.S)
    assert match, "the page holds the map"
    return match.group(0)


def circles(svg: str, css: str) -> list[dict[str, str]]:
    return [
        dict(re.findall(r'([\w-]+)="([^"]*)"', m))
        for m in re.findall(rf'<circle class="{css}"([^>]*)>', svg)
    ]


# --------------------------------------------------------------------------- geometry


def test_projection_keeps_distances_true_to_scale_on_known_points() -> None:
    lat0, lon0 = 46.10, 122.00
    n = north(lat0, lon0, 2000)
    e = east(lat0, lon0, 3000)
    projection = maps.Projection.fit([(lat0, lon0, 0), (*n, 0), (*e, 0)])
    x0, y0 = projection.xy(lat0, lon0)
    xn, yn = projection.xy(*n)
    xe, ye = projection.xy(*e)
    assert xn == pytest.approx(x0, abs=0.01) and yn < y0  # north is up
    assert ye == pytest.approx(y0, abs=0.01) and xe > x0  # east is right
    # Pixels times metres per pixel give the geodesic distance within 0.5 %.
    for (x, y), point in (((xn, yn), n), ((xe, ye), e)):
        on_map = ((x - x0) ** 2 + (y - y0) ** 2) ** 0.5 * projection.metres_per_px
        assert on_map == pytest.approx(distance_m(lat0, lon0, *point), rel=0.005)
    # The view holds every point, inside the margins.
    for x, y in ((x0, y0), (xn, yn), (xe, ye)):
        assert maps.MARGIN - 1 <= x <= projection.width - maps.MARGIN + 1
        assert maps.MARGIN - 1 <= y <= projection.height - maps.MARGIN + 1


def test_leg_speed_from_distance_and_time() -> None:
    # 0.1 degree of latitude at 46 N is 11.12 km on the WGS-84 ellipsoid.
    metres = distance_m(46.0, 122.0, 46.1, 122.0)
    assert metres == pytest.approx(11_120, abs=15)
    assert maps.leg_speed_kmh(metres, 30 * 60) == pytest.approx(22.24, abs=0.05)
    assert maps.leg_speed_kmh(10_000, 1800) == pytest.approx(20.0)
    assert maps.leg_speed_kmh(500, 0) is None
    assert maps.leg_speed_kmh(500, -60) is None


def test_scale_bar_lengths_are_round() -> None:
    assert maps.nice_length(730) == 500
    assert maps.nice_length(2600) == 2000
    assert maps.nice_length(99) == 50
    assert maps.nice_length(1000) == 1000
    assert maps.format_metres(2000) == "2 km" and maps.format_metres(200) == "200 m"


def test_clusters_are_several_households_at_one_spot() -> None:
    spot = (46.11, 122.01)
    points: list[tuple[float, float, object]] = [
        (*spot, "h1"),
        (*north(*spot, 10), "h2"),
        (*east(*spot, 12), "h3"),
        (*east(*spot, 5), "h1"),  # the same household again: still 3 households
        (*north(*spot, 400), "h4"),  # elsewhere
        (*north(*spot, 405), "h5"),  # two households only: no cluster
    ]
    found = maps.find_clusters(points, radius_m=30, min_households=3)
    assert len(found) == 1
    assert found[0].households == 3 and set(found[0].members) == {0, 1, 2, 3}
    assert maps.find_clusters(points, radius_m=30, min_households=4) == []


def test_simplifying_a_ring_drops_vertices_on_straight_edges() -> None:
    feature = json.loads((DATA / "boundaries_test.geojson").read_text("utf-8"))["features"][0]
    ring = [tuple(p) for p in feature["geometry"]["coordinates"][0]]
    simplified = simplify_ring(ring, 10.0)
    assert len(ring) == 21 and len(simplified) == 5  # the 4 corners, closed
    assert simplified[0] == simplified[-1]


# --------------------------------------------------------------------------- pages


@pytest.fixture
def day(app: Flask) -> dict[str, Any]:
    """caseworker_a's day: a visit at home, a leg at 120 km/h to the next, a fix
    600 m from its home; and one of caseworker_b's in the other township."""
    area = factories.areas()
    worker = factories.user("caseworker_a")
    h1 = factories.make_household(village=area.village_a, state=CaseState.APPROVED)
    h2 = factories.make_household(village=area.village_a2, state=CaseState.APPROVED)
    h3 = factories.make_household(village=area.village_a, state=CaseState.APPROVED)
    h2.home_lat, h2.home_lon = north(h1.home_lat, h1.home_lon, 10_000)
    h3.home_lat, h3.home_lon = east(h2.home_lat, h2.home_lon, 2_000)
    s1 = plant(h1, worker, (h1.home_lat, h1.home_lon), MORNING, accuracy=10.0)
    # 10 km in 5 minutes after the first visit ended: 120 km/h.
    s2 = plant(
        h2, worker, (h2.home_lat, h2.home_lon), s1.finished_at + timedelta(minutes=5), accuracy=20
    )
    far_fix = east(h3.home_lat, h3.home_lon, 600)
    s3 = plant(
        h3,
        worker,
        far_fix,
        s2.finished_at + timedelta(hours=1),
        accuracy=25.0,
        flag="gps_far_from_home",
    )
    other = factories.make_household(village=area.village_b, state=CaseState.APPROVED)
    plant(other, factories.user("caseworker_b"), (other.home_lat, other.home_lon), MORNING)
    db.session.commit()
    return {
        "worker_id": worker.id,
        "codes": [h1.case_code, h2.case_code, h3.case_code],
        "other_code": other.case_code,
        "surveys": [s1.id, s2.id, s3.id],
    }


def day_url(user_id: int, when: str = DAY) -> str:
    return f"/console/maps/caseworker/{user_id}/{when}"


def test_a_caseworker_day_draws_fixes_path_speeds_and_far_fixes(
    client: FlaskClient, day: dict[str, Any]
) -> None:
    login(client, "caseworker_a")
    response = client.get(day_url(day["worker_id"]))
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    svg = svg_of(html)
    # A circle per fix, its radius the accuracy at the map's scale (10 : 20 : 25 m).
    accuracy = circles(svg, "accuracy")
    assert [c["data-accuracy-m"] for c in accuracy] == ["10", "20", "25"]
    radii = [float(c["r"]) for c in accuracy]
    assert radii[1] / radii[0] == pytest.approx(2.0, rel=0.01)
    assert radii[2] / radii[0] == pytest.approx(2.5, rel=0.01)
    # The path in time order: one polyline through the fixes 1, 2, 3.
    (points,) = re.findall(r'<polyline class="path" points="([^"]*)"', svg)
    path = [tuple(float(v) for v in p.split(",")) for p in points.split()]
    labels = re.findall(r'<text class="fix-label" x="([^"]*)" y="([^"]*)">([^<]*)<', svg)
    assert [label.split()[0] for _, _, label in labels] == ["1", "2", "3"]
    for (x, y), (lx, ly, _label) in zip(path, labels, strict=True):
        assert float(lx) == pytest.approx(x + 7, abs=0.11)
        assert float(ly) == pytest.approx(y + 4, abs=0.11)
    # The 120 km/h leg is impossible (dashed, marked), the 1-hour one is not.
    assert len(re.findall(r'<line class="leg impossible"', svg)) == 1
    assert len(re.findall(r'<line class="leg"', svg)) == 1
    assert "⚠ 120公里/小时" in svg  # zh_CN first
    # One fix far from its home: its line dashed, its label marked.
    assert len(re.findall(r'<line class="to-home far"', svg)) == 1
    assert len(re.findall(r'<line class="to-home"', svg)) == 2
    assert "3 ⚠" in svg
    # Case codes, never names; homes link to the case page only.
    for code in day["codes"]:
        assert code in svg and f'href="/cases/{code}"' in svg
    assert "王" not in html and day["other_code"] not in html
    # The table says the same: the far row and the impossible row stand out.
    assert len(re.findall(r'<tr class="far ', html)) == 1
    assert len(re.findall(r'<tr class="impossible ', html)) == 1
    assert "120.0" in html and "<svg" in html and "scale-bar" in svg and "north-arrow" in svg
    assert "/console/maps/township/152201100/2026-11" not in html  # no console for caseworkers


def test_a_readers_day_map_links_to_the_township_month(
    client: FlaskClient, day: dict[str, Any]
) -> None:
    login(client, "reviewer_a")
    html = client.get(day_url(day["worker_id"])).get_data(as_text=True)
    assert 'href="/console/maps/township/152201100/2026-11"' in html


def test_the_day_table_exports_and_is_audited(client: FlaskClient, day: dict[str, Any]) -> None:
    login(client, "supervisor")
    response = client.get(day_url(day["worker_id"]) + "?format=csv")
    assert response.status_code == 200
    text = response.get_data(as_text=True)
    lines = text.strip().splitlines()
    assert len(lines) == 4 and all(code in text for code in day["codes"])
    entry = db.session.scalar(
        select(AuditEntry)
        .where(AuditEntry.action == "export.downloaded")
        .order_by(AuditEntry.id.desc())
    )
    assert entry is not None and entry.object_id == "map-caseworker-day"


def test_every_map_view_is_audited_and_a_refused_one_writes_nothing(
    client: FlaskClient, day: dict[str, Any]
) -> None:
    def views() -> list[AuditEntry]:
        return list(
            db.session.scalars(
                select(AuditEntry).where(AuditEntry.action == "map.viewed").order_by(AuditEntry.id)
            )
        )

    login(client, "supervisor")
    assert client.get(day_url(day["worker_id"])).status_code == 200
    assert client.get("/console/maps/township/152201100/2026-11").status_code == 200
    assert client.get(f"/console/maps/household/{day['codes'][0]}").status_code == 200
    rows = views()
    assert [(r.object_type, r.object_id, r.details["view"]) for r in rows] == [
        ("user", str(day["worker_id"]), "caseworker_day"),
        ("area", "152201100", "area_month"),
        ("case", day["codes"][0], "household"),
    ]
    supervisor = factories.user("supervisor")
    assert all(r.actor_id == supervisor.id for r in rows)
    # Another township's caseworker opens a day that is not theirs: refused, unaudited.
    login(client, "caseworker_b")
    assert client.get(day_url(day["worker_id"])).status_code in (403, 404)
    assert len(views()) == 3


def test_another_day_shows_an_empty_map(client: FlaskClient, day: dict[str, Any]) -> None:
    login(client, "caseworker_a")
    response = client.get(day_url(day["worker_id"], "2026-11-11"))
    assert response.status_code == 200
    svg = svg_of(response.get_data(as_text=True))
    assert "accuracy" not in re.sub(r'class="accuracies"', "", svg)
    assert "义勒力特镇" in svg  # the township's centre, so the map says where it is


def test_a_township_month_rings_many_households_visited_from_one_spot(
    client: FlaskClient, day: dict[str, Any]
) -> None:
    area = factories.areas()
    worker = factories.user("caseworker_a")
    spot = (area.village_a.lat + 0.004, area.village_a.lon + 0.004)
    codes = []
    for index, metres in enumerate((0, 8, 15, 22)):
        household = factories.make_household(village=area.village_a, state=CaseState.APPROVED)
        household.home_lat, household.home_lon = north(*spot, 300 * (index + 1))
        plant(household, worker, east(*spot, metres), MORNING + timedelta(days=2, hours=index))
        codes.append(household.case_code)
    db.session.commit()
    login(client, "reviewer_a")
    response = client.get("/console/maps/township/152201100/2026-11")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    svg = svg_of(html)
    rings = circles(svg, "cluster")
    assert len(rings) == 1
    assert "C1：4户" in svg
    start = html.index('<section class="clusters">')
    clusters = html[start : html.index("</section>", start)]
    assert all(code in clusters for code in codes)
    assert not any(code in clusters for code in day["codes"])
    # All 7 visits of the month, every fix drawn, the cluster named in the table.
    assert len(circles(svg, "accuracy")) == 7
    assert html.count(">C1<") >= 4
    # caseworker_a's fixes share one shape; the legend names them with their count.
    assert "caseworker_a: 走访次数 7" in html


def test_a_household_history_shows_every_visit_around_its_home(
    client: FlaskClient, day: dict[str, Any]
) -> None:
    code = day["codes"][0]
    household = db.session.scalar(select(Household).where(Household.case_code == code))
    assert household is not None
    plant(
        household,
        factories.user("caseworker_a"),
        north(household.home_lat, household.home_lon, 50),
        MORNING + timedelta(days=30),
    )
    db.session.commit()
    login(client, "caseworker_a")
    response = client.get(f"/console/maps/household/{code}")
    assert response.status_code == 200
    svg = svg_of(response.get_data(as_text=True))
    assert len(circles(svg, "accuracy")) == 2
    assert len(re.findall(r'<rect class="home"', svg)) == 1
    assert "1 (2026-11-10)" in svg and "2 (2026-12-10)" in svg


def test_the_case_page_links_to_its_map(client: FlaskClient, day: dict[str, Any]) -> None:
    login(client, "reviewer_a")
    html = client.get(f"/cases/{day['codes'][0]}").get_data(as_text=True)
    assert f"/console/maps/household/{day['codes'][0]}" in html
    assert day_url(day["worker_id"]) in html


# --------------------------------------------------------------------------- who may see


def _colleague() -> User:
    """A second caseworker of township A."""
    user = User(
        username="caseworker_a2",
        password_hash="!",
        role=Role.CASEWORKER,
        area=factories.areas().township_a,
    )
    db.session.add(user)
    db.session.flush()
    return user


MISSING_USER = 1_999_999_001


@pytest.mark.parametrize(
    ("username", "own", "colleague", "township", "household"),
    [
        ("caseworker_a", 200, 403, 403, 200),
        ("reviewer_a", 200, 200, 200, 200),
        ("approver", 200, 200, 200, 200),
        ("supervisor", 200, 200, 200, 200),
        ("admin", 403, 403, 403, 403),
        ("caseworker_b", 404, 404, 404, 404),
        ("reviewer_b", 404, 404, 404, 404),
        ("other_approver", 404, 404, 404, 404),
    ],
)
def test_who_may_open_which_map(
    client: FlaskClient,
    day: dict[str, Any],
    username: str,
    own: int,
    colleague: int,
    township: int,
    household: int,
) -> None:
    colleague_id = _colleague().id
    db.session.commit()
    login(client, username)
    missing = client.get(day_url(MISSING_USER))
    assert missing.status_code == 404
    assert client.get(day_url(day["worker_id"])).status_code == own
    assert client.get(day_url(colleague_id)).status_code == colleague
    assert client.get("/console/maps/township/152201100/2026-11").status_code == township
    assert client.get(f"/console/maps/household/{day['codes'][0]}").status_code == household
    # Outside the area answers like nothing there at all.
    if own == 404:

        def page(response: Any) -> str:
            return re.sub(r'value="[^"]*"', "", response.get_data(as_text=True))

        assert page(client.get(day_url(day["worker_id"]))) == page(missing)
    assert client.get("/console/maps/township/152299999/2026-11").status_code == 404
    assert client.get(day_url(day["worker_id"], "2026-13-01")).status_code == 404
    assert client.get("/console/maps/township/152201100/2026-1").status_code == 404


def test_the_pages_name_no_other_host(client: FlaskClient, day: dict[str, Any]) -> None:
    login(client, "supervisor")
    for url in (
        day_url(day["worker_id"]),
        "/console/maps/township/152201100/2026-11",
        f"/console/maps/household/{day['codes'][0]}",
    ):
        html = client.get(url).get_data(as_text=True)
        hosts = re.findall(r"(?:https?:)?//([\w.-]+)", html)
        assert hosts == [], (url, hosts)
        assert "<script" not in html


# --------------------------------------------------------------------------- boundaries


def _boundaries(app: Flask, path: Path) -> Any:
    return app.test_cli_runner().invoke(cli, ["areas", "boundaries", str(path)])


def _stored() -> dict[str, int]:
    rows = db.session.execute(select(AreaBoundary.area_id, AreaBoundary.vertices)).all()
    return dict(rows)  # type: ignore[arg-type]


def test_boundaries_load_replace_and_show_on_the_map(
    app: Flask, client: FlaskClient, day: dict[str, Any], tmp_path: Path
) -> None:
    result = _boundaries(app, DATA / "boundaries_test.geojson")
    assert result.exit_code == 0, result.output
    assert "loaded 152201100 义勒力特镇: 5 vertices (file: 21)" in result.output
    stored = db.session.scalars(select(AreaBoundary)).all()
    assert len(stored) == 2 and sum(b.vertices for b in stored) == 5 + 10
    again = _boundaries(app, DATA / "boundaries_test.geojson")
    assert "replaced 152201100" in again.output
    assert db.session.scalar(select(func.count()).select_from(AreaBoundary)) == 2
    login(client, "reviewer_a")
    svg = svg_of(client.get(day_url(day["worker_id"])).get_data(as_text=True))
    # The own township's outline; the neighbour's lies outside the reviewer's area.
    assert re.findall(r'<path class="outline"[^>]*><title>([^<]*)<', svg) == ["义勒力特镇"]


def _broken(tmp_path: Path, change: Any) -> Path:
    data = json.loads((DATA / "boundaries_test.geojson").read_text("utf-8"))
    change(data)
    path = tmp_path / "broken.geojson"
    path.write_text(json.dumps(data), "utf-8")
    return path


def _set(data: dict[str, Any], feature: int, key: str, value: Any) -> None:
    data["features"][feature][key] = value


BROKEN = {
    "unknown code": (
        lambda d: d["features"][1]["properties"].update(code="152201999"),
        "feature 2 (code 152201999): no area has this code",
    ),
    "no code": (
        lambda d: d["features"][1]["properties"].pop("code"),
        "feature 2: no area code in its property 'code'",
    ),
    "open ring": (
        lambda d: d["features"][0]["geometry"]["coordinates"][0].pop(),
        "feature 1 (code 152201100): a ring is not closed",
    ),
    "a line": (
        lambda d: _set(
            d, 1, "geometry", {"type": "LineString", "coordinates": [[122, 46], [122.1, 46]]}
        ),
        "feature 2 (code 152201101): its geometry is 'LineString'",
    ),
    "metres": (
        lambda d: _set(
            d,
            0,
            "geometry",
            {
                "type": "Polygon",
                "coordinates": [
                    [
                        [13_580_000, 5_800_000],
                        [13_590_000, 5_800_000],
                        [13_590_000, 5_810_000],
                        [13_580_000, 5_800_000],
                    ]
                ],
            },
        ),
        "feature 1 (code 152201100): coordinate [13580000, 5800000] is not longitude/latitude",
    ),
    "wrong crs": (
        lambda d: d.update(crs={"type": "name", "properties": {"name": "EPSG:3857"}}),
        "the file's crs is 'EPSG:3857'",
    ),
    "too many vertices": (
        lambda d: _set(
            d,
            1,
            "geometry",
            {
                "type": "Polygon",
                "coordinates": [
                    [[122.2 + i * 1e-7, 46.0] for i in range(MAX_VERTICES)]
                    + [[122.25, 46.05], [122.2, 46.0]]
                ],
            },
        ),
        f"feature 2 (code 152201101): {MAX_VERTICES + 2} vertices, more than {MAX_VERTICES}",
    ),
    "the same area twice": (
        lambda d: d["features"].append(copy.deepcopy(d["features"][0])),
        "feature 3 (code 152201100): the same area as feature 1",
    ),
    "not a collection": (lambda d: d.update(type="Feature"), "not a GeoJSON FeatureCollection"),
}


@pytest.mark.parametrize("case", list(BROKEN), ids=list(BROKEN))
def test_a_bad_boundary_file_names_the_feature_and_writes_nothing(
    app: Flask, tmp_path: Path, case: str
) -> None:
    first = _boundaries(app, DATA / "boundaries_test.geojson")
    assert first.exit_code == 0
    before = _stored()
    change, message = BROKEN[case]
    result = _boundaries(app, _broken(tmp_path, change))
    assert result.exit_code == 1
    assert "nothing loaded" in result.output and message in result.output, result.output
    assert _stored() == before


def test_the_demo_outline_loads_into_the_seeded_county(app: Flask) -> None:
    result = _boundaries(app, DATA / "boundaries_demo.geojson")
    assert result.exit_code == 0, result.output
    assert "loaded 152201 " in result.output
