"""JSON from clients, read within limits: at most MAX_BYTES, at most MAX_DEPTH levels of
nesting, no NaN or Infinity, no NUL and no lone surrogate in a string.

Python's parser recurses once per level: a body nested a few thousand deep raises
RecursionError, which is no ValueError, so neither Flask's ``get_json(silent=True)`` nor
a view's error handling sees it (and a pydantic model or ``json.dumps`` of a body deeper
than a few hundred fails the same way later). A scan before the parser measures the
nesting outside strings with a few numpy passes over the bytes (no recursion, no Python
loop), so a body too deep never reaches the parser; a body with at most MAX_DEPTH
brackets, most of them, is not scanned at all.

The app's JSON provider reads through :func:`loads`, so ``request.get_json`` (the views,
Flask-WTF, the rate limiter's key functions) is covered; code that reads JSON from a
multipart field calls :func:`loads` itself. The errors are ``ValueError`` (so
``get_json(silent=True)`` still answers None) and domain errors with a stable code.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np
from flask import Request
from flask.json.provider import DefaultJSONProvider

from server.errors import DomainError

MAX_DEPTH = 64
MAX_BYTES = 4 * 1024 * 1024

# An escape in a JSON string (``\\"`` must not count as a quote).
_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_QUOTE = ord('"')
_NOT_STRUCTURE = bytes(c for c in range(256) if c not in b'"[]{}')
_STEP = np.zeros(256, dtype=np.int8)
_STEP[[ord("["), ord("{")]] = 1
_STEP[[ord("]"), ord("}")]] = -1
_NUL_OR_SURROGATE = re.compile("[\x00\ud800-\udfff]")


class JSONRefused(DomainError, ValueError):
    """A JSON text outside the limits; a ValueError, as any unreadable JSON is."""


class JSONTooDeep(JSONRefused):
    code = "json_too_deep"
    http_status = 400


class JSONTooLarge(JSONRefused):
    code = "json_too_large"
    http_status = 413


class JSONValueRefused(JSONRefused):
    """Valid to Python's parser, but no value the service can keep."""

    code = "validation_failed"
    http_status = 422


def loads(data: str | bytes | bytearray, **kwargs: Any) -> Any:
    """``json.loads`` within the limits; JSONRefused (a ValueError) says which one."""
    if len(data) > MAX_BYTES:
        raise JSONTooLarge(f"the JSON body is larger than {MAX_BYTES} bytes", limit=MAX_BYTES)
    if isinstance(data, str):
        text, raw = data, None
    else:
        encoding = json.detect_encoding(data)
        text = bytes(data).decode(encoding, "surrogatepass")
        raw = bytes(data) if encoding == "utf-8" else None
    # The brackets bound the depth: most bodies have too few to need the scan.
    if text.count("[") + text.count("{") > MAX_DEPTH and (
        nesting(raw if raw is not None else text.encode("utf-8", "surrogatepass")) > MAX_DEPTH
    ):
        raise JSONTooDeep(
            f"the JSON body is nested deeper than {MAX_DEPTH} levels", limit=MAX_DEPTH
        )
    kwargs.setdefault("parse_constant", _refuse_constant)
    kwargs.setdefault("parse_float", _finite_float)
    value = json.loads(text, **kwargs)
    # Only an escape can put NUL or a surrogate in a parsed string: look when one is there.
    if "\\u" in text and (where := _refused_text_at(value)) is not None:
        raise JSONValueRefused(
            f"{where or 'the body'}: a NUL character or a lone surrogate", field=where or None
        )
    return value


def nesting(raw: bytes) -> int:
    """The deepest nesting of arrays and objects in UTF-8 JSON text, brackets inside
    strings left out, without recursion nor a Python loop: escapes dropped, everything
    but quotes and brackets dropped (``bytes.translate``), then in numpy a running count
    of quotes tells inside from outside and a running sum of +1/-1 over the brackets
    outside gives the depth. (UTF-8 continuation bytes are never ASCII, so a byte that
    looks like a bracket or a quote is one.)"""
    if b"\\" in raw:
        raw = _ESCAPE.sub(b"", raw)
    codes = np.frombuffer(raw.translate(None, _NOT_STRUCTURE), dtype=np.uint8)
    outside = (np.cumsum(codes == _QUOTE, dtype=np.int64) & 1) == 0
    steps = np.where(outside, _STEP[codes], 0)
    return int(np.cumsum(steps, dtype=np.int64).max(initial=0))


def _refuse_constant(name: str) -> Any:
    raise JSONValueRefused(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JSONValueRefused(f"{text[:20]} is out of range for a number")
    return value


def _refused_text_at(value: Any, where: str = "") -> str | None:
    """Where (a dotted path, as validation errors name fields) a string holds NUL or a
    lone surrogate; None if none does. Depth is bounded by MAX_DEPTH: recursion is safe."""
    if isinstance(value, str):
        return where if _NUL_OR_SURROGATE.search(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{where}.{key}" if where else str(key)
            if _NUL_OR_SURROGATE.search(key):
                return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in path)
            if (found := _refused_text_at(item, path)) is not None:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            path = f"{where}.{index}" if where else str(index)
            if (found := _refused_text_at(item, path)) is not None:
                return found
    return None


class GuardedJSONProvider(DefaultJSONProvider):
    """Flask's JSON, with every ``loads`` (request bodies first) within the limits."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return loads(s, **kwargs)


class GuardedJSONRequest(Request):
    """A declared body over the limit is refused before it is read into memory, and a
    body refused by :func:`loads` keeps its own error (not Flask's generic 400)."""

    def get_json(self, force: bool = False, silent: bool = False, cache: bool = True) -> Any:
        if (force or self.is_json) and (self.content_length or 0) > MAX_BYTES:
            if silent:
                return None
            raise JSONTooLarge(f"the JSON body is larger than {MAX_BYTES} bytes", limit=MAX_BYTES)
        return super().get_json(force=force, silent=silent, cache=cache)

    def on_json_loading_failed(self, e: ValueError | None) -> Any:
        if isinstance(e, JSONRefused):
            raise e
        return super().on_json_loading_failed(e)
