"""Live performance: logged predictions joined with the outcomes callers reported, per model version."""

from __future__ import annotations

import numpy as np
import polars as pl
from pydantic import BaseModel
from sklearn import metrics as skm


class LivePerformance(BaseModel):
    model_version: int
    predictions: int
    labels: int
    roc_auc: float | None
    log_loss: float | None
    mean_prediction: float
    positive_rate: float | None


def live_performance(
    predictions: pl.DataFrame, feedback: pl.DataFrame, min_labels: int
) -> list[LivePerformance]:
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
        out.append(
            LivePerformance(
                model_version=int(version),
                predictions=part.height,
                labels=known.height,
                roc_auc=float(skm.roc_auc_score(y, p)) if enough else None,
                log_loss=float(skm.log_loss(y, p, labels=[0, 1])) if enough else None,
                mean_prediction=float(part["probability"].mean()),
                positive_rate=float(y.mean()) if known.height else None,
            )
        )
    return sorted(out, key=lambda r: r.model_version)
