"""Dataset configuration: everything dataset-specific lives in YAML, validated by these models.

A user's own dataset goes in through a file like ``configs/flights.yaml``: tables and where they
come from, a data contract per table, joins, the time column (optional), the target, the features and
the training search space. No pipeline code names a flights column. Strings in the YAML may use
``${ENV_VAR}`` so that secrets (database URLs, API tokens) stay in the environment.

Every column a config names is checked against the table contracts when the file is read, so a typo
fails at once with the file, the field and the nearest column names, not halfway through training.
Each registered model version keeps a copy of its config (``template``: the file as written, with
``${VAR}`` unexpanded, so no secret is copied); whatever later acts on that model reads it from there.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import re
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import polars as pl
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from tasks.core.errors import BadInput
from tasks.core.target import Kind, check_objective


class ConfigError(BadInput):
    """The dataset configuration is wrong; the message names the file, the field and the fix."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- sources -------------------------------------------------------------------------------------
class FileSource(Strict):
    """Parquet or CSV files: a store key, a local path or an s3:// URI; globs and hive partitions."""

    kind: Literal["files"]
    path: str = Field(description="store key (e.g. raw/flights), absolute path, or s3:// URI; may be a glob")
    format: Literal["parquet", "csv"] = "parquet"
    hive_partitioning: bool = False


class SqlSource(Strict):
    """Any SQLAlchemy URL; one query is one batch."""

    kind: Literal["sql"]
    url: str
    query: str
    timeout_seconds: float = 30.0


class HttpPagination(Strict):
    style: Literal["none", "page", "next_url"] = "none"
    page_param: str = "page"
    size_param: str = "page_size"
    page_size: int = Field(500, ge=1)
    next_url_field: str = "next"
    max_pages: int = Field(10_000, ge=1)


class HttpSource(Strict):
    """A JSON API returning records, optionally paginated; one full read is one batch."""

    kind: Literal["http"]
    url: str
    records_field: str | None = Field(
        None, description="field holding the list of records; None: the body is the list"
    )
    params: dict[str, str] = {}
    headers: dict[str, str] = {}
    pagination: HttpPagination = HttpPagination()
    timeout_seconds: float = Field(10.0, gt=0)
    retries: int = Field(3, ge=0)


Source = Annotated[FileSource | SqlSource | HttpSource, Field(discriminator="kind")]


# --- contracts -----------------------------------------------------------------------------------
class ColumnContract(Strict):
    dtype: Literal["int64", "float64", "string", "bool", "date", "datetime"]
    nullable: bool = True
    min: float | None = None
    max: float | None = None
    allowed: list[str | int | float] | None = Field(None, description="the only values the column may hold")
    pattern: str | None = Field(None, description="regular expression every (string) value must match")
    max_length: int = Field(
        256,
        ge=1,
        description="the longest text a string column may hold, in characters (raise it for free text)",
    )
    control_characters: bool = Field(
        False,
        description="allow control characters (U+0000-U+001F, U+007F-U+009F) and bidirectional "
        "overrides (U+202A-U+202E, U+2066-U+2069) in text; off: a value holding one is refused",
    )
    coerce: bool = Field(
        False,
        description="accept values of another type that convert losslessly to dtype (e.g. numbers "
        "delivered as text); off by default: a string where a number is declared fails the batch. CSV "
        "files carry no types, so their text is always parsed as dtype",
    )

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"pattern {value!r} is not a regular expression: {exc}") from None
        return value


def _sql_roots(expression: str, where: str) -> list[str]:
    """The columns a Polars SQL expression reads; a clear error when it does not parse."""
    try:
        return pl.sql_expr(expression).meta.root_names()
    except Exception as exc:  # noqa: BLE001 - polars raises several SQL error types
        raise ValueError(f"{where}: {expression!r} is not a valid Polars SQL expression: {exc}") from None


