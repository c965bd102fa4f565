"""SHA-256 certificate fingerprints as configs write them and the driver compares them.

Apart from certificates.py so that reading a site's config (every protocol's device model
is built then, OPC UA's included) does not import `cryptography`: ~10 MB of RSS that a
Modbus-only agent would carry for as long as it runs.
"""

from __future__ import annotations

import hashlib


def fingerprint(der: bytes) -> str:
    """SHA-256 of a DER certificate as lowercase hex pairs joined by colons."""
    digest = hashlib.sha256(der).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def normalise_fingerprint(text: str) -> str:
    """A fingerprint as written in a config (any case, colons or not) in `fingerprint` form."""
    digits = text.replace(":", "").replace(" ", "").lower()
    if len(digits) != 64 or any(c not in "0123456789abcdef" for c in digits):
        raise ValueError(f"a SHA-256 fingerprint has 64 hex digits, got {text!r}")
    return ":".join(digits[i : i + 2] for i in range(0, 64, 2))
