"""The statistics of a sweep summary: descriptive statistics of a group, Welch's t-test against
the baseline group with a verdict, the paired sign test over shared draws, Holm's
step-down adjustment of a family of p-values, and Fisher's exact test of two solve rates."""

from __future__ import annotations

import math
import statistics
from typing import Iterable, Mapping, Sequence

from lstm_research.sweeps.results import is_num
from lstm_research.sweeps.values import format_value

__all__ = ["describe", "fisher_exact", "holm", "sign_test", "verdict", "welch_test"]


def describe(values: Iterable[float], lower_is_better: bool = True) -> dict:
    """n, best, median, mean and sample std (ddof=1; NaN when n < 2)."""
    xs = [float(v) for v in values]
    if not xs:
        return {"n": 0, "best": math.nan, "median": math.nan, "mean": math.nan, "std": math.nan}
    return {
        "n": len(xs),
        "best": min(xs) if lower_is_better else max(xs),
        "median": statistics.median(xs),
        "mean": statistics.fmean(xs),
        "std": statistics.stdev(xs) if len(xs) > 1 else math.nan,
    }


def welch_test(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Welch's t-test of a vs b: ``scipy.stats.ttest_ind(a, b, equal_var=False)`` -> (t, p).

    (NaN, NaN) when either sample has fewer than 2 values or both have zero variance.
    """
    from scipy import stats

    a, b = [float(x) for x in a], [float(x) for x in b]
    if len(a) < 2 or len(b) < 2 or (statistics.variance(a) == 0 and statistics.variance(b) == 0):
        return math.nan, math.nan
    res = stats.ttest_ind(a, b, equal_var=False)
    return float(res.statistic), float(res.pvalue)


def fisher_exact(solved_a: int, n_a: int, solved_b: int, n_b: int) -> float:
    """Two-sided p of Fisher's exact test that two groups solve at the same rate
    (``scipy.stats.fisher_exact`` on the 2x2 table solved / not solved)."""
    from scipy import stats

    table = [[solved_a, n_a - solved_a], [solved_b, n_b - solved_b]]
    return float(stats.fisher_exact(table, alternative="two-sided").pvalue)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values (NaN entries are not tests: they stay
    NaN and do not count in the family size m). With the valid p sorted ascending,
    p_(1) <= ... <= p_(m), the adjusted p_(k) = max over j <= k of min(1, (m - j + 1) p_(j));
    rejecting where the adjusted p < alpha controls the family-wise error rate at alpha."""
    idx = sorted((i for i, p in enumerate(pvalues) if not math.isnan(p)), key=lambda i: pvalues[i])
    m, out, running = len(idx), [math.nan] * len(pvalues), 0.0
    for rank, i in enumerate(idx):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def verdict(mean: float, baseline_mean: float, p: float, *, alpha: float = 0.05,
            lower_is_better: bool = True) -> str:
    """``better``/``worse`` than the baseline when p < alpha, else ``n.s.`` (``n/a`` without a p-value)."""
    if p is None or math.isnan(p):
        return "n/a"
    if p >= alpha:
        return "n.s."
    return "better" if (mean < baseline_mean) == lower_is_better else "worse"


# -------------------------------------------------------------------------------------- groups


def sign_test(rows: Sequence[Mapping], base_rows: Sequence[Mapping], *, col: str,
              pair_keys: Sequence[str], lower_is_better: bool = True) -> tuple[int, int, float]:
    """Paired comparison with the baseline on the draws both finished (matched on
    ``pair_keys``): (times worse, pairs without a tie, two-sided sign-test p)."""
    from scipy import stats

    def by_draw(rs):
        return {tuple(format_value(r.get(k)) for k in pair_keys): float(r[col]) for r in rs
                if r["status"] == "done" and is_num(r.get(col))}

    mine, base = by_draw(rows), by_draw(base_rows)
    diffs = [mine[d] - base[d] for d in mine.keys() & base.keys() if mine[d] != base[d]]
    worse = sum((d > 0) == lower_is_better for d in diffs)
    p = stats.binomtest(worse, len(diffs)).pvalue if diffs else math.nan
    return worse, len(diffs), float(p)
