"""The retrain flow: fresh data in, a challenger out, and only if it is at least as good.

Started by a Prefect automation when monitoring emits ``driftloop.drift.detected`` or
``driftloop.performance.degraded`` (see prefect.yaml), or by hand:

    python flows/retrain.py --reason "new data"
    prefect deployment run 'retrain/local'

1. claim the model's retrain slot: at most one retrain per cooldown period, however many events
   arrive (a compare-and-swap on ``state/retrain/<model>.json``, so two triggers at once start one);
2. train through the spine on the raw zone plus the service's predictions that have feedback,
   registering the result without an alias;
3. compare it with the champion on the same recent holdout: a paired bootstrap interval on the
   ROC-AUC gain, and no slice worse than the tolerance;
4. pass: it becomes the challenger and a canary starts (``driftloop.model.canary.started``);
   fail: the reason is recorded as an artifact and a ``driftloop.retrain.rejected`` event.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, Field

from flows.schemas import RetrainResult, TrainingParams

from flows.training import training
from tasks.core.errors import BadInput
from tasks.events import emit_model_event
from tasks.decisions import HoldoutComparison, compare_on_holdout
from tasks.orchestration import io_task, publish
from tasks.registry.versions import Registry
from tasks.core.settings import Settings
from tasks.data.snapshot import SnapshotManifest, load_snapshot
from tasks.core.store import PreconditionFailed, open_store
from tasks.model.train import make_split


class RetrainParams(BaseModel):
    model_name: str | None = Field(None, description="registry name (default: the dataset config's)")
    reason: str = Field("manual", description="why (an automation passes the event that triggered it)")
    ignore_cooldown: bool = Field(False, description="retrain even if one ran within the cooldown period")


@io_task(name="claim-retrain-slot")
def claim_retrain_slot(model_name: str, reason: str, cooldown_minutes: float, ignore_cooldown: bool,
                       settings: Settings) -> str | None:
    """None if this run may retrain (and it is now recorded as started); else why it may not."""
    store = open_store(settings)
    key = f"state/retrain/{model_name}.json"
    state, etag = store.read_json_with_etag(key)
    now = datetime.now(timezone.utc)
    if state and not ignore_cooldown:
        last = datetime.fromisoformat(state["last_started"])
        if now - last < timedelta(minutes=cooldown_minutes):
            return (f"a retrain of {model_name} started at {state['last_started']} ({state['reason']}); the cooldown of "
                    f"{cooldown_minutes:g} min (DRIFTLOOP_RETRAIN__COOLDOWN_MINUTES) has not passed")
    history = (state or {}).get("history", [])[-50:] + [{"started": now.isoformat(), "reason": reason}]
    doc = {"last_started": now.isoformat(), "reason": reason, "history": history}
    try:
        if etag is None:
            store.write_json(key, doc, if_none_match=True)
        else:
            store.write_json(key, doc, if_match=etag)
    except PreconditionFailed:
        return f"another retrain of {model_name} claimed the slot at the same moment"
    return None


@io_task(name="compare-on-holdout")
def compare_with_champion(model_name: str, candidate: int, snapshot_id: str, settings: Settings) -> HoldoutComparison:
    """Champion and candidate scored on the candidate snapshot's test rows (the most recent data)."""
    store = open_store(settings)
    config = settings.load_dataset()
    registry = Registry(store, model_name)
    champion = registry.resolve("champion")
    df = load_snapshot(SnapshotManifest.model_validate(store.read_json(f"snapshots/{snapshot_id}/manifest.json")), store)
    test = df.slice(make_split(df, config).valid_end)
    y = test[config.target.name].to_numpy().astype(int)
    scores = {}
    for v in (champion.version, candidate):
        mv = registry.get(v)
        scores[v] = registry.load_booster(mv).predict(registry.load_transform(mv).to_matrix(test))
    return compare_on_holdout(y, np.asarray(scores[candidate]), np.asarray(scores[champion.version]),
                              test.select(config.slices), champion.version, candidate, settings.retrain)


@io_task(name="start-canary")
def start_canary(model_name: str, version: int, reason: str, settings: Settings) -> None:
    Registry(open_store(settings), model_name).set_alias("challenger", version, reason=reason, actor="retrain-flow")
    emit_model_event("driftloop.model.canary.started", model_name,
                     {"version": version, "share": settings.serving.challenger_share, "reason": reason},
                     target=settings.target)


@flow(name="retrain", persist_result=True)
def retrain(params: RetrainParams = RetrainParams()) -> RetrainResult:
    logger = get_run_logger()
    settings = Settings()
    if params.model_name is not None and not params.model_name.strip():
        raise BadInput("the triggering event carried no model_name in its payload (the automation passes "
                       "event.payload.model_name); emit events with tasks.events.emit_model_event, or pass model_name")
    model_name = settings.model_name(params.model_name)
    registry = Registry(open_store(settings), model_name)
    if "champion" not in registry.alias_doc().aliases:
        raise BadInput(f"model {model_name!r} has no champion to retrain against; run the training flow first")
    refused = claim_retrain_slot(model_name, params.reason, settings.retrain.cooldown_minutes, params.ignore_cooldown,
                                 settings)
    if refused:
        logger.info("not retraining: %s", refused)
        publish(create_markdown_artifact, key=f"{model_name}-retrain".replace("_", "-"),
                markdown=f"# Retrain of {model_name} skipped\n\n{refused}", description="retrain outcome")
        return RetrainResult(model_name=model_name, status="skipped", reason=refused)

    summary = training(TrainingParams(model_name=model_name, include_feedback=True, register_as="candidate",
                                      window_end=datetime.max.replace(tzinfo=timezone.utc)))  # all data there is
    if summary.version == registry.alias_doc().aliases.get("champion"):
        reason = (f"training reproduced the champion v{summary.version} (same data and code, from cache): "
                  "nothing new to put out as a canary")
        logger.info("retrain of %s: %s", model_name, reason)
        return RetrainResult(model_name=model_name, status="skipped", reason=reason, version=summary.version)
    comparison = compare_with_champion(model_name, summary.version, summary.snapshot_id, settings)
    if comparison.passed:
        start_canary(model_name, summary.version, f"retrain ({params.reason}): {comparison.reason}", settings)
        status = "canary"
    else:
        emit_model_event("driftloop.retrain.rejected", model_name, {"version": summary.version, "reason": comparison.reason,
                                                                    "trigger": params.reason}, target=settings.target)
        status = "rejected"
    publish(create_markdown_artifact, key=f"{model_name}-retrain".replace("_", "-"), description="retrain outcome",
            markdown=(f"# Retrain of {model_name}: {status}\n\n- trigger: {params.reason}\n- new version: "
                      f"v{summary.version} (snapshot `{summary.snapshot_id}`, {summary.snapshot_rows} rows)\n"
                      f"- holdout: {comparison.rows} most recent rows; champion v{comparison.champion_version} "
                      f"ROC-AUC {comparison.champion_auc:.4f}, new {comparison.candidate_auc:.4f}\n"
                      f"- gate: {comparison.reason}\n"))
    logger.info("retrain of %s: v%d %s (%s)", model_name, summary.version, status, comparison.reason)
    return RetrainResult(model_name=model_name, status=status, reason=comparison.reason, version=summary.version,
                         comparison=comparison)


if __name__ == "__main__":
    from pydantic_settings import CliApp

    print(retrain(CliApp.run(RetrainParams)).model_dump_json(indent=2))
