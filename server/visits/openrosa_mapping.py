"""ODK Collect submissions of ``forms/household_survey.xml`` read as surveys.

A submission is the form's instance XML plus its photos as files named in the XML.
``parse_submission`` reads the XML (safely: defusedxml) into a ``Submission``: the
survey fields of the tablet contract and the photos it refers to. Collect sends no
manifest (no sha256 or size per photo), so a photo's facts are those of the bytes
that arrive for it; until then the survey lists it as missing (``awaiting_photos``).

The same instanceID may come several times, always with the same XML bytes: ODK
Collect splits a submission whose files exceed the advertised size across several
POSTs (each repeats the XML, all but the last carry ``*isIncomplete*=yes``), retries,
and resends a visit whose photos were missing once they are back. The XML's sha256
is the visit's identity (``Survey.content_hash``): other bytes under the same
instanceID are a conflict.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring
from pydantic import ValidationError

from server.errors import DomainError, ValidationFailed
from server.visits.schemas import PHOTO_ID, SurveyIn

FORM_ID = "household_survey"
MAX_XML_BYTES = 1024 * 1024
# Placeholder facts for the photos whose bytes are not in this POST.
_UNKNOWN_SHA = "0" * 64


class SubmissionRejected(DomainError):
    """The submission cannot be read: not XML, or not one of our forms' instances."""

    code = "invalid_submission"
    http_status = 400


class UnknownForm(DomainError):
    code = "unknown_form"
    http_status = 404


@dataclass(frozen=True)
class FileFacts:
    sha256: str
    bytes: int


@dataclass(frozen=True)
class Attachment:
    """A photo the XML refers to, by the file name ODK Collect gave it."""

    file_name: str
    photo_id: str
    kind: str
    member_ref: str | None = None


@dataclass(frozen=True)
class Submission:
    form_id: str
    form_version: str | None
    instance_id: UUID
    # sha256 of the XML as sent: the submission's identity across its POSTs.
    xml_sha256: str
    # The survey JSON of the tablet contract, less its ``photos``.
    fields: dict[str, Any]
    attachments: list[Attachment] = field(default_factory=list)

    @property
    def file_names(self) -> set[str]:
        return {a.file_name for a in self.attachments}

    def file_name(self, photo_id: str) -> str:
        return next((a.file_name for a in self.attachments if a.photo_id == photo_id), photo_id)

    def missing(self, facts: Mapping[str, FileFacts]) -> list[str]:
        return [a.file_name for a in self.attachments if a.file_name not in facts]

    def survey_json(self, facts: Mapping[str, FileFacts]) -> dict[str, Any]:
        """The survey JSON with its photo manifest; every photo's facts must be known."""
        photos = []
        for a in self.attachments:
            fact = facts[a.file_name]
            photo: dict[str, Any] = {
                "photo_id": a.photo_id,
                "kind": a.kind,
                "sha256": fact.sha256,
                "bytes": fact.bytes,
            }
            if a.member_ref is not None:
                photo["member_ref"] = a.member_ref
            photos.append(photo)
        return {**self.fields, "photos": photos}

    def validate(self, facts: Mapping[str, FileFacts]) -> SurveyIn:
        """The survey as the service takes it; photos whose bytes are not here carry
        placeholder facts (the service stores them unsized). ValidationFailed names
        the form's field.
        """
        known = {
            a.file_name: facts.get(a.file_name, FileFacts(_UNKNOWN_SHA, 1))
            for a in self.attachments
        }
        raw = self.survey_json(known)
        try:
            return SurveyIn.model_validate(raw)
        except ValidationError as exc:
            errors = [
                {"field": self._form_field(error["loc"]), "problem": error["msg"]}
                for error in exc.errors()
            ]
            first = errors[0]
            raise ValidationFailed(
                f"{first['field']}: {first['problem']}", field=first["field"], errors=errors
            ) from exc

    def _form_field(self, loc: tuple[int | str, ...]) -> str:
        """A pydantic error location as the form's field path (what a caseworker sees)."""
        if not loc:
            return "survey"
        head, rest = loc[0], loc[1:]
        if head == "members" and rest and isinstance(rest[0], int):
            names = {"portrait_photo_id": "portrait", "client_ref": "member_id"}
            leaf = str(rest[1]) if len(rest) > 1 else ""
            return f"members[{rest[0] + 1}]" + (f"/{names.get(leaf, leaf)}" if leaf else "")
        if (
            head == "photos"
            and rest
            and isinstance(rest[0], int)
            and rest[0] < len(self.attachments)
        ):
            return self.attachments[rest[0]].file_name
        names = {
            "started_at": "start",
            "finished_at": "end",
            "kind": "visit_kind",
            "client_uuid": "meta/instanceID",
            "housing": "housing_notes",
            "gps": "gps",
        }
        return names.get(str(head), ".".join(str(part) for part in loc))


