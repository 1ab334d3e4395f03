"""Monitoring: profile what the service saw, compare it with the champion's reference, judge.

Reads prediction-log files not processed before (the watermark is the set of processed keys, kept in
the store, so reruns never double-count), profiles the window with whylogs (merged into one profile
per day), and computes:

- drift per input column and of the prediction (whylogs: KS for numbers, chi-square for categories),
  with the p-value threshold per column from the dataset config;
- data quality: null rates against the reference, categories the model never saw, missing columns;
- live performance per model version from predictions joined with feedback, once enough labels exist.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
from pydantic import BaseModel
from sklearn import metrics as skm

from tasks.core.config import MonitoringConfig
from tasks.model.features import FittedTransform
from tasks.monitoring.profile import import_whylogs, load_profile, profile_frame
from tasks.core.store import ArtifactStore


class ColumnDrift(BaseModel):
    column: str
    algorithm: str
    pvalue: float
    statistic: float
    threshold: float
    drifted: bool


class LivePerformance(BaseModel):
    model_version: int
    predictions: int
    labels: int
    roc_auc: float | None
    log_loss: float | None
    mean_prediction: float
    positive_rate: float | None


class MonitorReport(BaseModel):
    model_name: str
    champion: int | None
    files: list[str]
    rows: int
    window: tuple[str, str] | None
    drift: list[ColumnDrift] = []
    drifted: list[str] = []
    drift_detected: bool = False
    quality_problems: list[str] = []
    performance: list[LivePerformance] = []
    degraded: list[str] = []
    note: str = ""


def watermark_key(model_name: str) -> str:
    return f"state/monitor/{model_name}.json"


def unprocessed_files(store: ArtifactStore, model_name: str) -> list[str]:
    done = set(store.read_json(watermark_key(model_name))["processed"]) if store.exists(watermark_key(model_name)) else set()
    return [k for k in store.list("predictions") if k.endswith(".parquet") and k not in done]


def mark_processed(store: ArtifactStore, model_name: str, keys: list[str]) -> None:
    key = watermark_key(model_name)
    done = store.read_json(key)["processed"] if store.exists(key) else []
    store.write_json(key, {"processed": sorted(set(done) | set(keys))})


def window_view(frame: pl.DataFrame, input_columns: list[str], time_column: str) -> Any:
    """The window's profile, shaped like the reference: raw inputs (no time column) + ``prediction``."""
    cols = [c for c in input_columns if c != time_column and c in frame.columns]
    return profile_frame(frame.select(*cols, pl.col("probability").alias("prediction")))


def profile_and_store_daily(store: ArtifactStore, model_name: str, frame: pl.DataFrame, input_columns: list[str],
                            time_column: str) -> Any:
    """Profile the window once per day it spans, merge each day into ``profiles/<model>/daily/<date>.bin``,
    and return the whole window's profile (the days merged)."""
    window = None
    for (day,), part in frame.with_columns(pl.col("ts").dt.strftime("%Y-%m-%d").alias("__day")).partition_by(
            ["__day"], as_dict=True).items():
        view = window_view(part, input_columns, time_column)
        key = f"profiles/{model_name}/daily/{day}.bin"
        stored = load_profile(store.read_bytes(key)).merge(view) if store.exists(key) else view
        store.write_bytes(key, stored.serialize())
        window = view if window is None else window.merge(view)
    return window


def drift_scores(window: Any, reference: Any, config: MonitoringConfig) -> list[ColumnDrift]:
    import_whylogs()
    from whylogs.viz.drift.column_drift_algorithms import calculate_drift_scores

    scores = calculate_drift_scores(target_view=window, reference_view=reference, with_thresholds=True)
    out = []
    for column, score in sorted(scores.items()):
        if not score:
            continue
        threshold = config.column_pvalues.get(column, config.drift_pvalue)
        pvalue = float(score["pvalue"])
        out.append(ColumnDrift(column=column, algorithm=str(score["algorithm"]), pvalue=pvalue,
                               statistic=float(score["statistic"]) if np.isfinite(score["statistic"]) else 1e9,
                               threshold=threshold, drifted=pvalue < threshold))
    return out


def data_quality(frame: pl.DataFrame, transform: FittedTransform, reference: Any, config: MonitoringConfig) -> list[str]:
    """Problems a person should look at: missing columns, null rates up, categories never seen in training."""
    problems = []
    missing = [c for c in transform.spec.input_columns if c not in frame.columns]
    if missing:
        problems.append(f"schema: column(s) {missing} missing from the prediction log")
    ref = reference.to_pandas()
    for col in transform.spec.input_columns:
        if col in missing or col not in ref.index:
            continue
        n_ref = float(ref.loc[col].get("counts/n", 0)) or 1.0
        ref_null = float(ref.loc[col].get("counts/null", 0)) / n_ref
        null_rate = frame[col].null_count() / max(frame.height, 1)
        if null_rate - ref_null > config.max_null_increase:
            problems.append(f"nulls: {col!r} is null in {null_rate:.0%} of rows (reference {ref_null:.0%})")
    for col, levels in transform.categories.items():
        if col in missing:
            continue
        values = frame[col].drop_nulls().cast(pl.String)
        if values.len():
            unseen = values.filter(~values.is_in(pl.Series(levels, dtype=pl.String)))
            share = unseen.len() / values.len()
            if share > config.max_unseen_share:
                problems.append(f"categories: {share:.0%} of {col!r} values were never seen in training "
                                f"(e.g. {unseen.unique().head(3).to_list()})")
    return problems


def live_performance(predictions: pl.DataFrame, feedback: pl.DataFrame, min_labels: int) -> list[LivePerformance]:
    """Per model version: predictions joined with their observed outcomes (last feedback wins)."""
    if predictions.height == 0:
        return []
    labelled = predictions.select("request_id", "model_version", "probability")
    if feedback.height:
        outcomes = feedback.sort("ts").unique("request_id", keep="last").select("request_id", "outcome")
        labelled = labelled.join(outcomes, on="request_id", how="left")
    else:
        labelled = labelled.with_columns(pl.lit(None, dtype=pl.Int8).alias("outcome"))
    out = []
    for (version,), part in labelled.partition_by(["model_version"], as_dict=True).items():
        known = part.filter(pl.col("outcome").is_not_null())
        y, p = known["outcome"].to_numpy(), np.clip(known["probability"].to_numpy(), 1e-7, 1 - 1e-7)
        enough = known.height >= min_labels and len(np.unique(y)) == 2
        out.append(LivePerformance(
            model_version=int(version), predictions=part.height, labels=known.height,
            roc_auc=float(skm.roc_auc_score(y, p)) if enough else None,
            log_loss=float(skm.log_loss(y, p, labels=[0, 1])) if enough else None,
            mean_prediction=float(part["probability"].mean()),
            positive_rate=float(y.mean()) if known.height else None))
    return sorted(out, key=lambda r: r.model_version)
