"""The service's clock. Production reads the system clock; a test (a month simulated
day by day) sets ``app.config["DIBAO_CLOCK"]`` to a callable returning an aware UTC
datetime. Only code can set it: it is not read from the environment."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import current_app


def utcnow() -> datetime:
    clock = current_app.config.get("DIBAO_CLOCK")
    return clock() if clock is not None else datetime.now(UTC)
