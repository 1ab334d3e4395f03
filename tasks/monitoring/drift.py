"""Drift of a monitoring window against the champion's reference, by effect size, calibrated.

For each input column and the prediction, the **population stability index** (PSI) between the
reference and the window, both read from their whylogs profiles: numbers in ten buckets cut at the
reference's deciles (from its KLL sketch), categories as the reference's top levels plus "other"
(from the frequent-items sketch), and nulls as a bucket of their own; counts are smoothed so a rare
level cannot make the index infinite. Unlike a p-value, PSI does not grow with the window's size.

Whether a PSI is drift is calibrated from the reference itself when the model is trained: random
windows of held-out rows (which have not drifted, by construction) give each column's sampling
noise, which shrinks as ``c / rows``; a window's column has drifted when its PSI exceeds
``max(drift_floor, drift_safety * c / rows, chi2_isf(drift_alpha, buckets - 1) / rows)``. The last
term is the null distribution itself: for a window drawn from the reference, rows x PSI is close to
Pearson's chi-square statistic (PSI is the symmetrised divergence, whose second-order term is it),
so it caps the false-alarm rate of one column at ``drift_alpha`` whatever the few calibration windows
happened to give (the max of 8 draws is itself noisy: on Caravan's 86 columns, 200-row windows
flagged 62 columns in 200 no-drift windows without it, 0.36% of column tests; 1 with it, at
``drift_alpha`` 1e-4). Columns that one join brings in (a destination's lat/lon/alt/tz) form one
group and count once. Each column also carries the model's use of it
(share of gain) and its **novelty**: the share of the window outside what the model was trained on
(values beyond the training range, levels never seen, nulls in a column training never saw null). What is only
reported and what starts a retrain is decided in ``tasks.decisions.decide_drift``. Data quality:
null rates against the reference, categories the model never saw, missing columns.
"""

from __future__ import annotations

import io
from typing import Any, Literal

import numpy as np
import polars as pl
from pydantic import BaseModel

from tasks.core.config import DatasetConfig, MonitoringConfig
from tasks.core.feature_spec import FeatureSpec
from tasks.core.profile import load_profile, profile_frame
from tasks.model.features import FittedTransform

BINS = 10  # numeric buckets: the reference's deciles
TOP_LEVELS = 20  # categorical buckets: the reference's most frequent levels, then "other"
SMOOTHING = 0.5  # added to every bucket's count
NEW_NULLS_BELOW = 0.01  # a column null in fewer training rows than this "never had nulls"
PREDICTION = "prediction"


class ColumnReference(BaseModel):
    """One column's reference distribution as buckets, its noise, and what the model learned of it."""

    column: str
    group: str  # columns of one join count once
    kind: Literal["numeric", "categorical"]
    edges: list[float] = []  # numeric: inner bucket edges
    levels: list[str] = []  # categorical: bucketed levels (the rest is "other")
    counts: list[float]  # reference counts per bucket: [null, *buckets, (other)]
    noise: float = 0.0  # calibrated: a no-drift window of n rows has PSI up to about noise / n
    importance: float = 0.0  # the model's share of gain from this column
    train_min: float | None = None  # coverage: what training saw
    train_max: float | None = None
    train_levels: list[str] = []
    train_null_rate: float = 0.0


class DriftReference(BaseModel):
    """Everything monitoring compares a window with, saved with the model version."""

    rows: int  # held-out rows the reference profile was built from
    period: tuple[str, str]  # and the time they cover
    columns: dict[str, ColumnReference]
    calibration_sizes: list[int]
    calibration_resamples: int


class ColumnDrift(BaseModel):
    column: str
    group: str
    psi: float
    threshold: float
    drifted: bool
    importance: float
    novelty: float  # share of the window outside what training saw

    @property
    def ratio(self) -> float:
        return self.psi / self.threshold if self.threshold > 0 else float("inf")


def _counts_of(col: Any) -> tuple[float, float]:
    summary = col.get_metric("counts").to_summary_dict()
    return float(summary.get("n", 0)), float(summary.get("null", 0))


def bucket_counts(view: Any, ref: ColumnReference) -> np.ndarray:
    """A profile's counts in the reference's buckets: ``[null, *buckets, (other)]``."""
    col = view.get_column(ref.column)
    if col is None:
        return np.zeros(len(ref.counts))
    n, nulls = _counts_of(col)
    present = max(n - nulls, 0.0)
    if ref.kind == "numeric":
        dist = col.get_metric("distribution")
        kll = dist.kll.value if dist is not None else None
        if kll is None or kll.get_n() == 0:
            return np.array([nulls, *np.zeros(len(ref.edges) + 1)])
        cdf = np.asarray(kll.get_cdf(ref.edges), dtype=float) if ref.edges else np.array([1.0])
        pmf = np.diff(np.concatenate([[0.0], cdf]))
        return np.array([nulls, *(np.clip(pmf, 0, None) * kll.get_n())])
    items = _frequent_items(col)
    levels = [float(items.get(level, 0.0)) for level in ref.levels]
    return np.array([nulls, *levels, max(present - sum(levels), 0.0)])


