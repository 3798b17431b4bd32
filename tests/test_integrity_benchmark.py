"""benchmarks/integrity.py runs from a clone: a tiny county is built, every visit goes
through the tablet API, and the report names every kind with planted visits, the
honest visits and the targets. The figures themselves are not asserted (the script
measures the checks; it is not one)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

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
