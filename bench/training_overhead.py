"""What orchestration costs: the training flow vs. the same computation without Prefect.

Both sides run the same task functions on the same landed data with the same parameters, each on a
fresh store (so neither reuses the other's work or a cache). The Prefect side is a real flow run
against a local Prefect server (its one-off start is excluded); the bare side calls each task's
``.fn`` in the flow's order. Rounds alternate to spread machine noise; the best of each is compared.

    .venv/bin/python bench/training_overhead.py [--rounds 2] [--window-end 2013-09-01]
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

from lib.pipeline import run_bare
from lib.private_env import private_environment
from rich.console import Console

from deployments.local_stack import LocalStack
from tasks.core.settings import Settings

# Before anything imports Prefect (which reads its settings at import): the imports above do not.
ROOT, PORT = private_environment("driftloop-bench-")

console = Console()


def fresh_store(name: str, landed: Path) -> Settings:
    """A store of its own holding only the landed raw zone."""
    store = ROOT / name
    shutil.copytree(landed, store / "raw")
    os.environ["DRIFTLOOP_STORE_URI"] = str(store)
    return Settings()


def run_flow(params) -> float:
    from flows.training import training

    t0 = time.perf_counter()
    state = training(params, return_state=True)
    elapsed = time.perf_counter() - t0
    if not state.is_completed():
        raise SystemExit(f"flow run failed: {state.message}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--window-end", default=None, help="train window end (default: the dataset config's)")
    args = parser.parse_args()

    from flows.schemas import TrainingParams
    from tasks.core.store import LocalStore
    from tasks.data.landing import land_nycflights13

    stack = LocalStack(Settings())
    try:
        with console.status("starting a private Prefect server (excluded from the timings)..."):
            stack.start_server(timeout=120)
        landed = ROOT / "landed"
        land_nycflights13(LocalStore(landed), Path(os.environ["DRIFTLOOP_SOURCES_DIR"]))
        window = {"window_end": args.window_end} if args.window_end else {}
        bare, flow = [], []
        for i in range(args.rounds):  # one model name per run: the BentoML store is shared
            settings = fresh_store(f"bare-{i}", landed / "raw")
            bare.append(run_bare(settings, TrainingParams(model_name=f"bench-bare-{i}", **window)))
            fresh_store(f"flow-{i}", landed / "raw")
            flow.append(run_flow(TrainingParams(model_name=f"bench-flow-{i}", **window)))
            console.print(f"round {i + 1}: bare {bare[-1]:.1f}s, Prefect flow {flow[-1]:.1f}s")
    finally:
        stack.down()
        shutil.rmtree(ROOT, ignore_errors=True)
    ratio = min(flow) / min(bare)
    console.print(f"best bare {min(bare):.1f}s, best flow {min(flow):.1f}s")
    print(
        f"RESULT orchestration_overhead_ratio={ratio:.3f} target<=1.25 {'PASS' if ratio <= 1.25 else 'FAIL'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
