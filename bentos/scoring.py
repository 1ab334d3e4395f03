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

from bentos.answers import Scored
from tasks.core.settings import ServingSettings
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
    """Per row: the answering arm's probability and version, and during a canary the other arm's."""

    probability: np.ndarray
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
    scores = ArmScores(
        probability=np.empty(n),
        version=np.full(n, models.champion.version.version),
        threshold=np.full(n, models.champion.version.threshold),
        on_challenger=on_challenger,
        paired=np.full(n, np.nan) if paired else None,
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
        scores.probability[mask] = model.score(rows_of_arm)
        scores.version[mask] = model.version.version
        scores.threshold[mask] = model.version.threshold
        labels = (str(model.version.version), arm)
        PREDICTIONS.labels(*labels).inc(count)
        LATENCY.labels(*labels).observe((time.perf_counter() - started) / count)
        if paired:
            scores.paired[mask] = other.score(rows_of_arm)
            scores.paired_version[mask] = other.version.version
    return scores


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
    ) -> tuple[Scored, list[dict[str, Any]] | pl.DataFrame]:
        """Score ``frame`` (``rows``: the same inputs as dicts, when few) with the arm each row is routed
        to; returns the answers and their prediction-log rows (the caller makes those durable before it
        answers). ``ids`` are the request ids the service issued, one per row."""
        if models.champion is None:
            raise bentoml.exceptions.ServiceUnavailable("no champion model is loaded yet; see /model_status")
        challenger = models.challenger
        shadow = self.serving.mode == "shadow" and challenger is not None
        share = self.serving.challenger_share if challenger is not None and not shadow else 0.0
        scores = score_arms(models, frame, route(ids, routing_keys, share), paired=share > 0)
        n = frame.height
        out = Scored(
            ids=ids,
            correlation_ids=correlation_ids,
            probability=scores.probability.tolist(),
            label=(scores.probability >= scores.threshold).astype(int).tolist(),
            model_version=scores.version.tolist(),
            arm=np.where(scores.on_challenger, "challenger", "champion").tolist(),
            shadow_version=challenger.version.version if shadow else None,
            shadow_probability=challenger.score(frame).tolist() if shadow else [None] * n,
        )
        return out, self.log_rows(rows, frame, self.log_columns(out, scores))

    def log_columns(self, out: Scored, scores: ArmScores) -> dict[str, Any]:
        """The prediction log's columns beyond the inputs, spelled once: a list holds one value per row,
        anything else is the same for every row."""
        paired = scores.paired is not None
        return {
            "model_name": self.model_name,
            "request_id": out.ids,
            "correlation_id": out.correlation_ids,
            "ts": datetime.now(timezone.utc),
            "probability": out.probability,
            "label": out.label,
            "model_version": out.model_version,
            "arm": out.arm,
            "shadow_version": out.shadow_version,
            "shadow_probability": out.shadow_probability,
            "paired_version": scores.paired_version.tolist() if paired else None,
            "paired_probability": scores.paired.tolist() if paired else None,
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
