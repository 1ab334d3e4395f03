"""When and why each model's retrains started: ``state/retrain/<model>.json`` in the store.

The cooldown itself is a Prefect concurrency limit (``flows.steps.retrain_slot``); this history is what
lets a refused run say when and why the last retrain started, and what an operator reads afterwards.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from tasks.core.store import ArtifactStore

KEPT_STARTS = 50  # the history keeps this many starts before the newest


class RetrainHistory(BaseModel):
    last_started: datetime | None = None
    reason: str | None = None
    history: list[dict[str, str]] = []


def retrain_history_key(model_name: str) -> str:
    return f"state/retrain/{model_name}.json"


def read_retrain_history(store: ArtifactStore, model_name: str) -> RetrainHistory:
    key = retrain_history_key(model_name)
    return RetrainHistory.model_validate(store.read_json(key)) if store.exists(key) else RetrainHistory()


def record_retrain_start(store: ArtifactStore, model_name: str, reason: str, now: datetime) -> None:
    """Record that a retrain of ``model_name`` started ``now`` because of ``reason``."""
    before = read_retrain_history(store, model_name)
    history = [*before.history[-KEPT_STARTS:], {"started": now.isoformat(), "reason": reason}]
    store.write_json(
        retrain_history_key(model_name),
        {"last_started": now.isoformat(), "reason": reason, "history": history},
    )
