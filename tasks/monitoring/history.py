"""Monitoring over time: every judged window's figures kept, and drawn where people would rather look
than read.

One run's report answers "is this window fine?"; an operator asks "since when?" and "getting worse?".
The monitor flow appends each judged window (drift per input as PSI over its calibrated threshold, the
champion's live ROC-AUC with its standard error beside its held-out figure, label coverage, data-quality
problems, why a retrain was asked for) to the model's history in the store, and draws it: drift per
feature across windows as a heat map, live ROC-AUC with its 95% interval against the held-out line,
label coverage and data-quality counts. The picture goes into a Prefect artifact and, with a table of
the windows, into a self-contained HTML page in the store (``reports/<model>/monitoring.html``: no
scripts, no external files; open it from the store or a bucket).
"""

from __future__ import annotations

import html
import io
from datetime import datetime

from pydantic import BaseModel

from tasks.core.store import ArtifactStore
from tasks.monitoring.window import MonitorReport

KEPT_WINDOWS = 720  # a month of hourly runs


class JudgedWindow(BaseModel):
    at: str  # when it was judged (UTC, ISO 8601)
    window: tuple[str, str] | None
    rows: int
    champion: int | None
    drift: dict[str, float]  # column -> PSI / its calibrated threshold (above 1: drifted)
    drift_detected: bool
    live_auc: float | None
    live_auc_se: float | None
    held_out_auc: float | None
    labels: int
    predictions: int
    quality_problems: int
    retrain: list[str]


def history_key(model_name: str) -> str:
    return f"state/monitor/{model_name}.history.json"


def page_key(model_name: str) -> str:
    return f"reports/{model_name}/monitoring.html"


def read_history(store: ArtifactStore, model_name: str) -> list[JudgedWindow]:
    key = history_key(model_name)
    return (
        [JudgedWindow.model_validate(w) for w in store.read_json(key)["windows"]] if store.exists(key) else []
    )


def record_window(
    store: ArtifactStore, report: MonitorReport, held_out_auc: float | None, at: datetime
) -> list[JudgedWindow]:
    """Append ``report``'s window to the model's history (the last ``KEPT_WINDOWS``); returns it."""
    perf = next((p for p in report.performance if p.model_version == report.champion), None)
    judged = JudgedWindow(
        at=at.isoformat(),
        window=report.window,
        rows=report.rows,
        champion=report.champion,
        drift={d.column: round(min(d.ratio, 1e6), 4) for d in report.drift},
        drift_detected=report.drift_detected,
        live_auc=perf.roc_auc if perf else None,
        live_auc_se=perf.roc_auc_se if perf else None,
        held_out_auc=held_out_auc,
        labels=perf.labels if perf else 0,
        predictions=perf.predictions if perf else report.rows,
        quality_problems=len(report.quality_problems),
        retrain=report.retrain,
    )
    windows = [*read_history(store, report.model_name), judged][-KEPT_WINDOWS:]
    store.write_json(
        history_key(report.model_name), {"windows": [w.model_dump(mode="json") for w in windows]}
    )
    return windows


def _label(w: JudgedWindow) -> str:
    return w.at[5:16].replace("T", " ")  # MM-DD HH:MM


