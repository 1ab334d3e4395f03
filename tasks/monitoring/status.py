"""A model's health in one line per fact, for people (``driftloop status``): which versions serve, how
far its canary has come, and the last monitoring verdict with its evidence. Read from the store only:
the registry's aliases and records, and the report the monitor flow keeps of the last window it
judged (``last_report_key``)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING

from pydantic import BaseModel

from tasks.core.store import ArtifactStore
from tasks.registry.versions import Registry

if TYPE_CHECKING:  # the service reads the key only: whylogs and matplotlib are not in its bento
    from tasks.monitoring.window import MonitorReport


def last_report_key(model_name: str) -> str:
    """Where the monitor flow keeps the report of the last window it judged (a run with nothing new
    leaves it: the last verdict stays readable)."""
    return f"state/monitor/{model_name}.last-report.json"


def keep_last_report(store: ArtifactStore, report: "MonitorReport", at: datetime) -> None:
    store.write_json(
        last_report_key(report.model_name), {"at": at.isoformat(), "report": report.model_dump(mode="json")}
    )


def read_last_report(store: ArtifactStore, model_name: str) -> "tuple[datetime, MonitorReport] | None":
    from tasks.monitoring.window import MonitorReport

    key = last_report_key(model_name)
    if not store.exists(key):
        return None
    doc = store.read_json(key)
    return datetime.fromisoformat(doc["at"]), MonitorReport.model_validate(doc["report"])


HEADLINE = {"roc_auc": "ROC-AUC", "rmse": "RMSE", "log_loss": "log loss"}  # one metric per target kind


class ModelStatus(BaseModel):
    """Each field is what a person reads in one cell."""

    champion: str
    challenger: str
    monitored: str
    live_auc: str
    coverage: str
    drift: str


def _ago(then: datetime, now: datetime) -> str:
    hours = (now - then).total_seconds() / 3600
    return (
        f"{hours * 60:.0f} min ago"
        if hours < 1
        else f"{hours:.1f} h ago"
        if hours < 48
        else f"{hours / 24:.0f} d ago"
    )


def model_status(store: ArtifactStore, model_name: str, now: datetime) -> ModelStatus:
    registry = Registry(store, model_name)
    doc = registry.alias_doc()
    champion_v, challenger_v = doc.aliases.get("champion"), doc.aliases.get("challenger")
    champion = "none"
    if champion_v is not None:
        measured = registry.get(champion_v).metrics
        name = next((n for n in HEADLINE if n in measured), None)  # by the target's kind
        since = doc.alias_set_at("champion")
        shown = f"{measured[name]:.3f}" if name == "roc_auc" else f"{measured[name]:.4g}" if name else ""
        champion = f"v{champion_v}" + (f" (held-out {HEADLINE[name]} {shown})" if name else "")
        champion += f", since {_ago(datetime.fromisoformat(since), now)}" if since else ""
    challenger = "none"
    if challenger_v is not None:
        since = doc.alias_set_at("challenger")
        challenger = (
            f"v{challenger_v}: canary for {_ago(datetime.fromisoformat(since), now).removesuffix(' ago')}"
            if since
            else f"v{challenger_v}"
        )
    last = read_last_report(store, model_name)
    if last is None:
        return ModelStatus(
            champion=champion, challenger=challenger, monitored="never", live_auc="-", coverage="-", drift="-"
        )
    at, report = last
    verdict = "retrain: " + ", ".join(report.retrain) if report.retrain else "ok"
    if report.quality_problems:
        verdict += f"; {len(report.quality_problems)} data-quality problem(s)"
    perf = next((p for p in report.performance if p.model_version == report.champion), None)
    live = "-"
    coverage = "-"
    if perf is not None:
        coverage = f"{perf.labels}/{perf.predictions} ({perf.labels / max(perf.predictions, 1):.0%})"
        if perf.roc_auc is not None:
            half = 1.96 * (perf.roc_auc_se or 0.0)
            live = f"{perf.roc_auc:.3f} ({perf.roc_auc - half:.3f} .. {perf.roc_auc + half:.3f})"
        name = next((n for n in HEADLINE if n in perf.intervals), None)  # classes and numbers
        if name is not None:
            low, high = perf.intervals[name]
            live = f"{HEADLINE[name]} {perf.metrics[name]:.4g} ({low:.4g} .. {high:.4g})"
    drift = ("detected: " if report.drift_detected else "within bounds: ") + (
        ", ".join(report.drifted[:3]) or "none"
    )
    return ModelStatus(
        champion=champion,
        challenger=challenger,
        monitored=f"{_ago(at, now)}: {report.rows} predictions, {verdict}",
        live_auc=live,
        coverage=coverage,
        drift=drift,
    )


def last_verdict(store: ArtifactStore, model_name: str) -> str:
    """The last judged window in Markdown, for a run that judged nothing new: its artifact replaces the
    model's latest one, and must not hide the verdict that still stands."""
    if not store.exists(last_report_key(model_name)):
        return "No window of this model has been judged yet."
    s = model_status(store, model_name, datetime.now(timezone.utc))
    return (
        "## The last judged window (still the verdict)\n\n"
        f"| | |\n|---|---|\n| judged | {s.monitored} |\n| live performance (95% CI) | {s.live_auc} |\n"
        f"| labels | {s.coverage} |\n| drift | {s.drift} |\n| champion | {s.champion} |\n"
    )
