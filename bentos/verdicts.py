"""The served model's last monitoring verdict on the service's ``/metrics``, beside its service health.

Prometheus scrapes services, not flows: the monitor flow keeps each model's last judged window in the
store (``tasks.monitoring.status``), and the service re-reads its own model's every ``every`` seconds
and exports it, so the Grafana dashboard and alert rules show drift and live performance next to
latency and errors. Until a window has been judged the gauges are NaN (exported, so a dashboard
query finds the series, and shown as "no data").
"""

from __future__ import annotations

import logging
import math
import threading
from datetime import datetime

import bentoml

from tasks.core.store import ArtifactStore
from tasks.monitoring.status import last_report_key

log = logging.getLogger("driftloop.service")


def _gauge(name: str, documentation: str, *extra_labels: str):  # noqa: ANN202 - a prometheus Gauge
    # every worker reads the same record: the most recent value is the value
    return bentoml.metrics.Gauge(
        name=name,
        documentation=documentation,
        labelnames=["model_name", *extra_labels],
        multiprocess_mode="mostrecent",
    )


DRIFT = _gauge(
    "driftloop_monitoring_drift_detected",
    "1 when the last judged window's drift takes the model outside what it learned",
)
RETRAIN = _gauge(
    "driftloop_monitoring_retrain_needed",
    "1 when the last judged window asked for a retrain (drift, degradation, estimated drop)",
)
LIVE_AUC = _gauge(
    "driftloop_monitoring_live_roc_auc",
    "the champion's live ROC-AUC in the last judged window, with its 95% interval bounds",
    "bound",
)
COVERAGE = _gauge(
    "driftloop_monitoring_label_coverage",
    "share of the champion's judged predictions with an observed outcome",
)
QUALITY = _gauge(
    "driftloop_monitoring_quality_problems", "data-quality problems found in the last judged window"
)
JUDGED_AT = _gauge(
    "driftloop_monitoring_judged_timestamp_seconds",
    "when the last window was judged (Unix time): alert when monitoring stops",
)


def export_verdict(store: ArtifactStore, model_name: str) -> bool:
    """Set the gauges from the model's last judged window; False when none was judged yet. Read as the
    plain record the monitor flow wrote (the service's bento has no whylogs for the report model)."""
    key = last_report_key(model_name)
    doc = store.read_json(key) if store.exists(key) else None
    nan = math.nan
    drift = retrain = coverage = quality = at = nan
    auc = (nan, nan, nan)
    if doc is not None:
        report = doc["report"]
        perf = next((p for p in report["performance"] if p["model_version"] == report["champion"]), None)
        if perf is not None and perf.get("roc_auc") is not None:
            half = 1.96 * (perf.get("roc_auc_se") or 0.0)
            auc = (perf["roc_auc"], perf["roc_auc"] - half, perf["roc_auc"] + half)
        if perf is not None and perf["predictions"]:
            coverage = perf["labels"] / perf["predictions"]
        drift, retrain = float(report["drift_detected"]), float(bool(report["retrain"]))
        quality, at = float(len(report["quality_problems"])), datetime.fromisoformat(doc["at"]).timestamp()
    DRIFT.labels(model_name).set(drift)
    RETRAIN.labels(model_name).set(retrain)
    for bound, value in zip(("estimate", "low", "high"), auc):
        LIVE_AUC.labels(model_name, bound).set(value)
    COVERAGE.labels(model_name).set(coverage)
    QUALITY.labels(model_name).set(quality)
    JUDGED_AT.labels(model_name).set(at)
    return doc is not None


class VerdictExporter:
    """Re-reads the model's last verdict every ``every`` seconds, in a thread of its own."""

    def __init__(self, store: ArtifactStore, model_name: str, every: float = 60.0):
        self.store, self.model_name, self.every = store, model_name, every
        self._stop = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._loop, name="verdict-exporter", daemon=True).start()

    def _loop(self) -> None:
        while True:
            try:
                export_verdict(self.store, self.model_name)
            except Exception as exc:  # noqa: BLE001 - a store hiccup must not stop the service
                log.warning(
                    "driftloop: could not read %s's last monitoring verdict: %s", self.model_name, exc
                )
            if self._stop.wait(self.every):
                return

    def stop(self) -> None:
        self._stop.set()
