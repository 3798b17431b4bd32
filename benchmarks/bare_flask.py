"""The baseline of benchmarks/public.py and benchmarks/openrosa.py: a bare Flask app
served by gunicorn with the same settings as dibao.

    gunicorn --workers 2 --pythonpath benchmarks bare_flask:app

``GET /bare`` (what public.py loads) and ``/healthz`` (the readiness probe of
upload.start_server) answer a small JSON document. ``POST /openrosa/submission``
(openrosa.py) has Flask parse the multipart body, reads every part and answers 201
with an OpenRosa message, as a submission endpoint that does nothing else would.
No database, no extensions, no templates, no login.
"""

from __future__ import annotations

from flask import Flask, Response, jsonify, request

app = Flask(__name__)


@app.get("/bare")
@app.get("/healthz")
def ok() -> Response:
    return jsonify({"ok": True})


@app.post("/openrosa/submission")
def submission() -> Response:
    size = sum(len(part.read()) for part in request.files.values())
    body = (
        '<OpenRosaResponse xmlns="http://openrosa.org/http/response">'
        f'<message nature="submit_success">received {size} bytes</message></OpenRosaResponse>'
    )
    return Response(body, status=201, content_type="text/xml; charset=utf-8")
