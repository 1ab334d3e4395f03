"""Config errors name the file, the field and what to do."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tasks.core.config import ConfigError, load_dataset_config
from tasks.core.settings import PROJECT_DIR

FLIGHTS = PROJECT_DIR / "configs" / "flights.yaml"


def _write(tmp_path: Path, mutate) -> Path:
    raw = yaml.safe_load(FLIGHTS.read_text())
    mutate(raw)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_the_shipped_config_loads():
    config = load_dataset_config(FLIGHTS, {"DRIFTLOOP_SOURCES_DIR": "/tmp/x"})
    assert config.target.name == "late"
    assert "carrier" in config.feature_names and "arr_delay" not in config.feature_names


def test_a_typo_names_the_field(tmp_path):
    path = _write(tmp_path, lambda r: r["training"].update({"n_trails": 3}))
    with pytest.raises(ConfigError, match=r"training\.n_trails.*unknown field"):
        load_dataset_config(path, {"DRIFTLOOP_SOURCES_DIR": "/tmp"})


def test_unknown_source_kind_is_rejected(tmp_path):
    path = _write(tmp_path, lambda r: r["tables"]["airports"]["source"].update({"kind": "ftp"}))
    with pytest.raises(ConfigError, match=r"tables\.airports\.source"):
        load_dataset_config(path, {"DRIFTLOOP_SOURCES_DIR": "/tmp"})


def test_missing_environment_variable_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv("DRIFTLOOP_SOURCES_DIR", raising=False)
    with pytest.raises(ConfigError, match="DRIFTLOOP_SOURCES_DIR is not set"):
        load_dataset_config(FLIGHTS)


def test_target_columns_cannot_be_features(tmp_path):
    path = _write(tmp_path, lambda r: r["features"]["numeric"].append("arr_delay"))
    with pytest.raises(ConfigError, match="target columns must not be features"):
        load_dataset_config(path, {"DRIFTLOOP_SOURCES_DIR": "/tmp"})


def test_unknown_join_table_is_named(tmp_path):
    path = _write(tmp_path, lambda r: r["joins"][0].update({"table": "wether"}))
    with pytest.raises(ConfigError, match="join table 'wether'"):
        load_dataset_config(path, {"DRIFTLOOP_SOURCES_DIR": "/tmp"})


def test_missing_file_says_how_to_point_at_one(tmp_path):
    with pytest.raises(ConfigError, match="DRIFTLOOP_DATASET_CONFIG"):
        load_dataset_config(tmp_path / "nope.yaml")


def test_not_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("tables: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_dataset_config(path)


def test_cloud_config_extends_the_flights_config_and_replaces_only_the_planes_source():
    defaults = {"DRIFTLOOP_SOURCES_DIR": "/data", "DRIFTLOOP_STORE_URI": "/store"}
    base = load_dataset_config(PROJECT_DIR / "configs" / "flights.yaml", defaults)
    cloud = load_dataset_config(PROJECT_DIR / "configs" / "flights-cloud.yaml", defaults)
    assert base.tables["planes"].source.kind == "sql" and cloud.tables["planes"].source.kind == "files"
    assert cloud.tables["planes"].contract == base.tables["planes"].contract  # merged, not replaced
    assert cloud.model_dump(exclude={"tables"}) == base.model_dump(exclude={"tables"})
    assert {k: v for k, v in cloud.tables.items() if k != "planes"} == {
        k: v for k, v in base.tables.items() if k != "planes"
    }


def test_extends_loops_and_missing_parents_are_named(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="loops back"):
        load_dataset_config(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("extends: nowhere.yaml\n")
    with pytest.raises(ConfigError, match=r"extends 'nowhere.yaml', but .*nowhere.yaml does not exist"):
        load_dataset_config(tmp_path / "c.yaml")


def test_a_column_no_table_has_is_named_with_the_nearest_ones(tmp_path):
    path = _write(tmp_path, lambda r: r["features"]["numeric"].append("dep_dleay"))
    with pytest.raises(ConfigError) as err:
        load_dataset_config(path, {"DRIFTLOOP_SOURCES_DIR": "/tmp"})
    message = str(err.value)
    assert str(path) in message and "features.numeric names column(s) ['dep_dleay']" in message
    assert "did you mean ['dep_delay'" in message


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda r: r["target"].update({"requires": ["arr_dleay"]}), "target.requires"),
        (lambda r: r["joins"][0].update({"columns": ["temperature"]}), "joins[0].columns"),
        (lambda r: r["time"].update({"column": "when"}), "time.column"),
        (lambda r: r["features"]["derived"].update({"x": "distance / speeed"}), "features.derived.x"),
        (lambda r: r.update({"slices": ["airline"]}), "slices"),
        (lambda r: r["tables"]["flights"]["contract"]["rules"].update({"r": "nope > 1"}), "rules.r"),
    ],
)
def test_every_column_a_config_names_must_exist(tmp_path, mutate, field):
    with pytest.raises(ConfigError, match=rf"{field.replace('[', '.').replace(']', '.')}.*"):
        load_dataset_config(_write(tmp_path, mutate), {"DRIFTLOOP_SOURCES_DIR": "/tmp"})


def test_a_dataset_without_time_cannot_have_a_window_or_a_time_split(tmp_path):
    def drop_time(raw, **extra):
        raw.pop("time")
        raw["features"]["derived"].pop("plane_age")
        raw.update(extra)

    path = _write(tmp_path, drop_time)  # the window stays: it needs a time column
    with pytest.raises(ConfigError, match="window needs a time column"):
        load_dataset_config(path, {"DRIFTLOOP_SOURCES_DIR": "/tmp"})
    path = _write(tmp_path, lambda r: drop_time(r, window={}))
    config = load_dataset_config(path, {"DRIFTLOOP_SOURCES_DIR": "/tmp"})
    assert config.time_column is None and config.split_method == "stratified"
    assert not any(n.startswith("time_hour_") for n in config.feature_names)


def test_the_registry_copy_keeps_variables_unexpanded_and_overrides_applied():
    config = load_dataset_config(FLIGHTS, {"DRIFTLOOP_SOURCES_DIR": "/secret/place"})
    assert "/secret/place" in config.tables["planes"].source.url
    moved = config.with_updates({"model_name": "other", "window": {"end": "2013-05-01T00:00:00Z"}})
    template = moved.template()
    assert template["tables"]["planes"]["source"]["url"].startswith("sqlite:///${DRIFTLOOP_SOURCES_DIR}")
    assert template["model_name"] == "other" and template["window"]["end"] == "2013-05-01T00:00:00Z"
    assert moved.origin == str(FLIGHTS)


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"objective": "regression"}, r"training\.params.*objective 'regression' contradicts the target"),
        (
            {"objective": "multiclass"},
            r"objective 'multiclass' contradicts the target.*target\.kind is 'binary'",
        ),
        ({"num_class": 3}, r"num_class set by the loop .*remove them from training\.params"),
        ({"metric": "l2"}, r"metric set by the loop .*remove them from training\.params"),
    ],
)
def test_a_parameter_the_loop_would_replace_is_refused_naming_it(tmp_path, params, named):
    """It used to be overridden silently, and the registry recorded a value the model never had. With
    the kind stated, a contradicting objective is refused as the config is read (an inferred kind is
    checked when the snapshot shows it: tests/data)."""

    def edit(raw):
        raw["training"]["params"].update(params)
        raw["target"]["kind"] = "binary"

    with pytest.raises(ConfigError, match=named):
        load_dataset_config(_write(tmp_path, edit), {"DRIFTLOOP_SOURCES_DIR": "/tmp"})


def test_the_objective_the_model_is_trained_with_is_accepted_and_no_other(tmp_path):
    path = _write(tmp_path, lambda r: r["training"]["params"].update({"objective": "binary"}))
    assert (
        load_dataset_config(path, {"DRIFTLOOP_SOURCES_DIR": "/tmp"}).training.params["objective"] == "binary"
    )
    path = _write(tmp_path, lambda r: r["training"]["params"].update({"objective": "cross_entropy"}))
    with pytest.raises(ConfigError, match="objective 'cross_entropy' is not one the loop trains"):
        load_dataset_config(path, {"DRIFTLOOP_SOURCES_DIR": "/tmp"})
    path = _write(tmp_path, lambda r: r["training"]["params"].update({"objective": "huber"}))
    assert (
        load_dataset_config(path, {"DRIFTLOOP_SOURCES_DIR": "/tmp"}).training.params["objective"] == "huber"
    )
