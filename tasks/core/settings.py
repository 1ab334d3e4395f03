"""The one typed place for driftloop's settings.

Every knob the pipeline reads at run time lives here, with a ``DRIFTLOOP_`` environment override
(nested fields use ``__``, e.g. ``DRIFTLOOP_GATE__MIN_GAIN_LOWER=0``). Laptop and cloud differ only
in these values: ``store_uri`` is a local path or ``s3://bucket/prefix``; W&B is offline unless a key
is set. Nothing else in the code base reads the environment for configuration.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from tasks.core.config import DatasetConfig

PROJECT_DIR = Path(__file__).resolve().parents[2]


class S3Settings(BaseModel):
    """How to reach S3. Empty endpoint means AWS itself; tests point it at a moto server.

    Credentials, first match wins: the Prefect ``AwsCredentials`` block named ``credentials_block``
    (made by ``python -m deployments.blocks``), then explicit keys, then boto3's default chain (on ECS:
    the task role, so no key exists anywhere). Keys are ``SecretStr``: they never print.
    """

    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    credentials_block: str | None = Field(None, description="name of a prefect-aws AwsCredentials block")


class TrackingSettings(BaseModel):
    """Weights & Biases. ``offline`` writes run files locally and needs no account."""

    mode: Literal["offline", "online", "disabled"] = "offline"
    project: str = "driftloop"
    entity: str | None = None
    dir: Path = PROJECT_DIR / ".driftloop" / "wandb"
    api_key_block: str | None = Field(
        None, description="name of a Prefect Secret block holding the W&B API key (used when online)"
    )
    registry: str = Field(
        "model",
        description="the W&B Registry models are linked to (online): collection "
        "wandb-registry-<registry>/<model name>",
    )


class PrefectSettings(BaseModel):
    """The local Prefect stack (server + process worker). In the cloud, PREFECT_API_URL points elsewhere."""

    home: Path = PROJECT_DIR / ".driftloop" / "prefect"
    host: str = "127.0.0.1"
    port: int = Field(4200, ge=1, le=65535)
    work_pool: str = "driftloop-local"
    worker_poll_seconds: float = Field(2.0, gt=0)

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://{self.host}:{self.port}"


class GuardSettings(BaseModel):
    """Prefect guard rails: how long runs and I/O steps may take, how failed I/O is retried."""

    flow_timeout_seconds: float = Field(
        4 * 3600, gt=0, description="a flow run taking longer fails (a hung run never holds a worker)"
    )
    io_timeout_seconds: float = Field(
        900, gt=0, description="an I/O step (source, store, registry, W&B) taking longer fails and is retried"
    )
    retries: int = Field(
        3, ge=0, le=10, description="retries of a failed I/O step (bad input is never retried)"
    )
    retry_delay_seconds: float = Field(
        10,
        ge=0,
        description="first retry's delay; each next one doubles (with jitter): 10, 20, 40 s rides out "
        "a short S3 or W&B outage",
    )


class ServingSettings(BaseModel):
    """The prediction service: routing between champion and challenger, logs, limits, auth."""

    mode: Literal["canary", "shadow"] = Field(
        "canary",
        description="canary: a share of traffic goes to the "
        "challenger; shadow: both score, the champion answers",
    )
    challenger_share: float = Field(0.1, ge=0.0, le=1.0)
    poll_seconds: float = Field(2.0, gt=0, description="how often the service checks the registry's aliases")
    log_max_rows: int = Field(2000, ge=1, description="rows per spool segment before it is shipped")
    log_max_seconds: float = Field(5.0, gt=0, description="a spool segment older than this is shipped")
    verdict_seconds: float = Field(
        60.0,
        gt=0,
        description="how often the service re-reads its model's last monitoring verdict for /metrics",
    )
    spool_dir: Path = Field(
        PROJECT_DIR / ".driftloop" / "spool",
        description="local disk where predictions and feedback are made durable (fsync) before a "
        "request is answered, then shipped to the store; on ECS mount a volume here",
    )
    auth_token: SecretStr | None = Field(
        None, description="if set, scoring requests need 'Authorization: Bearer <token>'"
    )
    feedback_token: SecretStr | None = Field(
        None,
        description="the bearer token /feedback needs (separate from auth_token: scoring does not allow "
        "writing labels); with auth_token set and no feedback_token, feedback is refused",
    )
    model_name: str | None = Field(
        None,
        description="the registered model this service serves (its champion, and challenger during a "
        "canary); default: the dataset config's model_name",
    )
    max_request_bytes: int = Field(4_000_000, ge=1024)
    max_batch_rows: int = Field(10_000, ge=1)
    workers: int = Field(1, ge=1)
    access_log: bool = Field(
        False, description="one log line per request (costs ~6% of a single-row request)"
    )
    host: str = "127.0.0.1"
    port: int = Field(3000, ge=1, le=65535)


class LogSettings(BaseModel):
    """The prediction and feedback logs in the store: how long they are kept, how they are read."""

    retention_days: int = Field(
        180,
        ge=1,
        description="days of prediction and feedback log kept; the compaction flow deletes older date "
        "partitions (on S3 the bucket's lifecycle rules expire them too: PredictionLogRetentionDays)",
    )
    lateness_seconds: float = Field(
        15,
        ge=0,
        description="monitoring judges predictions at least this old, so rows a service is still "
        "shipping from its spool are not skipped (keep it above serving.log_max_seconds)",
    )


class RetrainSettings(BaseModel):
    """Automated retraining: how often at most, and the statistical gate a retrained model must pass."""

    cooldown_minutes: float = Field(60, ge=0, description="at most one retrain per model in this period")
    canary_min_labels: int = Field(
        200, ge=1, description="labelled predictions per arm before a canary verdict"
    )
    canary_margin: float = Field(
        0.0,
        ge=-1,
        le=1,
        description="ROC-AUC gain the challenger's confidence bound must clear to be promoted",
    )
    canary_stop_margin: float = Field(
        0.0,
        ge=0,
        le=1,
        description="the canary stops early once the gain's upper bound is below -this "
        "(0: as soon as the challenger is significantly worse)",
    )
    canary_alpha: float = Field(
        0.05,
        gt=0,
        lt=0.5,
        description="false-promotion rate: the chance an equally good challenger is "
        "ever promoted, however often the canary is judged",
    )
    canary_planned_labels: int = Field(
        5000,
        ge=100,
        description="paired labelled rows at which the canary's bound is tightest (it is valid at any "
        "number; set it near the labels a canary usually gathers)",
    )
    canary_min_hours: float = Field(
        48,
        ge=0,
        description="no promotion before this (two days: one good day, or hour of day, is not enough); "
        "a significantly worse challenger is still stopped at once",
    )
    canary_max_hours: float = Field(
        72, gt=0, description="a canary not promoted by then is stopped and the champion stays"
    )


class GateSettings(BaseModel):
    """The holdout gate every new model passes (``tasks.decisions.decide_promotion``): the first of a
    name against its baselines, every later one against the champion on the same test rows, then a
    canary. Evidence is counted in positives and negatives through the intervals, not in rows."""

    alpha: float = Field(
        0.05,
        gt=0,
        lt=0.5,
        description="one-sided error of every gate interval (baselines, champion, slices together)",
    )
    min_gain_lower: float = Field(
        -0.005,
        ge=-1,
        le=1,
        description="the lower bound of the ROC-AUC gain over the champion must lie above this "
        "(non-inferiority margin) for the model to go out as a canary",
    )
    slice_tolerance: float = Field(
        0.03, ge=0, le=1, description="ROC-AUC drop on a slice that fails the gate once it is beyond doubt"
    )
    min_slice_class_rows: int = Field(
        10, ge=2, description="a slice is judged when it holds this many positives and negatives"
    )


class FargateSettings(BaseModel):
    """A Dask cluster on ECS/Fargate started for one flow run (``dask.cluster: fargate``), with
    dask-cloudprovider. The CloudFormation stack (infra/cloudformation) outputs each value."""

    image: str | None = Field(None, description="image of the scheduler and workers (the flow image)")
    cluster_arn: str | None = Field(None, description="the ECS cluster to run in")
    vpc: str | None = None
    subnets: list[str] = []
    security_groups: list[str] = Field([], description="must let scheduler (8786) and workers talk")
    execution_role_arn: str | None = None
    task_role_arn: str | None = Field(None, description="the workers' role: reads and writes the store")
    cloudwatch_logs_group: str | None = None
    region: str | None = None
    scheduler_cpu: int = Field(1024, description="CPU units (1024 = one vCPU)")
    scheduler_mem: int = Field(4096, description="MiB")
    worker_cpu: int = Field(1024)
    worker_mem: int = Field(4096, description="MiB; a worker's Dask memory limit follows it")
    fargate_spot: bool = False


class DaskSettings(BaseModel):
    """The dask engine: where the cluster comes from and how big it is.

    ``address`` set: connect to that running scheduler. Otherwise a cluster is started for the flow
    run and closed after it: a ``distributed.LocalCluster`` on this machine (``cluster: local``), or
    a Fargate cluster (``cluster: fargate``, see ``FargateSettings``)."""

    address: str | None = Field(None, description="tcp://host:8786 of a running Dask scheduler")
    cluster: Literal["local", "fargate"] = "local"
    n_workers: int = Field(2, ge=1, le=1000)
    threads_per_worker: int = Field(1, ge=1, le=64)
    memory_limit: str = Field("2GiB", description="per worker (LocalCluster); Dask pauses and spills past it")
    dashboard: bool = Field(True, description="serve the Dask dashboard (127.0.0.1, a free port)")
    connect_timeout_seconds: float = Field(
        10, gt=0, description="a scheduler that does not answer within this fails the run with a clear error"
    )
    fargate: FargateSettings = FargateSettings()


class Settings(BaseSettings):
    """driftloop settings; construct with ``Settings()`` (reads env) and pass down explicitly."""

    model_config = SettingsConfigDict(
        env_prefix="DRIFTLOOP_",
        env_nested_delimiter="__",
        extra="forbid",
        env_file=None,
        env_ignore_empty=True,  # an empty variable is an unset one (prefect.yaml fills unset ones with "")
    )

    store_uri: str = Field(
        str(PROJECT_DIR / ".driftloop" / "store"),
        description="Artifact store root: a local directory or s3://bucket/prefix",
    )
    dataset_config: Path = Field(
        PROJECT_DIR / "configs" / "flights.yaml", description="Dataset configuration (YAML)"
    )
    sources_dir: Path = Field(
        PROJECT_DIR / ".driftloop" / "sources",
        description="Where the demo lands its SQLite source database",
    )
    bentoml_home: Path = PROJECT_DIR / ".driftloop" / "bentoml"
    on_invalid: Literal["fail", "skip"] = Field(
        "fail", description="A batch failing its contract stops the flow (fail) or is left out (skip)"
    )
    target: Literal["local", "docker", "cloud"] = Field(
        "local",
        description="Which deployment variant runs this code; events carry it so each target's "
        "automations react only to their own models",
    )
    git_commit: str | None = Field(
        None,
        description="the code version models record; read from git when unset (images built without .git "
        "set DRIFTLOOP_GIT_COMMIT)",
    )
    packaged_model: str | None = Field(
        None,
        description="BentoML model tag a bento carries, served while the registry cannot be read "
        "(set inside bentos built by the package flow)",
    )
    engine: Literal["local", "dask"] = Field(
        "local",
        description="where a flow's mapped steps run: threads in the flow's process (local), or a Dask "
        "cluster (dask; see ``dask``), with LightGBM training distributed over it",
    )
    dask: DaskSettings = DaskSettings()
    snapshot_rows_per_part: int = Field(
        250_000,
        ge=1000,
        description="rows per Parquet part of a snapshot: the unit of streamed preparation, and of work "
        "on the dask engine (one partition per part)",
    )
    ingest_chunk_rows: int = Field(
        250_000,
        ge=1000,
        description="a Parquet batch with more rows is validated and written chunk by chunk (row groups "
        "of this many rows), so a large file is never decoded whole",
    )
    prefect: PrefectSettings = PrefectSettings()
    guards: GuardSettings = GuardSettings()
    serving: ServingSettings = ServingSettings()
    logs: LogSettings = LogSettings()
    s3: S3Settings = S3Settings()
    tracking: TrackingSettings = TrackingSettings()
    gate: GateSettings = GateSettings()
    retrain: RetrainSettings = RetrainSettings()

    def load_dataset(
        self, path: Path | str | None = None, environ: Mapping[str, str] | None = None
    ) -> "DatasetConfig":
        """The dataset config at ``path`` (default: ``dataset_config``).

        ``${VAR}`` is filled from these settings (``DRIFTLOOP_SOURCES_DIR``, ``DRIFTLOOP_STORE_URI``) and
        from ``environ``, which the flow's run context passes as the process environment (for secrets
        such as database passwords); library code never reads the environment itself.
        """
        from tasks.core.config import load_dataset_config

        return load_dataset_config(path or self.dataset_config, self.config_variables(environ))

    def config_variables(self, environ: Mapping[str, str] | None = None) -> dict[str, str]:
        """What ``${VAR}`` in a dataset config (a file, or a registered version's copy) is filled from:
        these settings' own values, then ``environ`` (the process environment, passed by the caller)."""
        return {
            "DRIFTLOOP_SOURCES_DIR": str(self.sources_dir),
            "DRIFTLOOP_STORE_URI": self.store_uri,
            **(environ or {}),
        }

    def library_environment(self) -> dict[str, str]:
        """Environment variables the third-party libraries read instead of arguments: where W&B and
        BentoML write, and their telemetry off. The flow layer (``flows.steps.runtime.run_context``) and
        the service apply them once per process; library code never writes ``os.environ``."""
        wandb_dir = Path(self.tracking.dir)
        return {
            "WANDB_DIR": str(wandb_dir),
            "WANDB_CACHE_DIR": str(wandb_dir / "cache"),
            "WANDB_DATA_DIR": str(wandb_dir / "data"),
            "WANDB_CONFIG_DIR": str(wandb_dir / "config"),
            "WANDB_ARTIFACT_DIR": str(wandb_dir / "artifacts"),
            "WANDB_SILENT": "true",
            "WANDB_CONSOLE": "off",
            "BENTOML_HOME": str(self.bentoml_home),
            "BENTOML_DO_NOT_TRACK": "true",
            "WHYLOGS_NO_ANALYTICS": "1",
        }
