"""Build the ODK Collect forms: the XLSForm spreadsheets under ``forms/`` are generated
from the definitions below (so a change is reviewed as code), then converted with
pyxform to the XForms the server serves at ``/openrosa/forms/<form_id>.xml``.

    .venv/bin/python scripts/build_forms.py          # write forms/*.xlsx and forms/*.xml
    .venv/bin/python scripts/build_forms.py --check  # exit 1 if the committed files are stale

Bump ``VERSION`` whenever a form changes: ODK Collect offers an update when the
version (or the hash) it holds differs from the server's. Field names are the
contract with ``server/visits/openrosa_mapping.py``: rename one there too.
"""

from __future__ import annotations

import argparse
import io
import re
import sys
import zipfile
from pathlib import Path
from typing import Any

from openpyxl import Workbook, load_workbook
from pyxform.xls2xform import convert  # type: ignore[import-untyped]

FORMS_DIR = Path(__file__).resolve().parents[1] / "forms"

ZH = "Chinese (zh)"
EN = "English (en)"
VERSION = "2026120301"  # yyyymmddnn

# (type, name, zh label, en label, extra columns)
Row = tuple[str, str, str, str, dict[str, str]]

# Photos: taken now with the camera ("new": no picking from the gallery, whose picker
# strips the EXIF position), scaled down on the tablet to spare the upload; Collect
# keeps the EXIF time and position when it scales.
PHOTO = {"appearance": "new", "parameters": "max-pixels=2048"}

PULL_REVISIT_REASON = "pulldata('due_visits', 'revisit_reason', 'household_id', ${household_id})"

HOUSEHOLD_SURVEY: list[Row] = [
    ("start", "start", "", "", {}),
    ("end", "end", "", "", {}),
    (
        "integer",
        "household_id",
        "户编号",
        "Household ID",
        {
            "hint_zh": "见待访清单上的户编号",
            "hint_en": "The number on the list of visits due",
            "required": "yes",
            "constraint": ". > 0",
        },
    ),
    # A visit a reviewer rejected: the reason, from the form media file due_visits.csv
    # (the caseworker's visits due, served with the form's manifest by /openrosa).
    (
        "calculate",
        "revisit_reason",
        "",
        "",
        {"calculation": PULL_REVISIT_REASON},
    ),
    (
        "note",
        "revisit_note",
        "该户走访被退回，请重新入户：${revisit_reason}",
        "This household's visit was rejected; visit again: ${revisit_reason}",
        {"relevant": "string-length(${revisit_reason}) > 0"},
    ),
    ("select_one visit_kind", "visit_kind", "走访类型", "Kind of visit", {"required": "yes"}),
    (
        "geopoint",
        "gps",
        "位置（在户内或门口定位）",
        "Location (take it at the home)",
        {"required": "yes"},
    ),
    ("begin_repeat", "members", "家庭成员", "Household member", {}),
    (
        "integer",
        "member_id",
        "成员编号",
        "Member ID",
        {
            "hint_zh": "新成员留空",
            "hint_en": "Leave empty for a new member",
            "constraint": ". > 0",
        },
    ),
    (
        "text",
        "name",
        "姓名",
        "Name",
        {"required": "yes", "constraint": "string-length(.) <= 50"},
    ),
    (
        "decimal",
        "monthly_income",
        "月收入（元）",
        "Monthly income (yuan)",
        {
            "constraint": ". >= 0 and round(., 2) = .",
            "constraint_zh": "不能为负，最多两位小数",
            "constraint_en": "Not negative, at most two decimals",
        },
    ),
    ("image", "portrait", "本人正面照", "Portrait (face the camera)", PHOTO),
    ("end_repeat", "members", "", "", {}),
    (
        "text",
        "housing_notes",
        "住房情况",
        "Housing conditions",
        {"appearance": "multiline", "constraint": "string-length(.) <= 2000"},
    ),
    ("begin_repeat", "housing_photos", "住房照片", "Housing photos", {}),
    ("image", "photo", "照片", "Photo", PHOTO),
    ("end_repeat", "housing_photos", "", "", {}),
    (
        "text",
        "notes",
        "备注",
        "Notes",
        {"appearance": "multiline", "constraint": "string-length(.) <= 4000"},
    ),
]

VISIT_KINDS = [
    ("visit_kind", "initial_survey", "入户调查（新申请）", "Initial survey (new application)"),
    ("visit_kind", "periodic_review", "定期复核", "Periodic review"),
]

SETTINGS = {
    "form_title": "低保入户走访 Household visit",
    "form_id": "household_survey",
    "version": VERSION,
    "default_language": ZH,
    "instance_name": "concat('户 ', ${household_id}, ' ', ${visit_kind})",
}

