"""Face matches (issue 16, lane C): calibrated bands, mirrored portraits, and every
portrait compared with the named member's own templates. Real photos, real engine."""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image
from sqlalchemy import select
from werkzeug.datastructures import FileStorage
from werkzeug.test import encode_multipart

from server.cases.models import CaseState
from server.extensions import db
from server.faces.models import FaceTemplate
from server.region import RegionConfigError, load_region_rules
from server.visits.integrity.face_match import (
    FaceRules,
    not_member_flag,
    other_household_flags,
    parse_faces_rules,
)
from tests import factories
from tests.faces.test_faces import FACES
from tests.mobile_api.test_api_devices import bearer, device_login
from tests.visits.test_api_surveys import manifest_entry, survey_json

RULES = FaceRules()


# --------------------------------------------------------------------------- the rules


def test_the_defaults_are_the_region_files() -> None:
    assert load_region_rules(None).integrity.faces == FaceRules()
    assert parse_faces_rules({}) == FaceRules()
    chosen = parse_faces_rules({"match_below": 0.4, "check_mirrored": False})
    assert chosen.match_below == 0.4 and not chosen.check_mirrored
    assert chosen.review_below == RULES.review_below


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"tolerance": 0.5}, r"integrity\.faces\.tolerance: unknown key"),
        ({"match_below": "0.5"}, r"integrity\.faces\.match_below: .* must be a number"),
        ({"match_below": True}, r"integrity\.faces\.match_below: .* must be a number"),
        ({"review_below": 0}, r"integrity\.faces\.review_below: .* distance in \(0, 2\]"),
        ({"not_member_above": 2.5}, r"integrity\.faces\.not_member_above: .* \(0, 2\]"),
        ({"match_below": 0.6, "review_below": 0.55}, r"review_below: must not be under"),
        ({"not_member_critical_above": 0.5}, r"not_member_critical_above: must not be under"),
        ({"check_mirrored": "yes"}, r"integrity\.faces\.check_mirrored: .* true or false"),
    ],
)
def test_a_bad_faces_section_is_refused_with_its_key(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_faces_rules(section)


def test_the_retired_visit_checks_face_distance_still_loads(tmp_path: Path) -> None:
    text = (Path(__file__).resolve().parents[2] / "server" / "region_default.toml").read_text(
        "utf-8"
    )
    old = text.replace("[visit_checks]\n", "[visit_checks]\nface_distance = 0.45\n", 1)
    (tmp_path / "old.toml").write_text(old, "utf-8")
    assert load_region_rules(tmp_path / "old.toml").integrity.faces == FaceRules()
    bad = text.replace("[visit_checks]\n", "[visit_checks]\nface_distance = -1\n", 1)
    (tmp_path / "bad.toml").write_text(bad, "utf-8")
    with pytest.raises(RegionConfigError, match=r"visit_checks\.face_distance"):
        load_region_rules(tmp_path / "bad.toml")
    broken = text.replace("check_mirrored = true", "check_mirrored = 1", 1)
    (tmp_path / "broken.toml").write_text(broken, "utf-8")
    with pytest.raises(RegionConfigError, match=r"integrity\.faces\.check_mirrored"):
        load_region_rules(tmp_path / "broken.toml")


# --------------------------------------------------------------------------- the bands


def test_other_households_are_flagged_by_band_nearest_first() -> None:
    flags = other_household_flags({7: 0.53, 3: 0.448, 9: 0.58}, RULES)
    assert [(f.severity, f.value, f.threshold) for f in flags] == [
        ("critical", 0.448, RULES.match_below),
        ("warning", 0.53, RULES.review_below),
    ]
    assert "household 3" in flags[0].detail and "possibly" in flags[1].detail


def test_a_portrait_far_from_every_template_of_its_member_is_another_person() -> None:
    assert not_member_flag([0.3, 0.65], {}, RULES, what="portrait p1") is None
    assert not_member_flag([0.6], {}, RULES, what="portrait p1") is None  # at the limit
    warning = not_member_flag([0.64, 0.66], {}, RULES, what="portrait p1")
    assert warning is not None and warning.severity == "warning"
    assert (warning.value, warning.threshold) == (0.64, RULES.not_member_above)
    critical = not_member_flag([0.82], {5: 0.31}, RULES, what="portrait p1")
    assert critical is not None and critical.severity == "critical"
    assert critical.threshold == RULES.not_member_critical_above
    assert "closer to member 5 of the same household" in critical.detail


def test_a_first_portrait_is_flagged_only_when_it_is_another_member() -> None:
    assert not_member_flag([], {}, RULES, what="portrait p1") is None
    assert not_member_flag([], {4: 0.7}, RULES, what="portrait p1") is None
    twin = not_member_flag([], {4: 0.2}, RULES, what="portrait p1")
    assert twin is not None and twin.severity == "warning" and "member 4" in twin.detail


# --------------------------------------------------------------------------- real photos


@pytest.fixture
def token(client: FlaskClient) -> str:
    value: str = device_login(client).get_json()["token"]
    return value


@pytest.fixture
def face_rules(app: Flask) -> Iterator[Any]:
    """Lets a test change the region's [integrity.faces]; restored afterwards."""
    original = app.config["REGION"]

    def change(**changes: Any) -> None:
        faces = dataclasses.replace(original.integrity.faces, **changes)
        integrity = dataclasses.replace(original.integrity, faces=faces)
        app.config["REGION"] = dataclasses.replace(original, integrity=integrity)

    yield change
    app.config["REGION"] = original


def _household(members: int = 1) -> tuple[int, list[int]]:
    household = factories.make_household(
        state=CaseState.APPROVED, incomes=("100.00",) + ("0.00",) * (members - 1)
    )
    db.session.commit()
    return household.id, [m.id for m in household.members]


def _post(client: FlaskClient, url: str, token: str, parts: dict[str, Any]) -> Any:
    """A multipart POST built in memory: the test client spools a body over 500 KB to a
    temporary file it never closes (a ResourceWarning in a later test)."""
    boundary, body = encode_multipart(parts)
    return client.post(
        url,
        data=body,
        headers=bearer(token),
        content_type=f"multipart/form-data; boundary={boundary}",
    )


def portrait_visit(
    client: FlaskClient, token: str, household_id: int, member_id: int, picture: str | bytes
) -> Any:
    """A visit with one member portrait, uploaded like the tablet; its flags (the
    enrollment ran in-process after the commit)."""
    content = picture if isinstance(picture, bytes) else (FACES / picture).read_bytes()
    survey = survey_json(household_id, {})
    entry = manifest_entry("portrait", content, kind="member_portrait")
    entry["member_ref"] = str(member_id)
    survey["photos"] = [entry]
    parts = {
        "survey": json.dumps(survey, ensure_ascii=False),
        "portrait": FileStorage(io.BytesIO(content), filename="portrait.jpg"),
    }
    response = _post(client, "/api/v1/surveys", token, parts)
    assert response.status_code == 201, response.get_json()
    return client.get(f"/api/v1/surveys/{survey['client_uuid']}", headers=bearer(token)).get_json()


def _face_flags(body: dict[str, Any], code: str) -> list[dict[str, Any]]:
    return [f for f in body["flags"] if f["code"] == code]


def _mirrored(name: str) -> bytes:
    """The photo as a selfie camera would have stored it: mirrored (PNG: no re-encoding)."""
    out = io.BytesIO()
    Image.open(FACES / name).convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(
        out, "PNG"
    )
    return out.getvalue()


@pytest.mark.slow
def test_the_same_man_is_caught_in_every_other_household_and_not_flagged_as_himself(
    app: Flask, client: FlaskClient, token: str
) -> None:
    home, [member] = _household()
    for picture in ("obama/obama_1.jpg", "obama/obama_2.jpg", "obama/obama_3.jpg"):
        body = portrait_visit(client, token, home, member, picture)
        assert _face_flags(body, "face_not_member") == [], picture
        assert _face_flags(body, "face_in_other_household") == [], picture
    seen = [home]
    for picture in ("obama/obama_2.jpg", "obama/obama_4.jpg", "obama/obama_480p.jpg"):
        elsewhere, [other] = _household()
        body = portrait_visit(client, token, elsewhere, other, picture)
        flags = _face_flags(body, "face_in_other_household")
        # One flag per household he is already enrolled in, each "the same person".
        assert sorted(int(f["detail"].split("household ")[1].split()[0]) for f in flags) == seen
        for flag in flags:
            assert flag["severity"] == "critical", (picture, flag)
            assert float(flag["value"]) < RULES.match_below
            assert float(flag["threshold"]) == RULES.match_below
        assert _face_flags(body, "face_not_member") == []  # his first portrait there
        seen.append(elsewhere)


@pytest.mark.slow
def test_a_different_man_raises_nothing_across_households(
    app: Flask, client: FlaskClient, token: str
) -> None:
    first, [obama] = _household()
    portrait_visit(client, token, first, obama, "obama/obama_1.jpg")
    portrait_visit(client, token, first, obama, "obama/obama_2.jpg")
    for picture in (
        "biden/biden_1.jpg",
        "alex_lacamoire/alex_1.jpg",
        "lin_manuel_miranda/lin_1.png",
    ):
        other, [member] = _household()
        body = portrait_visit(client, token, other, member, picture)
        assert _face_flags(body, "face_in_other_household") == [], picture


@pytest.mark.slow
def test_a_mirrored_portrait_is_matched_as_the_face_it_mirrors(
    app: Flask, client: FlaskClient, token: str, face_rules: Any
) -> None:
    first, [obama] = _household()
    portrait_visit(client, token, first, obama, "obama/obama_1.jpg")
    # The enrolled portrait itself, mirrored (a selfie camera): identical once flipped back.
    second, [member] = _household()
    body = portrait_visit(client, token, second, member, _mirrored("obama/obama_1.jpg"))
    [flag] = _face_flags(body, "face_in_other_household")
    assert flag["severity"] == "critical" and float(flag["value"]) < 0.05
    # Without the mirror image the same upload sits 0.11-0.22 away (the calibration).
    face_rules(check_mirrored=False)
    third, [member] = _household()
    body = portrait_visit(client, token, third, member, _mirrored("obama/obama_1.jpg"))
    unmirrored = min(
        float(f["value"])
        for f in _face_flags(body, "face_in_other_household")
        if f"household {first}" in f["detail"]
    )
    assert unmirrored > 0.1 > float(flag["value"])
    face_rules(check_mirrored=True)
    # Another photo of him, mirrored.
    fourth, [member] = _household()
    body = portrait_visit(client, token, fourth, member, _mirrored("obama/obama_4.jpg"))
    assert [f["severity"] for f in _face_flags(body, "face_in_other_household")] == ["critical"] * 3


@pytest.mark.slow
def test_a_different_man_in_a_members_portrait_is_flagged_and_does_not_vouch_for_him(
    app: Flask, client: FlaskClient, token: str
) -> None:
    home, [obama, son] = _household(members=2)
    first = portrait_visit(client, token, home, obama, "obama/obama_1.jpg")
    assert _face_flags(first, "face_not_member") == []  # nothing to compare with yet
    portrait_visit(client, token, home, son, "biden/biden_1.jpg")
    # A visit's portrait of "obama" that shows the man enrolled as his son.
    body = portrait_visit(client, token, home, obama, "biden/biden_2.jpg")
    [flag] = _face_flags(body, "face_not_member")
    assert flag["severity"] == "critical" and float(flag["value"]) > RULES.not_member_above
    assert f"closer to member {son} of the same household" in flag["detail"]
    assert _face_flags(body, "face_in_other_household") == []  # the same household
    templates = db.session.scalars(
        select(FaceTemplate).where(FaceTemplate.member_id == obama).order_by(FaceTemplate.id)
    ).all()
    assert [t.active for t in templates] == [True, False]
    # His own face again is fine: compared with the active template only.
    again = portrait_visit(client, token, home, obama, "obama/obama_3.jpg")
    assert _face_flags(again, "face_not_member") == []


@pytest.mark.slow
def test_one_man_enrolled_as_two_members_is_flagged(
    app: Flask, client: FlaskClient, token: str
) -> None:
    home, [head, child] = _household(members=2)
    portrait_visit(client, token, home, head, "obama/obama_1.jpg")
    body = portrait_visit(client, token, home, child, "obama/obama_2.jpg")
    [flag] = _face_flags(body, "face_not_member")
    assert flag["severity"] == "warning" and f"member {head}" in flag["detail"]


@pytest.mark.slow
def test_a_small_blurred_frame_of_the_same_man_is_still_caught(
    app: Flask, client: FlaskClient, token: str
) -> None:
    first, [lin] = _household()
    portrait_visit(client, token, first, lin, "lin_manuel_miranda/lin_1.png")
    second, [member] = _household()
    frame = "lin_manuel_miranda/live_clip/frame_140.jpg"
    body = portrait_visit(client, token, second, member, frame)
    [flag] = _face_flags(body, "face_in_other_household")
    assert flag["severity"] in ("critical", "warning")
    assert float(flag["value"]) < RULES.review_below


@pytest.mark.slow
def test_explicit_enrollment_reports_both_flags_by_band(client: FlaskClient) -> None:
    token = device_login(client).get_json()["token"]
    _, [obama] = _household()
    _, [stranger] = _household()

    def enroll(member_id: int, content: bytes) -> Any:
        photo = FileStorage(io.BytesIO(content), filename="face.jpg", content_type="image/jpeg")
        response = _post(
            client, f"/api/v1/members/{member_id}/face-templates", token, {"photo": photo}
        )
        assert response.status_code == 201, response.get_json()
        return response.get_json()["warnings"]

    assert enroll(obama, (FACES / "obama" / "obama_1.jpg").read_bytes()) == []
    [mirrored] = enroll(stranger, _mirrored("obama/obama_2.jpg"))
    assert mirrored["code"] == "face_in_other_household"
    assert mirrored["value"] < RULES.match_below and mirrored["threshold"] == RULES.match_below
    [other_man] = enroll(obama, (FACES / "biden" / "biden_1.jpg").read_bytes())
    assert other_man["code"] == "face_not_member" and other_man["value"] > RULES.not_member_above