class TableContract(Strict):
    columns: dict[str, ColumnContract]
    unique: list[str] = Field(
        [],
        description="columns that together identify a row, within a batch and across all batches of "
        "the table (a partition delivered twice is caught at ingestion)",
    )
    rules: dict[str, str] = Field(
        {},
        description="row-level rules across columns: name -> Polars SQL condition every row must meet, "
        "e.g. 'arr_time IS NULL OR dep_time IS NOT NULL' (a NULL result passes, as in SQL CHECK)",
    )
    extra_columns: Literal["error", "ignore"] = "error"
    min_rows: int = Field(1, ge=0)

    @model_validator(mode="after")
    def _columns_exist(self) -> "TableContract":
        missing = [c for c in self.unique if c not in self.columns]
        if missing:
            raise ValueError(f"unique names columns not in the contract: {missing}")
        for name, rule in self.rules.items():
            unknown = [c for c in _sql_roots(rule, f"rules.{name}") if c not in self.columns]
            if unknown:
                raise ValueError(f"rules.{name} reads column(s) {unknown} that are not in the contract")
        return self


class TableConfig(Strict):
    source: Source
    contract: TableContract


# --- preparation ---------------------------------------------------------------------------------
class JoinConfig(Strict):
    """A left join of another table onto the base table; the right side is de-duplicated on its keys."""

    table: str
    left_on: list[str]
    right_on: list[str]
    columns: list[str] | None = Field(None, description="right-hand columns to keep (default: all but keys)")
    prefix: str = ""

    @model_validator(mode="after")
    def _same_key_count(self) -> "JoinConfig":
        if len(self.left_on) != len(self.right_on):
            raise ValueError(f"join {self.table}: left_on and right_on need the same number of columns")
        return self


class TimeConfig(Strict):
    column: str
    format: str | None = Field(None, description="strptime format when the column is a string")
    timezone: str = Field("UTC", description="zone in which calendar parts (hour, weekday) are taken")
    parts: list[Literal["hour", "weekday", "month", "day", "minute"]] = ["hour", "weekday", "month"]
    naive: Literal["refuse", "utc", "local"] = Field(
        "refuse",
        description="what a time without a UTC offset means where callers send times (requests, files "
        "to score): refused with a 400 naming the column (default), read as UTC, or read in `timezone`",
    )


class TargetConfig(Strict):
    """What the model predicts: a column (``name`` alone) or an ``expression`` computing it from other
    columns (then ``name`` is the new column's name). Its ``kind`` (``tasks.core.target``): ``binary``
    (booleans, 0/1, yes/no-like text, or ``positive`` naming the yes value of a two-valued column),
    ``multiclass`` (2..50 named classes) or ``regression`` (a number); inferred from the data when not
    given, and an error saying which to set where the data could be either."""

    name: str
    kind: Kind | None = Field(None, description="binary, multiclass or regression; default: from the data")
    expression: str | None = Field(None, description="Polars SQL expression giving the target")
    positive: str | int | bool | None = Field(
        None, description="the value of the target column that means yes (binary, without an expression)"
    )
    requires: list[str] = Field([], description="columns that must be non-null for a row to have a label")

    @model_validator(mode="after")
    def _one_way(self) -> "TargetConfig":
        if self.expression is not None and self.positive is not None:
            raise ValueError("target: give either expression or positive, not both")
        if self.positive is not None and self.kind not in (None, "binary"):
            raise ValueError(
                f"target: positive names the yes value of a binary target, not a {self.kind} one"
            )
        return self

    @property
    def label_columns(self) -> list[str]:
        """Columns without which a row has no label (the target column itself, when it is given)."""
        return list(dict.fromkeys([*self.requires, *([] if self.expression else [self.name])]))


class FeatureConfig(Strict):
    numeric: list[str] = []
    categorical: list[str] = []
    derived: dict[str, str] = Field({}, description="name -> row-local Polars SQL expression (numeric)")
    clip_quantiles: tuple[float, float] = (0.001, 0.999)
    min_category_count: int = Field(20, ge=1)


class WindowConfig(Strict):
    start: datetime | None = None
    end: datetime | None = None


class SplitConfig(Strict):
    """How rows are split into train / validation / test. ``time`` (the default with a time column):
    the latest rows are the test, CV folds are expanding windows. ``stratified`` (the default without
    one): each split gets the target's share of positives, CV is stratified k-fold. ``random``: like
    stratified without balancing the classes. Rows are assigned by a seeded hash of their contents, so a
    row keeps its split when the data grows (a retrain's holdout holds no row the champion trained on,
    except a few next to a boundary in stratified mode)."""

    method: Literal["time", "stratified", "random"] | None = Field(
        None, description="default: time with a time column, else stratified"
    )
    valid_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_fraction: float = Field(0.15, gt=0, lt=0.5)
    cv_folds: int = Field(3, ge=0, le=10)
    seed: int = Field(13, description="seed of the row hash that assigns rows to splits (not time splits)")


