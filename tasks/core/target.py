"""The target's kind and everything that follows from it, in one place.

A dataset's target is ``binary`` (yes/no), ``multiclass`` (one of a few named classes) or ``regression``
(a number). The kind is stated in the config (``target.kind``) or inferred from the data where that is
unambiguous (``infer_kind``); the snapshot records it with the classes (``LearningTask``), the fitted
transform carries it to every model version, and each stage asks it what to do instead of assuming
yes/no:

- how a label is encoded for LightGBM (0/1, class code 0..K-1, the number itself);
- which LightGBM objective and metrics train it, and which metric the search maximises or minimises;
- each row's loss (``row_loss``): what the promotion gate and the canary compare, paired, between two
  models scoring the same rows;
- the constant a model must beat (``constant_prediction``: the training rows' class shares or mean).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from tasks.core.errors import BadInput

Kind = Literal["binary", "multiclass", "regression"]
KINDS: tuple[Kind, ...] = ("binary", "multiclass", "regression")

# objective -> the LightGBM metric that measures its loss (early stopping's metric), per kind
OBJECTIVES: dict[Kind, dict[str, str]] = {
    "binary": {"binary": "binary_logloss"},
    "multiclass": {"multiclass": "multi_logloss", "multiclassova": "multi_logloss"},
    "regression": {
        "regression": "l2",
        "regression_l1": "l1",
        "huber": "huber",
        "quantile": "quantile",
        "poisson": "poisson",
        "gamma": "gamma",
        "tweedie": "tweedie",
    },
}
# LightGBM's other names for the objectives above
OBJECTIVE_ALIASES = {
    "regression_l2": "regression",
    "l2": "regression",
    "mean_squared_error": "regression",
    "mse": "regression",
    "l2_root": "regression",
    "root_mean_squared_error": "regression",
    "rmse": "regression",
    "l1": "regression_l1",
    "mean_absolute_error": "regression_l1",
    "mae": "regression_l1",
    "softmax": "multiclass",
    "multiclass_ova": "multiclassova",
    "ova": "multiclassova",
    "ovr": "multiclassova",
}
YES = {"yes", "y", "true", "t", "1", "1.0"}  # text a yes/no target may hold, any case and spacing
NO = {"no", "n", "false", "f", "0", "0.0"}
MAX_CLASSES = 50  # more distinct values than this is not a class label a person reads
LOSS_NAMES = {
    "binary_logloss": "log loss",
    "multi_logloss": "log loss",
    "l2": "squared error",
    "l1": "absolute error",
    "huber": "Huber loss",
    "quantile": "pinball loss",
    "poisson": "Poisson deviance",
    "gamma": "gamma deviance",
    "tweedie": "Tweedie deviance",
}


def canonical_objective(objective: str) -> str:
    name = str(objective).strip().lower()
    return OBJECTIVE_ALIASES.get(name, name)


def objective_kind(objective: str) -> Kind | None:
    """The kind an objective trains, or None for an objective the loop does not know."""
    name = canonical_objective(objective)
    return next((kind for kind, objectives in OBJECTIVES.items() if name in objectives), None)


def check_objective(objective: str | None, kind: Kind | None, where: str) -> None:
    """A configured objective must be one the loop knows and fit the target's kind (stated in the config,
    or as the data shows it). ``BadInput`` is a ``ValueError``: in a config validator pydantic reports it."""
    if objective is None:
        return
    trains = objective_kind(objective)
    if trains is None:
        known = "; ".join(f"{k}: {', '.join(o)}" for k, o in OBJECTIVES.items())
        raise BadInput(f"{where}: objective {objective!r} is not one the loop trains ({known})")
    if kind is not None and trains != kind:
        raise BadInput(
            f"{where}: objective {objective!r} contradicts the target: it trains a {trains} target, and "
            f"target.kind is {kind!r}; use one of {', '.join(OBJECTIVES[kind])}, or remove "
            "training.params.objective (the kind's default), or change the target"
        )


def infer_kind(dtype: Any, values: list[Any], distinct: int, name: str, where: str) -> Kind:
    """The kind the target column's values make plain: booleans and yes/no-like text are binary, text of
    3..``MAX_CLASSES`` values multiclass, numbers with a fractional part or more than ``MAX_CLASSES``
    distinct values regression. Integers with a few distinct values could be counts or classes: that is
    an error asking for ``target.kind``. ``values``: some of the distinct values, ``distinct``: how many."""
    import polars as pl

    shown = ", ".join(map(repr, values[:8])) + (", ..." if distinct > 8 else "")
    if dtype == pl.Boolean:
        return "binary"
    if dtype.is_numeric():
        numbers = [float(v) for v in values if v is not None]
        if set(numbers) <= {0.0, 1.0}:
            return "binary"
        if dtype.is_float() and any(not float(v).is_integer() for v in numbers if np.isfinite(v)):
            return "regression"
        if distinct > MAX_CLASSES:
            return "regression"
        raise BadInput(
            f"{where}: target {name!r} holds {distinct} distinct whole numbers ({shown}): a count to predict "
            "or a class label? Set target.kind: regression or target.kind: multiclass"
        )
    if distinct == 2 or {str(v).strip().lower() for v in values} <= YES | NO:
        return "binary"
    if 2 < distinct <= MAX_CLASSES:
        return "multiclass"
    raise BadInput(
        f"{where}: target {name!r} holds {distinct} distinct text values ({shown}); a class label has 2 to "
        f"{MAX_CLASSES}: compute one with target.expression, or pick another target"
    )


class LearningTask(BaseModel):
    """The resolved target: its kind, its classes (multiclass: the class values in code order; code
    ``i`` is ``classes[i]``), and the LightGBM objective with its own parameters (Huber's ``alpha``, the
    quantile, Tweedie's variance power), so the loss the gate and the canary compare is the one trained."""

    kind: Kind = "binary"
    classes: list[str] = []
    objective: str = "binary"
    objective_params: dict[str, float] = Field({}, description="alpha, tweedie_variance_power")

    @property
    def loss_metric(self) -> str:
        """The LightGBM metric of the objective's loss: what early stopping watches."""
        return OBJECTIVES[self.kind][self.objective]

    @property
    def search_metric(self) -> str:
        """What the search and the trial curves judge by: ROC-AUC for yes/no (higher is better), the
        objective's own loss otherwise (lower is better)."""
        return "auc" if self.kind == "binary" else self.loss_metric

    @property
    def maximize(self) -> bool:
        return self.kind == "binary"

    @property
    def loss_name(self) -> str:
        return LOSS_NAMES[self.loss_metric]

    def lightgbm_params(self) -> dict[str, Any]:
        """What LightGBM is told about the target: the objective, its metrics (the loss first, which
        early stopping watches; ROC-AUC reported beside it for yes/no, squared and absolute error for a
        number) and the class count."""
        extra = {"binary": ["auc"], "multiclass": ["multi_error"], "regression": ["l2", "l1"]}[self.kind]
        metrics = list(dict.fromkeys([self.loss_metric, *extra]))
        params: dict[str, Any] = {"objective": self.objective, "metric": metrics, **self.objective_params}
        if self.kind == "multiclass":
            params["num_class"] = len(self.classes)
        return params

    def answer(self, pred: np.ndarray) -> np.ndarray:
        """One value per row that stands for the prediction where one column is wanted (drift of the
        predictions, the prediction log's ``prediction``): the probability of yes, the number, or the
        most probable class's name."""
        pred = np.asarray(pred)
        if self.kind == "multiclass":
            return np.asarray(self.classes, dtype=object)[np.argmax(pred, axis=1)]
        return pred

    def check_values(self, y: np.ndarray, where: str) -> None:
        """Poisson and Tweedie need targets >= 0, gamma > 0 (LightGBM stops with a bare error otherwise):
        a ``BadInput`` naming the objective, how many values break it and what to use instead."""
        lowest = {"poisson": 0.0, "tweedie": 0.0, "gamma": np.nextafter(0.0, 1.0)}.get(self.objective)
        y = np.asarray(y, dtype=np.float64)
        if lowest is None or not len(y) or y.min() >= lowest:
            return
        bad, bound = int((y < lowest).sum()), "> 0" if lowest > 0 else ">= 0"
        raise BadInput(
            f"{where}: objective {self.objective!r} needs targets {bound}; {bad} of {len(y)} rows hold less "
            f"(lowest {y.min():g}): use objective regression or huber, or a target expression that is never "
            "negative"
        )

    def row_loss(self, y: np.ndarray, pred: np.ndarray) -> np.ndarray:
        """Each row's loss under the trained objective: log loss of the true class's probability for
        classes, and for a number the objective's own loss (squared error for L2, pinball for a quantile,
        the deviance's per-row terms for Poisson, gamma and Tweedie)."""
        y = np.asarray(y, dtype=np.float64)
        pred = np.asarray(pred, dtype=np.float64)
        if self.kind == "binary":
            p = np.clip(pred, 1e-7, 1 - 1e-7)
            return -(y * np.log(p) + (1 - y) * np.log(1 - p))
        if self.kind == "multiclass":
            p = np.clip(pred[np.arange(len(y)), y.astype(int)], 1e-7, 1.0)
            return -np.log(p)
        r = y - pred
        metric, extra = self.loss_metric, self.objective_params
        if metric == "l2":
            return r**2
        if metric == "l1":
            return np.abs(r)
        if metric == "huber":
            a = float(extra.get("alpha", 0.9))
            return np.where(np.abs(r) <= a, 0.5 * r**2, a * (np.abs(r) - 0.5 * a))
        if metric == "quantile":
            q = float(extra.get("alpha", 0.9))
            return np.maximum(q * r, (q - 1) * r)
        mu = np.maximum(pred, 1e-9)
        if metric == "poisson":
            return mu - y * np.log(mu)
        if metric == "gamma":
            return y / mu + np.log(mu)
        power = float(extra.get("tweedie_variance_power", 1.5))
        return -y * mu ** (1 - power) / (1 - power) + mu ** (2 - power) / (2 - power)

    def constant_prediction(self, y_train: np.ndarray, rows: int) -> np.ndarray:
        """What a model that ignores every input predicts: the training rows' share of positives or of
        each class, or (a number) the constant that minimises the objective's loss on them."""
        y_train = np.asarray(y_train, dtype=np.float64)
        if self.kind == "multiclass":
            shares = np.bincount(y_train.astype(int), minlength=len(self.classes)) / max(1, len(y_train))
            return np.tile(shares, (rows, 1))
        if self.kind == "regression" and self.loss_metric == "l1":
            value = float(np.median(y_train))
        elif self.kind == "regression" and self.loss_metric == "quantile":
            value = float(np.quantile(y_train, float(self.objective_params.get("alpha", 0.9))))
        else:
            value = float(np.mean(y_train))
        return np.full(rows, value)

    @property
    def constant_name(self) -> str:
        """How the constant baseline is named in reasons and the model card."""
        if self.kind == "binary":
            return "majority class"
        if self.kind == "multiclass":
            return "class shares"
        return {"l1": "training median", "quantile": "training quantile"}.get(
            self.loss_metric, "training mean"
        )

    @property
    def linear_name(self) -> str:
        return {"binary": "logistic regression", "multiclass": "multinomial logistic regression"}.get(
            self.kind, "ridge regression"
        )


def learning_task(
    kind: Kind, classes: list[str], params: dict[str, Any], origin: str = "<dataset config>"
) -> LearningTask:
    """The task for a target of ``kind`` trained with ``params`` (``training.params``): the configured
    objective (checked against the kind), else the kind's default."""
    configured = params.get("objective")
    check_objective(configured, kind, f"{origin}: training.params")
    objective = canonical_objective(configured) if configured else next(iter(OBJECTIVES[kind]))
    own = {k: float(params[k]) for k in ("alpha", "tweedie_variance_power") if k in params}
    return LearningTask(kind=kind, classes=classes, objective=objective, objective_params=own)