def _frequent_items(col: Any) -> dict[str, float]:
    metric = col.get_metric("frequent_items")
    if metric is None:
        return {}
    return {str(f.value): float(f.est) for f in metric.to_summary_dict().get("frequent_strings", [])}


def psi(reference: np.ndarray, window: np.ndarray) -> float:
    """Population stability index between two bucket-count vectors (smoothed)."""
    r = (reference + SMOOTHING) / (reference.sum() + SMOOTHING * len(reference))
    w = (window + SMOOTHING) / (window.sum() + SMOOTHING * len(window))
    return float(np.sum((w - r) * np.log(w / r)))


def column_reference(view: Any, column: str, group: str) -> ColumnReference | None:
    """A column's buckets from the reference profile (None for a column it does not hold)."""
    col = view.get_column(column)
    if col is None:
        return None
    dist = col.get_metric("distribution")
    kll = dist.kll.value if dist is not None else None
    if kll is not None and kll.get_n() > 0:
        quantiles = kll.get_quantiles([k / BINS for k in range(1, BINS)])
        edges = sorted({float(q) for q in quantiles if np.isfinite(q)})
        ref = ColumnReference(column=column, group=group, kind="numeric", edges=edges, counts=[])
    else:
        items = sorted(_frequent_items(col).items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_LEVELS]
        ref = ColumnReference(
            column=column, group=group, kind="categorical", levels=[k for k, _ in items], counts=[]
        )
    ref.counts = [float(c) for c in bucket_counts(view, ref.model_copy(update={"counts": [0.0]}))]
    return ref


def column_groups(config: DatasetConfig, columns: list[str]) -> dict[str, str]:
    """Each input column's group: the columns one join brings in form one group, named after the join's
    key when that is an input (``dest`` for a destination's lat/lon/alt/tz) else after its table."""
    groups = {c: c for c in columns}
    for join in config.joins:
        right = config.tables[join.table].contract.columns
        brought = [
            f"{join.prefix}{c}" for c in (join.columns or [c for c in right if c not in join.right_on])
        ]
        key = join.left_on[0] if len(join.left_on) == 1 and join.left_on[0] in columns else join.table
        for c in brought:
            if c in groups:
                groups[c] = key
        if key in groups:
            groups[key] = key
    groups[PREDICTION] = PREDICTION
    return groups


def input_importance(spec: FeatureSpec, gains: dict[str, float]) -> dict[str, float]:
    """The model's share of gain from each raw input column (a derived feature's gain is shared by the
    columns its expression reads; calendar parts belong to the time column)."""
    total = sum(gains.values()) or 1.0
    share: dict[str, float] = {}
    uses: dict[str, list[str]] = {c: [c] for c in [*spec.numeric, *spec.categorical]}
    for name, expr in spec.derived.items():
        uses[name] = pl.sql_expr(expr).meta.root_names()
    for part in spec.time_part_names:
        uses[part] = [spec.time.column]
    for feature, gain in gains.items():
        roots = uses.get(feature, [feature])
        for root in roots:
            share[root] = share.get(root, 0.0) + gain / total / len(roots)
    return share


