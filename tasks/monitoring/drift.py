"""Drift and data quality of a monitoring window against the champion's reference profile.

Drift per input column and of the prediction comes from whylogs (KS for numbers, chi-square for
categories), with the p-value threshold per column from the dataset config; what counts as drift of
the whole window is decided in ``tasks.decisions.decide_drift``. Data quality: null rates against the
reference, categories the model never saw, missing columns.
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
import polars as pl
from pydantic import BaseModel

from tasks.core.config import MonitoringConfig
from tasks.model.features import FittedTransform
from tasks.monitoring.profile import import_whylogs


class ColumnDrift(BaseModel):
    column: str
    algorithm: str
    pvalue: float
    statistic: float
    threshold: float
    drifted: bool


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
        out.append(
            ColumnDrift(
                column=column,
                algorithm=str(score["algorithm"]),
                pvalue=pvalue,
                statistic=float(score["statistic"]) if np.isfinite(score["statistic"]) else 1e9,
                threshold=threshold,
                drifted=pvalue < threshold,
            )
        )
    return out


def data_quality(
    frame: pl.DataFrame, transform: FittedTransform, reference: Any, config: MonitoringConfig
) -> list[str]:
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
                problems.append(
                    f"categories: {share:.0%} of {col!r} values were never seen in training "
                    f"(e.g. {unseen.unique().head(3).to_list()})"
                )
    return problems


def drift_png(model_name: str, drift: list[ColumnDrift]) -> bytes:
    """Drift per column as a bar chart of -log10 p-values; red bars drifted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(drift, key=lambda d: d.pvalue)
    fig, ax = plt.subplots(figsize=(6, max(3, 0.25 * len(rows))))
    ax.barh(
        [d.column for d in rows][::-1],
        [min(-math.log10(max(d.pvalue, 1e-300)), 50) for d in rows][::-1],
        color=["tab:red" if d.drifted else "tab:green" for d in rows][::-1],
    )
    ax.axvline(-math.log10(rows[0].threshold if rows else 0.05), ls="--", color="grey")
    ax.set(xlabel="-log10 p-value (right of the line: drifted)", title=f"{model_name}: drift vs reference")
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()
