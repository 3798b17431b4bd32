"""Browser-facing safety headers, set on every answer in one place (docs/operations.md,
"Browser and transport safety").

A view may set its own value first (the recipients' page ``/m/<token>`` widens the
policy for its camera; the public pages are cacheable): the hook only fills in what
is missing, except ``nosniff`` and the frame denial, which no answer may go without.
"""

from __future__ import annotations

from flask import Flask, Response, request

# The whole application serves its own scripts and styles and nothing inline: the only
# <script> elements with a body are JSON data blocks, which browsers never execute.
PAGE_POLICY: dict[str, str] = {
    "default-src": "'self'",
    "img-src": "'self' data:",
    "style-src": "'self'",
    "script-src": "'self'",
    "connect-src": "'self'",
    "object-src": "'none'",
    "base-uri": "'none'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
}

# Addresses that carry a secret in their path or query (the monthly link token, a
# one-time password link): a browser must never send them on to another site as a
# Referer.
TOKEN_PATHS = ("/m/", "/api/v1/proof-of-life/", "/set-password/", "/public/objections/")

HSTS = "max-age=31536000"
PERMISSIONS = "camera=(), microphone=(), geolocation=()"


def content_security_policy(**directives: str) -> str:
    """The page policy with some directives replaced or added (``img_src="..."`` for
    ``img-src``)."""
    policy = dict(PAGE_POLICY)
    for name, sources in directives.items():
        policy[name.replace("_", "-")] = sources
    return "; ".join(f"{name} {sources}" for name, sources in policy.items())


DEFAULT_POLICY = content_security_policy()


def add_security_headers(response: Response) -> Response:
    headers = response.headers
    headers.setdefault("Content-Security-Policy", DEFAULT_POLICY)
    headers["X-Content-Type-Options"] = "nosniff"
    # frame-ancestors for current browsers, X-Frame-Options for the old ones on
    # recipients' phones.
    headers["X-Frame-Options"] = "DENY"
    referrer = "no-referrer" if request.path.startswith(TOKEN_PATHS) else "same-origin"
    headers.setdefault("Referrer-Policy", referrer)
    headers.setdefault("Permissions-Policy", PERMISSIONS)
    if request.is_secure:
        # Only over HTTPS (behind a proxy: as ProxyFix reports it): a browser ignores
        # the header on plain HTTP, and a demo on http://127.0.0.1 must stay reachable.
        headers["Strict-Transport-Security"] = HSTS
    if "Cache-Control" not in headers and request.endpoint != "static":
        # Staff pages and API answers carry personal data: no cache, private or shared,
        # keeps a copy. Answers meant to be cached (the public pages, static files) say so.
        headers["Cache-Control"] = "no-store"
    return response


def register(app: Flask) -> None:
    app.after_request(add_security_headers)
