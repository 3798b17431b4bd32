"""The administrator's pages: accounts (create, role and area, deactivate, one-time
password links), tablet logins, each through the test client, scoped to the area."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from server import clock
from server.areas.models import Area, AreaLevel
from server.audit.models import AuditEntry
from server.auth import accounts
from server.auth.models import PasswordLink, Role, User
from server.auth.passwords import hash_password
from server.devices.models import DeviceToken
from server.errors import IllegalTransition
from server.extensions import db
from tests import factories
from tests.conftest import login
from tests.mobile_api.test_api_devices import bearer, device_login

CSRF = re.compile(r'name="csrf_token" value="[^"]*"')
LINK = re.compile(r'<code class="password-link">https?://[^/]+(/set-password/[^<]+)</code>')
NEW_PASSWORD = "a long new password"


class Clock:
    """The app's clock (``DIBAO_CLOCK``), moved forward by ``offset``."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@pytest.fixture
def moved_clock(app: Flask) -> Iterator[Clock]:
    fake = Clock()
    app.config["DIBAO_CLOCK"] = fake
    yield fake
    app.config["DIBAO_CLOCK"] = None


def admin_client(app: Flask, username: str = "admin") -> FlaskClient:
    client = app.test_client()
    assert login(client, username).status_code == 302
    return client


def create(client: FlaskClient, **fields: str) -> Any:
    data = {
        "username": "wang.li",
        "display_name": "王丽",
        "role": "caseworker",
        "area": "152201100",
    }
    data.update(fields)
    return client.post("/admin/users/new", data=data)


def link_path(response: Any) -> str:
    found = LINK.search(response.get_data(as_text=True))
    assert found is not None, response.get_data(as_text=True)[:500]
    return found.group(1)


def set_password(client: FlaskClient, path: str, password: str = NEW_PASSWORD) -> Any:
    return client.post(path, data={"password": password, "repeated": password})


def same_page(response: Any) -> str:
    """The page without its per-request CSRF token (it carries a timestamp)."""
    return CSRF.sub("", response.get_data(as_text=True))


def listed(response: Any) -> set[str]:
    """The logins a users page lists."""
    return set(
        re.findall(r'<a href="/admin/users/\d+">([^<]+)</a>', response.get_data(as_text=True))
    )


def audit_actions(object_id: int) -> list[str]:
    return list(
        db.session.scalars(
            select(AuditEntry.action)
            .where(
                AuditEntry.object_type == "user",
                AuditEntry.object_id == str(object_id),
                AuditEntry.action.startswith("user."),
            )
            .order_by(AuditEntry.id)
        )
    )


# --------------------------------------------------------------------------- accounts


