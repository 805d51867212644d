"""Sweep summary: per-group statistics and Welch tests in ``summary.md``, and the figures.

``results.csv`` is written and read by :mod:`~lstm_research.sweeps.results` (re-exported here).

Groups: by default ``model.cell`` when it is swept, else the swept grid/zip keys other than seeds
(random-search keys are what a group aggregates over, like seeds). Per group: n, best, median, mean,
std (sample std, ddof=1) of the final test metric, and Welch's t-test
(``scipy.stats.ttest_ind(equal_var=False)``) against the baseline group, with a verdict at ``alpha``:
``better`` / ``worse`` (respecting ``lower_is_better``) or ``n.s.``.

Where every group ran the same draws of the other swept keys (an ablation over a random search:
draw j has the same hyperparameters for every variant), each group is also compared with the
baseline draw by draw: how often it is worse, and the two-sided sign test of that count
(``scipy.stats.binomtest``, ties left out).
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from lstm_research.errors import UserError
from lstm_research.sweeps.results import (
    collect_results,
    is_num,
    ordered_groups,
    read_results_csv,
    write_results_csv,
)
from lstm_research.sweeps.spec import ABLATION_BASELINE, ABLATION_KEY, SweepSpecError
from lstm_research.sweeps.stats import describe, holm, sign_test, verdict, welch_test
from lstm_research.sweeps.sweepdir import ERROR_TXT, RESULT_JSON, read_json, repo_root
from lstm_research.sweeps.values import format_value, is_seed_key, parse_value

__all__ = [
    "GroupStats",
    "collect_results",
    "describe",
    "diverged",
    "group_key_for",
    "group_stats",
    "holm",
    "paired_keys",
    "read_results_csv",
    "resolve_baseline",
    "sign_test",
    "significance_marks",
    "summarize",
    "top_rows",
    "verdict",
    "welch_test",
    "write_results_csv",
    "write_summary",
]

SUMMARY_MD = "summary.md"
#: groups with fewer finished trials are flagged in the tables
MIN_TRIALS = 3
# ----------------------------------------------------------------------------------- statistics


def group_key_for(info: Mapping, group_by: str | Sequence[str] | None = None) -> list[str]:
    """The keys defining a group (see the module docstring); [] means one group of all trials."""
    swept = list(info["swept_keys"])
    if group_by:
        keys = [k.strip() for k in group_by.split(",")] if isinstance(group_by, str) else list(group_by)
        bad = [k for k in keys if k not in swept]
        if bad:
            raise UserError(f"--group_by key(s) {bad} are not swept in this sweep; swept keys: {swept}")
        return keys
    if ABLATION_KEY in swept:
        return [ABLATION_KEY]
    return [k for k in swept if not is_seed_key(k) and k not in info.get("random_keys", ())]


def resolve_baseline(labels: Sequence[str], keys: Sequence[str], baseline: str | None) -> str | None:
    """The baseline's group label: ``baseline`` if given (error if absent), else ``vanilla`` for cells."""
    if baseline is None:
        return ABLATION_BASELINE if keys == [ABLATION_KEY] and ABLATION_BASELINE in labels else None
    if baseline in labels:
        return baseline
    as_label = format_value(parse_value(baseline))
    if as_label in labels:
        return as_label
    raise UserError(f"--baseline {baseline!r} is not a group of this sweep; groups: {list(labels)}")


def top_rows(rows: Sequence[Mapping], *, metric: str, keys: Sequence[str], fraction: float,
             lower_is_better: bool = True) -> list[Mapping]:
    """The best ``fraction`` of each group's trials (at least 2 where a group has 2 finished),
    ranked by *validation* ``metric`` so the test numbers reported for them are not selected on
    (Greff et al. 2015 analyze the top 10% of each variant's random-search trials).

    The fraction is of the finished and the diverged trials (:func:`diverged`): a diverged
    trial ranks last, so a group whose trials diverge more does not get its top 10% from fewer
    trials than the others. Trials that failed otherwise (a crash, a kill) or have not finished
    do not count."""
    if not 0 < fraction <= 1:
        raise UserError(f"--top must be a fraction in (0, 1], e.g. 0.1, got {fraction}")
    out = []
    for rs in ordered_groups(rows, keys).values():
        done = [r for r in rs if r["status"] == "done" and is_num(r.get(f"valid_{metric}"))
                and is_num(r.get(f"test_{metric}"))]
        done.sort(key=lambda r: r[f"valid_{metric}"], reverse=not lower_is_better)
        n = len(done) + sum(diverged(r) for r in rs)
        k = min(len(done), max(2, math.ceil(fraction * n)))
        out += done[:k]
    return out