class SearchDimension(Strict):
    low: float
    high: float
    log: bool = False
    integer: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> "SearchDimension":
        if self.low > self.high:
            raise ValueError(f"search dimension low={self.low} is above high={self.high}")
        return self


class ThresholdRule(Strict):
    """How a binary model's decision threshold is chosen on validation (``tasks.model.calibrate``)."""

    rule: Literal["f1", "cost", "precision", "recall", "fixed"] = "f1"
    value: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="the target precision or recall (rules precision, recall), or the "
        "threshold itself (rule fixed)",
    )
    false_positive_cost: float = Field(1.0, gt=0, description="rule cost: what a false alarm costs")
    false_negative_cost: float = Field(1.0, gt=0, description="rule cost: what a missed positive costs")


FIXED_BY_THE_LOOP = {"metric", "num_class", "deterministic", "force_row_wise", "verbose"}  # tasks.model.train


class TrainingConfig(Strict):
    params: dict[str, Any] = Field(
        {},
        description="LightGBM parameters (the search starts from them); the objective is the target's "
        "(or a kind-matching one such as huber, quantile, tweedie), early stopping's metric and "
        "determinism are set by the loop",
    )
    search_space: dict[str, SearchDimension] = {}

    @field_validator("params")
    @classmethod
    def _params_the_model_is_trained_with(cls, params: dict[str, Any]) -> dict[str, Any]:
        """A parameter the loop sets for itself would be silently replaced, and the registry would
        record a value the model was not trained with: refuse it, naming what happens instead."""
        check_objective(params.get("objective"), None, "training.params")
        fixed = sorted(FIXED_BY_THE_LOOP & set(params))
        if fixed:
            raise ValueError(
                f"{', '.join(fixed)} set by the loop (early stopping on the objective's own loss, with "
                "ROC-AUC, classification error or squared and absolute error reported by kind; "
                "deterministic row-wise training); remove them from training.params"
            )
        return params

    n_trials: int = Field(4, ge=1, le=200)
    num_boost_round: int = Field(500, ge=1)
    early_stopping_rounds: int = Field(30, ge=1)
    threshold: "ThresholdRule" = Field(
        default_factory=lambda: ThresholdRule(rule="f1"),
        description="how the label's threshold is chosen on the calibrated validation scores: "
        "{rule: f1} (default), {rule: cost, false_negative_cost: 5}, {rule: precision, value: 0.6}, "
        "{rule: recall, value: 0.8}, or a number (fixed)",
    )

    @field_validator("threshold", mode="before")
    @classmethod
    def _fixed_number(cls, value: Any) -> Any:
        """A bare number is a fixed threshold (the configs' earlier spelling)."""
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return {"rule": "fixed", "value": value}
        return value

    seed: int = 13
    max_search_rows: int = Field(
        1_000_000,
        ge=1000,
        description="search trials and CV folds train on at most this many rows of train + validation "
        "(evenly spaced, so the split and the time order hold); the final model trains on every row",
    )
    max_fit_rows: int = Field(
        1_000_000, ge=1000, description="training rows (evenly spaced) the feature transform is fitted on"
    )


