"""Translation catalogs: complete, consistent with the source and the compiled files.

Needs neither the Flask app nor a database. A user-facing string added to the code
without running ``scripts/translations.sh extract``, translating it and running
``scripts/translations.sh compile`` fails ``test_translations_check_passes``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from babel import Locale
from babel.messages import pofile
from babel.messages.catalog import Catalog
from babel.support import Translations

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "translations.sh"
TRANSLATIONS = ROOT / "server" / "translations"
# Flask-Babel looks a selected "zh_CN" up as Locale.parse("zh_CN") == zh_Hans_CN.
ZH_PO = TRANSLATIONS / "zh_Hans_CN" / "LC_MESSAGES" / "messages.po"

# A %-conversion as Python's % operator (and Jinja's newstyle gettext) reads it,
# including "%%": the translation must carry exactly the msgid's conversions.
PYTHON_FORMAT = re.compile(
    r"%(?:\((?P<name>[^)]*)\))?[-#0 +]*(?:\*|\d+)?(?:\.(?:\*|\d+))?[hlL]?[diouxXeEfFgGcrsa%]"
)


def _run_check(translations_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    bash = shutil.which("bash")
    assert bash is not None, "bash is needed to run scripts/translations.sh"
    env = dict(os.environ, PYTHON=sys.executable)
    if translations_dir is not None:
        env["DIBAO_TRANSLATIONS_DIR"] = str(translations_dir)
    return subprocess.run(
        [bash, str(SCRIPT), "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _read_zh(path: Path = ZH_PO) -> Catalog:
    with path.open("rb") as f:
        return pofile.read_po(f, locale="zh_CN")


def _placeholders(text: str) -> Counter[str]:
    return Counter(match.group(0) for match in PYTHON_FORMAT.finditer(text))


@pytest.mark.slow
def test_translations_check_passes() -> None:
    result = _run_check()
    assert result.returncode == 0, f"scripts/translations.sh check failed:\n{result.stderr}"


def test_every_chinese_entry_is_translated_with_the_same_placeholders() -> None:
    catalog = _read_zh()
    messages = [m for m in catalog if m.id]
    assert messages, f"{ZH_PO} has no messages"
    problems = []
    for message in messages:
        # plural entries carry tuples; compare each form with the plural msgid
        msgid = str(message.id[-1] if isinstance(message.id, tuple) else message.id)
        raw = message.string
        strings = [str(s or "") for s in raw] if isinstance(raw, (tuple, list)) else [raw or ""]
        expected = _placeholders(msgid)
        for string in strings:
            if not string.strip():
                problems.append(f"untranslated: {message.id!r}")
            elif _placeholders(string) != expected:
                problems.append(
                    f"placeholders differ: {message.id!r} -> {string!r}"
                    f" ({sorted(expected)} vs {sorted(_placeholders(string))})"
                )
    assert not problems, "\n".join(problems)


def test_state_labels_follow_the_civil_affairs_glossary() -> None:
    glossary = {
        "Applied": "已申请",
        "Accepted": "已受理",
        "Surveyed": "已入户调查",
        "Township reviewed": "乡镇已审核",
        "In public notice": "公示中",
        "Active": "保障中",
        "Rejected": "不予批准",
        "Case code": "案件编号",
    }
    catalog = _read_zh()
    actual = {msgid: getattr(catalog.get(msgid), "string", None) for msgid in glossary}
    assert actual == glossary


@pytest.mark.parametrize(("selected", "expected"), [("zh_CN", "保障中"), ("en", "Active")])
def test_catalogs_are_found_the_way_flask_babel_looks_them_up(selected: str, expected: str) -> None:
    # flask_babel.Domain.get_translations: Translations.load(dir, [Locale.parse(selected)])
    translations = Translations.load(str(TRANSLATIONS), [Locale.parse(selected)], "messages")
    assert isinstance(translations, Translations), f"no compiled catalog found for {selected}"
    assert translations.gettext("Active") == expected


ACTIVE_ZH = 'msgid "Active"\nmsgstr "保障中"\n'


@pytest.mark.slow
@pytest.mark.parametrize(
    ("locale", "new", "complaint"),
    [
        ("zh_Hans_CN", 'msgid "Active"\nmsgstr ""\n', "untranslated 'Active'"),
        ("zh_Hans_CN", "#, fuzzy\n" + ACTIVE_ZH, "fuzzy 'Active'"),
        ("zh_Hans_CN", "", "missing 'Active'"),
        # en: a translation added to the .po but not compiled into the committed .mo
        ("en", 'msgid "Active"\nmsgstr "On"\n', "en/LC_MESSAGES/messages.mo: out of date"),
    ],
)
def test_check_fails_on_a_damaged_copy(
    locale: str, new: str, complaint: str, tmp_path: Path
) -> None:
    copy = tmp_path / "translations"
    shutil.copytree(TRANSLATIONS, copy)
    po = copy / locale / "LC_MESSAGES" / "messages.po"
    old = ACTIVE_ZH if locale == "zh_Hans_CN" else 'msgid "Active"\nmsgstr ""\n'
    text = po.read_text(encoding="utf-8")
    assert text.count(old) == 1
    po.write_text(text.replace(old, new), encoding="utf-8")

    result = _run_check(copy)
    assert result.returncode != 0
    assert complaint in result.stderr
