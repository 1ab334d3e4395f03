"""The artifact store behaves the same on a local directory and on S3 (moto server via boto3)."""

from __future__ import annotations

import threading

import polars as pl
import pytest

from tasks.core.store import KeyNotFound, PreconditionFailed, S3Store, open_store
from tasks.registry.versions import Registry
from tests.conftest import RECORD


@pytest.fixture(params=["local", "s3"])
def store(request, private_settings, tmp_path):
    if request.param == "local":
        return open_store(private_settings)
    return open_store(request.getfixturevalue("s3_settings"))


def test_write_read_list(store):
    store.write_bytes("a/b/one.bin", b"1")
    store.write_json("a/b/two.json", {"x": 2})
    store.write_bytes("a/bc/three.bin", b"3")
    assert store.read_bytes("a/b/one.bin") == b"1"
    assert store.read_json("a/b/two.json") == {"x": 2}
    assert store.list("a/b") == ["a/b/one.bin", "a/b/two.json"]  # a/bc is not under a/b
    assert store.exists("a/bc/three.bin") and not store.exists("a/b/missing")
    with pytest.raises(KeyNotFound, match="a/b/missing"):
        store.read_bytes("a/b/missing")


def test_conditional_create_and_replace(store):
    store.write_bytes("k", b"first", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        store.write_bytes("k", b"second", if_none_match=True)
    assert store.read_bytes("k") == b"first"
    etag = store.etag("k")
    store.write_bytes("k", b"third", if_match=etag)
    with pytest.raises(PreconditionFailed):
        store.write_bytes("k", b"fourth", if_match=etag)  # stale etag
    assert store.read_bytes("k") == b"third"


def test_parquet_roundtrip_and_lazy_scan(store):
    df1 = pl.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    df2 = pl.DataFrame({"a": [3], "b": ["z"]})
    store.write_parquet("t/1.parquet", df1)
    store.write_parquet("t/2.parquet", df2)
    assert store.read_parquet("t/1.parquet").equals(df1)
    scanned = (
        store.scan_parquet(store.list("t")).collect().sort("a")
    )  # Polars reads s3:// via storage_options
    assert scanned["a"].to_list() == [1, 2, 3]


def test_s3_store_speaks_to_the_moto_server(s3_settings):
    store = open_store(s3_settings)
    assert isinstance(store, S3Store)
    store.write_bytes("probe.txt", b"hello")
    obj = store.client.get_object(Bucket=store.bucket, Key="driftloop/probe.txt")
    assert obj["Body"].read() == b"hello"
    assert store.client.meta.endpoint_url.startswith("http://127.0.0.1:")


def test_concurrent_registrations_and_alias_updates_lose_nothing(store):
    registry = Registry(store, "m")
    record = RECORD
    versions: list[int] = []

    def register() -> None:
        versions.append(registry.register({"model.txt": b"x"}, record).version)

    threads = [threading.Thread(target=register) for _ in range(6)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sorted(versions) == [1, 2, 3, 4, 5, 6]  # every registration got its own number

    def promote(v: int) -> None:
        registry.set_alias("challenger", v, reason=f"thread {v}")

    threads = [threading.Thread(target=promote, args=(v,)) for v in range(1, 7)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    doc = registry.alias_doc()
    assert len(doc.history) == 6  # no compare-and-swap update was lost
    assert doc.aliases["challenger"] == doc.history[-1].version

    from tasks.registry.versions import RegistryError

    registry.set_alias("champion", 1, reason="first", actor="test")
    with pytest.raises(RegistryError, match="is the champion; a challenger must be another version"):
        registry.set_alias("challenger", 1, reason="same as champion", actor="test")


def test_unknown_store_scheme_is_a_clear_error(private_settings):
    from tasks.core.store import StoreError

    with pytest.raises(StoreError, match="unsupported scheme"):
        open_store(private_settings.model_copy(update={"store_uri": "gs://bucket/x"}))
