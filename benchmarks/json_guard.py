"""What the JSON guard (server/safe_json.py) costs on normal bodies, and what it saves
on hostile ones: ``json.loads`` against ``safe_json.loads`` on a typical survey, on the
largest survey the contract allows (10,000 track points), and on bodies nested deeper
than the limit. Prints the median of ``--repeat`` timings of each, in milliseconds.

    .venv/bin/python benchmarks/json_guard.py [--repeat 200]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from server import safe_json


def survey(track_points: int) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "client_uuid": str(uuid.uuid4()),
        "household_id": 1,
        "kind": "periodic_review",
        "started_at": (now - timedelta(minutes=40)).isoformat(),
        "finished_at": now.isoformat(),
        "gps": {"lat": 46.111, "lon": 122.011, "accuracy_m": 8.5, "provider": "gps"},
        "track": [
            {
                "lat": 46.1 + i * 1e-5,
                "lon": 122.0 + i * 1e-5,
                "accuracy_m": 5.0,
                "at": (now - timedelta(seconds=i)).isoformat(),
            }
            for i in range(track_points)
        ],
        "members": [
            {"member_id": i, "name": "王大", "monthly_income": "120.00"} for i in range(1, 6)
        ],
        "housing": {"rooms": 2, "heating": "炕", "notes": "土坯房 [两间] {旧}"},
        "photos": [
            {"photo_id": f"p{i}", "kind": "housing", "sha256": "0" * 64, "bytes": 2_000_000}
            for i in range(6)
        ],
        "notes": "家中两人，老人卧床",
    }


def median_ms(run: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def refused(text: bytes) -> Callable[[], object]:
    def run() -> object:
        try:
            return safe_json.loads(text)
        except safe_json.JSONTooDeep:
            return None

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    bodies = {
        "typical survey (20 track points)": survey(20),
        "largest survey (10,000 track points)": survey(10_000),
    }
    print(f"{'body':40} {'bytes':>9} {'json.loads':>11} {'guarded':>9} {'extra':>7}")
    for name, body in bodies.items():
        text = json.dumps(body, ensure_ascii=False).encode()
        plain = median_ms(lambda text=text: json.loads(text), args.repeat)
        guarded = median_ms(lambda text=text: safe_json.loads(text), args.repeat)
        extra = 100 * (guarded - plain) / plain
        print(f"{name:40} {len(text):9} {plain:9.3f}ms {guarded:7.3f}ms {extra:6.0f}%")
    for depth in (65, 5_000, 100_000):
        text = ("[" * depth + "]" * depth).encode()
        print(
            f"{f'nested {depth} deep (refused)':40} {len(text):9} {'-':>11} "
            f"{median_ms(refused(text), args.repeat):7.3f}ms"
        )


if __name__ == "__main__":
    main()
