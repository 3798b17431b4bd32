"""An error answer can never itself fail: when the page or the envelope cannot be built
(a template that fails, a database that is gone, a detail that does not serialize), the
client still gets its status, as plain text or a bare envelope; and the database session
is rolled back before the page reads through it.

Each failure is real: an app built for the test, with a route of its own that raises,
and a template that fails to render or a database that does not answer.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from flask import Flask
from jinja2 import ChoiceLoader, DictLoader

from server.areas.models import Area
from server.auth.permissions import staff_required
from server.errors import DomainError, OutOfArea
from server.extensions import db
from tests.conftest import login, make_app


def test_a_page_that_cannot_render_falls_back_to_plain_text(
    app: Flask, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broken = make_app(app.config["SQLALCHEMY_DATABASE_URI"], tmp_path)

    @broken.get("/boom")
    def boom() -> str:
        raise RuntimeError("a bug")

    @broken.get("/gone")
    def gone() -> str:
        raise OutOfArea("no such case")

    # The error page refers to a variable nobody passes: Jinja raises while rendering.
    broken.jinja_env.loader = ChoiceLoader(
        [DictLoader({"error.html": "{{ no_such_variable.attribute }}"}), broken.jinja_env.loader]
    )
    client = broken.test_client()
    with caplog.at_level(logging.ERROR, logger="server.web_errors"):
        for path, status in [("/boom", 500), ("/gone", 404), ("/no-such-page", 404)]:
            response = client.get(path)
            assert response.status_code == status
            assert response.mimetype == "text/plain"
            assert response.text.startswith(str(status))
    assert "the 500 answer itself failed" in caplog.text
    # The API never needed the page: its envelope is whole.
    api = client.get("/api/v1/no-such-thing")
    assert api.status_code == 404 and api.get_json()["error"]["code"] == "not_found"


def test_an_envelope_whose_details_do_not_serialize_is_sent_bare(
    app: Flask, tmp_path: Path
) -> None:
    odd = make_app(app.config["SQLALCHEMY_DATABASE_URI"], tmp_path)

    @odd.get("/api/odd")
    def odd_details() -> str:
        raise DomainError("something specific", seen={object()})

    response = odd.test_client().get("/api/odd")
    assert response.status_code == 400
    assert response.get_json() == {
        "error": {"code": "domain_error", "message": "something specific", "details": {}}
    }


def test_with_the_database_gone_every_audience_still_gets_its_status(tmp_path: Path) -> None:
    # Nothing listens on port 1: every connection is refused at once.
    down = make_app("postgresql://postgres@127.0.0.1:1/dibao", tmp_path)
    client = down.test_client()
    with client.session_transaction() as session:
        session["_user_id"] = "1"  # a logged-in user, whom the page frame must load
    page = client.get("/")
    assert page.status_code == 500 and page.mimetype == "text/plain"
    missing = client.get("/cases/7K3QF-M9X2A-4")
    assert missing.status_code == 500 and missing.mimetype == "text/plain"
    api = client.get("/api/v1/meta", headers={"Authorization": "Bearer dbt_x"})
    assert api.status_code == 500 and api.get_json()["error"]["code"] == "internal_error"
    public = client.get("/public")
    assert public.status_code == 500 and b"<html" in public.data.lower()
    openrosa = client.get(
        "/openrosa/formList",
        headers={"X-OpenRosa-Version": "1.0", "Authorization": "Bearer dbt_x"},
    )
    assert openrosa.status_code == 500 and b"<OpenRosaResponse" in openrosa.data


def test_the_session_is_rolled_back_before_the_error_page_reads_through_it(
    app: Flask, tmp_path: Path
) -> None:
    failing = make_app(app.config["SQLALCHEMY_DATABASE_URI"], tmp_path)

    @failing.get("/half-written")
    @staff_required
    def half_written() -> str:
        db.session.add(Area())  # no code, no name: the flush fails (NOT NULL)
        db.session.flush()
        return "unreachable"

    client = failing.test_client()
    assert login(client, "reviewer_a").status_code == 302
    response = client.get("/half-written")
    assert response.status_code == 500
    # The full page, with the frame that loads the logged-in user again.
    assert response.mimetype == "text/html"
    assert "reviewer_a" in response.text
