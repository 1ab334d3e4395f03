"""The retrain slot: at most one retrain per model per cooldown, however many events ask at once.

The slot is ``state/retrain/<model>.json`` in the store, claimed by a compare-and-swap write, so two
triggers at the same moment start one retrain; whether the cooldown allows a start is
``tasks.decisions.decide_retrain_start``.
"""

from __future__ import annotations

from datetime import datetime, timezone

from tasks.core.store import ArtifactStore, PreconditionFailed
from tasks.decisions import RetrainStart, decide_retrain_start


def retrain_slot_key(model_name: str) -> str:
    return f"state/retrain/{model_name}.json"


def claim_retrain_slot(
    store: ArtifactStore,
    model_name: str,
    reason: str,
    cooldown_minutes: float,
    ignore_cooldown: bool,
    now: datetime | None = None,
) -> RetrainStart:
    """``start`` (and the start is now recorded) if this run may retrain; else ``wait`` and why not."""
    key = retrain_slot_key(model_name)
    state, etag = store.read_json_with_etag(key)
    now = now or datetime.now(timezone.utc)
    last = datetime.fromisoformat(state["last_started"]) if state else None
    decision = decide_retrain_start(
        model_name, last, (state or {}).get("reason"), now, cooldown_minutes, ignore_cooldown
    )
    if decision.outcome != "start":
        return decision
    history = (state or {}).get("history", [])[-50:] + [{"started": now.isoformat(), "reason": reason}]
    doc = {"last_started": now.isoformat(), "reason": reason, "history": history}
    try:
        if etag is None:
            store.write_json(key, doc, if_none_match=True)
        else:
            store.write_json(key, doc, if_match=etag)
    except PreconditionFailed:
        return RetrainStart(
            outcome="wait", reason=f"another retrain of {model_name} claimed the slot at the same moment"
        )
    return decision
