"""``driftloop``: the installed command, --help on every command, options from the flows' parameter
models (one definition for the command line, the UI's form and the deployments)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deployments.cli import FLOW_COMMANDS, app

RUNNER = CliRunner()
COMMANDS = [*FLOW_COMMANDS, "status", "history", "serve", "deploy"]


def test_the_installed_command_lists_every_operation():
    installed = Path(sys.executable).parent / "driftloop"
    assert installed.exists(), "pip install -e . (make venv) installs the driftloop command"
    shown = subprocess.run([str(installed), "--help"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    for command in COMMANDS:
        assert f" {command} " in shown.stdout, command


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    shown = RUNNER.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "Usage:" in shown.output


@pytest.mark.parametrize("name", list(FLOW_COMMANDS))
def test_a_flow_commands_options_are_its_parameter_models_fields(name):
    command = FLOW_COMMANDS[name]
    shown = RUNNER.invoke(app, [name, "--help"], env={"COLUMNS": "300"}).output
    for field in command.params.model_fields:
        spelled = field if field in command.arguments else f"--{field.replace('_', '-')}"
        assert spelled in shown, (name, spelled)
    assert "--here" in shown and "--target" in shown


def test_options_the_parameter_model_refuses_are_named_before_anything_runs():
    refused = RUNNER.invoke(app, ["train", "--n-trials", "0", "--here"], env={"COLUMNS": "200"})
    assert (
        refused.exit_code == 2
        and "--n-trials" in refused.output
        and "greater than or equal to 1" in refused.output
    )
    unknown = RUNNER.invoke(app, ["train", "--n_trials", "3"])
    assert unknown.exit_code == 2 and "No such option" in unknown.output
    typo = RUNNER.invoke(app, ["trian"])
    assert typo.exit_code == 2 and "No such command" in typo.output
