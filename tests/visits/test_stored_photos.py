"""What is stored as a photo is a photo and nothing else: a JPEG or PNG with data after
its end (an HTML page, a ZIP archive) is refused wherever uploaded bytes are kept
(visit photos, face enrollment, proof-of-life frames); photos are served under a name
and a type of ours, never sniffed."""

from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image
from sqlalchemy import func, select

from server.cases.models import CaseState
from server.extensions import db
from server.faces.models import FaceTemplate
from server.proof_of_life import service as pol
from server.proof_of_life.models import ProofOfLifeAttempt, ProofOfLifeFrame
from server.visits.models import SurveyPhoto
from server.visits.photos import PhotoRejected, check_no_trailing_data, check_photo_file
from tests import factories
from tests.conftest import login
from tests.faces.test_faces import FACES
from tests.mobile_api.test_api_devices import bearer, device_login
from tests.proof_of_life.test_proof_of_life_api import get_member, next_month
from tests.visits.test_api_surveys import (
    jpeg,
    post_multipart,
    stored_files,
    survey_count,
    survey_json,
)

HTML = b"<html><body><script>alert(document.cookie)</script></body></html>"


def zip_archive() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("index.html", HTML.decode())
    return out.getvalue()


def png(size: tuple[int, int] = (300, 200)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (10, 120, 30)).save(out, "PNG")
    return out.getvalue()


def samsung_trailer(blocks: dict[int, tuple[bytes, bytes]]) -> bytes:
    """A Samsung camera trailer: each block ``0000 type name-length name data``, then
    the ``SEFH`` directory (version, count, entries of type, distance back from the
    directory, size), then the directory's length and ``SEFT``."""
    body = b""
    places = []
    for kind, (name, data) in blocks.items():
        block = struct.pack("<HHI", 0, kind, len(name)) + name + data
        places.append((kind, len(body), len(block)))
        body += block
    directory = b"SEFH" + struct.pack("<II", 106, len(places))
    for kind, start, size in places:
        directory += struct.pack("<HHII", 0, kind, len(body) - start, size)
    return body + directory + struct.pack("<I", len(directory)) + b"SEFT"


def _write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def _rejected(path: Path) -> PhotoRejected:
    with pytest.raises(PhotoRejected) as caught:
        check_photo_file(path)
    return caught.value


@pytest.mark.parametrize(
    ("name", "tail"),
    [("html", HTML), ("zip", zip_archive()), ("zeros", b"\0" * 64), ("one", b"x")],
)
def test_a_jpeg_or_png_with_anything_appended_is_refused(
    tmp_path: Path, name: str, tail: bytes
) -> None:
    for kind, image in (("jpg", jpeg(3, size=(320, 240))), ("png", png())):
        path = _write(tmp_path / f"{name}.{kind}", image + tail)
        refused = _rejected(path)
        assert (refused.code, refused.http_status) == ("trailing_data", 422)
        assert f"{len(tail)} bytes follow" in refused.message
        with pytest.raises(PhotoRejected):
            check_no_trailing_data(path)


def test_a_zip_whose_bytes_contain_an_end_marker_is_still_seen(tmp_path: Path) -> None:
    # Searching backwards for the end marker would stop inside the archive.
    tail = zip_archive() + b"\xff\xd9"
    assert _rejected(_write(tmp_path / "z.jpg", jpeg(4) + tail)).code == "trailing_data"


def test_progressive_and_camera_made_photos_are_accepted(tmp_path: Path) -> None:
    progressive = io.BytesIO()
    Image.new("RGB", (640, 480), (200, 10, 90)).save(progressive, "JPEG", progressive=True)
    assert check_photo_file(_write(tmp_path / "p.jpg", progressive.getvalue())).width == 640
    # Two images in one file, announced by an MPF segment (how Ultra HDR photos carry
    # their gain map, and cameras their previews).
    mpo = tmp_path / "m.jpg"
    first, second = Image.new("RGB", (320, 240), (1, 2, 3)), Image.new("RGB", (160, 120))
    first.save(mpo, "MPO", save_all=True, append_images=[second])
    assert b"MPF\x00" in mpo.read_bytes()[:400]
    assert check_photo_file(mpo).width == 320
    # Galaxy phones' own trailer (capture time, shot mode) is part of the photo.
    real = (FACES / "obama" / "obama_1.jpg").read_bytes()
    trailer = samsung_trailer(
        {0x0A01: (b"Image_UTC_Data", b"1733150000000"), 0x0A30: (b"Camera_Capture_Mode", b"1")}
    )
    assert check_photo_file(_write(tmp_path / "s.jpg", real + trailer)).width == 910
    check_no_trailing_data(tmp_path / "s.jpg")


