"""The training pipeline without Prefect: the training flow's own stages (``flows/steps/training.py``)
run with ``BareSteps``, each step's ``.fn`` with the same parallelism (a 2-thread pool where the flow
maps tasks). The baseline of the orchestration benchmark, and a quick way for the serving benchmarks
to get a registered model without a Prefect server."""

from __future__ import annotations

import time

from tasks.core.settings import Settings


def run_bare(settings: Settings, params) -> float:
    """The flow's computation, stage by stage, with no Prefect in the loop; returns its seconds."""
    from flows.steps.engine import LOCAL_THREADS
    from flows.steps.training import BareSteps, run_training

    t0 = time.perf_counter()
    run_training(params, BareSteps(threads=LOCAL_THREADS), settings)
    return time.perf_counter() - t0