def test_an_admin_creates_an_account_and_the_link_sets_its_password_once(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    client = admin_client(app)
    assert client.get("/admin/users/new").status_code == 200
    created = create(client)
    assert created.status_code == 201
    path = link_path(created)
    token = path.removeprefix("/set-password/")
    user = factories.user("wang.li")
    user_id = user.id
    assert user.role is Role.CASEWORKER and user.area.code == "152201100"
    assert user.display_name == "王丽"
    # No password yet: nobody can log in as the new user.
    assert login(app.test_client(), "wang.li", "").status_code == 200
    # Only the hash of the link is kept; it is in no audit row and no log line.
    record = db.session.scalar(select(PasswordLink).where(PasswordLink.user_id == user.id))
    assert record is not None and token not in record.token_hash
    everything = " ".join(str(a.details) for a in db.session.scalars(select(AuditEntry)))
    assert token not in everything
    assert token not in caplog.text

    stranger = app.test_client()
    page = stranger.get(path)
    assert page.status_code == 200 and "wang.li" in page.get_data(as_text=True)
    assert page.headers["Referrer-Policy"] == "no-referrer"
    too_short = set_password(stranger, path, "short")
    assert too_short.status_code == 422
    differ = stranger.post(path, data={"password": NEW_PASSWORD, "repeated": NEW_PASSWORD + "x"})
    assert differ.status_code == 422
    done = set_password(stranger, path)
    assert done.status_code == 303 and done.headers["Location"].endswith("/login")
    assert login(app.test_client(), "wang.li", NEW_PASSWORD).status_code == 302
    # Used: the link is refused from now on.
    assert stranger.get(path).status_code == 404
    assert set_password(stranger, path, "another long password").status_code == 404
    assert login(app.test_client(), "wang.li", "another long password").status_code == 401
    assert audit_actions(user_id) == [
        "user.create",
        "user.password_link_issued",
        "user.password_set",
    ]


def test_a_link_expires_by_the_apps_clock(app: Flask, moved_clock: Clock) -> None:
    client = admin_client(app)
    path = link_path(create(client))
    assert app.test_client().get(path).status_code == 200
    moved_clock.offset = timedelta(hours=24, seconds=1)
    refused = app.test_client().get(path)
    assert refused.status_code == 404
    assert "expired" in app.test_client().get(path + "?lang=en").get_data(as_text=True)
    assert set_password(app.test_client(), path).status_code == 404


def test_a_newer_link_supersedes_the_older_one(app: Flask) -> None:
    client = admin_client(app)
    first = link_path(create(client))
    user = factories.user("wang.li")
    reset = client.post(f"/admin/users/{user.id}/password-link")
    assert reset.status_code == 200
    second = link_path(reset)
    assert first != second
    assert app.test_client().get(first).status_code == 404
    assert set_password(app.test_client(), first).status_code == 404
    assert set_password(app.test_client(), second).status_code == 303


def test_a_link_with_a_wrong_signature_or_token_is_refused(app: Flask) -> None:
    client = admin_client(app)
    path = link_path(create(client))
    head, _, signature = path.rpartition(".")
    forged = head + "." + ("A" if signature[0] != "A" else "B") + signature[1:]
    for bad in (forged, "/set-password/nothing", "/set-password/WzEsIngiXQ.bad-signature"):
        answer = app.test_client().get(bad)
        assert answer.status_code == 404, bad
        assert set_password(app.test_client(), bad).status_code == 404
    # A validly signed token for the right link id, but not the one stored.
    record = db.session.scalar(select(PasswordLink).order_by(PasswordLink.id.desc()))
    assert record is not None
    with app.test_request_context():
        other = accounts._serializer().dumps([record.id, "guessed"])
    assert app.test_client().get(f"/set-password/{other}").status_code == 404
    assert set_password(app.test_client(), path).status_code == 303


def test_the_link_page_is_rate_limited(app: Flask, databases: Any, tmp_path: Any) -> None:
    from flask_migrate import upgrade

    from tests.conftest import make_app

    limited = make_app(
        databases.new("links"),
        tmp_path,
        RATELIMIT_ENABLED=True,
        DIBAO_PASSWORD_LINK_RATE_LIMIT="3 per hour",
    )
    with limited.app_context():
        upgrade(directory=limited.extensions["migrate"].directory)
    client = limited.test_client()
    answers = [client.get("/set-password/nothing").status_code for _ in range(4)]
    assert answers == [404, 404, 404, 429]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"username": "王丽"}, "A login may hold only"),
        ({"username": "admin"}, "This login is taken."),
        ({"role": "county_approver"}, "This role works at the level county"),
        ({"role": "boss"}, "Unknown role."),
        ({"area": "999999"}, "No such area within yours."),
        ({"display_name": "x" * 65}, "The display name must be"),
    ],
)
def test_a_bad_new_account_is_refused_with_a_clear_message_and_nothing_written(
    app: Flask, fields: dict[str, str], message: str
) -> None:
    client = admin_client(app)
    before = db.session.scalar(select(db.func.count(User.id)))
    answer = client.post(
        "/admin/users/new?lang=en",
        data={
            **{
                "username": "wang.li",
                "display_name": "王丽",
                "role": "caseworker",
                "area": "152201100",
            },
            **fields,
        },
    )
    assert answer.status_code == 422
    assert message in answer.get_data(as_text=True)
    assert db.session.scalar(select(db.func.count(User.id))) == before
    zh = client.post("/admin/users/new?lang=zh_CN", data={"username": "王丽", "role": "caseworker"})
    assert "登录名" in zh.get_data(as_text=True)