def calibrate_reference(
    held_out: pl.DataFrame,
    period: tuple[str, str],
    training: pl.DataFrame | pl.LazyFrame,
    config: DatasetConfig,
    importance: dict[str, float],
    seed: int,
    view: Any | None = None,
) -> tuple[bytes, DriftReference]:
    """The reference profile of the held-out rows (``held_out``: the model's raw inputs without the time
    column, plus its ``prediction``; ``period``: the time they cover) and what monitoring needs to judge
    a window against it: buckets, per-column noise from random held-out windows, the model's use of each
    column and what its data covered (``training``: the inputs of every row it was trained and
    validated on; lazy, it is streamed for its null rates, ranges and levels, never held whole). ``view``:
    the held-out rows' profile when it was made elsewhere (merged from parts); else it is made here."""
    mon = config.monitoring
    view = load_profile((view if view is not None else profile_frame(held_out)).serialize())
    groups = column_groups(config, [c for c in held_out.columns if c != PREDICTION])
    columns = {}
    for c in held_out.columns:
        ref = column_reference(view, c, groups.get(c, c))
        if ref is None:
            continue
        ref.importance = importance.get(c, 0.0)
        columns[c] = ref
    _training_coverage(training.lazy(), columns)
    rng = np.random.default_rng(seed)
    # noise windows come from rows held apart from the ones they are compared with: half the held-out
    # rows stand for the reference, windows are drawn from the other half (a window drawn from the
    # reference's own rows resembles it more than live traffic can, understating the noise up to 3x)
    order = rng.permutation(held_out.height)
    half, apart = np.sort(order[: held_out.height // 2]), np.sort(order[held_out.height // 2 :])
    half_view = load_profile(profile_frame(held_out[half]).serialize())
    half_counts = {c: bucket_counts(half_view, ref) for c, ref in columns.items()}
    # the smallest window monitoring judges (min_rows) is always calibrated: a small sample's PSI is
    # more than 1/n noise (sparse buckets), so larger sizes alone under-state it (measured on Caravan:
    # 22 columns flagged in 20 no-drift windows of 200 rows when calibrated at 1,000 rows only)
    wanted = sorted({mon.min_rows, *mon.calibration_sizes})
    sizes = [s for s in wanted if s <= len(apart) // 2] or [max(len(apart) // 2, 1)]
    for size in sizes:
        for _ in range(mon.calibration_resamples):
            rows = np.sort(rng.choice(apart, size=size, replace=False))
            sample = load_profile(profile_frame(held_out[rows]).serialize())
            for c, ref in columns.items():
                ref.noise = max(ref.noise, psi(half_counts[c], bucket_counts(sample, ref)) * size)
    reference = DriftReference(
        rows=held_out.height,
        period=period,
        columns=columns,
        calibration_sizes=sizes,
        calibration_resamples=mon.calibration_resamples,
    )
    return view.serialize(), reference


def _training_coverage(training: pl.LazyFrame, columns: dict[str, "ColumnReference"]) -> None:
    """Each column's null rate, range (numeric) or levels (categorical) over the training rows, in one
    streamed pass."""
    present = [c for c in columns if c in training.collect_schema()]
    if not present:
        return
    exprs = [pl.len().alias("__rows")]
    for c in present:
        exprs.append(pl.col(c).null_count().alias(f"{c}|nulls"))
        if columns[c].kind == "numeric":
            numeric = pl.col(c).cast(pl.Float64, strict=False)
            exprs += [numeric.min().alias(f"{c}|min"), numeric.max().alias(f"{c}|max")]
        else:
            levels = pl.col(c).cast(pl.String).drop_nulls().unique().sort().head(5000)
            exprs.append(levels.implode().alias(f"{c}|levels"))
    stats = training.select(exprs).collect(engine="streaming").row(0, named=True)
    rows = max(stats["__rows"], 1)
    for c in present:
        ref = columns[c]
        ref.train_null_rate = stats[f"{c}|nulls"] / rows
        if ref.kind == "numeric":
            lo, hi = stats[f"{c}|min"], stats[f"{c}|max"]
            ref.train_min = float(lo) if lo is not None else None
            ref.train_max = float(hi) if hi is not None else None
        else:
            ref.train_levels = list(stats[f"{c}|levels"] or [])


def novelty(view: Any, ref: ColumnReference) -> float:
    """The share of the window outside what training saw: values beyond its range, levels it never saw,
    nulls in a column that training (almost) never saw null."""
    col = view.get_column(ref.column)
    if col is None:
        return 0.0
    n, nulls = _counts_of(col)
    if n == 0:
        return 0.0
    # nulls are new only in a column that (almost) never had any in training: where training had
    # nulls, the model learned what to do with them (the fitted fill) and live performance judges more
    new_nulls = nulls / n if ref.train_null_rate < NEW_NULLS_BELOW else 0.0
    present = n - nulls
    outside = 0.0
    if present > 0 and ref.kind == "numeric" and ref.train_min is not None and ref.train_max is not None:
        kll = col.get_metric("distribution").kll.value
        if kll.get_n() > 0:
            below, upto = kll.get_cdf([ref.train_min, float(np.nextafter(ref.train_max, np.inf))])[:2]
            outside = (below + (1.0 - upto)) * present / n
    elif present > 0 and ref.kind == "categorical" and ref.train_levels:
        known = set(ref.train_levels)
        unseen = sum(v for k, v in _frequent_items(col).items() if k not in known)
        outside = min(unseen, present) / n
    return float(new_nulls + outside)


def chance_bound(ref: ColumnReference, alpha: float, rows: int) -> float:
    """rows x PSI that a window of ``rows`` rows drawn from the same population as the reference
    exceeds with chance about ``alpha``: the chi-square quantile for the reference's occupied buckets
    less one, scaled by ``1 + rows / reference rows`` because the reference is a sample too (two
    samples' PSI has both their noise: a window as large as the reference doubles it), plus what the
    smoothing of its empty buckets (e.g. nulls in a column that has none) adds to every window, which
    depends on the two sizes."""
    from scipy.stats import chi2

    counts = np.asarray(ref.counts, dtype=float)
    occupied = int(np.count_nonzero(counts > 0))
    r = SMOOTHING / (counts.sum() + SMOOTHING * len(counts))
    w = SMOOTHING / (rows + SMOOTHING * len(counts))
    empty = (len(counts) - occupied) * (w - r) * np.log(w / r) * rows
    both_samples = 1 + rows / max(counts.sum(), 1.0)
    return float(chi2.isf(alpha, max(occupied - 1, 1)) * both_samples + empty)


def drift_scores(
    window: Any, reference: DriftReference, rows: int, config: MonitoringConfig
) -> list[ColumnDrift]:
    """Each column's PSI against the reference, its calibrated threshold at this window size, its novelty."""
    out = []
    for ref in reference.columns.values():
        distance = psi(np.asarray(ref.counts), bucket_counts(window, ref))
        threshold = max(
            config.drift_floor,
            config.drift_safety * ref.noise / max(rows, 1),
            chance_bound(ref, config.drift_alpha, max(rows, 1)) / max(rows, 1),
        )
        out.append(
            ColumnDrift(
                column=ref.column,
                group=ref.group,
                psi=distance,
                threshold=threshold,
                drifted=distance > threshold,
                importance=ref.importance,
                novelty=novelty(window, ref) if ref.column != PREDICTION else 0.0,
            )
        )
    return sorted(out, key=lambda d: -d.ratio)


def data_quality(
    window: Any, transform: FittedTransform, reference: Any, config: MonitoringConfig
) -> list[str]:
    """Problems a person should look at: missing columns, null rates up, categories never seen in
    training (``window``: a ``tasks.monitoring.window.WindowPart``, the window's counts)."""
    problems = []
    missing = [c for c in transform.spec.input_columns if c not in window.columns]
    if missing:
        problems.append(f"schema: column(s) {missing} missing from the prediction log")
    ref = reference.to_pandas()
    for col in transform.spec.input_columns:
        if col in missing or col not in ref.index:
            continue
        n_ref = float(ref.loc[col].get("counts/n", 0)) or 1.0
        ref_null = float(ref.loc[col].get("counts/null", 0)) / n_ref
        null_rate = window.nulls.get(col, 0) / max(window.rows, 1)
        if null_rate - ref_null > config.max_null_increase:
            problems.append(f"nulls: {col!r} is null in {null_rate:.0%} of rows (reference {ref_null:.0%})")
    for col, counts in window.unseen.items():
        if col in missing or not counts.values:
            continue
        share = counts.unseen / counts.values
        if share > config.max_unseen_share:
            problems.append(
                f"categories: {share:.0%} of {col!r} values were never seen in training "
                f"(e.g. {counts.examples})"
            )
    return problems


def refused_at_serving(rejections: pl.DataFrame, scored_rows: int, config: MonitoringConfig) -> list[str]:
    """The serving-time contract refusals of a window as a data-quality problem when they exceed
    ``max_rejected_share`` of the requests (``rejections``: rows of the rejection log in the window)."""
    if rejections.is_empty():
        return []
    refused = rejections.height
    share = refused / (refused + scored_rows)
    if share <= config.max_rejected_share:
        return []
    common = rejections.group_by("reason").len().sort("len", descending=True).head(2)
    reasons = "; ".join(f"{n}x {r[:160]}" for r, n in common.iter_rows())
    return [
        f"contract: the service refused {refused} request(s) ({share:.1%}, {rejections['rows'].sum()} "
        f"row(s)) by the input contract, e.g. {reasons}: fix the callers, or the contract if it is wrong"
    ]


def drift_png(model_name: str, drift: list[ColumnDrift]) -> bytes:
    """PSI per column against its calibrated threshold (the line at 1); red bars drifted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(drift, key=lambda d: d.ratio)
    fig, ax = plt.subplots(figsize=(6, max(3, 0.25 * len(rows))))
    ax.barh(
        [d.column for d in rows],
        [min(d.ratio, 50) for d in rows],
        color=["tab:red" if d.drifted else "tab:green" for d in rows],
    )
    ax.axvline(1.0, ls="--", color="grey")
    ax.set(
        xlabel="PSI / calibrated threshold (right of the line: drifted)",
        title=f"{model_name}: drift vs reference",
    )
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()
