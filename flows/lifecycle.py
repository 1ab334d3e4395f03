"""Promote and roll back: move the ``champion`` alias atomically, record who and why, tell Prefect.

    python flows/lifecycle.py promote --version 3 --reason "canary won"
    python flows/lifecycle.py rollback                       # to the previous champion
    prefect deployment run 'promote/local' -p params='{"version": 3}'
    prefect deployment run 'rollback/local' -p params='{"to_version": 1}'

A running service picks up the move on its next registry poll (seconds) without a restart.
"""

from __future__ import annotations

import getpass
import sys

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, Field

from flows.schemas import AliasMove

from tasks.core.errors import BadInput
from tasks.events import emit_model_event
from tasks.orchestration import io_task, publish
from tasks.registry.versions import AliasDoc, Registry
from tasks.core.settings import Settings
from tasks.core.store import open_store


class PromoteParams(BaseModel):
    version: int = Field(ge=1, description="the registered version to make champion")
    model_name: str | None = Field(None, description="registry name (default: the dataset config's)")
    reason: str = Field("manual promotion", description="recorded in the alias history")
    actor: str | None = Field(None, description="who asked (default: the user running the flow)")


class RollbackParams(BaseModel):
    to_version: int | None = Field(None, ge=1, description="version to restore (default: the previous champion)")
    model_name: str | None = None
    reason: str = "manual rollback"
    actor: str | None = None


def _registry(model_name: str | None) -> tuple[Registry, str]:
    settings = Settings()
    name = settings.model_name(model_name)
    return Registry(open_store(settings), name), name


def previous_champion(doc: AliasDoc) -> int | None:
    """The champion before the current one, from the alias history (skipping repeats)."""
    current = doc.aliases.get("champion")
    for change in reversed(doc.history):
        if change.alias == "champion" and change.version == current and change.previous not in (None, current):
            return change.previous
    return None


@io_task(name="move-champion")
def move_champion(model_name: str | None, version: int | None, reason: str, actor: str, event: str) -> AliasMove:
    registry, name = _registry(model_name)
    doc = registry.alias_doc()
    current = doc.aliases.get("champion")
    if version is None:  # rollback to the previous champion
        version = previous_champion(doc)
        if version is None:
            raise BadInput(f"model {name!r} has no previous champion to roll back to (champion is "
                           f"{'v' + str(current) if current else 'unset'}); pass to_version explicitly")
    registry.get(version)  # must exist: a clear error names the versions that do
    if version == current:
        raise BadInput(f"v{version} of {name!r} is already champion; nothing to do")
    doc = registry.set_alias("champion", version, reason=reason, actor=actor)
    if doc.aliases.get("challenger") == version:  # a promoted challenger stops being one
        registry.set_alias("challenger", None, reason=f"promoted to champion: {reason}", actor=actor)
    event_id = emit_model_event(event, name, {"version": version, "previous": current, "reason": reason, "actor": actor})
    return AliasMove(model_name=name, alias="champion", version=version, previous=current, reason=reason, actor=actor,
                     event_id=event_id)


def _record(move: AliasMove, what: str) -> None:
    get_run_logger().info("%s: %s champion v%s -> v%d by %s (%s)", what, move.model_name, move.previous, move.version,
                          move.actor, move.reason)
    publish(create_markdown_artifact, key=f"{move.model_name}-{what}".replace("_", "-"),
            markdown=f"# {what}: {move.model_name}\n\n| | |\n|---|---|\n| champion | v{move.previous} → "
                     f"**v{move.version}** |\n| who | {move.actor} |\n| why | {move.reason} |\n| event | "
                     f"`{move.event_id}` |\n", description=f"{what} of {move.model_name}")


@flow(name="promote", persist_result=True)
def promote(params: PromoteParams) -> AliasMove:
    """Make ``version`` the champion."""
    move = move_champion(params.model_name, params.version, params.reason, params.actor or getpass.getuser(),
                         "driftloop.model.promoted")
    _record(move, "promotion")
    return move


@flow(name="rollback", persist_result=True)
def rollback(params: RollbackParams = RollbackParams()) -> AliasMove:
    """Put the previous (or a named) version back as champion."""
    move = move_champion(params.model_name, params.to_version, params.reason, params.actor or getpass.getuser(),
                         "driftloop.model.rolled_back")
    _record(move, "rollback")
    return move


if __name__ == "__main__":
    from pydantic_settings import CliApp

    command, args = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else ("", [])
    if command == "promote":
        print(promote(CliApp.run(PromoteParams, cli_args=args)).model_dump_json(indent=2))
    elif command == "rollback":
        print(rollback(CliApp.run(RollbackParams, cli_args=args)).model_dump_json(indent=2))
    else:
        sys.exit("usage: python flows/lifecycle.py promote --version N [--reason …] | rollback [--to-version N]")
