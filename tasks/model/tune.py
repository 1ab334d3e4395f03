"""Hyperparameter search with Optuna: ask/tell, a seeded TPE sampler, median pruning.

The study lives in the flow (the controller); trials run wherever the engine puts them (threads, Dask
workers), so the study is never shared between processes. Trials are asked in batches as wide as
the engine runs at once; a batch's results are told back before the next is asked. Trial 0 is the
configured params (``training.params``), so the search never does worse than the config.

Pruning happens inside each trial, with Optuna's own ``MedianPruner``: the trial task gets the
validation curves (ROC-AUC, or the objective's loss) of the trials finished before its batch,
rebuilds a study holding just those, and asks it, round by round, whether its own curve is hopeless
(below the median of earlier trials at the same round, after a warm-up). So the decision does not
depend on timing, and the same seed gives the same trials, the same pruning and the same best params.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import optuna
from pydantic import BaseModel

from tasks.core.config import SearchDimension, TrainingConfig
from tasks.core.target import LearningTask

optuna.logging.set_verbosity(optuna.logging.WARNING)


class PruningRule(BaseModel):
    """Optuna ``MedianPruner`` settings, and the finished trials it compares against."""

    n_startup_trials: int
    n_warmup_steps: int
    interval_steps: int
    finished_curves: list[list[float]]  # the search metric on validation per round, of each finished trial
    metric: str = "auc"  # LearningTask.search_metric
    maximize: bool = True


class TrialSpec(BaseModel):
    number: int
    params: dict[str, Any]
    pruning: PruningRule


def pruning_rule(
    training: TrainingConfig, finished_curves: list[list[float]], task: LearningTask
) -> PruningRule:
    """Prune once two trials have finished, after a warm-up of a quarter of the rounds (a slow starter
    is not a hopeless one), checking every 10 rounds."""
    return PruningRule(
        n_startup_trials=2,
        n_warmup_steps=max(10, training.num_boost_round // 4),
        interval_steps=10,
        finished_curves=finished_curves,
        metric=task.search_metric,
        maximize=task.maximize,
    )


def new_pruner(rule: PruningRule) -> optuna.pruners.BasePruner:
    return optuna.pruners.MedianPruner(
        n_startup_trials=rule.n_startup_trials,
        n_warmup_steps=rule.n_warmup_steps,
        interval_steps=rule.interval_steps,
    )


def pruning_callback(rule: PruningRule) -> Callable[[Any], None]:
    """A LightGBM callback that reports each round's validation metric to a study holding the finished
    trials, and raises ``optuna.TrialPruned`` when Optuna's pruner says so."""
    best = max if rule.maximize else min
    study = optuna.create_study(direction=_direction(rule.maximize), pruner=new_pruner(rule))
    for curve in rule.finished_curves:
        study.add_trial(
            optuna.trial.create_trial(
                value=best(curve) if curve else 0.0,
                intermediate_values=dict(enumerate(curve)),
                params={},
                distributions={},
            )
        )
    trial = study.ask()

    def callback(env: Any) -> None:
        for data_name, metric, value, _ in env.evaluation_result_list:
            if data_name == "valid" and metric == rule.metric:
                trial.report(float(value), env.iteration)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"validation {metric} {value:.4f} at round {env.iteration}")

    callback.order = 25  # after record_evaluation (20), so the pruned trial's curve is kept
    return callback


def _suggest(trial: optuna.Trial, name: str, dim: SearchDimension) -> float | int:
    if dim.integer:
        return trial.suggest_int(name, int(math.ceil(dim.low)), int(math.floor(dim.high)), log=dim.log)
    return trial.suggest_float(name, dim.low, dim.high, log=dim.log)


def _direction(maximize: bool) -> str:
    return "maximize" if maximize else "minimize"


class Search:
    """An Optuna study over ``training.search_space``, driven batch by batch by the flow, on the
    target's search metric (``LearningTask.search_metric``: ROC-AUC up, or the objective's loss down)."""

    def __init__(self, training: TrainingConfig, task: LearningTask):
        self.training, self.task = training, task
        self.study = optuna.create_study(
            direction=_direction(task.maximize),
            sampler=optuna.samplers.TPESampler(seed=training.seed, n_startup_trials=4),
        )
        first = {k: training.params[k] for k in training.search_space if k in training.params}
        self.study.enqueue_trial(first, skip_if_exists=True)
        self._asked: dict[int, optuna.Trial] = {}
        self.curves: list[list[float]] = []

    def ask(self, n: int) -> list[TrialSpec]:
        """The next ``n`` trials, each with the pruning rule as of now."""
        rule = pruning_rule(self.training, list(self.curves), self.task)
        specs = []
        for _ in range(n):
            trial = self.study.ask()
            params = dict(self.training.params)
            for name, dim in sorted(self.training.search_space.items()):
                params[name] = _suggest(trial, name, dim)
            self._asked[trial.number] = trial
            specs.append(TrialSpec(number=trial.number, params=params, pruning=rule))
        return specs

    def tell(self, number: int, valid_curve: list[float], valid_score: float, pruned: bool) -> None:
        trial = self._asked.pop(number)
        for step, value in enumerate(valid_curve):
            trial.report(value, step)
        if pruned:
            self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:  # the median is over finished trials only, as in one Optuna process
            self.study.tell(trial, valid_score)
            self.curves.append(list(valid_curve))


def run_search(
    training: TrainingConfig,
    task: LearningTask,
    width: int,
    run_batch: Callable[[list[TrialSpec]], list[Any]],
) -> list[Any]:
    """``training.n_trials`` trials, ``width`` at a time: ask a batch, run it (``run_batch`` returns one
    ``FitResult`` per spec, in order), tell the results, repeat. Returns every trial's result."""
    search = Search(training, task)
    results: list[Any] = []
    while len(results) < training.n_trials:
        specs = search.ask(min(width, training.n_trials - len(results)))
        for spec, result in zip(specs, run_batch(specs)):
            search.tell(spec.number, result.curve, result.valid_score, result.pruned)
            results.append(result)
    return results


def best_trial(results: list[Any], task: LearningTask) -> Any:
    """The finished (not pruned) trial with the best validation score; the first batch is never pruned."""
    finished = [r for r in results if not r.pruned]
    return (max if task.maximize else min)(finished, key=lambda r: r.valid_score)