class MonitoringConfig(Strict):
    """How monitoring judges live traffic against the champion's reference profile."""

    drift_floor: float = Field(
        0.05,
        gt=0,
        description="smallest PSI that is drift, however large the window (0.1 is a common "
        "'moderate shift'; 0.25 'major')",
    )
    drift_safety: float = Field(
        2.0,
        ge=1,
        description="a column drifts when its PSI exceeds this many times the sampling noise "
        "calibrated from random held-out windows of the same size",
    )
    calibration_sizes: list[int] = Field(
        [1000, 5000, 20000],
        description="window sizes (rows) of the calibration's random held-out windows (min_rows, the "
        "smallest window judged, is always added)",
    )
    calibration_resamples: int = Field(8, ge=2, le=100, description="random held-out windows per size")
    drift_alpha: float = Field(
        1e-4,
        gt=0,
        lt=0.5,
        description="chance that one column of a window that has not drifted is flagged anyway, by the "
        "chi-square bound on rows x PSI (the threshold never goes below it, however lucky the "
        "calibration's few random windows were)",
    )
    max_reference_rows: int = Field(
        500_000, ge=1000, description="held-out rows (evenly spaced) profiled for the drift reference"
    )
    min_importance: float = Field(
        0.01,
        ge=0,
        le=1,
        description="a drifted group of columns the model takes less than this share of "
        "its gain from is reported, not acted on",
    )
    min_novelty: float = Field(
        0.05,
        ge=0,
        le=1,
        description="drift starts a retrain when this share of the window is outside what "
        "training saw (values beyond its range, unseen levels, nulls where it had none) in an important "
        "group",
    )
    min_rows: int = Field(200, ge=1, description="rows a window needs before drift is judged")
    min_labels: int = Field(200, ge=1, description="labelled predictions needed for a performance verdict")
    max_loss_increase: float = Field(
        0.10,
        ge=0,
        description="classes and numbers: the relative increase of the live mean loss (log loss, squared "
        "error, ...) over the version's held-out one that is a degradation, if it also clears the "
        "sequential bound (degradation_alpha); 0.10: 10% more loss",
    )
    max_auc_drop: float = Field(
        0.02,
        ge=0,
        le=1,
        description="live ROC-AUC drop below what was expected of the same rows (the version's "
        "calibrated probabilities; older versions: its held-out ROC-AUC) that is a degradation, if it "
        "also clears the sequential bound (degradation_alpha); also the estimated drop, before labels, "
        "that asks for a retrain",
    )
    degradation_alpha: float = Field(
        0.05,
        gt=0,
        lt=0.5,
        description="chance of any false 'degraded' within degradation_horizon_days of checks, however "
        "often monitoring runs (a time-uniform bound per daily start)",
    )
    degradation_horizon_days: float = Field(
        28, ge=1, description="the period degradation_alpha covers (one test starts per day)"
    )
    degradation_planned_labels: int = Field(
        2000,
        ge=100,
        description="labels at which the degradation bound is tightest (about two days' worth); valid at "
        "any number",
    )
    performance_window_days: float = Field(
        7, gt=0, description="live performance is judged on labelled predictions of the last N days"
    )
    max_unseen_share: float = Field(
        0.2, ge=0, le=1, description="share of unseen categories that fails data quality"
    )
    max_null_increase: float = Field(
        0.2, ge=0, le=1, description="rise of a column's null rate that fails data quality"
    )
    max_rejected_share: float = Field(
        0.01,
        ge=0,
        le=1,
        description="share of scoring requests the service refused by the input contract (wrong values, "
        "patterns, lengths, times) in a window that fails data quality",
    )


class ApprovalConfig(Strict):
    """Where a person must approve what the system decided on its own. The flow pauses with a form in
    the Prefect UI (approve or reject, with a reason); no answer within ``timeout_minutes`` keeps the
    champion. Every answer is kept in the model's history (``driftloop history MODEL``)."""

    canary_promotion: bool = Field(False, description="a canary's challenger is promoted only when approved")
    first_champion: bool = Field(
        False, description="a model's first version becomes champion only when approved"
    )
    timeout_minutes: int = Field(60, ge=1, le=7 * 24 * 60, description="no answer by then: champion kept")


