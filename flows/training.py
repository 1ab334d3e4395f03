"""The training flow: raw tables to a registered, tracked, profiled model.

Reads top to bottom as the story of one training run:

1. ingest each table (discover batches, validate the new ones, quarantine failures);
2. build the dataset snapshot (content-derived id; reused when inputs are unchanged);
3. split (by time; without a time column, stratified by the target) and fit the feature transform
   on the training rows;
4. search hyperparameters (trials mapped in parallel), then cross-validate the best (expanding
   windows over time, or stratified k-fold);
5. train the candidate; score the held-out rows part by part (mapped); evaluate it against a baseline
   and the current champion;
6. profile its inputs and predictions (the drift reference) and write its model card;
7. track the run in W&B, register the version, apply the promotion gate's decision, save it to the
   BentoML store.

Run it: ``python flows/training.py --n-trials 6`` or ``prefect deployment run 'training/local'``. The stages
and the run record they share are in ``flows/steps/training.py``.
"""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_progress_artifact, update_progress_artifact

from flows.schemas import TrainingParams, TrainingSummary
from flows.steps.command_line import run_from_command_line
from flows.steps.engine import EngineTaskRunner
from flows.steps.runtime import FLOW_GUARDS, publish, run_name
from flows.steps.training import (
    PrefectSteps,
    evaluate_and_decide,
    ingest_tables,
    profile_and_describe,
    publish_training_artifacts,
    register_and_apply,
    search_and_cross_validate,
    snapshot_and_prepare,
    start_training_run,
    summarize,
    train_and_score_held_out,
)


@flow(
    name="training",
    **FLOW_GUARDS,
    flow_run_name=run_name("training"),
    log_prints=True,
    persist_result=True,
    task_runner=EngineTaskRunner(),
)
def training(params: TrainingParams = TrainingParams()) -> TrainingSummary:
    """Train, evaluate, register and (maybe) promote a model from the configured sources. Runs when
    asked (UI, CLI, CI's deploy workflow) and inside every retrain, which registers a candidate."""
    run = start_training_run(params)
    steps = PrefectSteps()
    progress = publish(
        create_progress_artifact,
        progress=0.0,
        key="training-progress",
        description=f"training {run.model_name}",
    )

    def done(percent: float) -> None:
        if progress:
            update_progress_artifact(progress, progress=percent)

    run = ingest_tables(run, steps)
    done(15)
    run = snapshot_and_prepare(run, steps)
    done(25)
    run = search_and_cross_validate(run, steps)
    done(70)
    run = train_and_score_held_out(run, steps)
    run = evaluate_and_decide(run, steps)
    done(80)
    run = profile_and_describe(run, steps)
    done(88)
    run = register_and_apply(run, steps)
    summary = summarize(run)
    publish_training_artifacts(run, summary)
    done(100)
    return summary


if __name__ == "__main__":
    from deployments.console import print_training_summary

    run_from_command_line(training, TrainingParams, show=print_training_summary)
