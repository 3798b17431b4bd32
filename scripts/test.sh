#!/usr/bin/env bash
# Set everything up and run every check: lint, types, translations, and the test
# suite twice, on SQLite and on PostgreSQL (a fresh database is created for the run).
#   DIBAO_TEST_POSTGRES  PostgreSQL server URL (default postgresql://postgres@127.0.0.1:5432)
# Extra arguments go to both pytest runs (for example -x or -k workflow).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The page tests drive Debian's Chromium headless (never a downloaded browser); the
# slow-client test runs the production nginx site in front of gunicorn; the console's
# browser test reads Chinese text on screenshots (OCR), which needs a CJK font.
for need in /usr/bin/chromium:chromium /usr/sbin/nginx:nginx \
    /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc:fonts-noto-cjk \
    /usr/bin/tesseract:tesseract-ocr \
    /usr/share/tesseract-ocr/5/tessdata/chi_sim.traineddata:tesseract-ocr-chi-sim; do
    path="${need%%:*}" package="${need##*:}"
    if [ ! -x "$path" ]; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            echo "installing Debian's $package for the tests"
            apt-get install -y --no-install-recommends "$package" >/dev/null \
                || { apt-get update >/dev/null && apt-get install -y --no-install-recommends "$package" >/dev/null; }
        else
            echo "the tests need $path: run 'apt-get install $package' as root" >&2
            exit 1
        fi
    fi
done

postgres="${DIBAO_TEST_POSTGRES:-postgresql://postgres@127.0.0.1:5432}"
start=$(date +%s)

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy"
.venv/bin/mypy
echo "== import contracts"
.venv/bin/lint-imports
echo "== translations"
bash scripts/translations.sh check

echo "== pytest on SQLite"
DIBAO_TEST_DATABASE=sqlite .venv/bin/pytest -q -p no:cacheprovider "$@"

echo "== pytest on PostgreSQL ($postgres)"
if ! .venv/bin/python -c "import psycopg,sys; psycopg.connect(sys.argv[1] + '/postgres', connect_timeout=5).close()" "$postgres"; then
    echo "PostgreSQL is not reachable at $postgres; start it or set DIBAO_TEST_POSTGRES." >&2
    exit 1
fi
DIBAO_TEST_DATABASE="$postgres" .venv/bin/pytest -q -p no:cacheprovider "$@"

echo "== all checks passed in $(( $(date +%s) - start )) s"
