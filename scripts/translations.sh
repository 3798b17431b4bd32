#!/usr/bin/env bash
# Translation workflow for dibao (Flask-Babel; msgids are English, zh_CN is primary).
#
#   scripts/translations.sh extract   re-extract server/, mobile_api/, sms/ into
#                                     server/translations/messages.pot, then update
#                                     the Chinese (zh_CN) and English catalogs from it
#   scripts/translations.sh compile   compile every messages.po into messages.mo
#                                     (the .mo files are committed)
#   scripts/translations.sh check     fail if a source string is missing from the
#                                     Chinese catalog, a Chinese entry is untranslated,
#                                     fuzzy or has a bad format string, or a committed
#                                     .mo does not match its .po
#
# Usual cycle after changing a user-facing string: extract, translate the new or
# fuzzy entries in server/translations/zh_Hans_CN/LC_MESSAGES/messages.po, compile, check.
#
# Why zh_Hans_CN and not zh_CN: Flask-Babel turns the selected locale into a
# babel.Locale, and Locale.parse("zh_CN") is zh_Hans_CN (likely subtags), which is
# the directory name gettext then looks for (then "zh"). A zh_CN directory is never
# found. The app still selects it as "zh_CN" (LANGUAGES, ?lang=zh_CN).
#
# Environment: PYTHON (default .venv/bin/python, else python3) runs Babel;
# DIBAO_TRANSLATIONS_DIR (default server/translations) is the catalog directory
# that "check" inspects, so the tests can point it at a damaged copy.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$ROOT/.venv/bin/python" ]]; then
        PYTHON="$ROOT/.venv/bin/python"
    else
        PYTHON="python3"
    fi
fi

TRANSLATIONS_DIR="server/translations"
POT="$TRANSLATIONS_DIR/messages.pot"
PRIMARY=zh_Hans_CN  # Simplified Chinese, the default locale; must be fully translated
LOCALES=("$PRIMARY" en)
# Flask-Babel's lazy variants on top of Babel's default keywords (_, gettext, ngettext, ...).
KEYWORDS=(-k _l -k lazy_gettext -k "lazy_ngettext:1,2" -k "lazy_pgettext:1c,2")

# pybabel with the same interpreter, keeping its exit status
# (python -m babel.messages.frontend discards it).
pybabel() {
    "$PYTHON" -c 'import sys; from babel.messages.frontend import main; sys.argv[0] = "pybabel"; sys.exit(main())' "$@"
}

project_version() {
    "$PYTHON" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])'
}

# extract_to OUTPUT: the source strings of server/, mobile_api/ and sms/ (babel.cfg limits "." to them).
extract_to() {
    mkdir -p "$(dirname "$1")"
    pybabel -q extract -F babel.cfg "${KEYWORDS[@]}" --add-comments=TRANSLATORS: \
        --project=dibao --version="$(project_version)" --copyright-holder="dibao" \
        -o "$1" .
}

cmd_extract() {
    extract_to "$POT"
    for locale in "${LOCALES[@]}"; do
        local po="$TRANSLATIONS_DIR/$locale/LC_MESSAGES/messages.po"
        if [[ -f "$po" ]]; then
            if [[ "$locale" == en ]]; then
                # English is the msgid itself: no fuzzy guesses to clean up.
                pybabel update -i "$POT" -d "$TRANSLATIONS_DIR" -l "$locale" --no-fuzzy-matching
            else
                pybabel update -i "$POT" -d "$TRANSLATIONS_DIR" -l "$locale"
            fi
        else
            pybabel init -i "$POT" -d "$TRANSLATIONS_DIR" -l "$locale"
        fi
    done
    echo "Now translate the new and fuzzy entries of $TRANSLATIONS_DIR/$PRIMARY/LC_MESSAGES/messages.po, then run: $0 compile"
}

cmd_compile() {
    pybabel compile -d "$TRANSLATIONS_DIR" --statistics
}

cmd_check() {
    local dir="${DIBAO_TRANSLATIONS_DIR:-$TRANSLATIONS_DIR}"
    local tmp
    tmp="$(mktemp -d)"
    # shellcheck disable=SC2064  # expand now: $tmp is local
    trap "rm -rf '$tmp'" EXIT

    extract_to "$tmp/messages.pot"
    for locale in "${LOCALES[@]}"; do
        local po="$dir/$locale/LC_MESSAGES/messages.po"
        if [[ ! -f "$po" ]]; then
            echo "check: missing $po" >&2
            return 1
        fi
        if ! pybabel -q compile -i "$po" -o "$tmp/$locale.mo" -l "$locale" >"$tmp/$locale.log" 2>&1; then
            cat "$tmp/$locale.log" >&2
            echo "check: $po does not compile" >&2
            return 1
        fi
    done

    "$PYTHON" - "$tmp" "$dir" "$PRIMARY" "${LOCALES[@]}" <<'PY'
import sys
from pathlib import Path

from babel.messages import mofile, pofile

tmp, catalog_dir, primary, locales = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4:]
problems = []


def entries(catalog):
    """The messages proper (not the header), keyed like gettext looks them up."""
    return {(m.id, m.context): m for m in catalog if m.id}


def show(key):
    msgid, context = key
    text = repr(msgid)
    return f"{text} (context {context!r})" if context else text


with open(tmp / "messages.pot", "rb") as f:
    source = entries(pofile.read_po(f))

for locale in locales:
    po_path = catalog_dir / locale / "LC_MESSAGES" / "messages.po"
    with open(po_path, "rb") as f:
        catalog = pofile.read_po(f, locale=locale)
    translated = entries(catalog)

    if locale == primary:
        if catalog.fuzzy:
            problems.append(f"{po_path}: the catalog header is marked fuzzy")
        for key in sorted(source.keys() - translated.keys(), key=str):
            problems.append(f"{po_path}: missing {show(key)} (run scripts/translations.sh extract)")
        for key, message in translated.items():
            strings = message.string if isinstance(message.string, tuple) else (message.string,)
            if not all(strings):
                problems.append(f"{po_path}: untranslated {show(key)}")
            elif message.fuzzy:
                problems.append(f"{po_path}: fuzzy {show(key)}")
        for message, errors in catalog.check():
            for error in errors:
                problems.append(f"{po_path}: {show((message.id, message.context))}: {error}")

    # The committed .mo must hold what compiling the committed .po gives. Compare the
    # parsed catalogs, not bytes (the header records the compiling Babel's version).
    mo_path = po_path.with_suffix(".mo")
    if not mo_path.is_file():
        problems.append(f"{mo_path}: missing (run scripts/translations.sh compile)")
        continue
    with open(mo_path, "rb") as f:
        committed = mofile.read_mo(f)
    with open(tmp / f"{locale}.mo", "rb") as f:
        fresh = mofile.read_mo(f)

    def content(cat):
        messages = {key: m.string for key, m in entries(cat).items()}
        return messages, cat.plural_forms, cat.charset

    if content(committed) != content(fresh):
        problems.append(f"{mo_path}: out of date with its .po (run scripts/translations.sh compile)")

for problem in problems:
    print(problem, file=sys.stderr)
if problems:
    print(f"check: {len(problems)} problem(s)", file=sys.stderr)
    sys.exit(1)
print(f"check: {len(source)} source strings, catalogs and compiled files are consistent")
PY
}

case "${1:-}" in
    extract) cmd_extract ;;
    compile) cmd_compile ;;
    check) cmd_check ;;
    *)
        echo "usage: $0 {extract|compile|check}" >&2
        exit 2
        ;;
esac
