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
import uuid
from pathlib import Path
from datetime import datetime, timezone
from typing import Any, Literal

os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "1")

import bentoml  # noqa: E402
import polars as pl  # noqa: E402
from pydantic import BaseModel, Field  # noqa: E402
from starlette.responses import JSONResponse  # noqa: E402

from tasks.registry import Registry  # noqa: E402
from tasks.schema import input_contracts, input_schema, request_model  # noqa: E402
from tasks.serving import PartitionedLog, RegistryWatcher, assign_arm, read_log  # noqa: E402
from tasks.settings import Settings  # noqa: E402
from tasks.store import open_store  # noqa: E402

log = logging.getLogger("driftloop.service")

SETTINGS = Settings()
CONFIG = SETTINGS.load_dataset()
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


class FeedbackItem(BaseModel):
    request_id: str = Field(min_length=1, max_length=128)
    outcome: Literal[0, 1] = Field(description="the observed label (1 = positive, e.g. arrived > 15 min late)")


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


PREDICTIONS = bentoml.metrics.Counter(name="driftloop_predictions", documentation="predictions made",
                                      labelnames=["model_version", "arm"])
LATENCY = bentoml.metrics.Histogram(name="driftloop_scoring_seconds", documentation="feature transform + model time",
                                    labelnames=["model_version", "arm"],
                                    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0))


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
            return await JSONResponse({"error": "missing or wrong bearer token (Authorization: Bearer <token>)"},
                                      status_code=401)(scope, receive, send)
        length = headers.get(b"content-length")
        if length is not None and int(length) > self.max_bytes:
            return await JSONResponse({"error": f"request body of {int(length)} bytes exceeds the limit of "
                                                f"{self.max_bytes} (DRIFTLOOP_SERVING__MAX_REQUEST_BYTES)"},
                                      status_code=413)(scope, receive, send)
        seen = 0

        async def limited_receive() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise ValueError("request body too large")
            return message

        return await self.app(scope, limited_receive, send)


PACKAGED_MODEL = os.environ.get("DRIFTLOOP_PACKAGED_MODEL")  # set inside a bento built by the package flow


