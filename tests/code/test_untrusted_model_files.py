"""A model file is untrusted input: checked against its registration hash, and loaded first in a child
process, because LightGBM aborts the process that loads some malformed models."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest

from tasks.core.store import LocalStore
from tasks.registry.versions import Registry, RegistryError
from tasks.serving.watcher import smoke_test_in_child
from tests.conftest import RECORD


def _model_text() -> bytes:
    rng = np.random.default_rng(0)
    X = rng.random((300, 4))
    booster = lgb.train(
        {"objective": "binary", "verbose": -1}, lgb.Dataset(X, (X[:, 0] > 0.5).astype(int)), 10
    )
    return booster.model_to_string().encode()


def test_a_file_changed_after_registration_is_refused_by_name(tmp_path):
    store = LocalStore(tmp_path)
    registry = Registry(store, "m")
    mv = registry.register({"model.txt": _model_text(), "transform.json": b"{}"}, RECORD)
    assert set(mv.files_sha256) == {"model.txt", "transform.json"}
    assert registry.read_file(mv, "model.txt")  # intact: read as registered
    text = store.read_bytes(mv.files["model.txt"])
    store.write_bytes(mv.files["model.txt"], text[: len(text) // 2])  # truncated in the store since
    with pytest.raises(RegistryError, match=r"m v1: model.txt \(\d+ bytes\) does not match the SHA-256"):
        registry.read_file(mv, "model.txt")


def test_a_model_that_would_abort_this_process_is_refused_from_a_child():
    text = _model_text()
    smoke_test_in_child(text, "intact")  # loads and scores
    # cut inside the trees: LightGBM aborts ("Model format error") or crashes the process that loads it
    with pytest.raises(RegistryError, match=r"v9: the model file does not load \((killed by signal|exit)"):
        smoke_test_in_child(text[: len(text) // 5], "v9")
    with pytest.raises(RegistryError, match="does not load"):
        smoke_test_in_child(b"not a model", "v9")
