"""The schema comes only from the migrations, and they agree with the models."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from flask import Flask
from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect, text
from sqlalchemy.exc import DatabaseError

from server.extensions import db
from tests.conftest import DatabaseFactory, make_app


@pytest.fixture
def fresh_app(databases: DatabaseFactory, tmp_path: Path) -> Flask:
    return make_app(databases.new("migrations"), tmp_path)


def _diffs(application: Flask) -> list[object]:
    with db.engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        return list(compare_metadata(context, db.metadata))


def _tables() -> set[str]:
    return set(inspect(db.engine).get_table_names()) - {"alembic_version"}


@pytest.mark.slow
def test_migrations_build_the_models_schema_from_empty_and_tear_it_down(fresh_app: Flask) -> None:
    directory = fresh_app.extensions["migrate"].directory
    with fresh_app.app_context():
        assert _tables() == set()
        upgrade(directory=directory)
        assert _tables() == set(db.metadata.tables)
        assert _diffs(fresh_app) == []  # no autogenerate drift

        downgrade(directory=directory, revision="base")
        assert _tables() == set()

        upgrade(directory=directory)
        assert _diffs(fresh_app) == []
        # The append-only trigger came back with the schema.
        with db.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO audit_log (at, action, details) "
                    "VALUES (CURRENT_TIMESTAMP, 'probe', '{}')"
                )
            )
        with pytest.raises(DatabaseError, match="append-only"), db.engine.begin() as conn:
            conn.execute(text("DELETE FROM audit_log"))


@pytest.mark.slow
def test_healthz_reports_a_database_behind_the_migrations(fresh_app: Flask) -> None:
    client = fresh_app.test_client()
    behind = client.get("/healthz")
    assert behind.status_code == 503
    assert behind.get_json()["migrations"]["at_head"] is False

    with fresh_app.app_context():
        upgrade(directory=fresh_app.extensions["migrate"].directory)
    current = client.get("/healthz")
    assert current.status_code == 200
    body = current.get_json()
    assert body["status"] == "ok" and body["migrations"]["current"] == body["migrations"]["head"]


def test_healthz_reports_an_unreachable_database(tmp_path: Path) -> None:
    application = make_app(f"sqlite:///{tmp_path}/missing/dir/x.sqlite3", tmp_path)
    response = application.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.get_json() == {"status": "error", "database": "unreachable"}


def test_migration_files_are_date_prefixed_and_import_no_application_code() -> None:
    versions = Path(__file__).parents[1] / "server" / "migrations" / "versions"
    files = sorted(versions.glob("*.py"))
    assert files
    for path in files:
        assert path.name[:8].isdigit() and path.name[8] == "_", path.name
        source = path.read_text("utf-8")
        assert "import server" not in source and "server." not in source, path.name
