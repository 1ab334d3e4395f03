"""Calibrated probabilities and a decision threshold that means something, both fitted on validation.

A boosted model early-stopped on few trees can rank well and still say 0.17 where the truth is 0.5:
at a fixed 0.5 threshold it labels no one positive, and performance estimated from its scores (CBPE,
``tasks.monitoring.estimate``) would be wrong. So every candidate is

1. **calibrated** by Platt scaling on the validation rows: ``logit(p') = a * logit(p) + b``. A LightGBM
   binary model's probability is ``sigmoid(raw score)``, so the calibration is exact inside the model
   file itself: every leaf value times ``a``, plus ``b`` on the first tree's leaves. The calibrated
   model is an ordinary LightGBM model: the service, batch scoring and monitoring need no extra step,
   and the ranking (ROC-AUC, the gates, the canary) is unchanged;
2. given a **threshold chosen on validation** by the config's rule (``training.threshold``: F1, a cost
   ratio, a target precision or recall, or a fixed number), recorded with the version and used by the
   service for its labels.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel

from tasks.core.config import ThresholdRule

MIN_TRUE_POSITIVES = 10


class Calibration(BaseModel):
    """Platt scaling: ``logit(calibrated) = slope * logit(raw) + intercept``, fitted on ``rows``."""

    slope: float
    intercept: float
    rows: int


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1 - 1e-12)
    return np.log(p / (1 - p))


def fit_platt(p: np.ndarray, y: np.ndarray) -> Calibration:
    """The slope and intercept of a (barely regularised) logistic regression of ``y`` on ``logit(p)``."""
    from sklearn.linear_model import LogisticRegression

    fit = LogisticRegression(C=1e4, max_iter=1000).fit(logit(p)[:, None], np.asarray(y).astype(int))
    return Calibration(slope=float(fit.coef_[0, 0]), intercept=float(fit.intercept_[0]), rows=int(len(y)))


def apply_platt(p: np.ndarray, calibration: Calibration) -> np.ndarray:
    z = calibration.slope * logit(p) + calibration.intercept
    return 1.0 / (1.0 + np.exp(-z))


def calibrated_model_text(model_text: str, calibration: Calibration) -> str:
    """The LightGBM model with the calibration folded into its leaves (see the module's note)."""
    import lightgbm as lgb

    booster = lgb.Booster(model_str=model_text)
    dump = booster.dump_model()  # the whole model as JSON: read once
    if dump.get("objective", "").split(" ")[0] != "binary":
        raise ValueError("only a binary LightGBM model's scores are calibrated by Platt scaling")
    for tree in dump["tree_info"]:
        t = tree["tree_index"]
        for leaf in range(tree["num_leaves"]):
            value = booster.get_leaf_output(t, leaf) * calibration.slope
            booster.set_leaf_output(t, leaf, value + (calibration.intercept if t == 0 else 0.0))
    return booster.model_to_string()


class ThresholdChoice(BaseModel):
    """The threshold a rule chose on validation, with what it gives there; ``problem`` when no
    threshold satisfies the rule (the model is then rejected with it)."""

    threshold: float
    rule: str
    precision: float
    recall: float
    flagged_share: float  # share of validation rows at or above the threshold
    problem: str | None = None


def _at(
    y: np.ndarray, p: np.ndarray, threshold: float, rule: str, problem: str | None = None
) -> ThresholdChoice:
    flagged = p >= threshold
    tp = float(np.sum(flagged & (y == 1)))
    return ThresholdChoice(
        threshold=float(threshold),
        rule=rule,
        precision=tp / flagged.sum() if flagged.any() else 0.0,
        recall=tp / max(1.0, float(np.sum(y == 1))),
        flagged_share=float(flagged.mean()) if len(p) else 0.0,
        problem=problem,
    )


def choose_threshold(y: np.ndarray, p: np.ndarray, rule: ThresholdRule) -> ThresholdChoice:
    """The threshold on calibrated validation scores ``p`` that ``rule`` asks for."""
    from sklearn.metrics import precision_recall_curve

    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=np.float64)
    if rule.rule == "fixed":
        return _at(y, p, rule.value, f"fixed at {rule.value:g}")
    if rule.rule == "cost":
        # with calibrated probabilities, flagging pays off exactly when p * cost_fn >= (1 - p) * cost_fp
        t = rule.false_positive_cost / (rule.false_positive_cost + rule.false_negative_cost)
        return _at(
            y,
            p,
            t,
            f"cost: a missed positive costs {rule.false_negative_cost:g}, a false alarm "
            f"{rule.false_positive_cost:g}",
        )
    precision, recall, thresholds = precision_recall_curve(y, p)
    precision, recall = precision[:-1], recall[:-1]  # the last point has no threshold
    if rule.rule == "f1":
        f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
        return _at(y, p, thresholds[int(np.argmax(f1))], "best F1 on validation")
    if rule.rule == "precision":
        # precision over a handful of flagged rows is luck: at least MIN_TRUE_POSITIVES of them must be right
        true_positives = recall * float(np.sum(y == 1))
        ok = np.flatnonzero((precision >= rule.value) & (true_positives >= MIN_TRUE_POSITIVES))
        name = f"precision >= {rule.value:g} with the most recall"
        if not len(ok):
            return _at(y, p, 1.0, name, f"no threshold reaches precision {rule.value:g} on validation "
                       f"(best {precision.max():.3f})")  # fmt: skip
        return _at(y, p, thresholds[ok[0]], name)  # the lowest such threshold: the most recall
    ok = np.flatnonzero(recall >= rule.value)  # rule "recall"
    name = f"recall >= {rule.value:g} with the most precision"
    return _at(y, p, thresholds[ok[-1]], name)  # the highest such threshold: the most precision