def diverged(row: Mapping) -> bool:
    """A failed trial whose loss or parameters became NaN/inf: run.py's exit status 3, or a
    trial that diverged inside its pack."""
    return row["status"] == "failed" and (
        row.get("returncode") == 3 or str(row.get("error") or "").startswith("diverged in its pack"))


class GroupStats(dict):
    """label, n, failed, best, median, mean, std, t, p, verdict (dict with attribute access)."""

    __getattr__ = dict.get


def group_stats(rows: Sequence[Mapping], *, metric: str, keys: Sequence[str], baseline: str | None,
                lower_is_better: bool = True, alpha: float = 0.05, split: str = "test",
                pair_keys: Sequence[str] = (), holm_adjust: bool = False) -> list[GroupStats]:
    """Statistics of ``<split>_<metric>`` per group, with Welch tests against the baseline group
    and, given ``pair_keys`` (the keys that identify a draw), the paired sign test. With
    ``holm_adjust`` the Welch p-values (and the sign-test ones) of the groups are Holm-adjusted
    as one family each (:func:`holm`): ``p_holm`` / ``sign_p_holm``, and the verdict uses
    ``p_holm``."""
    col = f"{split}_{metric}"
    groups = ordered_groups(rows, keys)
    values = {g: [float(r[col]) for r in rs if r["status"] == "done" and is_num(r.get(col))]
              for g, rs in groups.items()}
    base = values.get(baseline) if baseline is not None else None
    base_mean = statistics.fmean(base) if base else math.nan
    out = []
    for g, rs in groups.items():
        d = describe(values[g], lower_is_better)
        s = GroupStats(label=g, failed=sum(r["status"] == "failed" for r in rs),
                       unfinished=sum(r["status"] not in ("done", "failed") for r in rs), **d)
        if baseline is None:
            s.update(t=math.nan, p=math.nan, verdict="")
        elif g == baseline:
            s.update(t=math.nan, p=math.nan, verdict="baseline")
        else:
            t, p = welch_test(values[g], base or [])
            s.update(t=t, p=p, delta=d["mean"] - base_mean,
                     verdict=verdict(d["mean"], base_mean, p, alpha=alpha, lower_is_better=lower_is_better))
            if pair_keys:
                worse, pairs, sign_p = sign_test(rs, groups[baseline], col=col, pair_keys=pair_keys,
                                                 lower_is_better=lower_is_better)
                s.update(worse=worse, pairs=pairs, sign_p=sign_p)
        out.append(s)
    if holm_adjust and baseline is not None:
        tested = [s for s in out if s.label != baseline]
        for s, p in zip(tested, holm([s.p for s in tested])):
            s.update(p_holm=p, verdict=verdict(s.mean, base_mean, p, alpha=alpha,
                                               lower_is_better=lower_is_better))
        if pair_keys:
            for s, p in zip(tested, holm([s.sign_p for s in tested])):
                s.update(sign_p_holm=p)
    return out


def significance_marks(stats_: Sequence[GroupStats], alpha: float, holm_adjust: bool) -> dict[str, str]:
    """group -> ``*`` (Welch p < alpha), ``†`` (sign-test p < alpha), both or ``""``; the
    Holm-adjusted p where ``holm_adjust``."""
    def sig(p):
        return p is not None and not math.isnan(p) and p < alpha
    return {s.label: ("*" if sig(s.p_holm if holm_adjust else s.p) else "")
            + ("†" if sig(s.sign_p_holm if holm_adjust else s.sign_p) else "") for s in stats_}


