"""The vectorised whylogs split gives exactly the profile whylogs' own code gives."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl

from tasks.core.profile import import_whylogs, monitoring_schema, profile_frame


def _frame(n: int = 5000) -> pl.DataFrame:
    rng = np.random.default_rng(1)
    floats = rng.normal(0, 1, n)
    floats[::7] = np.nan
    floats[::97] = np.inf
    floats[1::101] = -np.inf
    strings = rng.choice(["AA", "UA", "DL", None], n).tolist()
    return pl.DataFrame(
        {
            "f": floats,
            "i": rng.integers(-5, 500, n),
            "s": strings,
            "b": rng.integers(0, 2, n) == 1,
            "all_null": pl.Series([None] * n, dtype=pl.String),
        }
    ).with_columns(pl.when(pl.col("f").is_nan()).then(None).otherwise(pl.col("f")).alias("f_null"))


def test_vectorised_split_matches_whylogs_original():
    why = import_whylogs()
    from whylogs.core.preprocessing import PreprocessedColumn

    frame = _frame()
    fast = profile_frame(frame).to_pandas()
    patched = PreprocessedColumn._pandas_split
    PreprocessedColumn._pandas_split = patched.original
    try:
        slow = why.log(frame.to_pandas(), schema=monitoring_schema()).view().to_pandas()
    finally:
        PreprocessedColumn._pandas_split = patched
    assert list(fast.index) == list(slow.index) and list(fast.columns) == list(slow.columns)
    # exact statistics must agree exactly; sketches (KLL quantiles, HLL cardinality) are randomised
    exact = [
        c
        for c in fast.columns
        if c.startswith(("counts/", "types/"))
        or c
        in (
            "distribution/mean",
            "distribution/stddev",
            "distribution/n",
            "distribution/max",
            "distribution/min",
            "cardinality/est",
            "frequent_items/frequent_strings",
        )
    ]
    assert "frequent_items/frequent_strings" in exact and "cardinality/est" in exact
    pd.testing.assert_frame_equal(fast[exact], slow[exact], check_exact=False, rtol=1e-12)
    assert fast.loc["f", "counts/inf"] == int(np.isinf(frame["f"].to_numpy()).sum()) > 0  # +inf and -inf rows
    assert fast.loc["f", "counts/null"] == fast.loc["f", "counts/nan"] > 0
    assert fast.loc["s", "counts/null"] > 0 and fast.loc["all_null", "counts/null"] == 5000


CONCURRENT = """
import faulthandler, sys
from concurrent.futures import ThreadPoolExecutor
import numpy as np, polars as pl
import tasks.core.profile as profile
if sys.argv[1] == "unlocked":
    import contextlib
    profile._PROFILING = contextlib.nullcontext()
faulthandler.dump_traceback_later(20, exit=True)  # a hang ends the process with its stacks
rng = np.random.default_rng(0)
frames = [
    pl.DataFrame({"x": rng.normal(size=8000), "k": rng.choice(["a", "b", "c"], 8000)}) for _ in range(2)
]
with ThreadPoolExecutor(2) as pool:
    for _ in range(20):
        list(pool.map(profile.profile_frame, frames))
print("done")
"""


def test_profiles_made_on_two_threads_at_once_finish():
    """Mapped steps on threads (held-out parts, log partitions) profile at the same time: whylogs hung
    doing that (without the lock this script hangs in 2 runs out of 2), so ``profile_frame`` takes a
    lock; 20 rounds of two threads must all finish."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "WHYLOGS_NO_ANALYTICS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", CONCURRENT, "locked"], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0 and "done" in done.stdout, done.stderr[-3000:]
