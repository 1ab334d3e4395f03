"""How every flow module starts from a terminal: ``python flows/<module>.py --help`` lists the flow's
parameters as typed options (pydantic-settings' ``CliApp`` over the flow's parameter model), then the
flow runs (as a Prefect flow run) and its result is printed as JSON, or by the module's own ``show``."""

from __future__ import annotations

import json
import sys
from typing import Any, Callable

from pydantic import BaseModel


def print_result(result: Any) -> None:
    """A flow's result as indented JSON (models, lists of models, or plain values)."""
    from rich.console import Console

    def plain(value: Any) -> Any:
        if isinstance(value, BaseModel):
            return value.model_dump(mode="json")
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    Console().print_json(json.dumps(plain(result), default=str))


def run_from_command_line(
    flow: Callable[[Any], Any],
    params: type[BaseModel],
    show: Callable[[Any], None] = print_result,
    argv: list[str] | None = None,
) -> None:
    """Parse ``argv`` (default: the process's) into ``params``, run ``flow`` with them, show the result."""
    from pydantic_settings import CliApp

    show(flow(CliApp.run(params, cli_args=sys.argv[1:] if argv is None else argv)))


def run_subcommand_from_command_line(
    commands: dict[str, tuple[Callable[[Any], Any], type[BaseModel]]],
) -> None:
    """``python flows/<module>.py <command> [options]`` for a module holding several flows."""
    name, rest = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else ("", [])
    if name not in commands:
        raise SystemExit(f"usage: python {sys.argv[0]} {{{'|'.join(commands)}}} [--help | options]")
    flow, params = commands[name]
    run_from_command_line(flow, params, argv=rest)
