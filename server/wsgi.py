"""WSGI entry point for gunicorn: ``gunicorn 'server.wsgi:app'``."""

from werkzeug.middleware.proxy_fix import ProxyFix

from server import create_app

app = create_app()
# One trusted proxy (nginx) in front: take the client address and scheme from it.
app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1)  # type: ignore[method-assign]