# ------------------------------------------------------------------------------------- markdown


def _f(x: Any, spec: str = ".4g") -> str:
    if x is None:
        return ""
    if isinstance(x, float) and math.isnan(x):
        return "–"
    return format(x, spec) if isinstance(x, (int, float)) else str(x)


def _table(header: Sequence[str], body: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in body]
    return lines


def paired_keys(rows: Sequence[Mapping], info: Mapping, keys: Sequence[str],
                baseline: str | None) -> list[str]:
    """The swept keys that identify a draw when every group ran the same draws (then groups are
    compared with the baseline draw by draw); [] otherwise."""
    pair_keys = [k for k in info["swept_keys"] if k not in keys]
    return pair_keys if pair_keys and baseline is not None and _same_draws(rows, keys, pair_keys) else []


def _same_draws(rows: Sequence[Mapping], keys: Sequence[str], pair_keys: Sequence[str]) -> bool:
    """Whether every group ran the same set of draws (values of ``pair_keys``)."""
    draws = [{tuple(format_value(r.get(k)) for k in pair_keys) for r in rs}
             for rs in ordered_groups(rows, keys).values()]
    return len(draws) > 1 and all(d == draws[0] for d in draws)


def write_summary(sweep_dir: Path | str, rows: Sequence[Mapping], info: Mapping, *, metric: str | None,
                  keys: Sequence[str], baseline: str | None, lower_is_better: bool, alpha: float,
                  direction_note: str = "", plots: Sequence[Path] = (),
                  top: float | None = None, top_subset: Sequence[Mapping] | None = None,
                  holm_adjust: bool = False) -> Path:
    sweep_dir = Path(sweep_dir)
    counts = Counter(r["status"] for r in rows)
    lines = [f"# Sweep summary: `{sweep_dir.name}`", ""]
    lines.append(f"{len(rows)} trials: " + ", ".join(f"{counts[s]} {s}" for s in
                                                     ("done", "failed", "interrupted", "running", "pending")
                                                     if counts[s]) + ".")
    lines.append(f"Swept: {', '.join(f'`{k}`' for k in info['swept_keys']) or '(nothing)'}. "
                 f"Groups by: {', '.join(f'`{k}`' for k in keys) or '(all trials in one group)'}.")
    arrow = "lower is better" if lower_is_better else "higher is better"
    if metric is None:
        lines.append("No finished trial yet: no metric to summarize.")
    else:
        lines.append(f"Metric: `{metric}` ({arrow}{direction_note}).")
    if metric is not None and baseline is not None:
        lines.append(f"Welch's t-test (unequal variances) of each group's test `{metric}` against the "
                     f"baseline `{baseline}`; verdict at alpha={alpha:g}"
                     + (" on Holm-adjusted p-values (each table's groups one family)."
                        if holm_adjust else " (p-values not adjusted for multiple comparisons; "
                        "--holm adjusts them)."))
    elif metric is not None:
        lines.append("No baseline group (pass --baseline to test groups against one).")
    lines.append("")
    sections = [("test", rows, f"## test `{metric}` by group"), ("valid", rows, f"## valid `{metric}` by group")]
    # draws are paired when every group ran the same values of the other swept keys
    pair_keys = paired_keys(rows, info, keys, baseline)
    paired = bool(pair_keys)
    if top is not None and metric is not None:
        if top_subset is None:
            top_subset = top_rows(rows, metric=metric, keys=keys, fraction=top,
                                  lower_is_better=lower_is_better)
        sections.insert(0, ("test", top_subset, f"## test `{metric}` of the top {100 * top:g}% of "
                                                f"each group (ranked by valid `{metric}`)"))
    for split, subset, title in sections if metric is not None else ():
        if not any(is_num(r.get(f"{split}_{metric}")) for r in subset):
            continue
        pairs_here = paired and subset is rows  # a top subset breaks the pairs
        stats_ = group_stats(subset, metric=metric, keys=keys, baseline=baseline,
                             lower_is_better=lower_is_better, alpha=alpha, split=split,
                             pair_keys=pair_keys if pairs_here else (), holm_adjust=holm_adjust)
        lines += [title, ""]
        show_unfinished = any(s.unfinished for s in stats_)
        header = ["group", "n", "failed", *(["unfinished"] if show_unfinished else []),
                  "best", "median", "mean", "std"]
        adjusted = holm_adjust and baseline is not None
        if baseline is not None:
            header += ["Δ mean", "t", "p", *(["p (Holm)"] if adjusted else []), f"vs {baseline}"]
        if pairs_here:
            header += ["worse on paired draws", "sign-test p", *(["sign p (Holm)"] if adjusted else [])]
        body = []
        few = [s.label for s in stats_ if s.n < MIN_TRIALS]
        for s in stats_:
            name = f"**{s.label}**" if s.label == baseline else s.label
            row = [f"{name} ⚠" if s.label in few else name, s.n, s.failed,
                   *([s.unfinished] if show_unfinished else []),
                   _f(s.best), _f(s.median), _f(s.mean), _f(s.std)]
            if baseline is not None:
                other = s.label != baseline
                row += [_f(s.get("delta"), "+.4g") if other else "", _f(s.t, ".3f") if other else "",
                        _f(s.p, ".3g") if other else "",
                        *([_f(s.p_holm, ".3g") if other else ""] if adjusted else []), s.verdict]
            if pairs_here:
                row += [f"{s.worse}/{s.pairs}" if s.pairs is not None else "",
                        _f(s.sign_p, ".3g") if s.pairs is not None else "",
                        *([_f(s.sign_p_holm, ".3g") if s.pairs is not None else ""]
                          if adjusted else [])]
            body.append(row)
        lines += _table(header, body) + [""]
        if few:
            lines += [f"⚠ fewer than {MIN_TRIALS} finished trials ({', '.join(few)}): the std and "
                      "the tests against the baseline rest on too few values to be trusted.", ""]
    done = [r for r in rows if metric is not None and r["status"] == "done" and is_num(r.get(f"test_{metric}"))]
    if done:
        best = sorted(done, key=lambda r: r[f"test_{metric}"], reverse=not lower_is_better)[:10]
        lines += [f"## Best {len(best)} trials by test `{metric}`", ""]
        lines += _table(["trial", *info["swept_keys"], f"valid {metric}", f"test {metric}", "steps"],
                        [[r["trial"], *(format_value(r.get(k)) for k in info["swept_keys"]),
                          _f(r.get(f"valid_{metric}")), _f(r.get(f"test_{metric}")), _f(r.get("steps"))]
                         for r in best]) + [""]
    failed = [r for r in rows if r["status"] == "failed"]
    if failed:
        lines += ["## Failed trials", ""]
        lines += _table(["trial", "returncode", "error"],
                        [[f"[{r['trial']}]({r['trial']}/{ERROR_TXT})", _f(r.get("returncode")),
                          (r.get("error") or "")[:200]] for r in failed]) + [""]
    if plots:
        lines += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots] + [""]
    path = sweep_dir / SUMMARY_MD
    path.write_text("\n".join(lines))
    return path


