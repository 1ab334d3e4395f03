"""Prefect steps of the registry stage: register, move aliases, start and stop canaries, package.

Each step is a named Prefect task over ``tasks.registry``; alias moves also emit the lifecycle event
(``driftloop.model.*``) that automations and notifications react to.
"""

from __future__ import annotations

from flows.steps.events import emit_model_event
from flows.steps.retrain_slot import claim_retrain_slot
from flows.steps.runtime import CACHE_POLICY, cached_task, io_task, step_logger, wandb_api_key
from tasks.core.context import RunContext
from tasks.model.tracking import log_alias_move, model_artifact_files
from tasks.registry.packaging import PackagedBento, build_bento, save_to_bentoml
from tasks.registry.versions import ChampionMove, ModelVersion, NewVersion, Registry, VersionDecision


@cached_task(name="register-model", cache_policy=CACHE_POLICY - "decision")
def register_model_version(
    model_name: str, files: dict[str, str], record: NewVersion, decision: VersionDecision, ctx: RunContext
) -> ModelVersion:
    """Register the candidate: copy its files (store keys) into the registry and claim a version.

    Cached on the model and its facts, not on the gate's ``decision`` (which depends on whichever
    champion serves now): a rerun that reproduces a registered model returns that version, a no-op.
    """
    store = ctx.store
    record = record.model_copy(update={"decision": decision})
    return Registry(store, model_name).register(
        {name: store.read_bytes(key) for name, key in files.items()}, record
    )


@cached_task(name="apply-decision")
def apply_promotion_decision(
    model_name: str, version: int, outcome: str, reason: str, ctx: RunContext
) -> dict[str, int]:
    """Move the decided alias to the new version (atomic compare-and-swap); W&B follows."""
    doc = Registry(ctx.store, model_name).set_alias(outcome, version, reason=reason, actor="training-flow")
    mirror_aliases_in_wandb(model_name, version, reason, ctx)
    return doc.aliases


@io_task(name="save-to-bentoml")
def save_version_to_bentoml(model_name: str, version: int, ctx: RunContext) -> str:
    registry = Registry(ctx.store, model_name)
    return save_to_bentoml(registry.get(version), registry, ctx.settings)


@io_task(name="build-bento")
def package_version(model_name: str, ref: str, ctx: RunContext) -> PackagedBento:
    """Resolve ``ref`` (alias or version), build the bento, export it to ``bentos/`` in the store."""
    return build_bento(Registry(ctx.store, model_name), ref, ctx.settings)


@io_task(name="move-champion")
def move_champion(
    model_name: str, version: int | None, reason: str, actor: str, event: str, ctx: RunContext
) -> tuple[ChampionMove, str | None]:
    """Move the champion (None: back to the previous one) and emit ``event``; return the move and
    the event's id."""
    kind = "rollback" if event == "driftloop.model.rolled_back" else "promotion"
    move = Registry(ctx.store, model_name).move_champion(version, reason=reason, actor=actor, kind=kind)
    mirror_aliases_in_wandb(model_name, move.version, reason, ctx)
    event_id = emit_model_event(
        event,
        model_name,
        {"version": move.version, "previous": move.previous, "reason": reason, "actor": actor},
        target=ctx.target,
    )
    return move, event_id


def mirror_aliases_in_wandb(model_name: str, version: int, reason: str, ctx: RunContext) -> str | None:
    """Log ``version``'s model artifact in W&B with the aliases it has now in the registry (after a
    move). W&B mirrors the registry: if it cannot be reached, the move stands and the run says so."""
    registry = Registry(ctx.store, model_name)
    mv = registry.get(version)
    aliases = sorted(a for a, v in registry.alias_doc().aliases.items() if v == version)
    files = {name: registry.read_file(mv, name) for name in model_artifact_files(mv.files)}
    metadata = {"snapshot_id": mv.snapshot_id, "registry_version": version, "training_run": mv.wandb_run}
    try:
        api_key = wandb_api_key(ctx.settings) if ctx.settings.tracking.mode != "disabled" else None
        return log_alias_move(ctx.settings, api_key, model_name, version, files, aliases, reason, metadata)
    except Exception as exc:  # noqa: BLE001 - the registry moved; W&B only mirrors it
        step_logger("driftloop.registry").warning(
            "W&B did not record %s v%d's aliases %s (%s); the registry has them. Log them again with "
            "a later promotion, or check tracking settings",
            *(model_name, version, aliases, exc),
        )
        return None


@io_task(name="claim-retrain-slot")
def claim_retrain(model_name: str, reason: str, ignore_cooldown: bool, ctx: RunContext) -> str | None:
    """None if this run may retrain (and it is now recorded as started); else why it may not."""
    decision = claim_retrain_slot(
        ctx.store, model_name, reason, ctx.settings.retrain.cooldown_minutes, ignore_cooldown
    )
    return None if decision.outcome == "start" else decision.reason


@io_task(name="start-canary")
def start_canary(model_name: str, version: int, reason: str, ctx: RunContext) -> dict[str, int]:
    """Make ``version`` the challenger (the service starts routing a share to it) and say so."""
    doc = Registry(ctx.store, model_name).set_alias(
        "challenger", version, reason=reason, actor="training-flow"
    )
    mirror_aliases_in_wandb(model_name, version, reason, ctx)
    emit_model_event(
        "driftloop.model.canary.started",
        model_name,
        {"version": version, "share": ctx.settings.serving.challenger_share, "reason": reason},
        target=ctx.target,
    )
    return doc.aliases


@io_task(name="apply-canary-decision")
def apply_canary_decision(
    model_name: str, outcome: str, version: int, reason: str, ctx: RunContext, actor: str = "canary-flow"
) -> None:
    """Promote the challenger (``promote``) or stop the canary (``drop``); ``wait`` changes nothing.
    ``actor``: who decided (the canary flow, or the person who approved or rejected it)."""
    if outcome == "promote":
        move_champion.fn(model_name, version, f"canary: {reason}", actor, "driftloop.model.promoted", ctx)
    elif outcome == "drop":
        Registry(ctx.store, model_name).set_alias(
            "challenger", None, reason=f"canary stopped: {reason}", actor=actor
        )
        emit_model_event(
            "driftloop.model.canary.stopped",
            model_name,
            {"version": version, "reason": reason},
            target=ctx.target,
        )
