"""Every decision on a model, in one place: what ``driftloop history MODEL`` lists.

Three records already exist and stay where they are (one truth each):

- the gate's decision at registration, in each immutable version record;
- every alias move (promotion, rollback, canary start and stop), with who and why, in ``aliases.json``;
- every retrain start, in ``state/retrain/<model>.json``.

What moves no alias, or says more than a move does, is appended here, one immutable object per
decision: ``registry/<model>/decisions/<time>-<id>.json`` (each canary verdict with its evidence, each
approval asked, given, refused or timed out). Separate objects, not a shared list, so writers never
race and nothing needs a lock on S3.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel

from tasks.core.store import ArtifactStore
from tasks.registry.retrain_history import read_retrain_history
from tasks.registry.versions import AliasChange, Registry


class DecisionRecord(BaseModel):
    """One decision: when, what kind, on which version, the outcome, why, who or what decided, and the
    evidence it rested on."""

    at: str
    kind: str  # gate, canary, approval, promotion, rollback, canary-start, canary-stop, retrain
    version: int | None
    outcome: str
    reason: str
    decided_by: str
    evidence: dict[str, Any] = {}


def decisions_prefix(model_name: str) -> str:
    return f"registry/{model_name}/decisions"


def record_decision(store: ArtifactStore, model_name: str, record: DecisionRecord) -> str:
    """Append ``record`` to the model's decision log; returns its key."""
    stamp = record.at.replace(":", "").replace("-", "").replace("+0000", "Z")
    key = f"{decisions_prefix(model_name)}/{stamp}-{uuid.uuid4().hex[:8]}.json"
    store.write_json(key, record.model_dump(mode="json"), if_none_match=True)
    return key


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


def _alias_move(change: AliasChange) -> DecisionRecord:
    if change.alias == "champion":
        kind = change.kind or "promotion"
        outcome = (
            f"champion v{change.previous} -> v{change.version}"
            if change.previous
            else f"champion v{change.version}"
        )
    elif change.version is not None:
        kind, outcome = "canary-start", f"challenger v{change.version}"
    else:
        kind, outcome = "canary-stop", f"challenger v{change.previous} removed"
    version = change.version if change.version is not None else change.previous
    return DecisionRecord(
        at=change.at,
        kind=kind,
        version=version,
        outcome=outcome,
        reason=change.reason,
        decided_by=change.actor,
    )


def model_history(registry: Registry) -> list[DecisionRecord]:
    """Every decision on the model, oldest first: gate decisions at registration, alias moves, retrain
    starts and the decision log (canary verdicts, approvals)."""
    store, name = registry.store, registry.model_name
    found: list[DecisionRecord] = []
    for number in registry.versions():
        mv = registry.get(number)
        if mv.decision is not None:
            shown = (
                "roc_auc",
                "rmse",
                "log_loss",
                "loss",
                "test_rows",
                "cv_auc_mean",
            )  # by the target's kind
            evidence = {k: mv.metrics[k] for k in shown if k in mv.metrics}
            found.append(
                DecisionRecord(
                    at=mv.created_at,
                    kind="gate",
                    version=number,
                    outcome=mv.decision.outcome,
                    reason=mv.decision.reason,
                    decided_by="promotion gate (training)",
                    evidence={"snapshot_id": mv.snapshot_id, **evidence},
                )
            )
    found += [_alias_move(change) for change in registry.alias_doc().history]
    for start in read_retrain_history(store, name).history:
        found.append(
            DecisionRecord(
                at=start["started"],
                kind="retrain",
                version=None,
                outcome="started",
                reason=start["reason"],
                decided_by="retrain flow",
            )
        )
    for key in store.list(decisions_prefix(name)):
        if key.endswith(".json"):
            found.append(DecisionRecord.model_validate(store.read_json(key)))
    return sorted(found, key=lambda r: datetime.fromisoformat(r.at))
