"""``If-None-Match`` read strictly (RFC 9110, section 13.1.2), for GET revalidation.

    If-None-Match = "*" / #entity-tag
    entity-tag    = [ "W/" ] DQUOTE *etagc DQUOTE
    etagc         = %x21 / %x23-7E / obs-text

For GET the comparison is weak: ``W/"x"`` and ``"x"`` match. A list may hold empty
elements (``, "a",,"b"``). A header that does not parse is ignored as a whole (the
request is answered in full), never half-read.
"""

from __future__ import annotations

import re
from typing import Literal

_OPAQUE_TAG = re.compile(r'(?:W/)?"([\x21\x23-\x7e\x80-\xff]*)"')
_OWS = " \t"


def parse_if_none_match(value: str) -> Literal["*"] | list[str] | None:
    """``"*"``, or the opaque tags of the header (unquoted, weakness dropped), or
    None when the header is not well formed."""
    value = value.strip(_OWS)
    if value == "*":
        return "*"
    tags: list[str] = []
    position, end = 0, len(value)
    while True:
        while position < end and (value[position] in _OWS or value[position] == ","):
            position += 1
        if position == end:
            return tags
        match = _OPAQUE_TAG.match(value, position)
        if match is None:
            return None
        tags.append(match.group(1))
        position = match.end()
        while position < end and value[position] in _OWS:
            position += 1
        if position < end and value[position] != ",":
            return None


def none_match_fails(header: str | None, opaque_tag: str) -> bool:
    """Whether ``If-None-Match`` names the current representation (whose ETag is
    ``"opaque_tag"``) by weak comparison, or is ``*``: then a GET answers 304."""
    if not header:
        return False
    tags = parse_if_none_match(header)
    if tags is None:
        return False
    return tags == "*" or opaque_tag in tags