class DatasetConfig(Strict):
    name: str
    model_name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    base_table: str
    tables: dict[str, TableConfig]
    joins: list[JoinConfig] = []
    time: TimeConfig | None = Field(
        None, description="the column that orders rows in time; without one, splits are random/stratified"
    )
    target: TargetConfig
    features: FeatureConfig
    window: WindowConfig = WindowConfig()
    split: SplitConfig = SplitConfig()
    slices: list[str] = []
    training: TrainingConfig = TrainingConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    approval: ApprovalConfig = ApprovalConfig()

    # where the config came from (for error messages) and the file as written (${VAR} unexpanded)
    _origin: str = PrivateAttr("<dataset config>")
    _template: dict[str, Any] | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _references_exist(self) -> "DatasetConfig":
        if self.base_table not in self.tables:
            raise ValueError(f"base_table {self.base_table!r} is not one of the tables {sorted(self.tables)}")
        for join in self.joins:
            if join.table not in self.tables:
                raise ValueError(f"join table {join.table!r} is not one of the tables {sorted(self.tables)}")
        overlap = set(self.features.numeric) & set(self.features.categorical)
        if overlap:
            raise ValueError(f"columns are both numeric and categorical features: {sorted(overlap)}")
        leaked = {self.target.name, *self.target.requires} & set(self.feature_names)
        if leaked:
            raise ValueError(f"target columns must not be features: {sorted(leaked)}")
        if self.time is None and (self.window.start or self.window.end):
            raise ValueError("window needs a time column: set time.column or remove window")
        if self.split.method == "time" and self.time is None:
            raise ValueError("split.method time needs a time column: set time.column or use stratified")
        if self.split.method == "stratified" and self.target.kind == "regression":
            raise ValueError(
                "split.method stratified balances classes; a regression target has none: use random"
            )
        check_objective(self.training.params.get("objective"), self.target.kind, "training.params")
        self._columns_exist()
        return self

    def _columns_exist(self) -> None:
        """Every column the config names is in a table contract (joined columns under their prefix)."""
        base = self.tables[self.base_table].contract.columns
        available = set(base)

        def need(where: str, columns: list[str], pool: set[str] | dict, table: str) -> None:
            unknown = [c for c in columns if c not in pool]
            if unknown:
                near = {c: difflib.get_close_matches(c, list(pool), n=2) for c in unknown}
                hint = "; ".join(f"{c!r}: did you mean {m}?" for c, m in near.items() if m)
                raise ValueError(
                    f"{where} names column(s) {unknown} that {table} does not have"
                    + (f" ({hint})" if hint else "")
                    + ": add them to the contract or fix the name"
                )

        for i, join in enumerate(self.joins):
            right = self.tables[join.table].contract.columns
            need(f"joins[{i}].left_on", join.left_on, available, "the joined table so far")
            need(f"joins[{i}].right_on", join.right_on, right, f"table {join.table!r}")
            need(f"joins[{i}].columns", join.columns or [], right, f"table {join.table!r}")
            available |= {
                f"{join.prefix}{c}" for c in (join.columns or [c for c in right if c not in join.right_on])
            }
        inputs = "the base table or a join"
        for name, expr in self.features.derived.items():
            need(f"features.derived.{name}", _sql_roots(expr, f"features.derived.{name}"), available, inputs)
        need("features.numeric", self.features.numeric, available, inputs)
        need("features.categorical", self.features.categorical, available, inputs)
        if self.time is not None:
            need("time.column", [self.time.column], available, inputs)
        if self.target.expression is not None:
            need(
                "target.expression",
                _sql_roots(self.target.expression, "target.expression"),
                available,
                inputs,
            )
        else:
            need("target.name", [self.target.name], available, inputs)
        need("target.requires", self.target.requires, available, inputs)
        need("slices", self.slices, available | {self.target.name}, inputs)

    @property
    def time_column(self) -> str | None:
        return self.time.column if self.time is not None else None

    @property
    def split_method(self) -> str:
        if self.split.method:
            return self.split.method
        if self.time is not None:
            return "time"
        return "random" if self.target.kind == "regression" else "stratified"

    @property
    def feature_names(self) -> list[str]:
        """Model columns in their fixed order."""
        time_parts = [f"{self.time.column}_{p}" for p in self.time.parts] if self.time else []
        return [*self.features.numeric, *self.features.derived, *time_parts, *self.features.categorical]

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[
            :16
        ]

    @property
    def origin(self) -> str:
        """Where this config came from: a file path, or a model version in the registry."""
        return self._origin

    def template(self) -> dict[str, Any]:
        """The config as written (``${VAR}`` unexpanded, so secrets stay in the environment), with this
        run's overrides: what the registry keeps with each version."""
        if self._template is not None:
            return copy.deepcopy(self._template)
        return self.model_dump(mode="json", exclude_defaults=True)

    def with_updates(self, updates: dict[str, Any]) -> "DatasetConfig":
        """This config with ``updates`` (nested mappings merge) applied to it and to its template."""
        merged = DatasetConfig.model_validate(_merge(self.model_dump(), updates))
        merged._origin = self._origin
        merged._template = _merge(self.template(), _plain(updates))
        return merged

    def with_target_kind(self, kind: Kind) -> "DatasetConfig":
        """This config with its target's kind stated (as the data showed it): what the registry keeps, so
        every later stage reads the kind instead of inferring it again."""
        return self if self.target.kind == kind else self.with_updates({"target": {"kind": kind}})

    def same_dataset_as(self, other: "DatasetConfig") -> str | None:
        """None if ``other`` describes the same dataset and task (tables, target), else what differs:
        a model name must not be reused for another dataset's model. A kind stated on one side only is
        the kind the data showed: not a difference."""
        for field in ("name", "base_table", "target"):
            mine, theirs = getattr(self, field), getattr(other, field)
            if field == "target" and None in (mine.kind, theirs.kind):
                mine, theirs = (
                    mine.model_copy(update={"kind": None}),
                    theirs.model_copy(update={"kind": None}),
                )
            if mine != theirs:
                return f"{field}: {theirs!r} (registered) vs {mine!r}"
        return None


