"""``driftloop`` driven as a person would, through the installed command: status, promote, rollback
in this process (``--here``), and a failing training both here and as a deployment run on the worker:
a non-zero exit and the run's own message."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tasks.core.store import open_store
from tasks.registry.versions import Registry
from tests.conftest import RECORD

pytestmark = pytest.mark.integration
MODEL = "cli-model"
FLIGHTS_CONFIG = Path(__file__).parents[2] / "configs" / "flights.yaml"


def driftloop(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).parent / "driftloop"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "250"},
    )


def _bad_config(where: Path) -> Path:
    raw = yaml.safe_load(FLIGHTS_CONFIG.read_text())
    raw["split"]["valid_fraction"] = 2.5
    bad = where / "bad-split.yaml"
    bad.write_text(yaml.safe_dump(raw))
    return bad


def test_status_promote_rollback_and_a_failing_train(prefect_server, private_settings, tmp_path):
    registry = Registry(open_store(private_settings), MODEL)
    for version in (1, 2, 3):
        registry.register(
            {"model.txt": b"tree"}, RECORD.model_copy(update={"metrics": {"roc_auc": 0.6 + version / 100}})
        )
    registry.set_alias("champion", 1, reason="first", actor="test")

    shown = driftloop("status")
    assert shown.returncode == 0, shown.stderr
    assert MODEL in shown.stdout and "v1 (held-out ROC-AUC 0.610)" in shown.stdout and "never" in shown.stdout

    promoted = driftloop("promote", "3", "--model-name", MODEL, "--reason", "cli test", "--here")
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    assert registry.alias_doc().aliases["champion"] == 3
    assert registry.alias_doc().history[-1].reason == "cli test"
    assert "v3 (held-out ROC-AUC 0.630)" in driftloop("status", MODEL).stdout

    back = driftloop("rollback", "--model-name", MODEL, "--here")
    assert back.returncode == 0, back.stdout + back.stderr
    assert registry.alias_doc().aliases["champion"] == 1

    missing = driftloop("promote", "9", "--model-name", MODEL, "--here")
    assert missing.returncode == 1 and "promote failed" in missing.stdout and "9" in missing.stdout
    unknown = driftloop("status", "never-trained")
    assert unknown.returncode == 1 and "'never-trained' is not registered" in unknown.stdout

    failed = driftloop("train", "--dataset-config", str(_bad_config(tmp_path)), "--here")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "training failed" in failed.stdout and "valid_fraction" in failed.stdout


def test_a_failing_deployment_run_prints_its_own_message_and_exits_non_zero(prefect_worker, tmp_path):
    """With a Prefect API configured the command starts the deployment and follows it on the worker."""
    failed = driftloop("train", "--dataset-config", str(_bad_config(tmp_path)))
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "training/local ended Failed" in failed.stdout and "valid_fraction" in failed.stdout