def parse_submission(xml: bytes) -> Submission:
    """Read a submission of the household survey form; SubmissionRejected (400),
    UnknownForm (404) or ValidationFailed (422) say what is wrong with it.
    """
    if len(xml) > MAX_XML_BYTES:
        raise SubmissionRejected(f"the submission XML is larger than {MAX_XML_BYTES} bytes")
    try:
        root = fromstring(xml, forbid_dtd=True)
    except (ParseError, DefusedXmlException) as exc:
        raise SubmissionRejected(f"the submission is not well-formed XML: {exc}") from exc
    form_id = root.get("id")
    if form_id != FORM_ID:
        raise UnknownForm(f"no form with id {form_id!r} on this server", form_id=form_id)
    instance_id = _instance_id(root)

    fields: dict[str, Any] = {"client_uuid": str(instance_id)}
    for name, key in (
        ("household_id", "household_id"),
        ("visit_kind", "kind"),
        ("start", "started_at"),
        ("end", "finished_at"),
    ):
        value = _text(root, name)
        if value is not None:
            fields[key] = value
    if "household_id" not in fields:
        raise ValidationFailed("household_id: Field required", field="household_id")
    gps = _text(root, "gps")
    if gps is not None:
        fields["gps"] = _geopoint(gps)
    notes = _text(root, "housing_notes")
    fields["housing"] = {"notes": notes} if notes else {}
    fields["notes"] = _text(root, "notes") or ""

    attachments: list[Attachment] = []
    photo_ids: set[str] = set()

    def attach(file_name: str, kind: str, member_ref: str | None = None) -> str:
        photo_id = photo_id_for(file_name, photo_ids)
        photo_ids.add(photo_id)
        attachments.append(Attachment(file_name, photo_id, kind, member_ref))
        return photo_id

    members: list[dict[str, Any]] = []
    for position, element in enumerate(_children(root, "members"), start=1):
        member: dict[str, Any] = {}
        for name in ("member_id", "name", "monthly_income"):
            value = _text(element, name)
            if value is not None:
                member[name] = value
        portrait = _text(element, "portrait")
        if not member and portrait is None:
            continue  # an empty repeat the caseworker did not fill in
        if "member_id" not in member:
            member["client_ref"] = f"member-{position}"
        if portrait is not None:
            ref = str(member.get("member_id") or member["client_ref"])
            member["portrait_photo_id"] = attach(portrait, "member_portrait", ref)
        members.append(member)
    fields["members"] = members
    for element in _children(root, "housing_photos"):
        photo = _text(element, "photo")
        if photo is not None:
            attach(photo, "housing")
    return Submission(
        form_id,
        root.get("version"),
        instance_id,
        hashlib.sha256(xml).hexdigest(),
        fields,
        attachments,
    )


def photo_id_for(file_name: str, taken: set[str]) -> str:
    """A photo_id (``A-Z a-z 0-9 _ -``, at most 64) for a file name, unique within the
    submission; ODK Collect's names (``1714712345678.jpg``) keep their look.
    """
    candidate = re.sub(r"[^A-Za-z0-9_-]", "_", file_name)[:64]
    if candidate in taken or not PHOTO_ID.match(candidate):
        digest = hashlib.sha256(file_name.encode("utf-8")).hexdigest()[:12]
        candidate = f"{candidate[:51]}-{digest}"
    return candidate


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _children(parent: Element, name: str) -> Iterator[Element]:
    return (child for child in parent if _local(child.tag) == name)


def _text(parent: Element, name: str) -> str | None:
    for child in _children(parent, name):
        value = (child.text or "").strip()
        return value or None
    return None


def _instance_id(root: Element) -> UUID:
    value = None
    for meta in _children(root, "meta"):
        value = _text(meta, "instanceID")
    if value is None:
        raise SubmissionRejected("the submission has no meta/instanceID")
    text = value[5:] if value.lower().startswith("uuid:") else value
    try:
        return UUID(text)
    except ValueError:
        raise SubmissionRejected(
            f"meta/instanceID must be 'uuid:' and a UUID, not {value!r}"
        ) from None


def _geopoint(value: str) -> dict[str, str]:
    """ODK's geopoint "lat lon altitude accuracy" (the last two optional)."""
    parts = value.split()
    if not 2 <= len(parts) <= 4:
        raise ValidationFailed(
            "gps: expected 'latitude longitude [altitude [accuracy]]'", field="gps"
        )
    gps = dict(zip(("lat", "lon", "altitude_m", "accuracy_m"), parts, strict=False))
    gps["provider"] = "odk_collect"
    return gps
