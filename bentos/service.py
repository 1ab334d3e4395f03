"""The driftloop prediction service (BentoML): the routes, in one place.

    make serve                                  # champion on 127.0.0.1:3000
    curl -s 127.0.0.1:3000/predict -H 'content-type: application/json' -d @bentos/example_request.json

Endpoints: ``/predict`` (one record), ``/predict_batch`` (many), ``/predict_columns`` and
``/predict_arrow`` (large batches), ``/feedback`` (observed outcomes), ``/model_status``; BentoML adds
``/healthz``, ``/livez``, ``/readyz`` (ready once a champion is loaded), ``/metrics`` (Prometheus) and
the OpenAPI spec at ``/docs.json``. Each is declared once in ``bentos/endpoints.py`` (who may call it,
its body type), which the request guard (``bentos/guard.py``) and the API document read.

The service serves one registered model, named in its settings (``DRIFTLOOP_SERVING__MODEL_NAME``,
default: the dataset config's ``model_name``); several services of several models share one store. It
reads the registry (the single truth), not a copy: its request schema comes from the dataset config
the model's champion was registered with (``bentos/loading.py``; BentoML fixes an API's request type
when this class is defined, so that config is read once, when this module is loaded), it applies each
version's saved feature transform, follows alias moves without a restart (``RegistryWatcher``), and
logs every prediction to the model's own log for monitoring (``bentos/scoring.py`` spells its rows).
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, TypeVar

import anyio
import bentoml
import polars as pl
from fastapi import FastAPI, Request
from pydantic import BaseModel, Field, ValidationError
from starlette.responses import JSONResponse, Response

from bentos.answers import ANSWERS, FEEDBACK_ITEMS, FeedbackResult, ModelStatus, RejectedFeedback
from bentos.coalesce import Coalescer
from bentos.endpoints import ARROW_STREAM, check_declared
from bentos.guard import RequestGuard
from bentos.inputs import BatchDecoder, scored_to_arrow
from bentos.loading import (
    open_service_store,
    redacted,
    served_config,
    served_kind,
    settings_of_this_process,
    store_locations,
)
from bentos.scoring import COALESCED, Scorer
from bentos.timeouts import install as install_prompt_timeouts
from bentos.verdicts import VerdictExporter
from tasks.core.errors import BadInput
from tasks.core.logs import (
    FEEDBACK,
    PREDICTIONS,
    REJECTIONS,
    REJECTIONS_SCHEMA,
    feedback_log_schema,
    log_prefix,
    prediction_log_schema,
)
from tasks.registry.versions import Registry
from tasks.serving.openapi import arrow_operation
from tasks.serving.request_ids import LabelledIds, RequestIds, request_id_key
from tasks.serving.schema import check_inputs, input_contracts, input_schema, request_model
from tasks.serving.spool import SpooledLog, spool_root
from tasks.serving.watcher import RegistryWatcher

log = logging.getLogger("driftloop.service")


class ClientErrorsAtInfo(logging.Filter):
    """BentoML logs every failed request at ERROR with a traceback, bad input included (15 MB of log in
    5 minutes of fuzzing). A 4xx is the caller's mistake, already answered: log it once, at INFO, as one
    line; server errors keep their traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        code = getattr(getattr(exc, "error_code", None), "value", None)
        if isinstance(exc, ValidationError) or (code is not None and code < 500):
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            record.msg = f"{record.getMessage()}: rejected ({type(exc).__name__}: {first})"
            record.args, record.exc_info, record.exc_text = (), None, None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


logging.getLogger("bentoml._internal.server.http_app").addFilter(ClientErrorsAtInfo())
install_prompt_timeouts()  # BentoML's own request timeout leaves a live timer per request for 30 s

