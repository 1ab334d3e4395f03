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
