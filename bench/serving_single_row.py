"""Single-row serving throughput: the BentoML service vs a bare starlette endpoint (same transform,
same model, nothing else), at 16 and 64 concurrent clients, measured in the same run.

Target: at 16 clients the service answers at least 40% of the bare endpoint's requests/s, with p99
under 100 ms and no errors. The load generator shares the machine's 2 cores with the servers.

    .venv/bin/python bench/serving_single_row.py [--seconds 8]
"""

from __future__ import annotations

import argparse

from lib.loadgen import run_load
from lib.serving_setup import serving_stack
from rich.console import Console
from rich.table import Table


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8)
    args = parser.parse_args()
    console = Console()
    results = {}
    with console.status("training a model and starting both servers..."):
        stack = serving_stack()
        env = stack.__enter__()
    try:
        for clients in (16, 64):
            for target in ("bare", "bento"):
                with console.status(f"{target}: {clients} clients for {args.seconds:.0f}s"):
                    results[(target, clients)] = run_load(
                        f"{env[target]}/predict", env["single"], clients, args.seconds
                    )
    finally:
        stack.__exit__(None, None, None)
    table = Table(title="single-row /predict")
    for col in ("endpoint", "clients", "req/s", "p50 ms", "p99 ms", "errors"):
        table.add_column(col, justify="right")
    for (target, clients), r in results.items():
        name = "BentoML service" if target == "bento" else "bare starlette"
        table.add_row(
            name, str(clients), f"{r.rps:.0f}", f"{r.pct(50):.1f}", f"{r.pct(99):.1f}", str(r.errors)
        )
    console.print(table)
    bento, bare = results[("bento", 16)], results[("bare", 16)]
    ratio = bento.rps / bare.rps
    ok = ratio >= 0.40 and bento.pct(99) < 100 and bento.errors == 0
    console.print(
        f"at 16 clients: p99 {bento.pct(99):.1f} ms (target < 100), errors {bento.errors} (target 0)"
    )
    print(f"RESULT single_row_rps_ratio_16={ratio:.3f} target>=0.40 {'PASS' if ok else 'FAIL'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
