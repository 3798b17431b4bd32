"""Who may open which console page and export (issue 15, "Who sees what"): every
page x every role x the user's own area and an area outside it, as a page and as a
CSV file. Outside the area answers like a missing area (404) before anything else;
inside, the role's capabilities decide (403 with our sentence, never a partial page);
every file that is served is audited."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select
from werkzeug.test import TestResponse

from server.audit.models import AuditEntry
from server.auth.models import Role, User
from server.auth.permissions import Capability, can
from server.extensions import db
from tests import factories
from tests.conftest import login

C = Capability


def _console(user: User) -> bool:
    return can(user, C.READ_CONSOLE)


# path, who may open it (inside their area)
PAGES: list[tuple[str, Callable[[User], bool]]] = [
    ("/console/", _console),
    ("/console/cases?filter=cases", _console),
    ("/console/exceptions", _console),
    ("/console/visits", lambda u: _console(u) or can(u, C.REVIEW_VISITS)),
    ("/console/activity", lambda u: _console(u) or u.role is Role.CASEWORKER),
    ("/console/backchecks", _console),
    ("/console/audit", lambda u: can(u, C.READ_AUDIT_LOG)),
]

USERS = [
    "admin",
    "supervisor",
    "approver",
    "other_approver",
    "reviewer_a",
    "reviewer_b",
    "caseworker_a",
    "caseworker_b",
]

# An area outside each user's own (for the league's users: a code nobody has).
OUTSIDE = {
    "152200": "999999",
    "152201": "152202",
    "152202": "152201",
    "152201100": "152201101",
    "152201101": "152201100",
}


def _exports() -> int:
    return (
        db.session.scalar(
            select(func.count())
            .select_from(AuditEntry)
            .where(AuditEntry.action == "export.downloaded")
        )
        or 0
    )


# The logout form's CSRF token is signed with the time: equal answers differ only there.
CSRF = re.compile(r'name="csrf_token" value="[^"]*"')


def _body(response: TestResponse) -> str:
    return CSRF.sub('name="csrf_token" value=""', response.get_data(as_text=True))


def _with(path: str, **params: str) -> str:
    joiner = "&" if "?" in path else "?"
    return path + joiner + "&".join(f"{k}={v}" for k, v in params.items())


@pytest.mark.slow
@pytest.mark.parametrize("username", USERS)
def test_every_console_page_and_export_by_role_and_area(client: FlaskClient, username: str) -> None:
    user = factories.user(username)
    own, outside = user.area.code, OUTSIDE[user.area.code]
    login(client, username)
    for path, allowed in PAGES:
        may = allowed(user)
        page = client.get(_with(path, area=own))
        assert page.status_code == (200 if may else 403), (username, path, page.status_code)
        if not may:
            assert "403" in page.get_data(as_text=True) or page.status_code == 403

        before = _exports()
        exported = client.get(_with(path, area=own, format="csv"))
        assert exported.status_code == (200 if may else 403), (username, path, "csv")
        if may:
            assert exported.mimetype == "text/csv", (username, path)
            assert exported.get_data(as_text=True).startswith("\ufeff")
            assert _exports() == before + 1, (username, path)
        else:
            assert _exports() == before

        # Outside the area: the answer of an area that does not exist, whatever the role.
        elsewhere = client.get(_with(path, area=outside))
        missing = client.get(_with(path, area="000000"))
        assert elsewhere.status_code == missing.status_code == 404, (username, path)
        assert _body(elsewhere) == _body(missing), (username, path)
        assert client.get(_with(path, area=outside, format="csv")).status_code == 404
    assert client.get("/console/worklist").status_code == 200
