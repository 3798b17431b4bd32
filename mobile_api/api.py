"""The /api blueprint: version metadata now; the tablet and phone endpoints join it."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, Response, jsonify

from server.extensions import csrf

API_VERSION = "1"

bp = Blueprint("api", __name__, url_prefix="/api")
csrf.exempt(bp)  # token-authenticated clients, no cookies


@bp.get("/v1/version")
def version() -> Response:
    return jsonify({"api_version": API_VERSION, "server_time": datetime.now(UTC).isoformat()})
