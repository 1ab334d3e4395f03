"""The run context: built once per flow run, hashed into cache keys by what changes results only."""

from __future__ import annotations

import pickle

from flows.steps.runtime import RunContextIdentity
from tasks.core.context import RunContext


def _key(ctx: RunContext) -> str:
    return RunContextIdentity().compute_key(task_ctx=None, inputs={"ctx": ctx, "x": 1}, flow_parameters={})


def test_operational_settings_do_not_change_the_cache_key(private_settings):
    base = RunContext.build(private_settings)
    other_worker = RunContext.build(
        private_settings.model_copy(
            update={
                "target": "cloud",
                "retrain": private_settings.retrain.model_copy(update={"cooldown_minutes": 7}),
                "serving": private_settings.serving.model_copy(update={"poll_seconds": 9.0}),
                "prefect": private_settings.prefect.model_copy(
                    update={"port": 4999, "worker_poll_seconds": 3.0}
                ),
            }
        )
    )
    assert _key(base) == _key(other_worker)


def test_what_changes_results_changes_the_cache_key(private_settings, tmp_path):
    base = RunContext.build(private_settings)
    assert _key(base) != _key(
        RunContext.build(private_settings.model_copy(update={"store_uri": str(tmp_path)}))
    )
    other_config = base.with_config(base.config.model_copy(update={"model_name": "another-model"}))
    assert _key(base) != _key(other_config)
    skip = RunContext.build(private_settings.model_copy(update={"on_invalid": "skip"}))
    assert _key(base) != _key(skip)
    assert RunContextIdentity().compute_key(task_ctx=None, inputs={"x": 1}, flow_parameters={}) is None


def test_a_context_travels_without_its_open_store(private_settings):
    ctx = RunContext.build(private_settings)
    store = ctx.store
    assert ctx.store is store  # opened once, shared by the run's steps
    copy = pickle.loads(pickle.dumps(ctx))
    assert copy.config == ctx.config and copy.store is not store and copy.store.uri == store.uri


def test_a_run_is_named_after_the_model_it_acts_on():
    """``training-caravan-purchase-...``, not ``training-default-...``, for a run started with a config."""
    from flows.schemas import TrainingParams
    from flows.steps.runtime import named_model

    assert named_model({"model_name": "mine"}) == "mine"
    assert named_model(TrainingParams(dataset_config="configs/caravan.yaml")) == "caravan-purchase"
    assert named_model({"dataset_config": "configs/caravan.yaml", "model_name": None}) == "caravan-purchase"
    assert named_model({}) == "flights-late-arrival"  # the settings' dataset config
    assert named_model({"dataset_config": "/no/such/config.yaml"}) == "default"