def test_role_and_area_change_and_the_list_filters(app: Flask) -> None:
    client = admin_client(app)
    worker_id = factories.user("caseworker_b").id
    changed = client.post(
        f"/admin/users/{worker_id}/role", data={"role": "township_reviewer", "area": "152201100"}
    )
    assert changed.status_code == 303
    db.session.expire_all()
    worker = factories.user("caseworker_b")
    assert worker.role is Role.TOWNSHIP_REVIEWER and worker.area.code == "152201100"
    entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "user.role_changed"))
    assert entry is not None and entry.details["role_before"] == "caseworker"
    # A level that does not fit the role: refused, nothing changed.
    client.post(
        f"/admin/users/{worker_id}/role", data={"role": "county_approver", "area": "152201100"}
    )
    db.session.expire_all()
    assert factories.user("caseworker_b").role is Role.TOWNSHIP_REVIEWER

    listing = client.get("/admin/users?role=township_reviewer&area=152201100&active=yes")
    text = listing.get_data(as_text=True)
    assert listing.status_code == 200
    assert "caseworker_b" in text and "reviewer_a" in text and "reviewer_b" not in text
    assert "caseworker_a" not in text
    assert client.get(f"/admin/users/{worker_id}").status_code == 200
    assert client.get("/admin/users?role=nobody").status_code == 400


def test_a_county_admin_manages_only_their_county(app: Flask) -> None:
    county_admin = User(
        username="county_admin",
        password_hash=hash_password(factories.PASSWORD),
        role=Role.ADMIN,
        area=factories.areas().county,
    )
    db.session.add(county_admin)
    db.session.commit()
    client = admin_client(app, "county_admin")
    listing = listed(client.get("/admin/users"))
    assert {"caseworker_a", "approver", "county_admin"} <= listing
    assert (
        "other_approver" not in listing and "supervisor" not in listing and "admin" not in listing
    )
    other_id = factories.user("other_approver").id
    missing = client.get("/admin/users/1999999000")
    outside = client.get(f"/admin/users/{other_id}")
    assert missing.status_code == outside.status_code == 404
    assert same_page(missing) == same_page(outside)
    assert "没有该账号。" in missing.get_data(as_text=True)
    # Nor may it give anyone an area outside its county.
    refused = create(client, role="county_approver", area="152202")
    assert refused.status_code == 422
    refused = create(client, role="admin", area="152200")
    assert refused.status_code == 422


# --------------------------------------------------------------------------- deactivate


def test_deactivation_stops_the_web_session_and_the_tablet_at_once(app: Flask) -> None:
    worker_client = app.test_client()
    assert login(worker_client, "caseworker_a").status_code == 302
    assert worker_client.get("/").status_code == 200
    token = device_login(app.test_client()).get_json()["token"]
    tablet = app.test_client()
    assert tablet.get("/api/v1/meta", headers=bearer(token)).status_code == 200

    admin = admin_client(app)
    worker_id = factories.user("caseworker_a").id
    assert admin.post(f"/admin/users/{worker_id}/active", data={"active": "no"}).status_code == 303
    assert worker_client.get("/").status_code == 302  # back to the login page
    assert tablet.get("/api/v1/meta", headers=bearer(token)).status_code == 401
    assert login(app.test_client(), "caseworker_a").status_code == 401
    listed = admin.get("/admin/users?active=no").get_data(as_text=True)
    assert "caseworker_a" in listed

    assert admin.post(f"/admin/users/{worker_id}/active", data={"active": "yes"}).status_code == 303
    assert login(app.test_client(), "caseworker_a").status_code == 302
    assert audit_actions(worker_id)[-2:] == ["user.deactivated", "user.activated"]
    assert admin.post(f"/admin/users/{worker_id}/active", data={"active": "?"}).status_code == 400


