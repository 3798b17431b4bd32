"""WSGI entry point for gunicorn: ``gunicorn -c deploy/gunicorn.conf.py server.wsgi:app``.

The proxies in front are trusted as DIBAO_TRUSTED_PROXIES says (``create_app``).
"""

from server import create_app
from server.visits import background

app = create_app()
# Without a broker: the background thread of the photo work, whose first sweep takes up
# what a dead worker left pending (each gunicorn worker imports this module after the
# fork; with --preload, a worker starts its own thread at its first upload).
background.start(app)
