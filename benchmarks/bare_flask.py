"""The baseline of benchmarks/public.py: a bare Flask app with one view answering a
small JSON document, served by gunicorn with the same settings as dibao.

    gunicorn --workers 2 --pythonpath benchmarks bare_flask:app

The view answers both /bare (what the benchmark loads) and /healthz (the readiness
probe of upload.start_server). No database, no extensions, no templates.
"""

from __future__ import annotations

from flask import Flask, Response, jsonify

app = Flask(__name__)


@app.get("/bare")
@app.get("/healthz")
def ok() -> Response:
    return jsonify({"ok": True})
