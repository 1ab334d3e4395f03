"""The retrain cooldown: at most one retrain per model per cooldown, however many events ask at once.

It is a Prefect global concurrency limit per model, ``retrain-cooldown-<model>``: one slot, decaying
over the cooldown (``slot_decay_per_second = 1 / cooldown``). A retrain takes the slot with
``rate_limit``; the Prefect server grants it atomically, so two triggers at the same moment start
one retrain, and the slot frees itself when the cooldown has passed. Operators see (and can reset)
it in the Prefect UI under Concurrency. The limit is created on first use and follows
``retrain.cooldown_minutes`` when that setting changes.

The store keeps the history of starts (``state/retrain/<model>.json``) so a refused run says when
and why the last retrain started.
"""

from __future__ import annotations

from datetime import datetime, timezone

from tasks.core.store import ArtifactStore
from tasks.decisions import RetrainStart, decide_retrain_start


def retrain_slot_key(model_name: str) -> str:
    return f"state/retrain/{model_name}.json"


def cooldown_limit_name(model_name: str) -> str:
    return f"retrain-cooldown-{model_name}"


def ensure_cooldown_limit(model_name: str, cooldown_minutes: float) -> str:
    """The model's cooldown limit on the Prefect server, created or updated to ``cooldown_minutes``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    name = cooldown_limit_name(model_name)
    decay = 1.0 / (cooldown_minutes * 60)
    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=1, slot_decay_per_second=decay)
                )
            except ObjectAlreadyExists:
                pass  # another trigger created it a moment ago
            return name
        if limit.limit != 1 or abs((limit.slot_decay_per_second or 0) - decay) > decay * 1e-6:
            client.update_global_concurrency_limit(
                name, GlobalConcurrencyLimitUpdate(limit=1, slot_decay_per_second=decay)
            )
    return name


def take_slot_now(name: str) -> bool:
    """Take the limit's slot if it is free, at once: the server answers 423 when it is not. (Prefect's
    ``rate_limit`` waits for a slot instead, and a short wait can expire on a busy machine after the
    server granted the slot, leaving it taken by nobody.)"""
    import httpx
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        try:
            client.increment_concurrency_slots(names=[name], slots=1, mode="rate_limit")
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code == 423:
                return False
            raise
    return True


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
    state = store.read_json(key) if store.exists(key) else {}
    now = now or datetime.now(timezone.utc)
    last = datetime.fromisoformat(state["last_started"]) if state else None
    if ignore_cooldown or cooldown_minutes == 0:
        why = "asked to ignore the cooldown" if ignore_cooldown else "no cooldown is set"
        decision = RetrainStart(outcome="start", reason=f"{model_name}: {why}")
    else:
        name = ensure_cooldown_limit(model_name, cooldown_minutes)
        if not take_slot_now(name):
            told = decide_retrain_start(model_name, last, state.get("reason"), now, cooldown_minutes, False)
            return RetrainStart(
                outcome="wait",
                reason=(
                    told.reason
                    if told.outcome == "wait"
                    else f"another retrain of {model_name} took the slot a moment ago"
                )
                + f" (Prefect concurrency limit {name!r}; reset it in the UI to retrain now)",
            )
        decision = RetrainStart(outcome="start", reason=f"{model_name}: the cooldown slot was free")
    history = state.get("history", [])[-50:] + [{"started": now.isoformat(), "reason": reason}]
    store.write_json(key, {"last_started": now.isoformat(), "reason": reason, "history": history})
    return decision
