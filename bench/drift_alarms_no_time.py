"""Drift alarms on a dataset without a time column (default: the ISLR Caravan example config).

The drift statistics were calibrated and checked on flights (``bench/drift_alarms.py``). This checks
the same rules where the held-out rows are a random stratified sample rather than the latest weeks, and
windows are small (the whole held-out set is ~2,000 rows): a model is trained from the dataset config
alone (no Prefect), its drift reference calibrated as the training flow does, then each window profiled
with whylogs and judged by ``drift_scores`` + ``tasks.decisions.decide_drift``:

- no drift: 30 random samples at each of 200 and 500 rows, drawn from half the held-out rows and
  judged against a reference calibrated on the other half (live rows are never the reference's own);
- injected shifts, built from the reference alone (nothing here names a column), 20 windows of 500
  rows of that half each: the most important numeric input +1 standard deviation; 30% nulls in it; and,
  if the model has a categorical input, an unseen level for 20% of rows of the most important one.

Targets: no retrain from any no-drift window and at most 1 column flagged over all of them; every shift
detected (a retrain) in at least 95% of windows with the shifted column named first.

    .venv/bin/python bench/drift_alarms_no_time.py [--config configs/caravan.yaml]  # ends with RESULT lines
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
from drift_alarms import first_feature, judge, judge_no_drift, verdict_table
from lib.heldout import reference_apart, train_from_config
from lib.results import result
from rich.console import Console

PROJECT = Path(__file__).resolve().parents[1]


def land_caravan(store, settings) -> None:
    from tasks.data.landing import land_rdataset

    land_rdataset(store, "ISLR", "Caravan", "raw/caravan/caravan.csv")


def shifts(held: pl.DataFrame, reference) -> dict[str, tuple[str, object]]:
    """name -> (column expected first, function(sample, rng) -> shifted sample), from the reference."""
    inputs = [r for r in reference.columns.values() if r.column != "prediction" and r.column in held.columns]
    numeric = max((r for r in inputs if r.kind == "numeric"), key=lambda r: r.importance).column
    std = float(held[numeric].cast(pl.Float64).std())
    out = {
        f"{numeric} +1 std": (numeric, lambda s, rng: s.with_columns(pl.col(numeric) + std)),
        f"30% nulls in {numeric}": (
            numeric,
            lambda s, rng: s.with_columns(
                pl.when(pl.Series(rng.random(s.height) < 0.3))
                .then(None)
                .otherwise(pl.col(numeric))
                .alias(numeric)
            ),
        ),
    }
    categorical = [r for r in inputs if r.kind != "numeric"]
    if categorical:
        cat = max(categorical, key=lambda r: r.importance).column
        dtype = held.schema[cat]
        unseen = (
            pl.lit("UNSEEN").cast(dtype, strict=False) if dtype == pl.String else pl.lit(-999).cast(dtype)
        )
        out[f"unseen {cat} level, 20%"] = (
            cat,
            lambda s, rng: s.with_columns(
                pl.when(pl.Series(rng.random(s.height) < 0.2)).then(unseen).otherwise(pl.col(cat)).alias(cat)
            ),
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=PROJECT / "configs" / "caravan.yaml")
    args = parser.parse_args()
    console = Console()
    root = Path(tempfile.mkdtemp(prefix="driftloop-bench-drift-no-time-"))
    try:
        started = time.perf_counter()
        with console.status(f"training from {args.config.name} and calibrating its drift reference..."):
            model = train_from_config(root, args.config, land_caravan)
            config, df, prepared = model.config, model.snapshot, model.prepared
            rng = np.random.default_rng(11)
            # windows from half the held-out rows, judged against a reference of the other half
            reference, held = reference_apart(model, rng)
        assert config.time_column is None, "this benchmark is for datasets without a time column"
        console.print(
            f"{config.name}: {df.height} rows; windows from {held.height} held-out rows apart from a "
            f"reference of the other {reference.rows} ({config.split_method} split)"
        )
        table = verdict_table(f"drift verdicts, {config.name}")
        judged = (config, prepared, model.booster, reference)
        flagged, retrains = judge_no_drift(table, held, (200, 500), 30, rng, judged)
        detected = total = 0
        for name, (expected, shift) in shifts(held, reference).items():
            hits = r = 0
            for _ in range(20):
                sample = held[np.sort(rng.choice(held.height, 500, replace=False))]
                v = judge(shift(sample, rng), config, prepared, model.booster, reference)
                hits += v.detected and expected == first_feature(v)
                r += v.detected
            table.add_row(f"shift: {name}", "20", "", str(r), f"{hits}/20")
            detected, total = detected + hits, total + 20
        console.print(table)
        console.print(f"in {time.perf_counter() - started:.0f} s")
        result("drift_no_time_columns_flagged", flagged, "<=", 1)
        result("drift_no_time_retrains_without_drift", retrains, "<=", 0)
        result("drift_no_time_shifts_detected", detected / total, ">=", 0.95)
        return 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
