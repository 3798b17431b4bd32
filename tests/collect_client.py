"""A client that does over HTTP what ODK Collect (v2023-2025, OkHttp + okhttp-digest)
does, written from Collect's sources, independently of the server's code:

- every request says ``X-OpenRosa-Version: 1.0``; the submission URL carries
  ``?deviceID=...``;
- the first request goes without credentials; a 401 is answered with the first of its
  challenges (one per WWW-Authenticate header, in order) whose scheme is known:
  ``Digest`` always, ``Basic`` only when the URL is https (Collect registers its Basic
  authenticator only then);
- Basic credentials are encoded as ISO-8859-1 (OkHttp's ``Credentials.basic``: a
  character outside it becomes "?");
- Digest (RFC 7616): the first header starting with "Digest"; ``qop=auth``; HA1 from
  the username, realm and password in the challenge's charset; a new cnonce per
  nonce, nc counting up; once answered, later requests carry the answer up front with
  the next nc (okhttp-digest's authentication cache); a second 401 for the same nonce
  is given up unless it says ``stale=true``; a username OkHttp cannot put in a header
  (not ASCII) fails on the device;
- a submission is HEAD (204 and X-OpenRosa-Accept-Content-Length), then POSTs: the
  XML and as many files as fit the advertised size, ``*isIncomplete*=yes`` on all but
  the last; a POST not answered 201 or 202 ends the upload.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

OPENROSA = {"X-OpenRosa-Version": "1.0"}
DEFAULT_ACCEPT_LENGTH = 10_000_000  # Collect's default without the HEAD's header


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


# (method, path with query, headers, body) -> Reply
Transport = Callable[[str, str, dict[str, str], bytes | None], Reply]


class DeviceRefused(Exception):
    """What OkHttp raises before sending: a header value that is not ASCII."""


_PARAM = re.compile(r'\s*([A-Za-z0-9_*-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)\s*,?')


def parse_challenge(value: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = value.strip().partition(" ")
    params = {}
    for match in _PARAM.finditer(rest):
        raw = match.group(2)
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params[match.group(1).lower()] = raw
    return scheme, params


def digest_response(
    *,
    algorithm: str,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    nc: str,
    cnonce: str,
    charset: str = "ISO-8859-1",
) -> str:
    """RFC 7616 3.4.1 with qop=auth, for MD5 and SHA-256."""

    def h(text: str) -> str:
        data = text.encode(charset, "replace")
        if algorithm.upper() == "SHA-256":
            return hashlib.sha256(data).hexdigest()
        return hashlib.md5(data).hexdigest()  # noqa: S324  the protocol's

    ha1 = h(f"{username}:{realm}:{password}")
    ha2 = h(f"{method}:{uri}")
    return h(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")


@dataclass
class CollectClient:
    transport: Transport
    username: str
    password: str
    https: bool = False
    device_id: str = "collect:ab12cd34ef56"
    # What the client did, for tests to look at: (method, path, status, auth scheme sent).
    log: list[tuple[str, str, int, str]] = field(default_factory=list)
    _digest: dict[str, str] | None = None
    _nc: int = 0
    _cnonce: str = ""
    _basic: bool = False

    # -- one request with Collect's authentication --------------------------------

    def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> Reply:
        sent = {**OPENROSA, **(headers or {})}
        auth = self._cached(method, path)
        if auth:
            sent["Authorization"] = auth
        reply = self._send(method, path, sent, body)
        if reply.status != 401:
            return reply
        answer = self._answer(reply, method, path, previous=sent.get("Authorization"))
        if answer is None:
            return reply
        return self._send(method, path, {**sent, "Authorization": answer}, body)

    def _send(self, method: str, path: str, headers: dict[str, str], body: bytes | None) -> Reply:
        for value in headers.values():
            if not value.isascii():
                raise DeviceRefused(f"Unexpected char in header value: {value!r}")
        reply = self.transport(method, path, headers, body)
        scheme = headers.get("Authorization", "none").partition(" ")[0]
        self.log.append((method, path, reply.status, scheme))
        return reply

    def _cached(self, method: str, path: str) -> str | None:
        if self._digest is not None:
            return self._digest_header(method, path)
        if self._basic:
            return self._basic_header()
        return None

    def _answer(self, reply: Reply, method: str, path: str, previous: str | None) -> str | None:
        for value in reply.all("WWW-Authenticate"):
            scheme, params = parse_challenge(value)
            if scheme.lower() == "digest":
                stale = params.get("stale", "").lower() == "true"
                if previous and previous.startswith("Digest") and not stale:
                    return None  # okhttp-digest: the same credentials would fail again
                # okhttp-digest takes the first header that starts with "Digest".
                first = next(v for v in reply.all("WWW-Authenticate") if v.startswith("Digest"))
                self._digest = parse_challenge(first)[1]
                self._nc, self._cnonce = 0, ""
                self._basic = False
                return self._digest_header(method, path)
            if scheme.lower() == "basic" and self.https:
                if previous and previous.startswith("Basic"):
                    return None
                self._basic, self._digest = True, None
                return self._basic_header()
        return None

    def _basic_header(self) -> str:
        import base64

        raw = f"{self.username}:{self.password}".encode("iso-8859-1", "replace")
        return "Basic " + base64.b64encode(raw).decode("ascii")

    def _digest_header(self, method: str, path: str) -> str:
        challenge = self._digest or {}
        if not self._cnonce:
            self._cnonce = os.urandom(8).hex()
        self._nc += 1
        nc = f"{self._nc:08x}"
        algorithm = challenge.get("algorithm", "MD5")
        response = digest_response(
            algorithm=algorithm,
            username=self.username,
            realm=challenge["realm"],
            password=self.password,
            method=method,
            uri=path,
            nonce=challenge["nonce"],
            nc=nc,
            cnonce=self._cnonce,
            charset=challenge.get("charset", "ISO-8859-1"),
        )
        return (
            f'Digest username="{self.username}", realm="{challenge["realm"]}", '
            f'nonce="{challenge["nonce"]}", uri="{path}", response="{response}", '
            f'qop=auth, nc={nc}, cnonce="{self._cnonce}", algorithm={algorithm}'
        )

    # -- what Collect does with them ----------------------------------------------

    def form_list(self) -> Reply:
        return self.request("GET", "/openrosa/formList")

    def submit(self, xml: bytes, files: dict[str, bytes]) -> list[Reply]:
        """Send one finalized form as Collect's InstanceServerUploader does."""
        url = f"/openrosa/submission?deviceID={self.device_id.replace(':', '%3A')}"
        head = self.request("HEAD", url)
        if head.status != 204:
            return [head]
        advertised = head.header("X-OpenRosa-Accept-Content-Length")
        limit = int(advertised) if advertised else DEFAULT_ACCEPT_LENGTH
        names = list(files)
        replies: list[Reply] = []
        index, first = 0, True
        while index < len(names) or first:
            first = False
            start, count = index, len(xml)
            parts: list[tuple[str, str, bytes, str]] = [
                ("xml_submission_file", "submission.xml", xml, "text/xml")
            ]
            incomplete = False
            while index < len(names):
                name = names[index]
                parts.append((name, name, files[name], "image/jpeg"))
                count += len(files[name])
                if index + 1 < len(names) and (
                    index - start + 1 > 100 or count + len(files[names[index + 1]]) > limit
                ):
                    incomplete = True
                    index += 1
                    break
                index += 1
            reply = self.post_parts(url, parts, incomplete=incomplete)
            replies.append(reply)
            if reply.status not in (201, 202):
                break
        return replies

    def post_parts(
        self, url: str, parts: list[tuple[str, str, bytes, str]], *, incomplete: bool
    ) -> Reply:
        boundary = uuid.uuid4().hex
        chunks: list[bytes] = []
        for name, file_name, content, content_type in parts:
            chunks.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                f'filename="{file_name}"\r\nContent-Type: {content_type}\r\n'
                f"Content-Length: {len(content)}\r\n\r\n".encode()
            )
            chunks.append(content + b"\r\n")
        if incomplete:
            chunks.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="*isIncomplete*"\r\n'
                f"Content-Length: 3\r\n\r\nyes\r\n".encode()
            )
        chunks.append(f"--{boundary}--\r\n".encode())
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        return self.request("POST", url, headers, b"".join(chunks))


def flask_transport(client: Any, *, https: bool = False) -> Transport:
    """Requests through a Flask test client (base URL http or https://localhost)."""
    base = "https://localhost" if https else "http://localhost"

    def send(method: str, path: str, headers: dict[str, str], body: bytes | None) -> Reply:
        response = client.open(path, method=method, headers=headers, data=body, base_url=base)
        return Reply(response.status_code, list(response.headers.items()), response.data)

    return send


def http_transport(host: str, port: int) -> Transport:
    """Requests over a real socket (http.client), for a server in another process."""
    import http.client

    def send(method: str, path: str, headers: dict[str, str], body: bytes | None) -> Reply:
        connection = http.client.HTTPConnection(host, port, timeout=60)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return Reply(response.status, response.getheaders(), response.read())
        finally:
            connection.close()

    return send
