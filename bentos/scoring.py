"""Scoring a batch of rows: which arm answers each row, both arms' scores during a canary, the answers,
and the one prediction-log row every endpoint logs.

During a canary each row is also scored by the other arm's model (logged, never returned), so the
canary decision compares both models on the same labelled rows: a paired test. In shadow mode the
challenger scores every row beside the champion and only the champion answers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import bentoml
import numpy as np
import polars as pl

from bentos.answers import ClassScored, Scored, ValueScored
from tasks.core.settings import ServingSettings
from tasks.core.target import LearningTask
from tasks.serving.routing import assign_arm
from tasks.serving.watcher import LoadedModel, ModelSet

PREDICTIONS = bentoml.metrics.Counter(
    name="driftloop_predictions", documentation="predictions made", labelnames=["model_version", "arm"]
)
LATENCY = bentoml.metrics.Histogram(
    name="driftloop_scoring_seconds",
    documentation="feature transform + model time",
    labelnames=["model_version", "arm"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
)

COALESCED = bentoml.metrics.Histogram(
    name="driftloop_coalesced_requests",
    documentation="single-row /predict requests scored together in one batch",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)


@dataclass
class ArmScores:
    """Per row: the answering arm's output (yes/no: the probability of yes; a number; or every class's
    probability, rows x classes) and version, and during a canary the other arm's."""

    output: np.ndarray
    version: np.ndarray
    threshold: np.ndarray  # the answering version's own label threshold
    on_challenger: np.ndarray
    paired: np.ndarray | None = None
    paired_version: np.ndarray | None = None


def route(ids: list[str], routing_keys: list[str | None], share: float) -> np.ndarray:
    """True where the challenger answers: by a hash of the caller's routing key (else the request id),
    so the same key always lands on the same arm."""
    if share <= 0:
        return np.zeros(len(ids), dtype=bool)
    return np.array([assign_arm(k or i, share) == "challenger" for k, i in zip(routing_keys, ids)])


def score_arms(models: ModelSet, frame: pl.DataFrame, on_challenger: np.ndarray, paired: bool) -> ArmScores:
    """Each row scored by the arm it is routed to (and, when ``paired``, by the other arm too)."""
    n = frame.height
    task = models.champion.transform.task
    shape = (n, len(task.classes)) if task.kind == "multiclass" else (n,)
    scores = ArmScores(
        output=np.empty(shape),
        version=np.full(n, models.champion.version.version),
        threshold=np.full(n, models.champion.version.threshold),
        on_challenger=on_challenger,
        paired=np.full(shape, np.nan) if paired else None,
        paired_version=np.full(n, -1) if paired else None,
    )
    arms: tuple[tuple[LoadedModel | None, np.ndarray, str, LoadedModel | None], ...] = (
        (models.champion, ~on_challenger, "champion", models.challenger),
        (models.challenger, on_challenger, "challenger", models.champion),
    )
    for model, mask, arm, other in arms:
        count = int(mask.sum())
        if not count:
            continue
        rows_of_arm = frame if count == n else frame.filter(pl.Series(mask))
        started = time.perf_counter()
        scores.output[mask] = model.score(rows_of_arm)
        scores.version[mask] = model.version.version
        scores.threshold[mask] = model.version.threshold
        labels = (str(model.version.version), arm)
        PREDICTIONS.labels(*labels).inc(count)
        LATENCY.labels(*labels).observe((time.perf_counter() - started) / count)
        if paired:
            scores.paired[mask] = other.score(rows_of_arm)
            scores.paired_version[mask] = other.version.version
    return scores


def answers(task: LearningTask, scores: ArmScores, shadow: np.ndarray | None, common: dict[str, Any]) -> Any:
    """The answers of the target's kind (``bentos.answers.ANSWERS``): yes/no probability and label at the
    answering version's threshold; the number; or the most probable class with every class's
    probability."""
    n = len(common["ids"])
    if task.kind == "binary":
        return Scored(
            **common,
            probability=scores.output.tolist(),
            label=(scores.output >= scores.threshold).astype(int).tolist(),
            shadow_probability=shadow.tolist() if shadow is not None else [None] * n,
        )
    if task.kind == "regression":
        shadow_value = shadow.tolist() if shadow is not None else [None] * n
        return ValueScored(**common, value=scores.output.tolist(), shadow_value=shadow_value)
    classes = np.asarray(task.classes, dtype=object)
    shadow_class = classes[np.argmax(shadow, axis=1)].tolist() if shadow is not None else [None] * n
    return ClassScored(
        **common,
        predicted_class=classes[np.argmax(scores.output, axis=1)].tolist(),
        probabilities=[dict(zip(task.classes, row)) for row in scores.output.tolist()],
        shadow_class=shadow_class,
    )


