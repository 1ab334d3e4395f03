"""The retrain cooldown: at most one retrain per model per cooldown, however many events ask at once.

It is a Prefect global concurrency limit per model, ``retrain-cooldown-<model>``: one slot, decaying
over the cooldown (``slot_decay_per_second = 1 / cooldown``). A retrain takes the slot with
``rate_limit``; the Prefect server grants it atomically, so two triggers at the same moment start
one retrain, and the slot frees itself when the cooldown has passed. Operators see (and can reset)
it in the Prefect UI under Concurrency. The limit is created on first use and follows
``retrain.cooldown_minutes`` when that setting changes.

The store keeps the history of starts (``tasks.registry.retrain_history``) so a refused run says
when and why the last retrain started; whether a run may start is ``tasks.decisions.decide_retrain_claim``,
given what the slot said.
"""

from __future__ import annotations

from datetime import datetime, timezone

from tasks.core.store import ArtifactStore
from tasks.decisions import RetrainStart, decide_retrain_claim
from tasks.registry.retrain_history import read_retrain_history, record_retrain_start


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
    """``start`` (and the start is now recorded) if this run may retrain; else ``wait`` and why not.
    The slot is asked of the Prefect server here; the decision is ``decide_retrain_claim``'s."""
    now = now or datetime.now(timezone.utc)
    last = read_retrain_history(store, model_name)
    name = cooldown_limit_name(model_name)
    if ignore_cooldown or cooldown_minutes == 0:
        slot = "not_needed"
    else:
        ensure_cooldown_limit(model_name, cooldown_minutes)
        slot = "free" if take_slot_now(name) else "taken"
    decision = decide_retrain_claim(
        model_name, slot, last.last_started, last.reason, now, cooldown_minutes, ignore_cooldown, name
    )
    if decision.outcome == "start":
        record_retrain_start(store, model_name, reason, now)
    return decision