SURVEY_COLUMNS = [
    ("type", None),
    ("name", None),
    (f"label::{ZH}", "label_zh"),
    (f"label::{EN}", "label_en"),
    (f"hint::{ZH}", "hint_zh"),
    (f"hint::{EN}", "hint_en"),
    ("required", "required"),
    ("relevant", "relevant"),
    ("calculation", "calculation"),
    ("constraint", "constraint"),
    (f"constraint_message::{ZH}", "constraint_zh"),
    (f"constraint_message::{EN}", "constraint_en"),
    ("appearance", "appearance"),
    ("parameters", "parameters"),
]

# A fixed timestamp makes the .xlsx byte-for-byte reproducible (clean diffs).
FIXED_ZIP_TIME = (2026, 1, 1, 0, 0, 0)
FIXED_CORE_TIME = "2026-01-01T00:00:00Z"


def survey_rows() -> list[list[str]]:
    rows: list[list[str]] = [[name for name, _ in SURVEY_COLUMNS]]
    for kind, name, zh, en, extra in HOUSEHOLD_SURVEY:
        values = {"label_zh": zh, "label_en": en, **extra}
        unknown = set(extra) - {key for _, key in SURVEY_COLUMNS if key}
        if unknown:
            raise ValueError(f"{name}: unknown columns {sorted(unknown)}")
        rows.append([kind, name] + [values.get(key, "") for _, key in SURVEY_COLUMNS[2:] if key])
    return rows


def sheets() -> dict[str, list[list[str]]]:
    return {
        "survey": survey_rows(),
        "choices": [["list_name", "name", f"label::{ZH}", f"label::{EN}"]]
        + [list(choice) for choice in VISIT_KINDS],
        "settings": [list(SETTINGS), list(SETTINGS.values())],
    }


def workbook_bytes() -> bytes:
    """The XLSForm as .xlsx bytes, identical from run to run."""
    workbook = Workbook()
    workbook.remove(workbook.active)  # type: ignore[arg-type]
    for title, rows in sheets().items():
        sheet = workbook.create_sheet(title)
        for row in rows:
            sheet.append(row)
    workbook.properties.creator = "scripts/build_forms.py"
    raw = io.BytesIO()
    workbook.save(raw)
    return _reproducible_zip(raw.getvalue())


def _reproducible_zip(data: bytes) -> bytes:
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(data)) as source,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target,
    ):
        for info in source.infolist():
            content = source.read(info.filename)
            if info.filename == "docProps/core.xml":
                text = content.decode("utf-8")
                text = re.sub(
                    r"(<dcterms:(created|modified)[^>]*>)[^<]*(</dcterms:\2>)",
                    rf"\g<1>{FIXED_CORE_TIME}\g<3>",
                    text,
                )
                content = text.encode("utf-8")
            entry = zipfile.ZipInfo(info.filename, date_time=FIXED_ZIP_TIME)
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.external_attr = 0o644 << 16
            target.writestr(entry, content)
    return out.getvalue()


def to_xform(xlsx: bytes) -> str:
    """The XForm pyxform makes of an XLSForm (warnings are errors: fix the form)."""
    warnings: list[str] = []
    result = convert(xlsform=io.BytesIO(xlsx), warnings=warnings, pretty_print=True)
    if warnings:
        raise ValueError("pyxform warnings: " + "; ".join(warnings))
    xform: str = result.xform
    return xform if xform.endswith("\n") else xform + "\n"


def sheet_values(xlsx: bytes) -> dict[str, list[list[Any]]]:
    """Every sheet's cell values (empty cells as ''), for comparing workbooks."""
    workbook = load_workbook(io.BytesIO(xlsx), read_only=True)
    try:
        return {
            sheet.title: [
                ["" if value is None else value for value in row]
                for row in sheet.iter_rows(values_only=True)
            ]
            for sheet in workbook.worksheets
        }
    finally:
        workbook.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check the committed files")
    args = parser.parse_args(argv)
    xlsx = workbook_bytes()
    xform = to_xform(xlsx)
    xlsx_path = FORMS_DIR / "household_survey.xlsx"
    xml_path = FORMS_DIR / "household_survey.xml"
    if args.check:
        stale = []
        if not xlsx_path.is_file() or sheet_values(xlsx_path.read_bytes()) != sheet_values(xlsx):
            stale.append(str(xlsx_path))
        if not xml_path.is_file() or xml_path.read_text(encoding="utf-8") != xform:
            stale.append(str(xml_path))
        for path in stale:
            print(f"stale: {path} (run scripts/build_forms.py)", file=sys.stderr)
        return 1 if stale else 0
    FORMS_DIR.mkdir(exist_ok=True)
    xlsx_path.write_bytes(xlsx)
    xml_path.write_text(xform, encoding="utf-8")
    print(f"wrote {xlsx_path} and {xml_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
