"""Experiment tracking with Weights & Biases, and W&B as the model registry people know.

One run per training: curves, plots, metrics, the search's trials (a table and a curve each), the
dataset snapshot as a reference artifact, and the model (``model.txt``, ``transform.json``, the
model card and its plots) as a ``model`` artifact. The driftloop registry stays the one truth;
every alias move there (first champion, canary start, promotion, rollback) is mirrored by a short
``registry`` run that logs the same files with the aliases the version now has, so ``champion`` and
``challenger`` follow in W&B (same bytes, same digest: one artifact version). Online, the artifact
is also linked to the W&B Registry collection ``wandb-registry-<registry>/<model>``.

Offline by default (``DRIFTLOOP_TRACKING__MODE=offline``): runs land as files under the tracking dir
and can be uploaded later with ``wandb sync``. Online when the mode is ``online``, with the key the
step loads from a Prefect Secret block (``tracking.api_key_block``). Runs are created after the work
is done, from its results, so parallel trials never share a W&B process and a retry never leaves a
half-logged run behind.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from tasks.core.settings import Settings


class TrackedRun(BaseModel):
    run_id: str
    path: str  # entity/project/run_id online, or the offline run directory
    url: str | None
    group: str


def _wandb(settings: Settings) -> Any:
    """Import wandb with its run directory (under the tracking dir) made. Where wandb keeps its cache,
    data and config is set once per process by the run context (``Settings.library_environment``)."""
    Path(settings.tracking.dir).mkdir(parents=True, exist_ok=True)
    import wandb

    return wandb


def _init(settings: Settings, api_key: str | None = None, **kwargs: Any) -> Any:
    wandb = _wandb(settings)
    options: dict[str, Any] = {"console": "off", "silent": True}
    if api_key and settings.tracking.mode == "online":
        options["api_key"] = api_key
    return wandb.init(
        project=settings.tracking.project,
        entity=settings.tracking.entity,
        mode=settings.tracking.mode,
        dir=str(settings.tracking.dir),
        reinit="create_new",
        settings=wandb.Settings(**options),
        **kwargs,
    )


MODEL_FILES = ("model.txt", "transform.json", "model_card.md")  # + plots/*.png: the W&B model artifact


def model_artifact_files(files: dict[str, Any]) -> dict[str, Any]:
    """Which of a version's files (registry name -> anything) make its W&B model artifact. The
    training run and every later alias move log exactly these names with the same bytes, so W&B
    sees one artifact version (same digest) whose aliases move."""
    return {n: v for n, v in files.items() if n in MODEL_FILES or n.startswith("plots/")}


class TrainingReport(BaseModel):
    """What one training run reports to W&B: its identity, curves, metrics, trials, slices, the
    dataset snapshot it read and the model files (store keys: the report is small, and a cache key)."""

    name: str
    group: str
    config: dict[str, Any]
    files: dict[str, str]  # the model artifact: registry file name -> store key
    dataset_uri: str
    dataset_metadata: dict[str, Any]
    history: dict[str, dict[str, list[float]]]
    summary: dict[str, float]
    trials: list[dict[str, Any]]
    slices: list[dict[str, Any]]


def _log_curves_and_tables(run: Any, wandb: Any, report: TrainingReport, pngs: dict[str, bytes]) -> None:
    """Per-iteration curves, plots, the trials (one table row and one curve each: no run per trial)
    and the slices table of the training run."""
    train_h, valid_h = report.history.get("train", {}), report.history.get("valid", {})
    names = {"binary_logloss": "logloss", "multi_logloss": "logloss"}  # every other metric by its own name
    rounds = max((len(v) for v in valid_h.values()), default=0)
    for step in range(rounds):
        run.log(
            {
                f"{split}/{names.get(metric, metric)}": values[step]
                for split, history in (("train", train_h), ("valid", valid_h))
                for metric, values in history.items()
            },
            step=step,
        )
    from PIL import Image

    run.log({f"plots/{k}": wandb.Image(Image.open(io.BytesIO(v)), caption=k) for k, v in pngs.items()})
    metric = report.trials[0].get("metric", "auc") if report.trials else "auc"
    rows = [
        [t.get("trial", i), t["valid_score"], t["best_iteration"], bool(t.get("pruned")), str(t["params"])]
        for i, t in enumerate(report.trials)
    ]
    columns = ["trial", f"valid_{metric}", "best_iteration", "pruned", "params"]
    run.log({"trials": wandb.Table(columns=columns, data=rows)})
    curves = [t["history"]["valid"][metric] for t in report.trials if t.get("history", {}).get("valid")]
    if curves:
        run.log(
            {
                f"trials/valid_{metric}": wandb.plot.line_series(
                    xs=list(range(max(len(c) for c in curves))),
                    ys=curves,
                    keys=[f"trial {t.get('trial', i)}" for i, t in enumerate(report.trials)],
                    title=f"validation {metric} per boosting round, each search trial",
                    xname="round",
                )
            }
        )
    if report.slices:
        cols = list(report.slices[0])
        run.log({"slices": wandb.Table(columns=cols, data=[[s[c] for c in cols] for s in report.slices])})


def registry_collection(settings: Settings, model_name: str) -> str:
    """The W&B Registry collection a model's versions are linked to."""
    return f"wandb-registry-{settings.tracking.registry}/{model_name}"


