"""WSGI entry point for gunicorn: ``gunicorn -c deploy/gunicorn.conf.py server.wsgi:app``.

The proxies in front are trusted as DIBAO_TRUSTED_PROXIES says (``create_app``).
"""

from server import create_app

app = create_app()
