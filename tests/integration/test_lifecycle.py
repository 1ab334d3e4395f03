"""Promotion and rollback flows: atomic alias moves, history, events on the Prefect server."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest

from tasks.core.errors import BadInput
from tasks.core.store import open_store
from tasks.registry.versions import Registry, RegistryError
from tests.conftest import RECORD
from tests.wandb_records import runs_in_group

pytestmark = pytest.mark.integration


def _events(api_url: str, name: str, model: str, at_least: int) -> list[dict]:
    deadline, found = time.time() + 15, []
    while time.time() < deadline:
        resp = httpx.post(
            f"{api_url}/events/filter", json={"filter": {"event": {"name": [name]}}, "limit": 50}
        )
        resp.raise_for_status()
        found = [
            e
            for e in resp.json()["events"]
            if e["resource"]["prefect.resource.id"] == f"driftloop.model.{model}"
        ]
        if len(found) >= at_least:
            break
        time.sleep(0.5)
    return found


def test_promote_and_rollback(prefect_server, private_settings):
    from flows.lifecycle import PromoteParams, RollbackParams, promote, rollback

    registry = Registry(open_store(private_settings), "lifecycle-model")
    with pytest.raises(BadInput, match="'lifecycle-model' was never registered"):
        rollback(RollbackParams(model_name="lifecycle-model"))
    for i in range(3):
        registry.register({"model.txt": f"tree {i}".encode(), "model_card.md": b"# card"}, RECORD)
    with pytest.raises(BadInput, match="no previous champion"):
        rollback(RollbackParams(model_name="lifecycle-model"))
    registry.set_alias("champion", 1, reason="first", actor="test")
    registry.set_alias("challenger", 2, reason="second", actor="test")

    moved = promote(
        PromoteParams(version=2, model_name="lifecycle-model", reason="canary won", actor="alice")
    )
    assert (moved.previous, moved.version) == (1, 2)
    doc = registry.alias_doc()
    assert doc.aliases == {"champion": 2}  # the promoted challenger is no longer a challenger
    assert doc.history[-2].actor == "alice" and doc.history[-2].reason == "canary won"

    back = rollback(RollbackParams(model_name="lifecycle-model", reason="latency regression", actor="bob"))
    assert (back.previous, back.version) == (2, 1)
    named = rollback(RollbackParams(model_name="lifecycle-model", to_version=3, actor="bob"))
    assert registry.alias_doc().aliases["champion"] == 3 and named.previous == 1

    with pytest.raises(RegistryError, match=r"no version 9; versions: \[1, 2, 3\]"):
        promote(PromoteParams(version=9, model_name="lifecycle-model"))
    with pytest.raises(BadInput, match="already champion"):
        promote(PromoteParams(version=3, model_name="lifecycle-model"))

    # W&B follows: each move logged the version's files again with the aliases it has now
    moves = runs_in_group(Path(os.environ["DRIFTLOOP_TRACKING__DIR"]), "lifecycle-model-registry")
    logged = [(r["config"]["registry_version"], r["logged"][0]) for r in moves]
    assert [(v, a["aliases"]) for v, a in logged] == [(v, ["champion", "latest"]) for v in (2, 1, 3)]
    assert all(a["files"] == ["model.txt", "model_card.md"] and a["type"] == "model" for _, a in logged)
    digests = {v: a["digest"] for v, a in logged}
    assert len(set(digests.values())) == 3  # one W&B artifact version per registry version
    assert all(
        a["metadata"]["registry_collection"] == "wandb-registry-model/lifecycle-model" for _, a in logged
    )

    api = prefect_server.cfg.api_url
    promoted = _events(api, "driftloop.model.promoted", "lifecycle-model", 1)
    assert promoted and promoted[0]["payload"]["version"] == 2 and promoted[0]["payload"]["actor"] == "alice"
    rolled = _events(api, "driftloop.model.rolled_back", "lifecycle-model", 2)
    assert {e["payload"]["version"] for e in rolled} == {1, 3}


def test_a_promotion_stands_when_wandb_cannot_record_it(
    prefect_server, private_settings, tmp_path, monkeypatch
):
    """W&B only mirrors the registry: a tracking directory that cannot be made fails the mirror, not
    the move."""
    from flows.lifecycle import PromoteParams, promote

    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the W&B directory should be")
    monkeypatch.setenv("DRIFTLOOP_TRACKING__DIR", str(blocked / "wandb"))
    registry = Registry(open_store(private_settings), "mirror-model")
    for i in range(2):
        registry.register({"model.txt": f"tree {i}".encode()}, RECORD)
    registry.set_alias("champion", 1, reason="first", actor="test")
    moved = promote(PromoteParams(version=2, model_name="mirror-model", reason="wandb down", actor="dave"))
    assert (moved.previous, moved.version) == (1, 2) and registry.alias_doc().aliases == {"champion": 2}
    assert not (blocked / "wandb").exists()
