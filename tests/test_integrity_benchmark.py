"""benchmarks/integrity.py runs from a clone: a tiny county is built, every visit goes
through the tablet API, and the report names every kind with planted visits, the
honest visits and the targets. The figures themselves are not asserted (the script
measures the checks; it is not one)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "integrity.py"
KINDS = (
    "too_short",
    "photos_bunched",
    "gps_implausible",
    "photo_reused",
    "curbstoning",
    "fast_legs",
    "odd_hours",
    "faces",
)
ROW = re.compile(
    r"^(?P<name>\S+)\s+(?P<planted>\d+)\s+(?P<caught>\d+)\s+(?P<recall>[\d.]+%|n/a)"
    r"\s+(?P<any>\d+)\s+(?P<codes>.+)$"
)


def run_script(*args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("CELERY_BROKER_URL", None)
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )


@pytest.mark.slow
def test_a_tiny_county_reports_every_kind_and_the_honest_visits(tmp_path: Path) -> None:
    keep = tmp_path / "county"
    result = run_script(
        "--seed",
        "3",
        "--households",
        "30",
        "--honest",
        "8",
        "--planted-per-variant",
        "1",
        "--keep",
        str(keep),
        tmp=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    rows = {m["name"]: m for m in map(ROW.match, out.splitlines()) if m}
    for kind in KINDS:
        assert kind in rows, f"no row for {kind}:\n{out}"
        planted, caught = int(rows[kind]["planted"]), int(rows[kind]["caught"])
        assert planted >= 1 and 0 <= caught <= planted
    honest = re.search(r"^honest visits: (\d+)$", out, re.M)
    assert honest and int(honest.group(1)) >= 1
    assert re.search(r"false positives\): \d+ \(\d+\.\d%\)", out)
    assert re.search(r"^target recall >= 95% for every kind: (PASS|FAIL)", out, re.M)
    assert re.search(r"^target false positives <= 2% of honest visits: (PASS|FAIL)", out, re.M)
    assert re.search(r"^result: (PASS|FAIL)$", out, re.M)
    assert re.search(r"^runtime: [\d.]+ s", out, re.M)
    # --keep leaves the database and every visit's role and flags beside it.
    assert (keep / "integrity.sqlite3").is_file()
    assert (keep / "visits.json").is_file()


def test_bad_options_are_refused(tmp_path: Path) -> None:
    result = run_script("--honest", "0", tmp=tmp_path)
    assert result.returncode == 2
    assert "--honest" in result.stderr


def _plan_module() -> Any:
    """benchmarks/integrity.py as a module (the benchmarks folder is not a package)."""
    spec = importlib.util.spec_from_file_location("integrity_benchmark", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _digest(visits: list[Any]) -> list[tuple[Any, ...]]:
    return [
        (v.client_uuid, v.role, v.kind, v.variant, v.caseworker, v.home.index, v.started, v.fix)
        for v in visits
    ]


def test_the_plan_is_the_same_for_a_seed_and_plants_every_variant() -> None:
    bench = _plan_module()
    _, first = bench.plan_county(5, 60, 30, 1)
    _, again = bench.plan_county(5, 60, 30, 1)
    _, other = bench.plan_county(6, 60, 30, 1)
    assert _digest(first) == _digest(again)
    assert _digest(first) != _digest(other)
    planted = {(v.kind, v.variant) for v in first if v.role == "planted"}
    assert planted == {(k, name) for k, variants in bench.SCENARIOS.items() for name in variants}
    assert sum(v.role == "honest" for v in first) == 30


def test_honest_visits_look_like_real_fieldwork() -> None:
    """The honest side of the county is what the issue describes: phone accuracy, the
    fix near the home, durations by kind, photos inside the visit, daytime hours."""
    bench = _plan_module()
    _, visits = bench.plan_county(2, 120, 120, 1)
    honest = [v for v in visits if v.role == "honest"]
    for visit in honest:
        minutes = (visit.finished - visit.started).total_seconds() / 60
        low, high = (20, 90) if visit.survey_kind == "initial_survey" else (8, 40)
        assert low <= minutes <= high
        assert 4 <= visit.accuracy <= 60
        # A fix further than four times its accuracy would be a broken phone, not noise.
        assert bench.distance_m(visit.fix, visit.home.point) < 4 * visit.accuracy
        assert all(visit.started <= s.taken_at <= visit.finished for s in visit.shots)
        local = visit.started.astimezone(bench.LOCAL)
        assert local.hour >= 7 and visit.finished.astimezone(bench.LOCAL).hour <= 20
    assert any(v.accuracy >= 30 for v in honest), "no indoor fix"
    assert any(v.finished.astimezone(bench.LOCAL).hour >= 19 for v in honest), "no evening"
    assert any(v.track for v in honest) and any(not v.track for v in honest)
    portraits = [s for v in honest for s in v.shots if s.kind == "member_portrait"]
    assert len(portraits) >= 6  # three heads with a face, photographed month after month