def test_the_last_active_admin_of_the_league_stays(app: Flask) -> None:
    client = admin_client(app)
    me_id = factories.user("admin").id
    answer = client.post(f"/admin/users/{me_id}/active?lang=en", data={"active": "no"})
    assert answer.status_code == 303
    shown = client.get(f"/admin/users/{me_id}?lang=en").get_data(as_text=True)
    assert "You cannot deactivate your own account." in shown
    demoted = client.post(
        f"/admin/users/{me_id}/role", data={"role": "supervisor", "area": "152200"}
    )
    assert demoted.status_code == 303
    shown = client.get(f"/admin/users/{me_id}?lang=en").get_data(as_text=True)
    assert "last active administrator" in shown
    db.session.expire_all()
    assert factories.user("admin").role is Role.ADMIN

    # A second admin of the league: now the first may step down.
    second = User(
        username="admin2",
        password_hash=hash_password(factories.PASSWORD),
        role=Role.ADMIN,
        area=factories.areas().county,
    )
    db.session.add(second)
    db.session.commit()
    demoted = client.post(
        f"/admin/users/{me_id}/role", data={"role": "supervisor", "area": "152200"}
    )
    assert demoted.status_code == 303
    db.session.expire_all()
    assert factories.user("admin").role is Role.SUPERVISOR
    # ... and the second one, now the last, cannot step down in turn.
    with pytest.raises(IllegalTransition, match="last active"):
        accounts.change_role_and_area(
            factories.user("admin2"),
            factories.user("admin2"),
            role="supervisor",
            area_code="152201",
        )


# --------------------------------------------------------------------------- tablets


def test_tablets_are_listed_in_the_area_and_a_revoked_one_gets_401(app: Flask) -> None:
    token = device_login(app.test_client()).get_json()["token"]
    tablet = app.test_client()
    assert tablet.get("/api/v1/meta", headers=bearer(token)).status_code == 200
    record = db.session.scalar(select(DeviceToken).order_by(DeviceToken.id.desc()))
    assert record is not None
    record_id, prefix = record.id, record.token_prefix

    client = admin_client(app)
    page = client.get("/admin/tablets").get_data(as_text=True)
    assert "caseworker_a" in page and "华为平板 M5" in page and prefix in page
    assert token not in page
    revoked = client.post(f"/admin/tablets/{record_id}/revoke")
    assert revoked.status_code == 303
    assert tablet.get("/api/v1/meta", headers=bearer(token)).status_code == 401
    entry = db.session.scalar(
        select(AuditEntry).where(
            AuditEntry.action == "device.token_revoked", AuditEntry.object_id == str(record_id)
        )
    )
    assert entry is not None and entry.actor_id == factories.user("admin").id
    assert "caseworker_a" not in client.get("/admin/tablets?live=yes").get_data(as_text=True)
    assert client.post(f"/admin/tablets/{record_id}/revoke").status_code == 303  # no-op

    # A county admin of the other county sees nothing of it.
    other_admin = User(
        username="other_admin",
        password_hash=hash_password(factories.PASSWORD),
        role=Role.ADMIN,
        area=db.session.scalar(select(Area).where(Area.code == "152202")),
    )
    db.session.add(other_admin)
    db.session.commit()
    other = admin_client(app, "other_admin")
    assert "caseworker_a" not in other.get("/admin/tablets").get_data(as_text=True)
    missing = other.post("/admin/tablets/1999999000/revoke")
    outside = other.post(f"/admin/tablets/{record_id}/revoke")
    assert missing.status_code == outside.status_code == 404
    assert same_page(missing) == same_page(outside)


# --------------------------------------------------------------------------- the role matrix

PAGES = ("/admin/users", "/admin/users/new", "/admin/tablets", "/admin/standards")


