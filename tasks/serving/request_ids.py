"""Request ids the service issues and can verify on its own: ``<YYYYMMDD><random>.<signature>``, and
for the rows of one batch ``<YYYYMMDD><random>-<rows>-<row>.<signature>``.

Identity comes from the service, never from the caller: every prediction gets an id made of its UTC
issue date, 64 random bits and a MAC of both under a key only the service holds (keyed BLAKE2b; ids
signed with HMAC-SHA256 before still verify), so ``/feedback``
can reject an id it never issued at once, with no index and no scan of the log, on any worker and
after any restart. The key lives in the artifact store (``state/serving/<model>/request-id-key``),
created once by whichever worker starts first (a conditional write), so every worker of every
deployment of that model agrees; each model has its own key, so an id one model's service issued is
no id to another's ``/feedback``.

The date is the lookup index: the prediction log is partitioned by date, so finding one id reads one
day's (compacted, id-sorted) file instead of scanning the log; the signature covers the date, so a
caller cannot move an id to another day. Ids issued before dates were added (16 hex characters) still
verify; their lookups scan.

One caller's batch gets one signature, over its date, random part and row count; each row's id adds
its position (hex), which must be below the signed count: one MAC for 10,000 rows instead of 10,000
(~15 ms of a 10,000-row batch), and still no id the service did not issue verifies. Only rows of one
caller share a signature: requests of several callers scored together get one id each, so no caller
can derive another's id from its own.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections import OrderedDict
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from tasks.core.logs import FEEDBACK, read_log
from tasks.core.store import ArtifactStore, PreconditionFailed

_RANDOM_HEX = 16
_DATE = 8  # YYYYMMDD
_SIGNATURE_HEX = 16


def request_id_key(store: ArtifactStore, model_name: str, cache: Path | None = None) -> bytes:
    """``model_name``'s signing key in the store, created on first use. With ``cache`` (a local file),
    the key read last is kept there, and used when the store cannot be reached."""
    key = f"state/serving/{model_name}/request-id-key"
    try:
        if not store.exists(key):
            try:
                store.write_bytes(key, os.urandom(32), if_none_match=True)
            except PreconditionFailed:
                pass  # another worker created it first: use theirs
        value = store.read_bytes(key)
    except Exception:
        if cache is not None and cache.is_file():
            return cache.read_bytes()
        raise
    if cache is not None and (not cache.is_file() or cache.read_bytes() != value):
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.touch(mode=0o600)
        tmp.write_bytes(value)
        tmp.replace(cache)
    return value


class RequestIds:
    """Issues and verifies signed request ids."""

    def __init__(self, key: bytes):
        if len(key) < 16:
            raise ValueError("the request-id key must be at least 16 bytes")
        self._key = key

    def _sign(self, token: str) -> str:
        return hashlib.blake2b(token.encode(), key=self._key, digest_size=_SIGNATURE_HEX // 2).hexdigest()

    def _legacy_sign(self, token: str) -> str:
        return hmac.new(self._key, token.encode(), hashlib.sha256).hexdigest()[:_SIGNATURE_HEX]

    def issue(self, n: int) -> list[str]:
        """``n`` new ids for the rows of one caller's request: one id, or one signed batch of ``n``."""
        token = datetime.now(timezone.utc).strftime("%Y%m%d") + os.urandom(_RANDOM_HEX // 2).hex()
        if n == 1:
            return [f"{token}.{self._sign(token)}"]
        batch = f"{token}-{n:x}"
        signature = self._sign(batch)
        return [f"{batch}-{i:x}.{signature}" for i in range(n)]

    def issue_each(self, n: int) -> list[str]:
        """``n`` ids signed one by one: for rows of different callers scored together."""
        return [rid for _ in range(n) for rid in self.issue(1)]

    def verify(self, request_id: str) -> bool:
        """Whether this service issued ``request_id`` (constant-time comparison of the signature)."""
        token, dot, signature = request_id.partition(".")
        if not dot or len(signature) != _SIGNATURE_HEX:
            return False
        signed, legacy = token, len(token) in (_RANDOM_HEX, _DATE + _RANDOM_HEX)
        if not legacy:  # a row of a batch: <date><random>-<rows>-<row>, the row below the rows signed
            parts = token.split("-")
            if len(parts) != 3 or len(parts[0]) != _DATE + _RANDOM_HEX or not all(map(_is_hex, parts[1:])):
                return False
            if int(parts[2], 16) >= int(parts[1], 16) or parts[2] != f"{int(parts[2], 16):x}":
                return False  # past the batch's end, or a row number spelled two ways
            signed = f"{parts[0]}-{parts[1]}"
        # bytes, not str: compare_digest refuses non-ASCII text, and an id is whatever a caller sends
        sent = signature.encode("utf-8", "replace")
        return hmac.compare_digest(self._sign(signed).encode(), sent) or (
            legacy and hmac.compare_digest(self._legacy_sign(signed).encode(), sent)
        )


def _is_hex(text: str) -> bool:
    return 0 < len(text) <= 8 and all(c in "0123456789abcdef" for c in text)


def issued_on(request_id: str) -> date | None:
    """The UTC date an id was issued (``None`` for ids without one, or not ids at all). Unverified: use
    it to find a logged prediction, never as evidence."""
    token = request_id.partition(".")[0].split("-")[0]  # a batch row's id: <date><random>-<rows>-<row>
    if len(token) != _DATE + _RANDOM_HEX or not token[:_DATE].isdigit():
        return None
    try:
        return datetime.strptime(token[:_DATE], "%Y%m%d").date()
    except ValueError:
        return None


class LabelledIds:
    """Which request ids already have an outcome: the ones this worker recorded lately (in memory,
    bounded), else the model's feedback log in the store from each id's issue date on (an id carries its
    issue date, so the lookup lists only the days since). Used to tell a caller that a second outcome
    without ``correction`` is ignored; the log, not this, decides which outcome counts."""

    def __init__(self, store: Any, model_name: str, remember: int = 200_000):
        self.store, self.model_name, self.remember = store, model_name, remember
        self.recent: OrderedDict[str, None] = OrderedDict()

    def add(self, request_ids: list[str]) -> None:
        for rid in request_ids:
            self.recent[rid] = None
            self.recent.move_to_end(rid)
        while len(self.recent) > self.remember:
            self.recent.popitem(last=False)

    def already(self, request_ids: list[str]) -> list[str]:
        """The ids of ``request_ids`` that have an outcome recorded, in order."""
        if not request_ids:
            return []
        unknown = [rid for rid in request_ids if rid not in self.recent]
        found = set(request_ids) - set(unknown)
        dates = [d for d in (issued_on(rid) for rid in unknown) if d is not None]
        if dates:
            logged = read_log(
                self.store, FEEDBACK, self.model_name, ["request_id"], request_ids=unknown, since=min(dates)
            )
            if not logged.is_empty():
                found |= set(logged["request_id"].to_list())
        return [rid for rid in request_ids if rid in found]