SETTINGS = settings_of_this_process(Path(__file__).resolve().parents[2] / "bento.yaml")
CONFIG = served_config(SETTINGS)  # the one registry read at load: the request types depend on it
MODEL_NAME = CONFIG.model_name
Record = request_model(CONFIG, "Record")  # the fields are the served model's inputs
KIND = served_kind(SETTINGS, CONFIG)  # yes/no, classes or a number: stated, or the champion's
# what this model answers (bentos/answers.py): a probability and a label, a value, or a class and every
# class's probability; the API document names the one this service gives
Prediction, Scored = ANSWERS[KIND]
FeedbackItem = FEEDBACK_ITEMS[KIND]  # and what a caller reports: 0/1, the observed value, or the class
_Item = TypeVar("_Item")
# a batch: at least one item, at most max_batch_rows (declared in the OpenAPI document too)
BatchOf = Annotated[list[_Item], Field(min_length=1, max_length=SETTINGS.serving.max_batch_rows)]
INPUT_CONTRACTS = input_contracts(CONFIG)
INPUT_COLUMNS = list(INPUT_CONTRACTS)
INPUT_SCHEMA = input_schema(CONFIG)
DECODER = BatchDecoder(CONFIG, Record, SETTINGS.serving.max_batch_rows)
SCORER = Scorer(MODEL_NAME, SETTINGS.serving, prediction_log_schema(INPUT_SCHEMA))
# who a label came from: with a feedback token only its holder can report (see RequestGuard)
FEEDBACK_SOURCE = "feedback-token" if SETTINGS.serving.feedback_token else "unauthenticated"
PACKAGED_MODEL = SETTINGS.packaged_model  # set inside a bento built by the package flow
ARROW_APP = FastAPI(title="driftloop Arrow endpoint", docs_url=None, redoc_url=None, openapi_url=None)
SERVED: dict[str, RegistryWatcher] = {}  # this worker's registry watcher, once the service is built


STORE_LOCATIONS = store_locations(SETTINGS)  # never named to a caller


def champion_missing() -> str | None:
    """Why no champion serves yet (None when one does, or before the service is built); it names no
    store location."""
    watcher = SERVED.get("watcher")
    if watcher is None or watcher.models.champion is not None:
        return None
    why = redacted("; ".join(watcher.status.problems) or "none registered", STORE_LOCATIONS)
    return (
        f"no champion model of {MODEL_NAME!r} is loaded yet ({why}): train and register one, or see "
        "/model_status"
    )


def degraded() -> str | None:
    """Why the champion that answers is not the registry's (None when it is)."""
    watcher = SERVED.get("watcher")
    return redacted(watcher.status.degraded, STORE_LOCATIONS) if watcher and watcher.status.degraded else None


def spooled_log(store: Any, kind: str, schema: dict) -> SpooledLog:
    """A log made durable before each answer (fsync to a local spool), shipped in the background."""
    s = SETTINGS.serving
    return SpooledLog(
        store, log_prefix(kind, MODEL_NAME), schema, s.spool_dir, s.log_max_rows, s.log_max_seconds
    )