def summarize(sweep_dir: Path | str, *, group_by: str | Sequence[str] | None = None,
              baseline: str | None = None, metric: str | None = None, lower_is_better: bool | None = None,
              alpha: float = 0.05, plots: bool = True, top: float | None = None,
              holm_adjust: bool = False) -> dict:
    """Writes results.csv, summary.md and (``plots=True``) the PNGs; returns their paths and the stats.

    ``metric`` defaults to the trials' primary metric (result.json ``metric``); ``lower_is_better`` to
    their ``lower_is_better`` (for another metric, lower is assumed unless given, and the summary says so).
    ``top``: also analyze the best fraction of each group (:func:`top_rows`): a table with Welch
    tests first in summary.md and ``box_<metric>_top.png``. ``holm_adjust``: Holm-adjust each
    table's p-values (:func:`holm`); the box plots' significance marks then use them too.
    """
    if top is not None and not 0 < top <= 1:
        raise UserError(f"--top must be a fraction in (0, 1], e.g. 0.1, got {top}")
    if not 0 < alpha < 1:
        raise UserError(f"--alpha must be a significance level in (0, 1), e.g. 0.05, got {alpha}")
    sweep_dir = Path(sweep_dir)
    rows, info = collect_results(sweep_dir)  # every check before anything is written
    keys = group_key_for(info, group_by)
    labels = list(ordered_groups(rows, keys))
    base = resolve_baseline(labels, keys, baseline)
    note = ""
    if metric is None:
        metric = info["metric"]
    elif info["metric"] is not None and not any(f"test_{metric}" in r for r in rows):
        available = sorted({k[len("test_"):] for r in rows for k in r if k.startswith("test_")})
        raise UserError(f"--metric {metric!r} is in no result.json's test metrics; available: {available}")
    if lower_is_better is None:
        if metric == info["metric"] and info["lower_is_better"] is not None:
            lower_is_better = info["lower_is_better"]
        else:
            lower_is_better, note = True, "; assumed -- pass --higher_is_better otherwise"
    csv_path = write_results_csv(sweep_dir, rows, info)
    out: dict[str, Any] = {"results_csv": csv_path, "rows": rows, "info": info, "group_keys": keys,
                           "baseline": base, "metric": metric, "plots": []}
    best = None if top is None or metric is None else top_rows(
        rows, metric=metric, keys=keys, fraction=top, lower_is_better=lower_is_better)
    out["groups"] = [] if metric is None else group_stats(
        rows, metric=metric, keys=keys, baseline=base, lower_is_better=lower_is_better, alpha=alpha,
        pair_keys=paired_keys(rows, info, keys, base), holm_adjust=holm_adjust)
    if plots and metric is not None:
        from lstm_research.sweeps.plots import make_plots

        from lstm_research.tasks import metric_label  # jax: only when plotting

        label = metric_label(_task_name(sweep_dir, rows, info["config"]), metric)
        marks_note = (f"*: Welch p < {alpha:g}, †: sign test p < {alpha:g}\nvs {base}"
                      + (" (Holm-adjusted)" if holm_adjust else ""))
        out["plots"] = make_plots(sweep_dir, rows, info, metric=metric, keys=keys, baseline=base,
                                  lower_is_better=lower_is_better, label=label,
                                  marks=significance_marks(out["groups"], alpha, holm_adjust),
                                  marks_note=marks_note)
        if best is not None:
            from lstm_research.sweeps.plots import plot_box

            top_stats = group_stats(best, metric=metric, keys=keys, baseline=base,
                                    lower_is_better=lower_is_better, alpha=alpha,
                                    holm_adjust=holm_adjust)
            box = plot_box(best, sweep_dir / f"box_{metric}_top.png", metric=metric, keys=keys,
                           baseline=base, lower_is_better=lower_is_better, label=label,
                           title=f"top {100 * top:g}% of each group (by valid {metric})",
                           marks=significance_marks(top_stats, alpha, holm_adjust),
                           marks_note=f"*: Welch p < {alpha:g} vs {base}"
                           + (" (Holm-adjusted)" if holm_adjust else ""))
            out["plots"] = [box, *out["plots"]] if box else out["plots"]
    out["summary_md"] = write_summary(sweep_dir, rows, info, metric=metric, keys=keys, baseline=base,
                                      lower_is_better=lower_is_better, alpha=alpha, direction_note=note,
                                      plots=out["plots"], top=top, top_subset=best,
                                      holm_adjust=holm_adjust)
    return out


def _task_name(sweep_dir: Path, rows: Sequence[Mapping], config: str) -> str | None:
    """The task of the sweep's finished trials (their result.json ``task``), for axis units; for a
    results folder without trial folders, the task of the sweep's config file, if it is found."""
    for r in rows:
        if r["status"] == "done":
            task = (read_json(sweep_dir / r["trial"] / RESULT_JSON) or {}).get("task")
            if task:
                return task
    from lstm_research.sweeps.check import load_trial_config

    try:
        return str(load_trial_config(config, repo_root()).task.name)
    except (SweepSpecError, AttributeError):
        return None