def history_png(model_name: str, windows: list[JudgedWindow], max_features: int = 25) -> bytes:
    """Drift heat map (features x windows), live ROC-AUC with its 95% interval vs held-out, label
    coverage with data-quality counts: one figure, windows on a shared axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    shown = windows[-60:]  # the last 60 windows: a heat map stays readable
    columns = sorted(
        {c for w in shown for c in w.drift}, key=lambda c: -max(w.drift.get(c, 0) for w in shown)
    )
    columns = columns[:max_features]
    x = np.arange(len(shown))
    fig, (heat, auc, cover) = plt.subplots(
        3, 1, figsize=(max(7, 0.28 * len(shown) + 3), 4 + 0.22 * len(columns) + 5), sharex=True,
        gridspec_kw={"height_ratios": [max(2, 0.22 * len(columns)), 2.2, 1.6]},
    )  # fmt: skip
    ratios = (
        np.array([[w.drift.get(c, np.nan) for w in shown] for c in columns]) if columns else np.zeros((0, 0))
    )
    if columns:
        image = heat.imshow(np.clip(ratios, 0, 3), aspect="auto", cmap="RdYlGn_r", vmin=0, vmax=3)
        heat.set_yticks(range(len(columns)), columns, fontsize=7)
        fig.colorbar(image, ax=heat, label="PSI / threshold (>1 drifted)", fraction=0.03)
    heat.set_title(f"{model_name}: drift per input, last {len(shown)} judged windows")
    live = np.array([w.live_auc if w.live_auc is not None else np.nan for w in shown])
    half = 1.96 * np.array([w.live_auc_se or 0.0 for w in shown])
    auc.fill_between(x, live - half, live + half, alpha=0.25, color="tab:blue", label="95% interval")
    auc.plot(x, live, "o-", color="tab:blue", ms=3, label="live ROC-AUC (champion)")
    held = np.array([np.nan if w.held_out_auc is None else w.held_out_auc for w in shown])
    if not np.isnan(held).all():  # a dash per window, so even a single window shows its held-out figure
        auc.plot(x, held, "_--", color="grey", ms=16, mew=2, label="held-out ROC-AUC")
    shown_values = np.concatenate([live - half, live + half, held])
    if not np.isnan(shown_values).all():  # both the interval and the held-out figure inside the axes
        auc.set_ylim(np.nanmin(shown_values) - 0.01, np.nanmax(shown_values) + 0.01)
    auc.set_ylabel("ROC-AUC")
    auc.legend(fontsize=7, loc="lower left")
    coverage = [w.labels / w.predictions if w.predictions else 0.0 for w in shown]
    cover.bar(x, coverage, color="tab:purple", alpha=0.6, label="label coverage")
    cover.set_ylim(0, 1.05)
    cover.set_ylabel("labelled share")
    problems = cover.twinx()
    problems.plot(
        x, [w.quality_problems for w in shown], "s", color="tab:red", ms=4, label="data-quality problems"
    )
    problems.set_ylabel("problems", color="tab:red")
    cover.set_xticks(x, [_label(w) for w in shown], rotation=90, fontsize=6)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


def history_page(model_name: str, windows: list[JudgedWindow], png_uri: str, now: datetime) -> str:
    """A self-contained HTML page: the figure and a table of the windows, newest first."""
    rows = []
    for w in reversed(windows[-200:]):
        live = "n/a" if w.live_auc is None else f"{w.live_auc:.3f} ± {1.96 * (w.live_auc_se or 0):.3f}"
        drifted = ", ".join(c for c, r in sorted(w.drift.items(), key=lambda kv: -kv[1]) if r > 1) or "none"
        cells = [
            _label(w), f"v{w.champion}" if w.champion else "-", str(w.rows), live,
            "n/a" if w.held_out_auc is None else f"{w.held_out_auc:.3f}",
            f"{w.labels}/{w.predictions}", drifted, str(w.quality_problems), ", ".join(w.retrain) or "no",
        ]  # fmt: skip
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    head = ["judged (UTC)", "champion", "rows", "live ROC-AUC (95%)", "held-out", "labels", "drifted inputs",
            "quality problems", "retrain"]  # fmt: skip
    name = html.escape(model_name)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{name}: monitoring</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}
table{{border-collapse:collapse;font-size:13px}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}
th{{background:#f3f3f3}}img{{max-width:100%}}</style>
</head><body>
<h1>{name}: monitoring over time</h1>
<p>{len(windows)} judged windows; page written {html.escape(now.strftime("%Y-%m-%d %H:%M UTC"))}.
Drift is PSI over each input's calibrated threshold (above 1: drifted); the live ROC-AUC is the
champion's on the window's labelled predictions, with its 95% interval, against its held-out figure.</p>
<img alt="drift per input over time, live ROC-AUC with its interval, label coverage" src="{png_uri}">
<h2>Windows, newest first</h2>
<table><tr>{"".join(f"<th>{h}</th>" for h in head)}</tr>
{"".join(rows)}
</table></body></html>
"""
