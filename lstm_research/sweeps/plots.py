"""Sweep figures (matplotlib, Agg; no pyplot global state).

* ``box_<metric>.png`` -- Greff-style box plot of the final test metric per group with the trials
  overlaid as jittered points; the baseline box is highlighted and its median drawn across the plot.
* ``vs_<key>.png`` -- test metric versus each swept numeric hyper-parameter (seeds excluded), log x
  for (int_)loguniform axes and for positive grids spanning >= 2 decades; points colored by group.
* ``curves.png`` -- valid metric versus step from every trial's metrics.jsonl, colored by group
  (unfinished/failed trials dashed).
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

__all__ = ["make_plots", "plot_box", "plot_curves", "plot_vs", "read_metrics_jsonl"]

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


def plot_box(rows: Sequence[Mapping], out: Path | str, *, metric: str, keys: Sequence[str],
             baseline: str | None, lower_is_better: bool = True, seed: int = 0,
             title: str | None = None) -> Path | None:
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
    log_y = min(values) > 0 and max(values) / min(values) > 50  # diverged trials: keep the rest readable
    if log_y:
        ax.set_yscale("log")
    ax.set_ylabel(f"test {metric} ({_direction(lower_is_better)}{', log scale' if log_y else ''})")
    ax.set_xlabel(", ".join(keys) if keys else "")
    ax.set_title(f"test {metric} per group" + (f": {title}" if title else ""))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out)
    return Path(out)


def plot_vs(rows: Sequence[Mapping], key: str, out: Path | str, *, metric: str, keys: Sequence[str],
            baseline: str | None, log_x: bool, lower_is_better: bool = True) -> Path | None:
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
    ax.set_xlabel(key + (" (log scale)" if log_x else ""))
    ax.set_ylabel(f"test {metric} ({_direction(lower_is_better)})")
    ax.set_title(f"test {metric} vs {key}")
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
                keys: Sequence[str], baseline: str | None, lower_is_better: bool = True) -> Path | None:
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
    finite = [v for v in all_values if math.isfinite(v)]
    if finite and min(finite) > 0 and max(finite) / min(finite) > 30:
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
    ax.set_ylabel(f"valid {metric} ({_direction(lower_is_better)})")
    ax.set_title(f"learning curves: valid {metric}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out)
    return Path(out)


def make_plots(sweep_dir: Path | str, rows: Sequence[Mapping], info: Mapping, *, metric: str,
               keys: Sequence[str], baseline: str | None, lower_is_better: bool = True) -> list[Path]:
    """Writes box_<metric>.png, vs_<key>.png for each numeric swept key, curves.png; returns the paths."""
    sweep_dir = Path(sweep_dir)
    made = [plot_box(rows, sweep_dir / f"box_{_safe(metric)}.png", metric=metric, keys=keys,
                     baseline=baseline, lower_is_better=lower_is_better)]
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
                            baseline=baseline, log_x=log_x, lower_is_better=lower_is_better))
    made.append(plot_curves(sweep_dir, rows, sweep_dir / "curves.png", metric=metric, keys=keys,
                            baseline=baseline, lower_is_better=lower_is_better))
    return [p for p in made if p is not None]
