"""Test fixtures: one database per run, built by the migrations; every test runs
inside a transaction (SAVEPOINT) that is rolled back afterwards.

DIBAO_TEST_DATABASE selects the database: unset or ``sqlite`` for a SQLite file,
or a PostgreSQL server URL (``postgresql://postgres@127.0.0.1:5432``) on which a
fresh database is created for the run and dropped after it.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from flask_migrate import upgrade
from sqlalchemy.orm import scoped_session, sessionmaker

from server import create_app
from server.extensions import db, limiter
from tests import factories
from tests.fake_twilio import fake  # noqa: F401  (a fixture: the local fake Twilio)

DATA_KEY = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def _server_url() -> str | None:
    raw = os.environ.get("DIBAO_TEST_DATABASE", "sqlite")
    return None if raw == "sqlite" else raw.rstrip("/")


class DatabaseFactory:
    """Creates throwaway databases (SQLite files, or PostgreSQL databases) for a run."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.server = _server_url()
        self.created: list[str] = []

    @property
    def dialect(self) -> str:
        return "postgresql" if self.server else "sqlite"

    def new(self, label: str) -> str:
        if self.server is None:
            return f"sqlite:///{self.tmp / f'{label}_{secrets.token_hex(3)}.sqlite3'}"
        import psycopg

        name = f"dibao_test_{os.getpid()}_{label}_{secrets.token_hex(3)}"
        with psycopg.connect(self.server + "/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return f"{self.server}/{name}"

    def drop_all(self) -> None:
        if self.server is None:
            return
        import psycopg

        with psycopg.connect(self.server + "/postgres", autocommit=True) as conn:
            for name in self.created:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DatabaseFactory]:
    factory = DatabaseFactory(tmp_path_factory.mktemp("db"))
    yield factory
    factory.drop_all()


class IsolatedClient(FlaskClient):
    """Gives each request its own app context, as in production: ``g`` (the
    logged-in user) does not leak between requests and the session is removed
    after each one. Objects loaded before a request must be re-read after it.
    """

    def open(self, *args: Any, **kwargs: Any) -> Any:
        with self.application.app_context():
            return super().open(*args, **kwargs)


def make_app(database_url: str, instance: Path, **overrides: Any) -> Flask:
    config = {
        "TESTING": True,
        "DATABASE_URL": database_url,
        "SECRET_KEY": "test-secret-key",
        "DIBAO_DATA_KEY": DATA_KEY,
        "DIBAO_INSTANCE_PATH": str(instance),
        "WTF_CSRF_ENABLED": False,
        "RATELIMIT_ENABLED": False,
        # Tests build and roll back public snapshots: always ask which one is current.
        "DIBAO_PUBLIC_CACHE_SECONDS": 0,
        # Tests change data between pages: count the progress home every time.
        "DIBAO_CONSOLE_SUMMARY_SECONDS": 0,
        # A visit's photo work and pattern checks in the request, so a test reads their
        # flags right after it (tests/visits/test_background.py runs the thread).
        "DIBAO_BACKGROUND_JOBS": "inline",
    }
    config.update(overrides)
    application = create_app(config)
    application.test_client_class = IsolatedClient
    _extra_apps.append(application)
    return application


def process_env(database_url: str, instance: Path, **settings: str) -> dict[str, str]:
    """The environment of a server or worker process run beside a test's app (same
    database, secrets and instance folder), with ``settings`` on top."""
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "SECRET_KEY": "test-secret-key",
        "DIBAO_DATA_KEY": DATA_KEY,
        "DIBAO_INSTANCE_PATH": str(instance),
        **settings,
    }


_extra_apps: list[Flask] = []


@pytest.fixture(autouse=True)
def _dispose_extra_apps() -> Iterator[None]:
    """Close the connection pools of apps a test built for itself."""
    yield
    if not _extra_apps:
        return
    while _extra_apps:
        with _extra_apps.pop().app_context():
            db.engine.dispose()
    # Flask-Limiter keeps "enabled" and its counters on the one extension object:
    # an app built with limits on must not leave them on for the others.
    if limiter.enabled:
        limiter.reset()
        limiter.enabled = False


@pytest.fixture(scope="session")
def app(databases: DatabaseFactory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    application = make_app(databases.new("main"), tmp_path_factory.mktemp("instance"))
    _extra_apps.remove(application)
    with application.app_context():
        upgrade(directory=application.extensions["migrate"].directory)
        factories.base_data()
        db.session.commit()
        db.session.remove()
    yield application
    with application.app_context():
        db.engine.dispose()


@pytest.fixture(autouse=True)
def _transaction(request: pytest.FixtureRequest) -> Iterator[None]:
    """Run each test using the app inside one transaction that is rolled back."""
    if "app" not in request.fixturenames:
        yield
        return
    application: Flask = request.getfixturevalue("app")
    with application.app_context():
        connection = db.engine.connect()
        outer = connection.begin()
        original = db.session
        db.session = scoped_session(
            sessionmaker(bind=connection, join_transaction_mode="create_savepoint")
        )
        try:
            yield
        finally:
            db.session.remove()
            db.session = original
            outer.rollback()
            connection.close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def area() -> factories.Areas:
    return factories.areas()


def login(client: FlaskClient, username: str, password: str = factories.PASSWORD) -> Any:
    return client.post("/login", data={"username": username, "password": password})


class QueryCounter:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self, *args: Any) -> None:
        self.count += 1


@pytest.fixture
def count_queries(app: Flask) -> Iterator[QueryCounter]:
    """Counts the SQL statements the app sends (catches N+1 queries)."""
    from sqlalchemy import event

    counter = QueryCounter()
    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", counter)
    yield counter
    event.remove(engine, "before_cursor_execute", counter)


@pytest.fixture
def limits(app: Flask) -> Iterator[Any]:
    """Lets a test lower the region's proof-of-life limits; restored afterwards."""
    original = app.config["REGION"]

    def set_limits(**changes: Any) -> None:
        app.config["REGION"] = dataclasses.replace(
            original, proof_of_life=dataclasses.replace(original.proof_of_life, **changes)
        )

    yield set_limits
    app.config["REGION"] = original
