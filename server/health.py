"""/healthz: the database answers and its schema is at the migrations' head."""

from __future__ import annotations

import logging

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Blueprint, Response, current_app, jsonify
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from server.extensions import db

logger = logging.getLogger(__name__)
bp = Blueprint("health", __name__)


def migration_heads() -> set[str]:
    config = current_app.extensions["migrate"].migrate.get_config()
    return set(ScriptDirectory.from_config(config).get_heads())


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    try:
        with db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            current = set(MigrationContext.configure(conn).get_current_heads())
    except SQLAlchemyError as exc:
        logger.error("health check: database unreachable: %s", type(exc).__name__)
        return jsonify({"status": "error", "database": "unreachable"}), 503
    heads = migration_heads()
    ok = current == heads
    body = {
        "status": "ok" if ok else "error",
        "database": "ok",
        "migrations": {"current": sorted(current), "head": sorted(heads), "at_head": ok},
    }
    return jsonify(body), 200 if ok else 503
