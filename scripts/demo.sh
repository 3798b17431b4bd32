#!/usr/bin/env bash
# Set everything up and run the service with demo data on the embedded defaults
# (SQLite in ./instance, demo-only secrets generated there) at http://127.0.0.1:5000.
# Extra arguments go to `dibao demo` (for example --port 8000).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/dibao demo "$@"
