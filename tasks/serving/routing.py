"""Canary routing: which arm (champion or challenger) answers a request."""

from __future__ import annotations

import hashlib
from typing import Literal

Arm = Literal["champion", "challenger"]


def assign_arm(key: str, challenger_share: float) -> Arm:
    """Deterministic split: the same key always lands on the same arm."""
    if challenger_share <= 0:
        return "champion"
    bucket = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") / 2**64
    return "challenger" if bucket < challenger_share else "champion"
