#!/usr/bin/env bash
# Create or refresh the project's virtual environment in .venv (idempotent).
# Needs only Python 3.11+ on PATH; everything else comes from PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
"$PYTHON" - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"dibao needs Python 3.11 or newer, found {sys.version.split()[0]}")
PY

if [ ! -x .venv/bin/python ]; then
    echo "creating .venv with $("$PYTHON" --version)"
    "$PYTHON" -m venv .venv
fi

# Reinstall only when the dependency list changed.
stamp=.venv/.dibao-installed
wanted="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ] || ! .venv/bin/python -c "import server" 2>/dev/null; then
    echo "installing dibao and its dependencies into .venv"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
    # face_recognition declares a dependency on dlib, which would compile for many
    # minutes; dlib-bin (a prebuilt wheel, in pyproject) provides the same module.
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps \
        'face_recognition==1.3.0'
    echo "$wanted" > "$stamp"
fi

# Printable notices (docs/public.md, "Printable notices"): WeasyPrint draws with Pango
# and sets the text in Noto Sans CJK, which every notice PDF embeds. Debian packages:
# libpango-1.0-0 libpangoft2-1.0-0 fonts-noto-cjk. Installed here when run as root.
missing=()
ldconfig -p 2>/dev/null | grep -q 'libpango-1.0.so.0' || missing+=(libpango-1.0-0)
ldconfig -p 2>/dev/null | grep -q 'libpangoft2-1.0.so.0' || missing+=(libpangoft2-1.0-0)
[ -f /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc ] || missing+=(fonts-noto-cjk)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing Debian's ${missing[*]} for the printable notices"
        apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null \
            || { apt-get update >/dev/null && apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; }
    else
        echo "the printable notices (PDF) need ${missing[*]}: run 'apt-get install ${missing[*]}' as root" >&2
    fi
fi