_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _expand_variables(value: Any, where: str, variables: Mapping[str, str]) -> Any:
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            name = m.group(1)
            if name in variables:
                return variables[name]
            raise ConfigError(f"{where}: environment variable {name} is not set (used as ${{{name}}})")

        return _VARIABLE.sub(sub, value)
    if isinstance(value, dict):
        return {k: _expand_variables(v, f"{where}.{k}", variables) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_variables(v, f"{where}[{i}]", variables) for i, v in enumerate(value)]
    return value


def _merge(base: Any, override: Any, key: str = "") -> Any:
    """``override`` over ``base``: mappings merge key by key, anything else (and a ``source``) replaces."""
    if isinstance(base, dict) and isinstance(override, dict) and key != "source":
        return {**base, **{k: _merge(base.get(k), v, k) for k, v in override.items()}}
    return override


def _resolve_extends(raw: dict[str, Any], path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    """``extends: other.yaml`` (relative to this file): that config with this one's fields over it.

    Lets an environment change one thing (e.g. where a table comes from) without copying the rest.
    """
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    parent_path = (path.parent / str(parent)).resolve()
    if parent_path in seen:
        raise ConfigError(f"{path}: `extends` loops back to {parent_path}")
    if not parent_path.is_file():
        raise ConfigError(f"{path}: extends {parent!r}, but {parent_path} does not exist")
    base = _read_mapping(parent_path, f"{parent_path} (extended by {path.name})")
    return _merge(_resolve_extends(base, parent_path, (*seen, parent_path)), raw)


def _read_mapping(path: Path, label: str) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{label} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{label} must hold a mapping at the top level")
    return raw


def config_from_template(
    template: Mapping[str, Any], variables: Mapping[str, str] | None, origin: str
) -> DatasetConfig:
    """Validate a config mapping (a file's contents, or a registry copy); errors name ``origin``."""
    raw = _expand_variables(copy.deepcopy(dict(template)), origin, variables or {})
    try:
        config = DatasetConfig.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            hint = " (unknown field: check its spelling)" if err["type"] == "extra_forbidden" else ""
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"  - {loc or '<top>'}: {msg}{hint}")
        raise ConfigError(f"{origin} is not a valid dataset config:\n" + "\n".join(problems)) from None
    config._origin = origin
    config._template = _plain(template)
    return config


def _plain(value: Any) -> Any:
    """``value`` as plain JSON data (YAML's dates become ISO text), safe to store and to compare."""
    return json.loads(
        json.dumps(value, default=lambda v: v.isoformat() if hasattr(v, "isoformat") else str(v))
    )


def load_dataset_config(path: str | Path, variables: Mapping[str, str] | None = None) -> DatasetConfig:
    """Read and validate a dataset config; errors name the file and the field.

    ``${VAR}`` in strings is taken from ``variables`` (the caller passes the settings' own values and
    the process environment; this module never reads the environment itself), else it is an error
    naming the variable.
    ``extends: base.yaml`` starts from another config and overrides fields of it.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"dataset config {path} does not exist; set DRIFTLOOP_DATASET_CONFIG or pass dataset_config"
        )
    raw = _resolve_extends(_read_mapping(path, str(path)), path, seen=(path.resolve(),))
    return config_from_template(raw, variables, str(path))