class Scorer:
    """Scores rows for one served model under the serving settings (mode, challenger share); each label
    at the answering version's own threshold (chosen on validation when it was trained)."""

    def __init__(self, model_name: str, serving: ServingSettings, log_schema: dict):
        self.model_name, self.serving = model_name, serving
        self.log_schema = log_schema

    def score(
        self,
        models: ModelSet,
        ids: list[str],
        rows: list[dict[str, Any]] | None,
        frame: pl.DataFrame,
        correlation_ids: list[str | None],
        routing_keys: list[str | None],
    ) -> tuple[Any, list[dict[str, Any]] | pl.DataFrame]:
        """Score ``frame`` (``rows``: the same inputs as dicts, when few) with the arm each row is routed
        to; returns the answers and their prediction-log rows (the caller makes those durable before it
        answers). ``ids`` are the request ids the service issued, one per row."""
        if models.champion is None:
            raise bentoml.exceptions.ServiceUnavailable("no champion model is loaded yet; see /model_status")
        challenger = models.challenger
        shadow = self.serving.mode == "shadow" and challenger is not None
        share = self.serving.challenger_share if challenger is not None and not shadow else 0.0
        scores = score_arms(models, frame, route(ids, routing_keys, share), paired=share > 0)
        task = models.champion.transform.task
        shadow_output = challenger.score(frame) if shadow else None
        common = dict(
            ids=ids,
            correlation_ids=correlation_ids,
            model_version=scores.version.tolist(),
            arm=np.where(scores.on_challenger, "challenger", "champion").tolist(),
            shadow_version=challenger.version.version if shadow else None,
        )
        out = answers(task, scores, shadow_output, common)
        return out, self.log_rows(rows, frame, self.log_columns(out, scores, task, shadow_output))

    def log_columns(
        self, out: Any, scores: ArmScores, task: LearningTask, shadow_output: np.ndarray | None
    ) -> dict[str, Any]:
        """The prediction log's columns beyond the inputs, spelled once: a list holds one value per row,
        anything else is the same for every row. Yes/no: the probability, label and the other arm's
        probability. Classes: ``probability`` and ``label`` are the chosen class's probability and code,
        ``output`` every class's probability; numbers: ``output`` holds the value (``paired_output`` and
        ``shadow_output`` the other arm's), what monitoring and the canary score later labels against."""
        paired = scores.paired is not None
        n = len(out.ids)
        columns = {
            "model_name": self.model_name,
            "request_id": out.ids,
            "correlation_id": out.correlation_ids,
            "ts": datetime.now(timezone.utc),
            "model_version": out.model_version,
            "arm": out.arm,
            "shadow_version": out.shadow_version,
            "paired_version": scores.paired_version.tolist() if paired else None,
        }
        if task.kind == "binary":
            return columns | {
                "probability": out.probability,
                "label": out.label,
                "shadow_probability": out.shadow_probability,
                "paired_probability": scores.paired.tolist() if paired else None,
                "output": None, "paired_output": None, "shadow_output": None,
            }  # fmt: skip

        def rows_of(values: np.ndarray) -> list[list[float]]:
            return values.reshape(n, -1).tolist()

        chosen = np.argmax(scores.output, axis=1) if task.kind == "multiclass" else None
        return columns | {
            "probability": scores.output.max(axis=1).tolist() if chosen is not None else None,
            "label": chosen.tolist() if chosen is not None else None,
            "shadow_probability": None,
            "paired_probability": None,
            "output": rows_of(scores.output),
            "paired_output": rows_of(scores.paired) if paired else None,
            "shadow_output": rows_of(shadow_output) if shadow_output is not None else None,
        }

    def log_rows(
        self, rows: list[dict[str, Any]] | None, frame: pl.DataFrame, columns: dict[str, Any]
    ) -> list[dict[str, Any]] | pl.DataFrame:
        """A few rows stay plain dicts (cheapest: one JSON line in the spool); a columnar batch stays
        columnar."""
        if rows is not None:
            same = {k: v for k, v in columns.items() if not isinstance(v, list)}
            per_row = {k: v for k, v in columns.items() if isinstance(v, list)}
            return [
                {**inputs, **same, **{k: v[i] for k, v in per_row.items()}} for i, inputs in enumerate(rows)
            ]
        dtypes = self.log_schema
        return frame.with_columns(
            pl.Series(k, v, dtype=dtypes[k]) if isinstance(v, list) else pl.lit(v, dtype=dtypes[k]).alias(k)
            for k, v in columns.items()
        )