@bentoml.service(name="driftloop", workers=SETTINGS.serving.workers, traffic={"timeout": 30})
class Driftloop:
    if PACKAGED_MODEL:  # the bento carries its model, for when the registry cannot be reached
        packaged = bentoml.models.BentoModel(PACKAGED_MODEL)

    def __init__(self) -> None:
        self.store = open_store(SETTINGS)
        self.registry = Registry(self.store, CONFIG.model_name)
        self.watcher = RegistryWatcher(self.registry, SETTINGS.serving.poll_seconds)
        self.watcher.start()
        log_schema = {"request_id": pl.String(), "ts": pl.Datetime("us", "UTC"), **INPUT_SCHEMA,
                      "probability": pl.Float64(), "label": pl.Int8(), "model_version": pl.Int64(), "arm": pl.String(),
                      "shadow_version": pl.Int64(), "shadow_probability": pl.Float64()}
        s = SETTINGS.serving
        self.predictions = PartitionedLog(self.store, "predictions", log_schema, s.log_max_rows, s.log_max_seconds)
        self.feedback_log = PartitionedLog(self.store, "feedback", {"request_id": pl.String(), "ts": pl.Datetime("us", "UTC"),
                                                                    "outcome": pl.Int8(), "known": pl.Boolean()},
                                           s.log_max_rows, s.log_max_seconds)
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

    def _score(self, records: list[BaseModel]) -> list[Prediction]:
        models = self.watcher.models  # one consistent snapshot of what serves, even mid-swap
        if models.champion is None:
            raise bentoml.exceptions.ServiceUnavailable("no champion model is loaded yet; see /model_status")
        now = datetime.now(timezone.utc)
        rows = [r.model_dump(exclude={"request_id", "routing_key"}) for r in records]
        for row in rows:
            t = row[TIME_COLUMN]
            row[TIME_COLUMN] = t.astimezone(timezone.utc).strftime(CONFIG.time.format or "%Y-%m-%dT%H:%M:%SZ") if isinstance(t, datetime) else t
        frame = pl.DataFrame(rows, schema=INPUT_SCHEMA)
        ids = [r.request_id or uuid.uuid4().hex for r in records]
        share = SETTINGS.serving.challenger_share if models.challenger is not None else 0.0
        shadow = SETTINGS.serving.mode == "shadow" and models.challenger is not None
        arms = ["champion"] * len(rows) if shadow or share == 0 else [
            assign_arm(r.routing_key or i, share) for r, i in zip(records, ids)]
        probs: dict[str, Any] = {}
        for arm in set(arms) | ({"challenger"} if shadow else set()):
            model = models.champion if arm == "champion" else models.challenger
            idx = [i for i, a in enumerate(arms) if a == arm] if not (shadow and arm == "challenger") else list(range(len(rows)))
            started = time.perf_counter()
            try:
                p = model.score(frame[idx] if len(idx) != len(rows) else frame)
            except ValueError as exc:  # e.g. a time value that does not parse
                raise bentoml.exceptions.InvalidArgument(str(exc)) from None
            per_row = (time.perf_counter() - started) / max(len(idx), 1)
            probs[arm] = dict(zip(idx, p))
            if not (shadow and arm == "challenger"):
                labels = (str(model.version.version), arm)
                PREDICTIONS.labels(*labels).inc(len(idx))
                LATENCY.labels(*labels).observe(per_row)
        out, log_rows = [], []
        for i, (rid, arm) in enumerate(zip(ids, arms)):
            model = models.champion if arm == "champion" else models.challenger
            p = float(probs[arm][i])
            pred = Prediction(request_id=rid, probability=p, label=int(p >= THRESHOLD), model_version=model.version.version,
                              arm=arm, shadow_version=models.challenger.version.version if shadow else None,
                              shadow_probability=float(probs["challenger"][i]) if shadow else None)
            out.append(pred)
            log_rows.append({"request_id": rid, "ts": now, **rows[i], "probability": p, "label": pred.label,
                             "model_version": pred.model_version, "arm": arm, "shadow_version": pred.shadow_version,
                             "shadow_probability": pred.shadow_probability})
        self.predictions.append(log_rows)
        for rid in ids:
            self.recent_ids[rid] = None
        while len(self.recent_ids) > 1_000_000:
            self.recent_ids.pop(next(iter(self.recent_ids)))
        return out

    @bentoml.api
    def predict(self, record: Record) -> Prediction:  # type: ignore[valid-type]
        """Score one record: probability, label at the configured threshold, the version that answered."""
        return self._score([record])[0]

    @bentoml.api
    def predict_batch(self, records: list[Record]) -> list[Prediction]:  # type: ignore[valid-type]
        """Score many records at once (rows are routed one by one, as single requests would be)."""
        if not records:
            raise bentoml.exceptions.InvalidArgument("records is empty: send at least one record")
        if len(records) > SETTINGS.serving.max_batch_rows:
            raise bentoml.exceptions.InvalidArgument(
                f"{len(records)} records exceed max_batch_rows={SETTINGS.serving.max_batch_rows}; split the batch")
        return self._score(records)

    @bentoml.api
    def feedback(self, items: list[FeedbackItem]) -> FeedbackResult:
        """Record observed outcomes by request id; ids never predicted are reported (and still kept)."""
        if not items:
            raise bentoml.exceptions.InvalidArgument("items is empty: send at least one {request_id, outcome}")
        unknown = [i.request_id for i in items if i.request_id not in self.recent_ids]
        if unknown:  # maybe predicted by another worker or before a restart: look in the flushed log
            self.predictions.flush()
            logged = read_log(self.store, "predictions")
            seen = set(logged["request_id"].to_list()) if logged.height else set()
            unknown = [u for u in unknown if u not in seen]
        now = datetime.now(timezone.utc)
        missing = set(unknown)
        self.feedback_log.append([{"request_id": i.request_id, "ts": now, "outcome": i.outcome,
                                   "known": i.request_id not in missing} for i in items])
        return FeedbackResult(accepted=len(items), unknown_request_ids=unknown)

    @bentoml.api
    def model_status(self) -> ModelStatus:
        """Which versions serve, when they were loaded, and any problem loading newer ones."""
        m, s = self.watcher.models, self.watcher.status
        return ModelStatus(champion=m.champion.version.version if m.champion else None,
                           challenger=m.challenger.version.version if m.challenger else None,
                           mode=SETTINGS.serving.mode, challenger_share=SETTINGS.serving.challenger_share,
                           loaded_at=s.loaded_at, last_check=s.last_check, problems=s.problems,
                           predictions_logged=self.predictions.flushed_rows, log_errors=self.predictions.errors)


Driftloop.add_asgi_middleware(RequestGuard, token=SETTINGS.serving.auth_token,
                              max_bytes=SETTINGS.serving.max_request_bytes)
