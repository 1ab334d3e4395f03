"""Lineage: from a prediction back to the data, and a model's promotion history.

For a request id: the logged prediction (time, arm, probability) and its feedback, the model
version that answered, its W&B run, git commit and dataset snapshot, and the raw source batches
(files, query or API results) the snapshot was built from. For a model: every alias move.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import polars as pl

from tasks.core.errors import BadInput
from tasks.core.logs import FEEDBACK, PREDICTIONS, log_keys, outcome_per_request
from tasks.core.store import ArtifactStore
from tasks.data.ingest import ingest_state_key
from tasks.data.snapshot import read_manifest
from tasks.registry.versions import Registry
from tasks.serving.request_ids import issued_on


def raw_sources(store: ArtifactStore, snapshot: dict[str, Any], dataset: str) -> dict[str, list[str]]:
    """Validated batch keys of a snapshot mapped back to the raw keys they were read from."""
    out: dict[str, list[str]] = {}
    for table, keys in snapshot["sources"].items():
        if table == "labelled_predictions":
            out[table] = keys
            continue
        state_key = ingest_state_key(dataset, table)
        state = store.read_json(state_key) if store.exists(state_key) else {}
        by_key = {entry["key"]: entry["source"] for entry in state.values()}
        out[table] = [by_key.get(k, k) for k in keys]
    return out


def version_lineage(store: ArtifactStore, registry: Registry, version: int) -> dict[str, Any]:
    mv = registry.get(version)
    manifest = read_manifest(store, mv.snapshot_id)
    snapshot = manifest.model_dump() if manifest else None
    history = [
        h.model_dump() for h in registry.alias_doc().history if h.version == version or h.previous == version
    ]
    return {
        "model_name": mv.model_name,
        "version": mv.version,
        "created_at": mv.created_at,
        "git_commit": mv.git_commit,
        "wandb_run": mv.wandb_run,
        "snapshot_id": mv.snapshot_id,
        "test_metrics": mv.metrics,
        "params": mv.params,
        "snapshot": {k: snapshot[k] for k in ("rows", "time_min", "time_max", "content_sha256")}
        if snapshot
        else None,
        "raw_sources": raw_sources(store, snapshot, registry.config_template(mv).get("name", ""))
        if snapshot
        else {},
        "alias_history": history,
    }


def request_lineage(store: ArtifactStore, registry: Registry, request_id: str) -> dict[str, Any]:
    # the id's issue date is the index: its prediction is in that day's partition (or the next, if it
    # was logged across midnight) and its feedback no earlier; ids without a date scan the log
    issued = issued_on(request_id)
    until = issued + timedelta(days=1) if issued else None
    keys = log_keys(store, PREDICTIONS, registry.model_name, since=issued, until=until)
    found = (
        store.scan_parquet(keys).filter(pl.col("request_id") == request_id).collect()
        if keys
        else pl.DataFrame()
    )
    if found.height == 0:
        raise BadInput(
            f"no logged prediction has request id {request_id!r} (the service flushes its log every few "
            "seconds; check the id, or wait and retry)"
        )
    row = found.row(-1, named=True)
    fb_keys = log_keys(store, FEEDBACK, registry.model_name, since=issued)
    feedback = (
        store.scan_parquet(fb_keys).filter(pl.col("request_id") == request_id).sort("ts").collect()
        if fb_keys
        else pl.DataFrame()
    )
    return {
        "request_id": request_id,
        "predicted_at": str(row["ts"]),
        "arm": row["arm"],
        "probability": row["probability"],
        "label": row["label"],
        "output": row.get("output"),  # classes and numbers: every class's probability, or the value
        "outcome": outcome_per_request(feedback).collect()["outcome"][0] if feedback.height else None,
        "model": version_lineage(store, registry, int(row["model_version"])),
    }
