"""Experiment tracking with Weights & Biases: one run per training, trials grouped beside it.

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


class TrainingReport(BaseModel):
    """What one training run reports to W&B: its identity, curves, metrics, plots, trials and slices
    (plots and the model file are store keys: the report is small, and a cache key)."""

    name: str
    group: str
    config: dict[str, Any]
    model_key: str
    transform_json: str
    history: dict[str, dict[str, list[float]]]
    summary: dict[str, float]
    plot_keys: dict[str, str]
    trials: list[dict[str, Any]]
    slices: list[dict[str, Any]]


def _log_trials(settings: Settings, api_key: str | None, report: TrainingReport) -> None:
    """One W&B run per search trial, grouped with the training run."""
    for i, trial in enumerate(report.trials):
        trial_run = _init(
            settings,
            api_key,
            name=f"{report.name}-trial-{i}",
            group=report.group,
            job_type="hpo-trial",
            config={**trial["params"], "trial": trial.get("trial", i)},
        )
        for step, (auc, loss) in enumerate(
            zip(trial["history"]["valid"]["auc"], trial["history"]["valid"]["binary_logloss"])
        ):
            trial_run.log({"valid/auc": auc, "valid/logloss": loss}, step=step)
        trial_run.summary.update(
            {
                "valid_auc": trial["valid_auc"],
                "best_iteration": trial["best_iteration"],
                "pruned": bool(trial.get("pruned", False)),  # stopped early by Optuna's median rule
            }
        )
        trial_run.finish()


def _log_curves_and_tables(run: Any, wandb: Any, report: TrainingReport, pngs: dict[str, bytes]) -> None:
    """Per-iteration curves, plots, the trials table and the slices table of the training run."""
    train_h, valid_h = report.history.get("train", {}), report.history.get("valid", {})
    for step in range(len(valid_h.get("auc", []))):
        run.log(
            {
                "train/auc": train_h["auc"][step],
                "train/logloss": train_h["binary_logloss"][step],
                "valid/auc": valid_h["auc"][step],
                "valid/logloss": valid_h["binary_logloss"][step],
            },
            step=step,
        )
    from PIL import Image

    run.log({f"plots/{k}": wandb.Image(Image.open(io.BytesIO(v)), caption=k) for k, v in pngs.items()})
    rows = [
        [t.get("trial", i), t["valid_auc"], t["best_iteration"], bool(t.get("pruned")), str(t["params"])]
        for i, t in enumerate(report.trials)
    ]
    run.log(
        {
            "trials": wandb.Table(
                columns=["trial", "valid_auc", "best_iteration", "pruned", "params"], data=rows
            )
        }
    )
    if report.slices:
        cols = list(report.slices[0])
        run.log({"slices": wandb.Table(columns=cols, data=[[s[c] for c in cols] for s in report.slices])})


def log_training_run(
    settings: Settings, api_key: str | None, report: TrainingReport, pngs: dict[str, bytes], model_file: Path
) -> TrackedRun | None:
    """Log the training run (config, per-iteration curves, metrics, plots, model artifact) and its trials."""
    if settings.tracking.mode == "disabled":
        return None
    wandb = _wandb(settings)
    _log_trials(settings, api_key, report)
    config = report.config
    run = _init(settings, api_key, name=report.name, group=report.group, job_type="train", config=config)
    _log_curves_and_tables(run, wandb, report, pngs)
    run.summary.update(report.summary)
    artifact = wandb.Artifact(
        name=f"{config['model_name']}", type="model", metadata={"snapshot_id": config["snapshot_id"]}
    )
    artifact.add_file(str(model_file), name="model.txt")
    with artifact.new_file("transform.json") as fh:
        fh.write(report.transform_json)
    run.log_artifact(artifact)
    online = settings.tracking.mode == "online"
    path = f"{run.entity}/{run.project}/{run.id}" if online else str(Path(run.dir).parent)
    result = TrackedRun(run_id=run.id, path=path, url=run.url if online else None, group=report.group)
    run.finish()
    return result
