"""Public case codes: random, unguessable, stable, never derived from personal data.

Ten symbols from a 31-symbol alphabet (Crockford base32 without Z: 49.5 bits of
randomness) plus one check symbol, shown as ``XXXXX-XXXXX-C``. The check is a
position-weighted sum modulo the prime 31; with symbol values below 31 it catches
every single mistyped symbol and every swap of two neighbours before any
database look-up.
"""

from __future__ import annotations

import random
import secrets

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXY"  # Crockford without I, L, O, U and Z
BODY_LENGTH = 10


def _check_symbol(body: str) -> str:
    total = sum((index + 1) * ALPHABET.index(ch) for index, ch in enumerate(body))
    return ALPHABET[total % len(ALPHABET)]


# Shown to the public as what a code looks like: a valid code (its check symbol is
# right), so looking it up answers "no such case", never "not a case code". Codes are
# random, so it is no more likely than any other to belong to a real case.
EXAMPLE_CASE_CODE = "7K3QF-M9X2A-A"


def new_case_code(rng: random.Random | None = None) -> str:
    """A fresh code; ``rng`` only for reproducible demo data, never in production."""
    if rng is None:
        body = "".join(secrets.choice(ALPHABET) for _ in range(BODY_LENGTH))
    else:
        body = "".join(rng.choice(ALPHABET) for _ in range(BODY_LENGTH))
    return f"{body[:5]}-{body[5:]}-{_check_symbol(body)}"


def normalize_case_code(raw: str) -> str | None:
    """The canonical form of a code typed by a person, or None when it cannot be one."""
    cleaned = raw.strip().upper().replace("-", "").replace(" ", "")
    cleaned = cleaned.translate(str.maketrans("OIL", "011"))
    if len(cleaned) != BODY_LENGTH + 1 or any(ch not in ALPHABET for ch in cleaned):
        return None
    body, check = cleaned[:BODY_LENGTH], cleaned[BODY_LENGTH]
    if _check_symbol(body) != check:
        return None
    return f"{body[:5]}-{body[5:]}-{check}"