def test_a_second_image_without_its_announcement_or_a_forged_trailer_is_refused(
    tmp_path: Path,
) -> None:
    two = jpeg(1) + jpeg(2)  # no MPF segment: the second image is just appended data
    assert _rejected(_write(tmp_path / "two.jpg", two)).code == "trailing_data"
    mpo = tmp_path / "m.jpg"
    Image.new("RGB", (320, 240)).save(
        mpo, "MPO", save_all=True, append_images=[Image.new("RGB", (9, 9))]
    )
    extra = _write(tmp_path / "m2.jpg", mpo.read_bytes() + HTML)
    assert _rejected(extra).code == "trailing_data"
    trailer = samsung_trailer({0x0A01: (b"Image_UTC_Data", b"1733150000000")})
    # The directory must account for the trailer from its first byte.
    for forged in (b"SEFT" * 100, HTML + trailer, b"\x00" + trailer, trailer[20:]):
        assert _rejected(_write(tmp_path / "f.jpg", jpeg(5) + forged)).code == "trailing_data"


def test_a_frame_judged_by_the_pipeline_is_checked_only_for_appended_data(
    tmp_path: Path,
) -> None:
    # A cut or unknown frame is the pipeline's to judge (a failed attempt), not refused.
    check_no_trailing_data(_write(tmp_path / "cut.jpg", jpeg(6)[:300]))
    check_no_trailing_data(_write(tmp_path / "gif.gif", b"GIF89a" + HTML))


def test_a_visit_photo_with_html_appended_is_refused_and_nothing_is_stored(
    app: Flask, client: FlaskClient
) -> None:
    household_id = factories.make_household(state=CaseState.APPROVED).id
    db.session.commit()
    token = device_login(client).get_json()["token"]
    before = stored_files(app)[0]
    photos = {"house": jpeg(7, size=(400, 300)) + HTML}
    response = post_multipart(client, token, survey_json(household_id, photos), photos)
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == "trailing_data" and "house" in error["message"]
    assert survey_count() == 0
    assert stored_files(app) == (before, [])


def test_a_face_photo_with_a_zip_appended_is_refused(client: FlaskClient) -> None:
    member_id = factories.make_household(state=CaseState.APPROVED).members[0].id
    db.session.commit()
    token = device_login(client).get_json()["token"]
    content = (FACES / "obama" / "obama_1.jpg").read_bytes() + zip_archive()
    response = client.post(
        f"/api/v1/members/{member_id}/face-templates",
        data={"photo": (io.BytesIO(content), "face.jpg", "image/jpeg")},
        headers=bearer(token),
        content_type="multipart/form-data",
    )
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "trailing_data"
    assert db.session.scalar(select(func.count()).select_from(FaceTemplate)) == 0


def test_frames_with_appended_data_are_refused_before_anything_is_kept(
    client: FlaskClient,
) -> None:
    household = factories.make_household(state=CaseState.APPROVED)
    head = household.members[0]
    head.proof_of_life_required = True
    member_id = head.id
    db.session.commit()
    record = pol.month_record(get_member(member_id), next_month())
    link = pol.link_token(record)
    db.session.commit()
    session = client.post("/api/v1/proof-of-life/sessions", json={"link_token": link}).get_json()
    frames = [jpeg(i, size=(640, 480)) for i in range(pol.rules().frames_min)]
    frames[2] += HTML
    answer = client.post(
        f"/api/v1/proof-of-life/sessions/{session['session_id']}/frames",
        data={
            "nonce": session["nonce"],
            "offsets_ms": json.dumps([i * 300 for i in range(len(frames))]),
            "frames": [(io.BytesIO(f), f"{i}.jpg", "image/jpeg") for i, f in enumerate(frames)],
        },
        content_type="multipart/form-data",
    )
    assert answer.status_code == 422
    error = answer.get_json()["error"]
    assert error["code"] == "trailing_data" and error["message"].startswith("frame 2:")
    attempt = db.session.scalars(select(ProofOfLifeAttempt)).one()
    assert attempt.submitted_at is None and attempt.outcome is None  # not a used attempt
    assert db.session.scalar(select(func.count()).select_from(ProofOfLifeFrame)) == 0


def _upload(client: FlaskClient, photos: dict[str, bytes]) -> int:
    household_id = factories.make_household(state=CaseState.APPROVED).id
    db.session.commit()
    token = device_login(client).get_json()["token"]
    response = post_multipart(client, token, survey_json(household_id, photos), photos)
    assert response.status_code == 201, response.get_json()
    photo_id: int = db.session.scalars(select(SurveyPhoto.id)).one()
    return photo_id


def test_photos_are_served_inline_under_our_name_and_type_never_sniffed(
    app: Flask, client: FlaskClient
) -> None:
    photo_id = _upload(client, {"house": png((400, 300))})
    staff = app.test_client()
    login(staff, "reviewer_a")
    with staff.get(f"/photos/{photo_id}") as original:
        assert original.status_code == 200
        assert original.headers["Content-Type"] == "image/png"
        assert original.headers["Content-Disposition"] == f'inline; filename="photo-{photo_id}.png"'
        assert original.headers["X-Content-Type-Options"] == "nosniff"
        assert original.headers["Cache-Control"] == "private, no-store"
        assert original.data.startswith(b"\x89PNG")
    with staff.get(f"/photos/{photo_id}?size=thumb") as thumb:
        assert thumb.headers["Content-Type"] == "image/jpeg"
        expected = f'inline; filename="photo-{photo_id}-thumb.jpg"'
        assert thumb.headers["Content-Disposition"] == expected
        assert thumb.headers["X-Content-Type-Options"] == "nosniff"
