"""The driftloop prediction service (BentoML).

    make serve                                  # champion on 127.0.0.1:3000
    curl -s 127.0.0.1:3000/predict -H 'content-type: application/json' -d @bentos/example_request.json

Endpoints: ``/predict`` (one record), ``/predict_batch`` (many), ``/feedback`` (observed outcomes),
``/model_status``; BentoML adds ``/healthz``, ``/livez``, ``/readyz`` (ready once a champion is
loaded), ``/metrics`` (Prometheus) and the OpenAPI spec at ``/docs.json``.

The service reads the registry (the single truth), not a copy: it applies each version's saved
feature transform, follows alias moves without a restart, and logs every prediction to the artifact
store for monitoring.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import bentoml
import numpy as np
import polars as pl
from pydantic import BaseModel, Field
from starlette.responses import JSONResponse

from tasks.core.settings import Settings
from tasks.core.store import ArtifactStore, open_store
from tasks.registry.versions import Registry
from tasks.serving.logs import PartitionedLog, read_log
from tasks.serving.routing import assign_arm
from tasks.serving.schema import input_contracts, input_schema, request_model
from tasks.serving.watcher import RegistryWatcher

log = logging.getLogger("driftloop.service")

SETTINGS = Settings()
CONFIG = SETTINGS.load_dataset(environ=os.environ)
Record = request_model(CONFIG, "FlightRecord" if CONFIG.name == "nycflights13" else "Record")
INPUT_COLUMNS = list(input_contracts(CONFIG))
INPUT_SCHEMA = input_schema(CONFIG)
TIME_COLUMN = CONFIG.time.column
THRESHOLD = CONFIG.training.threshold


class Prediction(BaseModel):
    request_id: str
    probability: float
    label: int
    model_version: int
    arm: Literal["champion", "challenger"]
    shadow_version: int | None = None
    shadow_probability: float | None = None


class Scored(BaseModel):
    """Answers for many rows, column by column (the shape /predict_columns returns)."""

    ids: list[str]
    probability: list[float]
    label: list[int]
    model_version: list[int]
    arm: list[str]
    shadow_version: int | None = None
    shadow_probability: list[float | None]


class FeedbackItem(BaseModel):
    request_id: str = Field(min_length=1, max_length=128)
    outcome: Literal[0, 1] = Field(
        description="the observed label (1 = positive, e.g. arrived > 15 min late)"
    )


class FeedbackResult(BaseModel):
    accepted: int
    unknown_request_ids: list[str]


class ModelStatus(BaseModel):
    champion: int | None
    challenger: int | None
    mode: str
    challenger_share: float
    loaded_at: str | None
    last_check: str | None
    problems: list[str]
    predictions_logged: int
    log_errors: int


PREDICTIONS = bentoml.metrics.Counter(
    name="driftloop_predictions", documentation="predictions made", labelnames=["model_version", "arm"]
)
LATENCY = bentoml.metrics.Histogram(
    name="driftloop_scoring_seconds",
    documentation="feature transform + model time",
    labelnames=["model_version", "arm"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
)


class RequestGuard:
    """ASGI middleware: optional bearer token and a request-size limit, before any parsing."""

    def __init__(self, app: Any, token: str | None, max_bytes: int):
        self.app, self.token, self.max_bytes = app, token, max_bytes
        self.open_paths = ("/healthz", "/livez", "/readyz", "/metrics", "/docs", "/docs.json", "/")

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if self.token and headers.get(b"authorization", b"") != f"Bearer {self.token}".encode():
            return await JSONResponse(
                {"error": "missing or wrong bearer token (Authorization: Bearer <token>)"}, status_code=401
            )(scope, receive, send)
        length = headers.get(b"content-length", b"0")
        if not length.isdigit():
            return await JSONResponse({"error": "invalid Content-Length header"}, status_code=400)(
                scope, receive, send
            )
        if int(length) > self.max_bytes:
            return await JSONResponse(
                {
                    "error": f"request body of {int(length)} bytes exceeds the limit of "
                    f"{self.max_bytes} (DRIFTLOOP_SERVING__MAX_REQUEST_BYTES)"
                },
                status_code=413,
            )(scope, receive, send)
        seen = 0

        async def limited_receive() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise ValueError("request body too large")
            return message

        return await self.app(scope, limited_receive, send)


CONTRACTS = input_contracts(CONFIG)


def new_request_ids(n: int) -> list[str]:
    """``n`` random 128-bit hex ids (one urandom call instead of n uuid4s)."""
    token = os.urandom(16 * n).hex()
    return [token[i * 32 : (i + 1) * 32] for i in range(n)]


def columns_to_frame(columns: dict[str, list[Any]]) -> pl.DataFrame:
    """A columnar request as a typed frame, checked against the input contracts (400s name the column)."""
    bad = bentoml.exceptions.InvalidArgument
    if not columns:
        raise bad("columns is empty: send {column: [values...]} for the model's inputs")
    unknown = sorted(set(columns) - set(CONTRACTS))
    if unknown:
        raise bad(f"unknown column(s) {unknown}; expected a subset of {sorted(CONTRACTS)}")
    missing = [c for c, (_, required) in CONTRACTS.items() if required and c not in columns]
    if missing:
        raise bad(f"missing required column(s) {missing}")
    lengths = {len(v) for v in columns.values()}
    if len(lengths) != 1 or 0 in lengths:
        raise bad(f"columns must be non-empty and of equal length; got lengths {sorted(lengths)}")
    if lengths.pop() > SETTINGS.serving.max_batch_rows:
        raise bad(f"more rows than max_batch_rows={SETTINGS.serving.max_batch_rows}; split the batch")
    series = []
    for name, dtype in INPUT_SCHEMA.items():
        values = columns.get(name)
        if values is None:
            series.append(pl.Series(name, [None] * len(next(iter(columns.values()))), dtype=dtype))
            continue
        try:
            if name == TIME_COLUMN:
                s = pl.Series(name, values, dtype=pl.String).str.to_datetime(time_zone="UTC", strict=True)
            else:
                s = pl.Series(name, values, strict=True).cast(dtype, strict=True)
        except (TypeError, ValueError, pl.exceptions.PolarsError) as exc:
            raise bad(
                f"column {name!r}: values are not {dtype} ({type(exc).__name__}: {str(exc)[:200]})"
            ) from None
        contract, required = CONTRACTS[name]
        if required and s.null_count():
            raise bad(f"column {name!r}: {s.null_count()} null value(s) in a required column")
        if dtype.is_numeric() and (contract.min is not None or contract.max is not None):
            low = -float("inf") if contract.min is None else contract.min
            high = float("inf") if contract.max is None else contract.max
            out = s.filter(~s.is_between(low, high).fill_null(True))
            if out.len():
                raise bad(
                    f"column {name!r}: {out.len()} value(s) outside [{contract.min}, {contract.max}], "
                    f"e.g. {out.head(3).to_list()}"
                )
        series.append(s)
    return pl.DataFrame(series)


PACKAGED_MODEL = SETTINGS.packaged_model  # set inside a bento built by the package flow


def open_service_store(settings: Settings) -> ArtifactStore:
    """The artifact store the service reads the registry from and logs to. A named AwsCredentials block
    needs the Prefect API, so only then is Prefect loaded; keys or the task role need nothing more."""
    if settings.s3.credentials_block:
        from tasks.orchestration import aws_credentials_from_block

        return open_store(settings, aws_credentials_from_block(settings))
    return open_store(settings)


@bentoml.service(
    name="driftloop",
    workers=SETTINGS.serving.workers,
    traffic={"timeout": 30},
    logging={"access": {"enabled": SETTINGS.serving.access_log}},
)
class Driftloop:
    if PACKAGED_MODEL:  # the bento carries its model, for when the registry cannot be reached
        packaged = bentoml.models.BentoModel(PACKAGED_MODEL)

    def __init__(self) -> None:
        self.store = open_service_store(SETTINGS)
        self.registry = Registry(self.store, CONFIG.model_name)
        self.watcher = RegistryWatcher(self.registry, SETTINGS.serving.poll_seconds)
        self.watcher.start()
        log_schema = {
            "request_id": pl.String(),
            "ts": pl.Datetime("us", "UTC"),
            **INPUT_SCHEMA,
            "probability": pl.Float64(),
            "label": pl.Int8(),
            "model_version": pl.Int64(),
            "arm": pl.String(),
            "shadow_version": pl.Int64(),
            "shadow_probability": pl.Float64(),
            "paired_version": pl.Int64(),  # during a canary: the other arm's model and its score
            "paired_probability": pl.Float64(),
        }
        s = SETTINGS.serving
        self.predictions = PartitionedLog(
            self.store, "predictions", log_schema, s.log_max_rows, s.log_max_seconds
        )
        self.feedback_log = PartitionedLog(
            self.store,
            "feedback",
            {
                "request_id": pl.String(),
                "ts": pl.Datetime("us", "UTC"),
                "outcome": pl.Int8(),
                "known": pl.Boolean(),
            },
            s.log_max_rows,
            s.log_max_seconds,
        )
        self.recent_ids: dict[str, None] = {}  # insertion-ordered set of recent request ids (this worker)
        if self.watcher.models.champion is None and PACKAGED_MODEL:
            try:
                self.watcher.use_packaged(Path(self.packaged.path))
            except Exception as exc:  # noqa: BLE001 - stay up, not ready, and say why
                self.watcher.status.problems.append(f"packaged model {PACKAGED_MODEL} unusable: {exc}")

    def __is_ready__(self) -> bool:
        return self.watcher.models.champion is not None

    @bentoml.on_shutdown
    def flush_logs(self) -> None:
        self.watcher.stop()
        self.predictions.close()
        self.feedback_log.close()

    def _score(
        self,
        rows: list[dict[str, Any]] | None,
        frame: pl.DataFrame,
        ids: list[str],
        routing_keys: list[str | None],
    ) -> "Scored":
        """Score rows with the arm each is routed to; log inputs and answers (flushed off the hot path)."""
        models = self.watcher.models  # one consistent snapshot of what serves, even mid-swap
        if models.champion is None:
            raise bentoml.exceptions.ServiceUnavailable("no champion model is loaded yet; see /model_status")
        n = len(ids)
        challenger = models.challenger
        shadow = SETTINGS.serving.mode == "shadow" and challenger is not None
        share = SETTINGS.serving.challenger_share if challenger is not None and not shadow else 0.0
        on_challenger = np.array(
            [assign_arm(k or i, share) == "challenger" for k, i in zip(routing_keys, ids)]
            if share > 0
            else np.zeros(n, dtype=bool)
        )
        probability = np.empty(n)
        version = np.full(n, models.champion.version.version)
        # during a canary each row is also scored by the other arm's model (logged, never returned), so
        # the canary decision compares both models on the same labelled rows: a paired test
        paired = np.full(n, np.nan) if share > 0 else None
        paired_version = np.full(n, -1) if share > 0 else None
        arms = (
            (models.champion, ~on_challenger, "champion", challenger),
            (challenger, on_challenger, "challenger", models.champion),
        )
        for model, mask, arm, other in arms:
            count = int(mask.sum())
            if not count:
                continue
            rows_of_arm = frame if count == n else frame.filter(pl.Series(mask))
            started = time.perf_counter()
            probability[mask] = model.score(rows_of_arm)
            version[mask] = model.version.version
            labels = (str(model.version.version), arm)
            PREDICTIONS.labels(*labels).inc(count)
            LATENCY.labels(*labels).observe((time.perf_counter() - started) / count)
            if paired is not None:
                paired[mask] = other.score(rows_of_arm)
                paired_version[mask] = other.version.version
        out = Scored(
            ids=ids,
            probability=probability.tolist(),
            label=(probability >= THRESHOLD).astype(int).tolist(),
            model_version=version.tolist(),
            arm=np.where(on_challenger, "challenger", "champion").tolist(),
            shadow_version=challenger.version.version if shadow else None,
            shadow_probability=challenger.score(frame).tolist() if shadow else [None] * n,
        )
        now = datetime.now(timezone.utc)
        if rows is not None:  # a few rows: plain dicts are cheapest; the flusher builds the Parquet
            self.predictions.append(
                [
                    {
                        **inputs,
                        "request_id": ids[i],
                        "ts": now,
                        "probability": out.probability[i],
                        "label": out.label[i],
                        "model_version": out.model_version[i],
                        "arm": out.arm[i],
                        "shadow_version": out.shadow_version,
                        "shadow_probability": out.shadow_probability[i],
                        "paired_version": int(paired_version[i]) if paired is not None else None,
                        "paired_probability": float(paired[i]) if paired is not None else None,
                    }
                    for i, inputs in enumerate(rows)
                ]
            )
        else:  # a columnar batch stays columnar
            self.predictions.append_frame(
                frame.with_columns(
                    pl.Series("request_id", ids, dtype=pl.String),
                    pl.lit(now).alias("ts"),
                    pl.Series("probability", out.probability, dtype=pl.Float64),
                    pl.Series("label", out.label, dtype=pl.Int8),
                    pl.Series("model_version", out.model_version, dtype=pl.Int64),
                    pl.Series("arm", out.arm, dtype=pl.String),
                    pl.lit(out.shadow_version, dtype=pl.Int64).alias("shadow_version"),
                    pl.Series("shadow_probability", out.shadow_probability, dtype=pl.Float64),
                    pl.Series("paired_version", paired_version, dtype=pl.Int64)
                    if paired is not None
                    else pl.lit(None, dtype=pl.Int64).alias("paired_version"),
                    pl.Series("paired_probability", paired, dtype=pl.Float64)
                    if paired is not None
                    else pl.lit(None, dtype=pl.Float64).alias("paired_probability"),
                )
            )
        self.recent_ids.update(dict.fromkeys(ids))
        while len(self.recent_ids) > 1_000_000:
            self.recent_ids.pop(next(iter(self.recent_ids)))
        return out

    def _score_records(self, records: list[BaseModel]) -> list[Prediction]:
        rows = [{c: r.__dict__[c] for c in INPUT_COLUMNS} for r in records]
        fresh = iter(new_request_ids(sum(r.request_id is None for r in records)))
        ids = [r.request_id or next(fresh) for r in records]
        out = self._score(
            rows, pl.DataFrame(rows, schema=INPUT_SCHEMA), ids, [r.routing_key for r in records]
        )
        return [
            Prediction.model_construct(
                request_id=i,
                probability=p,
                label=lab,
                model_version=v,
                arm=a,
                shadow_version=out.shadow_version,
                shadow_probability=sp,
            )
            for i, p, lab, v, a, sp in zip(
                out.ids, out.probability, out.label, out.model_version, out.arm, out.shadow_probability
            )
        ]

    @bentoml.api
    async def predict(self, record: Record) -> Prediction:  # type: ignore[valid-type]
        """Score one record: probability, label at the configured threshold, the version that answered."""
        return self._score_records([record])[0]

    @bentoml.api
    def predict_batch(self, records: list[Record]) -> list[Prediction]:  # type: ignore[valid-type]
        """Score many records at once (rows are routed one by one, as single requests would be)."""
        if not records:
            raise bentoml.exceptions.InvalidArgument("records is empty: send at least one record")
        if len(records) > SETTINGS.serving.max_batch_rows:
            raise bentoml.exceptions.InvalidArgument(
                f"{len(records)} records exceed max_batch_rows={SETTINGS.serving.max_batch_rows}; "
                "split the batch"
            )
        return self._score_records(records)

    @bentoml.api
    async def predict_columns(
        self,
        columns: dict[str, list[Any]],
        request_ids: list[str] | None = None,
        routing_keys: list[str] | None = None,
    ) -> Scored:
        """Score a batch sent column by column ({"columns": {"carrier": [...], ...}}): the fast path for
        large batches. Types, required fields and ranges are checked per column against the same
        contracts as /predict_batch; errors name the column."""
        frame = columns_to_frame(columns)
        n = frame.height
        for name, values in (("request_ids", request_ids), ("routing_keys", routing_keys)):
            if values is not None and len(values) != n:
                raise bentoml.exceptions.InvalidArgument(f"{name} has {len(values)} entries for {n} rows")
        return self._score(None, frame, request_ids or new_request_ids(n), routing_keys or [None] * n)

    @bentoml.api
    def feedback(self, items: list[FeedbackItem]) -> FeedbackResult:
        """Record observed outcomes by request id; ids never predicted are reported (and still kept)."""
        if not items:
            raise bentoml.exceptions.InvalidArgument(
                "items is empty: send at least one {request_id, outcome}"
            )
        unknown = [i.request_id for i in items if i.request_id not in self.recent_ids]
        if unknown:  # maybe predicted by another worker or before a restart: look in the flushed log
            self.predictions.flush()
            logged = read_log(self.store, "predictions", ["request_id"], request_ids=unknown)
            seen = set(logged["request_id"].to_list()) if logged.height else set()
            unknown = [u for u in unknown if u not in seen]
        now = datetime.now(timezone.utc)
        missing = set(unknown)
        self.feedback_log.append(
            [
                {
                    "request_id": i.request_id,
                    "ts": now,
                    "outcome": i.outcome,
                    "known": i.request_id not in missing,
                }
                for i in items
            ]
        )
        return FeedbackResult(accepted=len(items), unknown_request_ids=unknown)

    @bentoml.api
    def model_status(self) -> ModelStatus:
        """Which versions serve, when they were loaded, and any problem loading newer ones."""
        m, s = self.watcher.models, self.watcher.status
        return ModelStatus(
            champion=m.champion.version.version if m.champion else None,
            challenger=m.challenger.version.version if m.challenger else None,
            mode=SETTINGS.serving.mode,
            challenger_share=SETTINGS.serving.challenger_share,
            loaded_at=s.loaded_at,
            last_check=s.last_check,
            problems=s.problems,
            predictions_logged=self.predictions.flushed_rows,
            log_errors=self.predictions.errors,
        )


Driftloop.add_asgi_middleware(
    RequestGuard, token=SETTINGS.serving.auth_token, max_bytes=SETTINGS.serving.max_request_bytes
)
