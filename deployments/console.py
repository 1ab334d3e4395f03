"""Terminal output for people: rich summaries of what a flow did and where to look next."""

from __future__ import annotations

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from flows.schemas import TrainingSummary
from tasks.model.evaluate import metric_table

console = Console()


def print_training_summary(summary: TrainingSummary, prefect_ui: str | None = None) -> None:
    """A short, scannable summary of a training run."""
    s = summary
    table = Table(title=f"{s.model_name} v{s.version}", show_header=True, header_style="bold")
    table.add_column("metric (test)")
    table.add_column("model", justify="right")
    table.add_column("baseline", justify="right")
    for label, model, baseline, _ in metric_table(s.test, s.baseline):
        table.add_row(label, f"{model:.4f}", f"{baseline:.4f}")
    console.print(table)
    lines = [
        f"[bold]decision[/]: {s.decision} — {s.reason}",
        f"[bold]dataset snapshot[/]: {s.snapshot_id} ({s.snapshot_rows} rows)",
        f"[bold]cross-validated ROC-AUC[/]: {s.cv_auc_mean:.4f} ± {s.cv_auc_std:.4f}"
        if s.cv_auc_mean == s.cv_auc_mean  # NaN: no folds were run
        else "[bold]cross-validated ROC-AUC[/]: not run (split.cv_folds is 0)",
        f"[bold]registry entry[/]: {s.registry_entry}",
        f"[bold]model, profile, plots[/]: under {s.store_uri}/registry/{s.model_name}/",
        f"[bold]W&B run[/]: {s.wandb_run or 'tracking disabled'}"
        + ("  (offline: upload with `wandb sync <dir>`)" if s.wandb_run and "://" not in s.wandb_run else ""),
    ]
    if s.quarantined:
        lines.append(f"[bold yellow]quarantined batches[/]: {', '.join(s.quarantined)}")
    if prefect_ui:
        lines.append(f"[bold]Prefect UI[/]: {prefect_ui}")
    console.print(Panel("\n".join(lines), title="training run", expand=False))