@bentoml.asgi_app(ARROW_APP, path="/predict_arrow")
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
        self.watcher = RegistryWatcher(
            Registry(self.store, MODEL_NAME), SETTINGS.serving.poll_seconds, set(INPUT_COLUMNS), KIND
        )
        self.watcher.start()
        # the model's last monitoring verdict on /metrics, beside service health (bentos/verdicts.py)
        self.verdicts = VerdictExporter(self.store, MODEL_NAME, SETTINGS.serving.verdict_seconds)
        self.verdicts.start()
        SERVED["watcher"] = self.watcher  # the request guard answers 503 itself while nothing serves
        self.predictions = spooled_log(self.store, PREDICTIONS, prediction_log_schema(INPUT_SCHEMA))
        self.feedback_log = spooled_log(self.store, FEEDBACK, feedback_log_schema(KIND))
        # what the input contract refused: monitoring counts it as a data-quality signal
        self.rejections = spooled_log(self.store, REJECTIONS, REJECTIONS_SCHEMA)
        self.labelled = LabelledIds(self.store, MODEL_NAME)  # which requests already have an outcome
        # single /predict requests that arrive together are scored as one batch (bentos/coalesce.py)
        self.singles: Coalescer[BaseModel, Any] = Coalescer(
            self._predict_together,
            max_batch=min(64, SETTINGS.serving.max_batch_rows),
            retry_alone=(BadInput,),
        )
        self._request_ids: RequestIds | None = None  # its key is in the store: read on first use
        self._key_problem: str | None = None
        self._key_retry_at = 0.0
        if PACKAGED_MODEL:  # the fallback of last resort, and the champion while the registry has none
            try:
                self.watcher.use_packaged(Path(self.packaged.path))
            except Exception as exc:  # noqa: BLE001 - stay up, not ready, and say why
                self.watcher.status.problems.append(f"packaged model {PACKAGED_MODEL} unusable: {exc}")
        # Everything loaded so far (libraries, models) lives as long as the process: take it out of the
        # garbage collector's full passes, which would otherwise walk it all again and again under load
        # and show up as 100+ ms pauses in the tail latency (measured: p99 ~160 ms -> ~40 ms at 16 clients).
        gc.collect()
        gc.freeze()

    def request_ids(self) -> RequestIds:
        """The signer of request ids. Its key is read from the store the first time one is needed (a
        store that is down at start does not crash the worker) and cached on local disk. A service
        that has never reached its store (a packaged bento elsewhere) still answers: it signs with a
        temporary key, says so in /model_status, and switches to the store's key once it can read it
        (feedback for ids signed with the temporary key is rejected, with that reason)."""
        if self._request_ids is not None and self._key_problem is None:
            return self._request_ids
        if self._request_ids is None or time.monotonic() >= self._key_retry_at:
            cache = spool_root(SETTINGS.serving.spool_dir, self.store.uri) / "request-id-keys" / MODEL_NAME
            try:
                self._request_ids = RequestIds(request_id_key(self.store, MODEL_NAME, cache))
                self._key_problem = None
            except Exception as exc:  # noqa: BLE001 - serve on, say why, try again in a while
                self._key_retry_at = time.monotonic() + 30
                if self._request_ids is None:
                    self._request_ids = RequestIds(os.urandom(32))
                    self._key_problem = (
                        f"request-id key unreadable ({type(exc).__name__}): ids are signed with a temporary "
                        "key until the store is reachable; feedback for those ids will be rejected"
                    )
                    log.warning("driftloop: %s", self._key_problem)
        return self._request_ids

    def __is_ready__(self) -> bool:
        return self.watcher.models.champion is not None

    @bentoml.on_shutdown
    def flush_logs(self) -> None:
        self.watcher.stop()
        self.verdicts.stop()
        # a store that is down gets a few seconds; what it does not take stays in the spool, and the
        # next worker on this host ships it (shutdown must fit the platform's grace period)
        self.predictions.close(ship_for_seconds=5)
        self.feedback_log.close(ship_for_seconds=5)
        self.rejections.close(ship_for_seconds=5)

    def _score(
        self,
        rows: list[dict[str, Any]] | None,
        frame: pl.DataFrame,
        correlation_ids: list[str | None],
        routing_keys: list[str | None],
        one_caller: bool = True,
    ) -> tuple[Any, list[dict[str, Any]] | pl.DataFrame]:
        """Score with what serves now (one consistent snapshot, even mid-swap) under ids the service
        issues: identity comes from the service, never from the caller. One caller's rows share one
        signature; rows of several callers (``one_caller`` false) are signed one by one."""
        signer = self.request_ids()
        ids = signer.issue(frame.height) if one_caller else signer.issue_each(frame.height)
        return SCORER.score(self.watcher.models, ids, rows, frame, correlation_ids, routing_keys)

    def _refused(self, endpoint: str, rows: int, exc: Exception) -> bentoml.exceptions.InvalidArgument:
        """A 400 for input the contract refuses, counted in the model's rejection log (monitoring reports
        it as data quality: a caller's rows that never reached the model are not silently lost)."""
        message = str(exc)
        now = datetime.now(timezone.utc)
        # not fsynced before answering (nothing was promised to the caller), so a flood of bad requests
        # never waits on the disk, nor blocks the event loop of the async endpoints
        self.rejections.append_unsynced(
            [{"ts": now, "endpoint": endpoint, "rows": rows, "reason": message[:500]}]
        )
        return bentoml.exceptions.InvalidArgument(message)

    def _score_records(
        self, records: list[BaseModel], endpoint: str, refusal_counted: bool = True
    ) -> tuple[list[Any], list[dict[str, Any]] | pl.DataFrame]:
        """Answers and log rows for ``records``. A contract refusal is a logged 400; with
        ``refusal_counted`` false it is the plain ``BadInput``, neither logged nor answered (the records
        of several callers: each is then tried alone)."""
        rows = [{c: r.__dict__[c] for c in INPUT_COLUMNS} for r in records]
        frame = pl.DataFrame(rows, schema=INPUT_SCHEMA)
        try:
            check_inputs(frame, INPUT_CONTRACTS)  # the value rules ingestion applies, in its words
        except BadInput as exc:
            if not refusal_counted:
                raise
            raise self._refused(endpoint, frame.height, exc) from None
        out, logged = self._score(
            rows,
            frame,
            [r.correlation_id for r in records],
            [r.routing_key for r in records],
            one_caller=endpoint != "/predict",  # /predict's records are several callers' (coalesced)
        )
        return out.predictions(), logged

    @bentoml.api
    async def predict(self, record: Record) -> Prediction:  # type: ignore[valid-type]
        """Score one record: the answer (yes/no: the probability and the label at that version's
        threshold; a number: the value; classes: the most probable and every class's probability) and
        the version that answered."""
        return await self.singles.submit(record)

    async def _predict_together(self, records: list[BaseModel]) -> list[Any]:
        """Single-record requests that arrived together: one contract check, one transform, one log
        record and one fsync for all of them; each caller gets its own answer and request id."""
        COALESCED.observe(len(records))
        answers, logged = self._score_records(records, "/predict", refusal_counted=len(records) == 1)
        await self.predictions.append_async(logged)  # durable (fsynced) before the answers leave
        return answers

    @bentoml.api
    def predict_batch(self, records: BatchOf[Record]) -> list[Prediction]:  # type: ignore[valid-type]
        """Score 1 to ``max_batch_rows`` records at once (rows are routed one by one, as single requests
        would be)."""
        answers, logged = self._score_records(records, "/predict_batch")
        self.predictions.append(logged)  # durable (fsynced) before the answer leaves
        return answers

    @bentoml.api
    async def predict_columns(
        self,
        columns: Annotated[dict[str, list[Any]], Field(min_length=1)],
        correlation_ids: list[str] | None = None,
        routing_keys: list[str] | None = None,
    ) -> Scored:  # type: ignore[valid-type]
        """Score a batch sent column by column ({"columns": {"carrier": [...], ...}}): the fast path for
        large batches. Types, required fields and ranges are checked per column against the same
        contracts as /predict_batch; errors name the column."""
        try:
            frame = DECODER.columns_to_frame(columns)
        except bentoml.exceptions.InvalidArgument as exc:
            rows = max((len(v) for v in columns.values() if isinstance(v, list)), default=0)
            raise self._refused("/predict_columns", rows, exc) from None
        n = frame.height
        out, logged = self._score(
            None,
            frame,
            DECODER.checked_ids("correlation_ids", correlation_ids, n),
            DECODER.checked_ids("routing_keys", routing_keys, n),
        )
        await self.predictions.append_async(logged)  # durable (fsynced) before the answer leaves
        return out

    @ARROW_APP.post("/", include_in_schema=False)  # documented from its declaration in bentos/endpoints.py
    async def predict_arrow(self, request: Request) -> Response:
        """Score a batch sent as an Arrow IPC stream (``Content-Type: application/vnd.apache.arrow.stream``;
        columns: the model's inputs, optionally ``correlation_id`` and ``routing_key``): the fast path
        for large batches, no JSON. Answers an Arrow IPC stream, one row per input row, in order; errors
        are JSON naming the column, as on /predict_columns."""
        try:
            frame, correlation_ids, routing_keys = DECODER.arrow_to_frame(await request.body())
        except bentoml.exceptions.InvalidArgument as exc:
            return JSONResponse({"error": str(self._refused("/predict_arrow", 0, exc))}, status_code=400)
        if self.watcher.models.champion is None:
            return JSONResponse(
                {"error": "no champion model is loaded yet; see /model_status"}, status_code=503
            )
        # a large batch is tens of milliseconds of numpy, polars and LightGBM (which release the GIL):
        # off the event loop, concurrent batches overlap instead of queueing
        out, logged = await anyio.to_thread.run_sync(self._score, None, frame, correlation_ids, routing_keys)
        await self.predictions.append_async(logged)  # durable (fsynced) before the answer leaves
        return Response(content=await anyio.to_thread.run_sync(scored_to_arrow, out), media_type=ARROW_STREAM)

    @bentoml.api
    def feedback(self, items: BatchOf[FeedbackItem]) -> FeedbackResult:  # type: ignore[valid-type]
        """Record observed outcomes for request ids this service issued. An id it never issued is
        rejected (its signature says so: no lookup, no log scan); one outcome per id per request (a
        repeated id is a 400 naming it); the first outcome for an id counts unless a later one is sent
        with ``correction: true``, and a later one without it is recorded but answered as ignored; each
        label records its source."""
        counts = Counter(item.request_id for item in items)
        repeated = [rid for rid, n in counts.items() if n > 1]
        if repeated:
            raise bentoml.exceptions.InvalidArgument(
                f"{len(repeated)} request id(s) repeated in one request, e.g. "
                f"{[r[:64] for r in repeated[:3]]}: send one outcome per request id (to change an "
                "outcome, send it again with correction: true)"
            )
        now = datetime.now(timezone.utc)
        accepted, rejected = [], []
        champion = self.watcher.models.champion
        classes = set(champion.transform.task.classes) if KIND == "multiclass" and champion else None
        for item in items:
            if classes is not None and item.outcome not in classes:
                reason = f"outcome {item.outcome[:64]!r} is not one of the classes {sorted(classes)}"
                rejected.append(RejectedFeedback(request_id=item.request_id[:128], reason=reason))
            elif self.request_ids().verify(item.request_id):
                accepted.append(
                    {
                        "request_id": item.request_id,
                        "ts": now,
                        "outcome": item.outcome,
                        "correction": item.correction,
                        "source": FEEDBACK_SOURCE,
                    }
                )
            else:
                reason = "not a request id this service issued: send the request_id /predict returned"
                rejected.append(RejectedFeedback(request_id=item.request_id[:128], reason=reason))
        already = self.labelled.already([row["request_id"] for row in accepted if not row["correction"]])
        self.feedback_log.append(accepted)
        self.labelled.add([row["request_id"] for row in accepted])
        ignored = [
            RejectedFeedback(
                request_id=rid, reason="ignored: first label stands (send correction: true to replace it)"
            )
            for rid in already
        ]
        return FeedbackResult(accepted=len(accepted) - len(ignored), ignored=ignored, rejected=rejected)

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
            degraded=degraded(),
            problems=[
                redacted(p, STORE_LOCATIONS)
                for p in [*s.problems, *([self._key_problem] if self._key_problem else [])]
            ],
            predictions_logged=self.predictions.shipped_rows,
            log_errors=self.predictions.errors + self.feedback_log.errors,
        )


check_declared(Driftloop.apis, ["/predict_arrow"])  # an endpoint without a declaration cannot start
for _api in Driftloop.apis.values():
    # an unknown top-level field is a 400 naming it (BentoML ignores them), declared in /docs.json as
    # additionalProperties: false; inside a record the request model forbids them already
    _api.input_spec.model_config["extra"] = "forbid"
    _api.input_spec.model_rebuild(force=True)

Driftloop.add_asgi_middleware(
    RequestGuard,
    token=SETTINGS.serving.auth_token,
    feedback_token=SETTINGS.serving.feedback_token,
    max_bytes=SETTINGS.serving.max_request_bytes,
    champion_missing=champion_missing,
    degraded=degraded,
    documented_beside=lambda: {"/predict_arrow": arrow_operation(INPUT_COLUMNS, KIND)},
    columns_of={"/predict_columns": ("Record", SETTINGS.serving.max_batch_rows)},
)