def _model_artifact(wandb: Any, model_name: str, files: dict[str, bytes], metadata: dict[str, Any]) -> Any:
    artifact = wandb.Artifact(name=model_name, type="model", metadata=metadata)
    for name, data in sorted(files.items()):
        with artifact.new_file(name, mode="wb") as fh:
            fh.write(data)
    return artifact


def _run_path(settings: Settings, run: Any) -> str:
    """Where a run can be found: entity/project/id online, its run directory offline."""
    if settings.tracking.mode == "online":
        return f"{run.entity}/{run.project}/{run.id}"
    return str(Path(run.dir).parent)


def _publish(settings: Settings, run: Any, artifact: Any, model_name: str, aliases: list[str]) -> None:
    """Log the model artifact with ``aliases`` (in its project); online, also link it to the W&B
    Registry collection with them. wandb cannot link offline (``link_artifact`` raises
    NotImplementedError in 0.31): offline runs carry the aliases, and the collection only as metadata;
    syncing them does not make the link, a later move made online does."""
    run.log_artifact(artifact, aliases=aliases)
    if settings.tracking.mode == "online":
        run.link_artifact(artifact, registry_collection(settings, model_name), aliases=aliases)


def log_training_run(
    settings: Settings,
    api_key: str | None,
    report: TrainingReport,
    pngs: dict[str, bytes],
    files: dict[str, bytes],
) -> TrackedRun | None:
    """One W&B run for the training: config, curves, metrics, plots, trials; the dataset snapshot as a
    reference artifact it used; the model (``files``) as an artifact (aliases follow when the registry
    moves one: ``log_alias_move``)."""
    if settings.tracking.mode == "disabled":
        return None
    wandb = _wandb(settings)
    config = report.config
    run = _init(settings, api_key, name=report.name, group=report.group, job_type="train", config=config)
    _log_curves_and_tables(run, wandb, report, pngs)
    run.summary.update(report.summary)
    dataset = wandb.Artifact(
        name=f"{config['model_name']}-snapshot", type="dataset", metadata=report.dataset_metadata
    )
    dataset.add_reference(report.dataset_uri, name="snapshot", checksum=False)
    run.use_artifact(dataset) if settings.tracking.mode == "online" else run.log_artifact(dataset)
    model_name = config["model_name"]
    metadata = {
        "snapshot_id": config["snapshot_id"],
        "dataset_artifact": f"{model_name}-snapshot",
        "registry_collection": registry_collection(settings, model_name),
    }
    _publish(settings, run, _model_artifact(wandb, model_name, files, metadata), model_name, [])
    online = settings.tracking.mode == "online"
    result = TrackedRun(
        run_id=run.id, path=_run_path(settings, run), url=run.url if online else None, group=report.group
    )
    run.finish()
    return result


def log_alias_move(
    settings: Settings,
    api_key: str | None,
    model_name: str,
    version: int,
    files: dict[str, bytes],
    aliases: list[str],
    reason: str,
    metadata: dict[str, Any],
) -> str | None:
    """Mirror a registry alias move in W&B: a short run (job type ``registry``) logs the version's
    model artifact again with the same bytes (W&B keeps one artifact version for one digest) and the
    aliases it now has, so ``champion``/``challenger`` follow promotion, canary and rollback there.
    Returns the run's path (None: tracking disabled)."""
    if settings.tracking.mode == "disabled":
        return None
    wandb = _wandb(settings)
    run = _init(
        settings,
        api_key,
        name=f"{model_name}-v{version}-{'-'.join(aliases) or 'no-alias'}",
        group=f"{model_name}-registry",
        job_type="registry",
        config={"model_name": model_name, "registry_version": version, "aliases": aliases, "reason": reason},
    )
    meta = {**metadata, "registry_collection": registry_collection(settings, model_name)}
    _publish(settings, run, _model_artifact(wandb, model_name, files, meta), model_name, aliases)
    path = _run_path(settings, run)
    run.finish()
    return path
