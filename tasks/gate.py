"""The promotion gate: an explicit, testable decision about what a new model becomes.

A first model becomes champion (something has to serve). A later one becomes champion only if it
beats the champion's ROC-AUC on the same test window by the configured margin, with enough test
rows to believe it; otherwise it is registered as challenger, for a canary to decide on live data.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from tasks.evaluate import ChampionEvaluation, Metrics
from tasks.orchestration import cached_task
from tasks.settings import GateSettings


class Decision(BaseModel):
    outcome: Literal["champion", "challenger"]
    reason: str


def decide(candidate: Metrics, champion: ChampionEvaluation, gate: GateSettings) -> Decision:
    if champion.version is None:
        return Decision(outcome="champion", reason="first model of this name: it becomes champion")
    if champion.metrics is None:
        return Decision(outcome="challenger", reason=f"{champion.note}; kept as challenger for a live comparison")
    if candidate.rows < gate.min_test_rows:
        return Decision(outcome="challenger",
                        reason=f"only {candidate.rows} test rows (gate needs {gate.min_test_rows}); not enough evidence")
    gain = candidate.roc_auc - champion.metrics.roc_auc
    verdict = (f"ROC-AUC {candidate.roc_auc:.4f} vs champion v{champion.version} {champion.metrics.roc_auc:.4f}"
               f" (gain {gain:+.4f}, margin {gate.min_auc_gain})")
    if gain >= gate.min_auc_gain:
        return Decision(outcome="champion", reason=f"beats the champion: {verdict}")
    return Decision(outcome="challenger", reason=f"does not beat the champion by the margin: {verdict}")


@cached_task(name="promotion-gate")
def decide_promotion(candidate: Metrics, champion: ChampionEvaluation, gate: GateSettings) -> Decision:
    return decide(candidate, champion, gate)