@pytest.mark.parametrize("username", ["caseworker_a", "reviewer_a", "approver", "supervisor"])
def test_other_roles_may_not_open_the_admin_pages(app: Flask, username: str) -> None:
    client = app.test_client()
    assert login(client, username).status_code == 302
    for path in PAGES:
        assert client.get(path).status_code == 403, path
    assert client.post("/admin/users/new", data={"username": "x1"}).status_code == 403
    assert client.post("/admin/standards", data={}).status_code == 403
    assert db.session.scalar(select(User.id).where(User.username == "x1")) is None


def test_an_admin_opens_every_page_and_anonymous_is_sent_to_log_in(app: Flask) -> None:
    client = admin_client(app)
    for path in PAGES:
        assert client.get(path).status_code == 200, path
        assert client.get(path + "?lang=en").status_code == 200, path
    anonymous = app.test_client()
    for path in PAGES:
        assert anonymous.get(path).status_code == 302, path
    home = client.get("/").get_data(as_text=True)
    assert "/admin/users" in home


def test_the_user_routes_answer_outside_the_area_as_missing_for_every_role(app: Flask) -> None:
    """Every role x {own area, another area, missing} x every route that takes an id."""
    by_code = {a.code: a for a in db.session.scalars(select(Area))}
    league = factories.add_area(
        by_code, "152500", "锡林郭勒盟", AreaLevel.LEAGUE, None, 43.9, 116.0
    )
    far = User(username="far_admin", password_hash="!", role=Role.ADMIN, area=league)
    db.session.add(far)
    db.session.flush()
    far_token = DeviceToken(
        user=far,
        device_id="far",
        device_name="far",
        token_hash="f" * 64,
        token_prefix="dbt_farfarfa",
        expires_at=clock.utcnow() + timedelta(days=1),
    )
    db.session.add(far_token)
    db.session.commit()
    far_token_id = far_token.id
    # caller -> (a user inside their area, one outside it)
    cases = {
        "caseworker_a": ("reviewer_a", "caseworker_b"),
        "reviewer_a": ("caseworker_a", "reviewer_b"),
        "approver": ("caseworker_a", "other_approver"),
        "supervisor": ("caseworker_a", "far_admin"),
        "admin": ("caseworker_a", "far_admin"),
    }
    assert {factories.user(c).role for c in cases} == set(Role)
    for caller, (inside_name, outside_name) in cases.items():
        client = app.test_client()
        assert login(client, caller).status_code == 302
        inside, outside = factories.user(inside_name), factories.user(outside_name)
        inside_id, inside_role, inside_area = inside.id, inside.role.value, inside.area.code
        outside_id = outside.id
        routes = [
            ("GET", "/admin/users/{}", None, 200),
            ("POST", "/admin/users/{}/password-link", None, 200),
            ("POST", "/admin/users/{}/active", {"active": "yes"}, 303),
            (
                "POST",
                "/admin/users/{}/role",
                {"role": inside_role, "area": inside_area},
                303,
            ),
        ]
        for method, pattern, data, admin_status in routes:
            missing = client.open(pattern.format(1999999000), method=method, data=data)
            other = client.open(pattern.format(outside_id), method=method, data=data)
            assert missing.status_code == other.status_code == 404, (caller, pattern)
            assert same_page(missing) == same_page(other), (caller, pattern)
            own = client.open(pattern.format(inside_id), method=method, data=data)
            expected = admin_status if caller == "admin" else 403
            assert own.status_code == expected, (caller, pattern, own.status_code)
            client.get("/")  # shows (and so clears) what the request flashed
        missing = client.post("/admin/tablets/1999999000/revoke")
        other = client.post(f"/admin/tablets/{far_token_id}/revoke")
        assert missing.status_code == other.status_code == 404, caller
        assert same_page(missing) == same_page(other)
    db.session.expire_all()
    assert db.session.get(DeviceToken, far_token_id).revoked_at is None  # type: ignore[union-attr]
