"""gunicorn for dibao behind nginx (deploy/nginx-dibao.conf, docs/operations.md):

    gunicorn -c deploy/gunicorn.conf.py server.wsgi:app

Sync workers are right behind a buffering proxy: nginx hands a worker a request only
once the whole body has arrived and takes the answer at once, so no worker ever
waits on a slow phone. Never expose these workers directly to clients: eight
connections that declare a large body and send it slowly would hold every one.
"""

import multiprocessing

bind = "127.0.0.1:8000"
# One per core, plus one to cover a worker blocked on the database or a disk sync.
workers = multiprocessing.cpu_count() + 1
worker_class = "sync"
# A proof-of-life check judges its frames within the request (nginx waits 180 s).
timeout = 180
graceful_timeout = 30
keepalive = 5
# The client's scheme and address are taken by the app (ProxyFix, set by
# DIBAO_TRUSTED_PROXIES) and nowhere else: gunicorn's own X-Forwarded-Proto handling
# is switched off so that one setting decides what is trusted.
secure_scheme_headers: dict[str, str] = {}
forwarded_allow_ips = ""
