"""Request ids: issued by the service, verified without a lookup, whatever a caller sends instead."""

from __future__ import annotations

from tasks.core.store import LocalStore
from tasks.serving.request_ids import RequestIds, request_id_key


def test_issued_ids_verify_and_anything_else_does_not(tmp_path):
    store = LocalStore(tmp_path)
    key = request_id_key(store, "m")
    assert request_id_key(store, "m") == key  # created once, shared by every worker on the store
    assert request_id_key(store, "other-model") != key  # ids of one model are no ids to another
    ids = RequestIds(key)
    issued = ids.issue(50)
    assert len(set(issued)) == 50 and all(ids.verify(i) for i in issued)
    assert not RequestIds(b"another key of 32 bytes.........").verify(issued[0])
    forged = issued[0][:-1] + ("0" if issued[0][-1] != "0" else "1")
    hostile = [
        "",
        ".",
        "x" * 200,
        "é" * 16 + "." + "é" * 16,
        "a" * 16 + "." + "\x00" * 16,
        forged,
        issued[0].upper(),
        issued[0] + " ",
    ]
    assert [ids.verify(h) for h in hostile] == [False] * len(hostile)


def test_a_batch_has_one_signature_and_no_row_beyond_it_verifies():
    """One caller's batch is signed once (its date, random part and row count); a row's id adds its
    position. Changing the position past the count, the count, or spelling the position another way
    breaks it; rows of several callers scored together are signed one by one."""
    ids = RequestIds(b"k" * 32)
    batch = ids.issue(300)
    assert len(set(batch)) == 300 and all(ids.verify(i) for i in batch)
    assert len({i.partition(".")[2] for i in batch}) == 1  # one signature
    head, _, signature = batch[0].partition(".")
    base, count, _ = head.split("-")
    assert count == f"{300:x}"
    assert ids.verify(f"{base}-{count}-12b.{signature}")  # row 299: the last one
    beyond = [
        f"{base}-{count}-12c.{signature}",  # row 300 of 300
        f"{base}-12d-12c.{signature}",  # a larger count than signed
        f"{base}-{count}-012.{signature}",  # row 18 spelled with a leading zero
        f"{base}-{count}-1-2.{signature}",
        f"{base}-{count}--1.{signature}",
        f"{base}-{count}-.{signature}",
        f"{base}-{count}-ffffffffff.{signature}",
        f"{base}-{count}-1A.{signature}",
    ]
    assert [ids.verify(b) for b in beyond] == [False] * len(beyond)
    from tasks.serving.request_ids import issued_on

    assert issued_on(batch[5]) == issued_on(ids.issue(1)[0]) is not None
    each = ids.issue_each(3)
    assert len({i.partition(".")[2] for i in each}) == 3 and all(ids.verify(i) for i in each)


def test_ids_carry_their_signed_issue_date_for_lookups(tmp_path):
    from datetime import datetime, timezone

    from tasks.serving.request_ids import issued_on

    ids = RequestIds(request_id_key(LocalStore(tmp_path), "m"))
    rid = ids.issue(1)[0]
    assert issued_on(rid) == datetime.now(timezone.utc).date()
    moved = "19990101" + rid[8:]  # another day, same random part and signature
    assert issued_on(moved).year == 1999 and not ids.verify(moved)  # a moved date no longer verifies
    legacy_token = rid.partition(".")[0][8:]
    legacy = f"{legacy_token}.{ids._sign(legacy_token)}"  # ids issued before they carried a date
    assert ids.verify(legacy) and issued_on(legacy) is None
    assert issued_on("") is None and issued_on("20261399" + "0" * 16 + ".x") is None
    token = rid.partition(".")[0]
    hmac_signed = f"{token}.{ids._legacy_sign(token)}"  # ids signed with HMAC-SHA256 before BLAKE2b
    assert ids.verify(hmac_signed) and hmac_signed != rid
    assert not RequestIds(b"another key of 32 bytes.........").verify(hmac_signed)


def test_the_key_is_cached_locally_for_when_the_store_is_down(tmp_path):
    import pytest

    from tasks.core.store import StoreError

    class DownStore(LocalStore):
        def exists(self, key):
            raise StoreError("store unreachable")

    cache = tmp_path / "cache" / "m.key"
    key = request_id_key(LocalStore(tmp_path / "store"), "m", cache)
    assert cache.read_bytes() == key and (cache.stat().st_mode & 0o777) == 0o600
    assert request_id_key(DownStore(tmp_path / "store"), "m", cache) == key
    with pytest.raises(StoreError):
        request_id_key(DownStore(tmp_path / "store"), "m", tmp_path / "no-cache" / "m.key")
