"""Config errors name the file, the field and what to do."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tasks.config import ConfigError, load_dataset_config
from tasks.settings import PROJECT_DIR

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
