"""Sweep figures (matplotlib, Agg; no pyplot global state).

* ``box_<metric>.png`` -- Greff-style box plot of the final test metric per group with the trials
  overlaid as jittered points; the baseline box is highlighted and its median drawn across the plot.
* ``vs_<key>.png`` -- test metric versus each swept numeric hyper-parameter (seeds excluded), log x
  for (int_)loguniform axes and for positive grids spanning >= 2 decades; points colored by group.
* ``curves.png`` -- valid metric versus step from every trial's metrics.jsonl, colored by group
  (unfinished/failed trials dashed).
* ``curves_groups.png`` -- per group the median and interquartile band of the valid metric and
  of the training loss, against epochs where the trials train by epochs.
* ``gates.png`` -- per group the validation gate statistics of runs with ``train.gate_stats``.

Metric axes carry the task's label with units (``Task.labels``) and share one log-y rule
(:func:`use_log_y`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg", force=False)
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from lstm_research.sweeps.results import is_num, ordered_groups  # noqa: E402
from lstm_research.sweeps.values import is_seed_key  # noqa: E402

__all__ = ["make_plots", "plot_box", "plot_curves", "plot_gates", "plot_group_curves", "plot_vs",
           "read_metrics_jsonl", "use_log_y"]

BASELINE_COLOR = "#e76f51"
BOX_COLOR = "#8ab6d6"
DPI = 130


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)


def _colors(labels: Sequence[str], baseline: str | None) -> dict[str, Any]:
    cmap = matplotlib.colormaps["tab10" if len(labels) <= 10 else "tab20"]
    others = [lab for lab in labels if lab != baseline]
    colors = {lab: cmap(i % cmap.N) for i, lab in enumerate(others)}
    if baseline in labels:
        colors[baseline] = "black"
    return colors


def _direction(lower_is_better: bool) -> str:
    return "lower is better" if lower_is_better else "higher is better"


#: a metric axis goes log-scale when all values are positive and span more than this factor
#: (diverged trials: keep the rest readable)
LOG_Y_RATIO = 50


def use_log_y(values: Sequence[float]) -> bool:
    """The one log-y rule of every sweep figure: positive finite values whose max/min > LOG_Y_RATIO."""
    finite = [v for v in values if math.isfinite(v)]
    return bool(finite) and min(finite) > 0 and max(finite) / min(finite) > LOG_Y_RATIO


def _y_label(split: str, label: str, lower_is_better: bool, log_y: bool) -> str:
    return f"{split} {label} ({_direction(lower_is_better)}{', log scale' if log_y else ''})"


def plot_box(rows: Sequence[Mapping], out: Path | str, *, metric: str, keys: Sequence[str],
             baseline: str | None, lower_is_better: bool = True, seed: int = 0,
             title: str | None = None, label: str | None = None,
             marks: Mapping[str, str] | None = None, marks_note: str = "") -> Path | None:
    """``label``: the metric's axis label with units (default: its key); ``marks``: group ->
    significance marker drawn above its box (e.g. ``*``), explained by ``marks_note``."""
    import numpy as np

    col = f"test_{metric}"
    groups = ordered_groups(rows, keys)
    data = {g: [float(r[col]) for r in rs if r["status"] == "done" and is_num(r.get(col))]
            for g, rs in groups.items()}
    if not any(data.values()):
        return None
    labels = list(data)  # groups without a finished trial keep their slot, marked "no result"
    filled = [i for i, g in enumerate(labels, start=1) if data[g]]
    fig = Figure(figsize=(max(5.0, 0.75 * len(labels) + 2.0), 4.5), dpi=DPI)
    ax = fig.add_subplot()
    bp = ax.boxplot([data[labels[i - 1]] for i in filled], positions=filled, patch_artist=True, widths=0.6,
                    showfliers=False, medianprops={"color": "black", "linewidth": 1.5})
    for i, box in zip(filled, bp["boxes"]):
        g = labels[i - 1]
        box.set_facecolor(BASELINE_COLOR if g == baseline else BOX_COLOR)
        box.set_alpha(0.85)
        if g == baseline:
            box.set_linewidth(2.0)
    rng = np.random.default_rng(seed)
    for i, g in enumerate(labels, start=1):
        xs = i + rng.uniform(-0.18, 0.18, size=len(data[g]))
        ax.scatter(xs, data[g], s=14, color="black", alpha=0.6, zorder=3, linewidths=0)
    for i, g in enumerate(labels, start=1):
        if not data[g]:
            failed = sum(r["status"] == "failed" for r in groups[g])
            ax.text(i, 0.5, f"no result\n({failed} failed)" if failed else "no result",
                    transform=ax.get_xaxis_transform(), ha="center", va="center", fontsize=8, color="gray")
    if baseline in data and data[baseline]:
        ax.axhline(float(np.median(data[baseline])), color=BASELINE_COLOR, linestyle="--", linewidth=1,
                   zorder=1, label=f"baseline {baseline} median")
        ax.legend(loc="best", fontsize=8, frameon=False)
    long = max(len(g) for g in labels) > 8
    ax.set_xticks(range(1, len(labels) + 1))
    ax.set_xticklabels([f"{g}\n(n={len(data[g])})" for g in labels], rotation=30 if long else 0,
                       ha="right" if long else "center", fontsize=9)
    ax.set_xlim(0.4, len(labels) + 0.6)
    for tick, g in zip(ax.get_xticklabels(), labels):
        if g == baseline:
            tick.set_fontweight("bold")
    values = [v for vs in data.values() for v in vs]
    log_y = use_log_y(values)
    if log_y:
        ax.set_yscale("log")
    for i, g in enumerate(labels, start=1):
        if (marks or {}).get(g):
            ax.text(i, 1.01, marks[g], transform=ax.get_xaxis_transform(), ha="center",
                    va="bottom", fontsize=12, fontweight="bold", color=BASELINE_COLOR)
    label = label or metric
    ax.set_ylabel(_y_label("test", label, lower_is_better, log_y))
    xlabel = ", ".join(keys) if keys else ""
    if marks and any(marks.values()) and marks_note:
        xlabel = f"{xlabel}\n{marks_note}" if xlabel else marks_note
    ax.set_xlabel(xlabel)
    ax.set_title(f"test {label} per group" + (f": {title}" if title else ""), pad=16 if marks else 6)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out)
    return Path(out)


def plot_vs(rows: Sequence[Mapping], key: str, out: Path | str, *, metric: str, keys: Sequence[str],
            baseline: str | None, log_x: bool, lower_is_better: bool = True,
            label: str | None = None) -> Path | None:
    col = f"test_{metric}"
    pts = [r for r in rows if r["status"] == "done" and is_num(r.get(col)) and is_num(r.get(key))]
    if not pts:
        return None
    groups = ordered_groups(pts, [k for k in keys if k != key])
    colors = _colors(list(groups), baseline)
    fig = Figure(figsize=(6.0, 4.2), dpi=DPI)
    ax = fig.add_subplot()
    for g, rs in groups.items():
        ax.scatter([float(r[key]) for r in rs], [float(r[col]) for r in rs], s=22, alpha=0.75,
                   color=colors[g], label=g if len(groups) > 1 else None, linewidths=0)
    if log_x:
        ax.set_xscale("log")
    log_y = use_log_y([float(r[col]) for r in pts])
    if log_y:
        ax.set_yscale("log")
    label = label or metric
    ax.set_xlabel(key + (" (log scale)" if log_x else ""))
    ax.set_ylabel(_y_label("test", label, lower_is_better, log_y))
    ax.set_title(f"test {label} vs {key}")
    ax.grid(alpha=0.3)
    if len(groups) > 1:
        ax.legend(fontsize=8, frameon=False, loc="best", ncol=2 if len(groups) > 6 else 1)
    fig.tight_layout()
    fig.savefig(out)
    return Path(out)


def read_metrics_jsonl(path: Path | str, split: str, metric: str) -> tuple[list[float], list[float]]:
    """(steps, values) of ``metric`` for ``split``; skips unreadable lines (a killed trial's last one)."""
    steps, values = [], []
    try:
        with open(path) as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if isinstance(rec, dict) and rec.get("split") == split and is_num(rec.get(metric)) \
                        and is_num(rec.get("step")):
                    steps.append(float(rec["step"]))
                    values.append(float(rec[metric]))
    except OSError:
        pass
    return steps, values


def plot_curves(sweep_dir: Path | str, rows: Sequence[Mapping], out: Path | str, *, metric: str,
                keys: Sequence[str], baseline: str | None, lower_is_better: bool = True,
                label: str | None = None) -> Path | None:
    sweep_dir = Path(sweep_dir)
    groups = ordered_groups(rows, keys)
    colors = _colors(list(groups), baseline)
    fig = Figure(figsize=(7.0, 4.5), dpi=DPI)
    ax = fig.add_subplot()
    drawn, all_values = set(), []
    for g, rs in groups.items():
        for r in rs:
            steps, values = read_metrics_jsonl(sweep_dir / r["trial"] / "metrics.jsonl", "valid", metric)
            if not steps:
                continue
            order = sorted(range(len(steps)), key=steps.__getitem__)
            ax.plot([steps[i] for i in order], [values[i] for i in order], color=colors[g],
                    alpha=0.75, linewidth=1.8 if g == baseline else 1.0,
                    linestyle="-" if r["status"] == "done" else "--")
            drawn.add(g)
            all_values += values
    if not drawn:
        return None
    log_y = use_log_y(all_values)
    if log_y:
        ax.set_yscale("log")
    handles = [Line2D([], [], color=colors[g], linewidth=1.8 if g == baseline else 1.2,
                      label=f"{g} (baseline)" if g == baseline else g) for g in groups if g in drawn]
    if any(r["status"] != "done" for r in rows):
        handles.append(Line2D([], [], color="black", linestyle="--", linewidth=1.0,
                                  label="dashed: unfinished/failed"))
    if len(handles) > 1 or keys:
        ax.legend(handles=handles, fontsize=8, frameon=False, loc="best",
                  ncol=2 if len(handles) > 6 else 1)
    ax.set_xlabel("step")
    ax.set_ylabel(_y_label("valid", label or metric, lower_is_better, log_y))
    ax.set_title(f"learning curves: valid {label or metric}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out)
    return Path(out)


def _epoch_length(trial_dir: Path, valid_steps: Sequence[float]) -> float | None:
    """Steps per epoch of a trial that trains by epochs and validates once per epoch (its
    ``config.json``: ``train.epochs`` > 0, ``train.eval_every`` 0): the first validation step.
    None otherwise (its curves are then drawn against steps)."""
    try:
        train = json.loads((trial_dir / "config.json").read_text())["train"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not valid_steps or not train.get("epochs") or train.get("eval_every"):
        return None
    return min(valid_steps)


def _quartiles(by_x: Mapping[float, list[float]]):
    import numpy as np

    xs = sorted(by_x)
    q = np.array([np.percentile(by_x[x], [25, 50, 75]) for x in xs]).reshape(-1, 3)
    return xs, q[:, 0], q[:, 1], q[:, 2]


def plot_group_curves(sweep_dir: Path | str, rows: Sequence[Mapping], out: Path | str, *,
                      metric: str, keys: Sequence[str], baseline: str | None,
                      lower_is_better: bool = True, label: str | None = None) -> Path | None:
    """``curves_groups.png``: per group, the median (line) and interquartile band of the valid
    ``metric`` (left) and of the training loss (right) over the group's trials, against epochs
    where every trial trains by epochs and validates once per epoch (:func:`_epoch_length`),
    else against steps. At each x the statistics are over the trials with a record there
    (early-stopped trials drop out); unfinished trials count with what they logged."""
    sweep_dir = Path(sweep_dir)
    groups = ordered_groups(rows, keys)
    curves: dict[str, dict[str, list]] = {}
    for g, rs in groups.items():
        for r in rs:
            path = sweep_dir / r["trial"] / "metrics.jsonl"
            v_steps, v_vals = read_metrics_jsonl(path, "valid", metric)
            if not v_steps:
                continue
            t_steps, t_vals = read_metrics_jsonl(path, "train", "loss")
            curves.setdefault(g, []).append((_epoch_length(sweep_dir / r["trial"], v_steps),
                                             v_steps, v_vals, t_steps, t_vals))
    if not curves:
        return None
    per_epoch = all(c[0] for cs in curves.values() for c in cs)
    colors = _colors(list(groups), baseline)
    fig = Figure(figsize=(11.0, 4.5), dpi=DPI)
    axes = fig.subplots(1, 2)
    titles = (f"valid {label or metric}", "training loss")
    for panel, ax in enumerate(axes):
        plotted = []
        for g, cs in curves.items():
            by_x: dict[float, list[float]] = {}
            for spe, v_steps, v_vals, t_steps, t_vals in cs:
                steps, vals = (v_steps, v_vals) if panel == 0 else (t_steps, t_vals)
                for step, v in zip(steps, vals):
                    if math.isfinite(v):
                        by_x.setdefault(step / spe if per_epoch else step, []).append(v)
            if not by_x:
                continue
            xs, q1, med, q3 = _quartiles(by_x)
            wide = 1.8 if g == baseline else 1.2
            ax.plot(xs, med, color=colors[g], linewidth=wide,
                    label=f"{g} (baseline, n={len(cs)})" if g == baseline else f"{g} (n={len(cs)})")
            ax.fill_between(xs, q1, q3, color=colors[g], alpha=0.18, linewidth=0)
            plotted += [*q1, *q3]
        log_y = use_log_y(plotted)
        if log_y:
            ax.set_yscale("log")
        ax.set_xlabel("epoch" if per_epoch else "step")
        ax.set_ylabel(_y_label("valid", label or metric, lower_is_better, log_y) if panel == 0
                      else "training loss" + (" (log scale)" if log_y else ""))
        ax.set_title(f"{titles[panel]}: median and interquartile range per group", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, frameon=False, loc="best", ncol=2 if len(curves) > 6 else 1)
    fig.tight_layout()
    fig.savefig(out)
    return Path(out)


GATE_PREFIX = "valid_gates/"


def plot_gates(rows: Sequence[Mapping], out: Path | str, *, keys: Sequence[str],
               baseline: str | None) -> Path | None:
    """``gates.png``: per group, box plots over its finished trials of the validation gate
    statistics at the best checkpoint (``valid_gates/<layer>/<gate>_{mean,sat}`` and
    ``f_timescale`` columns, from runs with ``train.gate_stats``): mean activation, fraction
    saturated, forget timescale (steps, log scale). None when no trial has them."""
    done = [r for r in rows if r["status"] == "done"]
    cols = sorted({k[len(GATE_PREFIX):] for r in done for k in r
                   if k.startswith(GATE_PREFIX) and is_num(r.get(k))})
    gates = sorted({c.rsplit("_", 1)[0] for c in cols if c.endswith("_mean")})
    if not gates:
        return None
    groups = ordered_groups(done, keys)
    labels = list(groups)
    cmap = matplotlib.colormaps["tab10"]
    panels = [("_mean", "mean activation"), ("_sat", "fraction saturated (< 0.05 or > 0.95)")]
    forgets = [c[:-len("_timescale")] for c in cols if c.endswith("f_timescale")]
    if forgets:
        panels.append(("_timescale", "forget timescale 1 / (1 - mean f) (steps, log scale)"))
    fig = Figure(figsize=(max(6.0, 0.9 * len(labels) + 2.0), 3.2 * len(panels)), dpi=DPI)
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (suffix, what) in zip(axes, panels):
        series = forgets if suffix == "_timescale" else gates
        width = 0.8 / len(series)
        for k, name in enumerate(series):
            col = GATE_PREFIX + name + suffix
            pos = [i + (k - (len(series) - 1) / 2) * width for i in range(1, len(labels) + 1)]
            data = [[float(r[col]) for r in groups[g] if is_num(r.get(col))] for g in labels]
            keep = [j for j, d in enumerate(data) if d]
            if not keep:
                continue
            bp = ax.boxplot([data[j] for j in keep], positions=[pos[j] for j in keep],
                            widths=width * 0.85, patch_artist=True, showfliers=False,
                            medianprops={"color": "black"})
            for box in bp["boxes"]:
                box.set_facecolor(cmap(gates.index(name) if name in gates else k))
                box.set_alpha(0.8)
            bp["boxes"][0].set_label(name)
        if suffix == "_timescale":
            ax.set_yscale("log")
        ax.set_ylabel(what, fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, frameon=False, loc="best", ncol=min(len(series), 6))
    axes[-1].set_xticks(range(1, len(labels) + 1))
    axes[-1].set_xticklabels(labels, rotation=30 if max(map(len, labels)) > 8 else 0, fontsize=9)
    for tick, g in zip(axes[-1].get_xticklabels(), labels):
        if g == baseline:
            tick.set_fontweight("bold")
    axes[0].set_title("valid gate statistics per group (best checkpoint)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out)
    return Path(out)


def make_plots(sweep_dir: Path | str, rows: Sequence[Mapping], info: Mapping, *, metric: str,
               keys: Sequence[str], baseline: str | None, lower_is_better: bool = True,
               label: str | None = None, marks: Mapping[str, str] | None = None,
               marks_note: str = "") -> list[Path]:
    """Writes box_<metric>.png, vs_<key>.png for each numeric swept key, curves.png,
    curves_groups.png and (runs with gate statistics) gates.png; returns the paths. ``label``, ``marks``, ``marks_note``: see :func:`plot_box`."""
    sweep_dir = Path(sweep_dir)
    made = [plot_box(rows, sweep_dir / f"box_{_safe(metric)}.png", metric=metric, keys=keys,
                     baseline=baseline, lower_is_better=lower_is_better, label=label,
                     marks=marks, marks_note=marks_note)]
    for key in info["swept_keys"]:
        if is_seed_key(key):
            continue
        vals = {float(r[key]) for r in rows if is_num(r.get(key))}
        if len(vals) < 2:
            continue
        if any(r.get(key) is not None and not is_num(r.get(key)) for r in rows):
            continue  # not a numeric axis
        log_x = key in info.get("log_scale_keys", ()) or (min(vals) > 0 and max(vals) / min(vals) >= 100)
        made.append(plot_vs(rows, key, sweep_dir / f"vs_{_safe(key)}.png", metric=metric, keys=keys,
                            baseline=baseline, log_x=log_x, lower_is_better=lower_is_better,
                            label=label))
    made.append(plot_curves(sweep_dir, rows, sweep_dir / "curves.png", metric=metric, keys=keys,
                            baseline=baseline, lower_is_better=lower_is_better, label=label))
    made.append(plot_group_curves(sweep_dir, rows, sweep_dir / "curves_groups.png", metric=metric,
                                  keys=keys, baseline=baseline, lower_is_better=lower_is_better,
                                  label=label))
    made.append(plot_gates(rows, sweep_dir / "gates.png", keys=keys, baseline=baseline))
    return [p for p in made if p is not None]
