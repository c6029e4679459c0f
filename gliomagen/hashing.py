"""Content hashes and seeds that are the same in every process and on every machine.

``hash()`` is salted per process, so every stage that needs a stable identity (the hash of the config
section that defines its outputs, a seed derived from a case id) uses these instead.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def content_hash(payload: Any, length: int = 12) -> str:
    """Hex SHA-256 of ``payload`` as canonical JSON (sorted keys), shortened to ``length`` characters.

    Args:
        payload: anything :func:`json.dumps` can write (config sections as ``model_dump(mode="json")``).
        length: characters kept (``None``-like full length: pass 64).
    """
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:length]


def stable_int(text: str) -> int:
    """A 64-bit unsigned integer from a string (first 8 bytes of its SHA-256, little-endian)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from any parts (joined with ``:``), valid for numpy and torch generators alike."""
    return stable_int(":".join(str(p) for p in parts)) >> 1
