"""Promote and roll back: move the ``champion`` alias atomically, record who and why, tell Prefect.

    python flows/lifecycle.py promote --version 3 --reason "canary won"
    python flows/lifecycle.py rollback                       # to the previous champion
    prefect deployment run 'promote/local' -p params='{"version": 3}'
    prefect deployment run 'rollback/local' -p params='{"to_version": 1}'

A running service picks up the move on its next registry poll (seconds) without a restart.
"""

from __future__ import annotations

import getpass

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.schemas import AliasMove, PromoteParams, RollbackParams
from flows.steps.command_line import run_subcommand_from_command_line
from flows.steps.registry import move_champion
from flows.steps.runtime import FLOW_GUARDS, flow_context, publish, run_name


def _move(
    model_name: str | None, version: int | None, reason: str, actor: str | None, event: str, what: str
) -> AliasMove:
    """Move the champion, then log and publish who moved it where and why."""
    ctx = flow_context(model_name, needs="registered")
    move, event_id = move_champion(
        ctx.model_name(model_name), version, reason, actor or getpass.getuser(), event, ctx
    )
    result = AliasMove(event_id=event_id, alias="champion", **move.model_dump())
    get_run_logger().info(
        "%s: %s champion v%s -> v%d by %s (%s)",
        what,
        result.model_name,
        result.previous,
        result.version,
        result.actor,
        result.reason,
    )
    publish(
        create_markdown_artifact,
        key=f"{result.model_name}-{what}".replace("_", "-"),
        markdown=f"# {what}: {result.model_name}\n\n| | |\n|---|---|\n| champion | v{result.previous} → "
        f"**v{result.version}** |\n| who | {result.actor} |\n| why | {result.reason} |\n| event | "
        f"`{result.event_id}` |\n",
        description=f"{what} of {result.model_name}",
    )
    return result


@flow(name="promote", **FLOW_GUARDS, flow_run_name=run_name("promote"), persist_result=True)
def promote(params: PromoteParams) -> AliasMove:
    """Make ``version`` the champion."""
    return _move(
        params.model_name,
        params.version,
        params.reason,
        params.actor,
        "driftloop.model.promoted",
        "promotion",
    )


@flow(name="rollback", **FLOW_GUARDS, flow_run_name=run_name("rollback"), persist_result=True)
def rollback(params: RollbackParams = RollbackParams()) -> AliasMove:
    """Put the previous (or a named) version back as champion."""
    return _move(
        params.model_name,
        params.to_version,
        params.reason,
        params.actor,
        "driftloop.model.rolled_back",
        "rollback",
    )


if __name__ == "__main__":
    run_subcommand_from_command_line(
        {"promote": (promote, PromoteParams), "rollback": (rollback, RollbackParams)}
    )
