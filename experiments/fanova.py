#!/usr/bin/env python
"""fANOVA hyperparameter importance of a random-search sweep (Greff et al. 2015, Sec. V-B).

    python experiments/fanova.py SWEEP_DIR [--group_by model.cell] [--metric test_nll]
        [--param 'train.lr=loguniform(1e-6,1e-2)' ...] [--clip 100]

Reads the sweep's ``results.csv`` and its random axes from ``sweep.json`` (or ``--param``, with
the sweep's distribution syntax, for a results folder without one). Writes into SWEEP_DIR (or
``--out``):

* ``fanova.md``: the fraction of the metric's variance explained by each hyperparameter (main
  effect) and by each pair beyond that (interaction), mean ± std over the forest's trees, for all
  trials pooled and for each group (variant);
* ``fanova.png``: those fractions as bars, like the paper's Fig. 5;
* ``marginal.png``: the predicted metric against each hyperparameter, the others averaged out,
  one line per group with a band of ± one std over the trees (the paper's Fig. 6): log x-axes
  for log-uniform hyperparameters, log y-axis when the curves span more than a factor of 10.

Trials with a non-finite metric are left out (counted in the table); ``--clip C`` caps the
metric at C first, so a few diverged trials do not become all of the variance.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402

from lstm_research.errors import UserError  # noqa: E402
from lstm_research.sweeps.importance import Forest  # noqa: E402
from lstm_research.sweeps.values import parse_assignment, parse_distribution  # noqa: E402
from lstm_research.sweeps.results import read_results_csv  # noqa: E402

TOP_PAIRS = 6


def search_space(sweep_dir: Path, params: list[str]) -> dict:
    """{key: Distribution} of the random axes, from --param or the sweep's sweep.json."""
    if params:
        return {k: parse_distribution(v) for k, v in map(parse_assignment, params)}
    spec = sweep_dir / "sweep.json"
    if not spec.exists():
        raise UserError(f"{spec} not found: give the random axes with --param KEY=DIST "
                        "(e.g. --param 'train.lr=loguniform(1e-6,1e-2)')")
    random = json.loads(spec.read_text())["spec"].get("random", [])
    if not random:
        raise UserError(f"{spec} has no random axes: fANOVA needs a random search")
    return {k: parse_distribution(d) for k, d in random}


def check_numeric(space: dict) -> None:
    """The forest splits numbers: a choice() axis of other values (cells, optimizers) is refused
    with what to do instead."""
    for k, d in space.items():
        bad = [a for a in d.args if isinstance(a, bool) or not isinstance(a, (int, float))]
        if bad:
            raise UserError(f"random axis {k}={d} has non-numeric values ({bad[0]!r}); fANOVA "
                            f"needs numbers: compare its values with --group_by {k}, or leave it "
                            "out by listing the numeric axes with --param")


def load(sweep_dir: Path, space: dict, metric: str | None, group_by: str | None, clip):
    path = sweep_dir / "results.csv"
    if not path.exists():
        raise UserError(f"{path} not found; run `python experiments/sweep.py --summarize "
                        f"{sweep_dir}` first")
    rows = [r for r in read_results_csv(path) if r.get("status") == "done"]
    if not rows:
        raise UserError(f"{path} has no finished trials")
    metric = metric or f"test_{rows[0]['metric']}"
    missing = [k for k in [metric, *space, *([group_by] if group_by else [])] if k not in rows[0]]
    if missing:
        raise UserError(f"{path} has no column(s) {missing}; columns: {sorted(rows[0])}")
    dropped = sum(1 for r in rows if r[metric] is None or not math.isfinite(r[metric]))
    rows = [r for r in rows if r[metric] is not None and math.isfinite(r[metric])]
    for r in rows:
        r[metric] = min(r[metric], clip) if clip else r[metric]
    return rows, metric, dropped


INT_KINDS = ("int_uniform", "int_loguniform")


def forest(rows, space, metric, seed):
    """The forest over the search space as it was sampled. An integer axis was drawn as the
    floor of a (log-)uniform draw on [a, b + 1) (``sweeps.values.Distribution.sample``), so
    integer k stands for [k, k + 1): it enters as k + 1/2 on the bounds [a, b + 1], and the
    trees' splits between neighbours fall at (about) k + 1, each integer weighing what it was
    sampled with (on [a, b] the two end values weighed half that)."""
    shift = {k: 0.5 if d.kind in INT_KINDS else 0.0 for k, d in space.items()}
    params = {k: [float(r[k]) + shift[k] for r in rows] for k in space}
    bounds = {k: (float(d.args[0]), float(d.args[1]) + 2 * shift[k])
              for k, d in space.items() if d.kind != "choice"}
    return Forest(params, [r[metric] for r in rows], seed=seed, bounds=bounds,
                  log=[k for k, d in space.items() if d.log_scale])


def groups_of(rows, group_by):
    out = {"all": rows}
    if group_by:
        for r in rows:
            out.setdefault(str(r[group_by]), []).append(r)
    return out


def table(results: dict, dropped: int, metric: str, clip) -> str:
    names = next(iter(results.values())).names
    lines = [f"# fANOVA: fraction of the variance of {metric} explained",
             "",
             f"Main effects and pairwise interactions (mean ± std over the forest's trees); "
             f"{dropped} trial(s) with a non-finite metric left out"
             + (f"; {metric} capped at {clip}" if clip else "") + ".",
             "",
             "| group | n | " + " | ".join(names) + " | top interactions | unexplained by these |",
             "|---|---|" + "---|" * len(names) + "---|---|"]
    for g, imp in results.items():
        mains = [imp.main[n] for n in names]
        pairs = sorted(imp.pairs.items(), key=lambda kv: -kv[1][0])
        rest = 1 - sum(m for m, _ in mains) - sum(m for _, (m, _) in pairs)
        top = ", ".join(f"{a} x {b}: {m:.3f}" for (a, b), (m, _) in pairs[:2])
        lines.append(f"| {g} | {imp.n} | " + " | ".join(f"{m:.3f} ± {s:.3f}" for m, s in mains)
                     + f" | {top} | {max(rest, 0):.3f} |")
    return "\n".join(lines) + "\n"


def plot_importance(imp, out: Path, metric: str):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [(n, *imp.main[n]) for n in imp.names]
    rows += [(f"{a} x {b}", m, s) for (a, b), (m, s) in
             sorted(imp.pairs.items(), key=lambda kv: -kv[1][0])[:TOP_PAIRS]]
    fig, ax = plt.subplots(figsize=(9, 0.4 * len(rows) + 1.4))
    ys = np.arange(len(rows))[::-1]
    means, stds = np.array([r[1] for r in rows]), np.array([r[2] for r in rows])
    ax.barh(ys, means, xerr=[np.minimum(stds, means), stds],  # the bars' std, not below 0
            color=["C0"] * len(imp.names) + ["C1"] * (len(rows) - len(imp.names)))
    ax.set_yticks(ys, [r[0] for r in rows])
    ax.set_xlabel(f"fraction of the variance of {metric}")
    ax.set_title(f"fANOVA over all {imp.n} trials\nmain effects (blue), pairwise interactions "
                 "(orange); ± std over trees", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def plot_marginals(forests: dict, space: dict, out: Path, metric: str):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter
    keys = list(space)
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.6), squeeze=False)
    for ax, key in zip(axes[0], keys):
        d = space[key]
        lo, hi = (float(a) for a in d.args) if d.kind != "choice" else (min(d.args), max(d.args))
        hi += 1.0 if d.kind in INT_KINDS else 0.0  # (integer k plotted over [k, k + 1))
        xs = np.geomspace(lo, hi, 60) if d.log_scale else np.linspace(lo, hi, 60)
        span = []
        for i, (g, f) in enumerate(forests.items()):
            if g == "all" and len(forests) > 1:
                continue
            mean, std = f.marginal(key, xs)
            ax.plot(xs, mean, color=f"C{i % 10}", label=g)
            ax.fill_between(xs, mean - std, mean + std, color=f"C{i % 10}", alpha=0.15)
            span += [mean.min(), mean.max()]
        if d.log_scale:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
        if min(span) > 0 and max(span) / min(span) > 10:
            ax.set_yscale("log")
        ax.set_xlabel(key)
        ax.set_ylabel(f"predicted {metric}")
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.suptitle("fANOVA marginals (the other hyperparameters averaged out; band: ± std over trees)")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("sweep_dir", type=Path)
    p.add_argument("--param", action="append", default=[], metavar="KEY=DIST",
                   help="a random axis, as in sweep.py --random (default: from sweep.json)")
    p.add_argument("--metric", help="results.csv column (default: test_<the task's metric>)")
    p.add_argument("--group_by", help="one analysis per value of this column (e.g. model.cell)")
    p.add_argument("--clip", type=float, help="cap the metric at this value first")
    p.add_argument("--seed", type=int, default=0, help="random forest seed")
    p.add_argument("--out", type=Path, help="output folder (default: SWEEP_DIR)")
    args = p.parse_args(argv)
    try:
        if not args.sweep_dir.is_dir():
            raise UserError(f"no sweep folder {args.sweep_dir}")
        space = search_space(args.sweep_dir, args.param)
        check_numeric(space)
        rows, metric, dropped = load(args.sweep_dir, space, args.metric, args.group_by, args.clip)
        forests = {g: forest(rs, space, metric, args.seed)
                   for g, rs in groups_of(rows, args.group_by).items() if len(rs) >= 2}
        results = {g: f.importance() for g, f in forests.items()}
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = args.out or args.sweep_dir
    out.mkdir(parents=True, exist_ok=True)
    text = table(results, dropped, metric, args.clip)
    (out / "fanova.md").write_text(text)
    plot_importance(results["all"], out / "fanova.png", metric)
    plot_marginals(forests, space, out / "marginal.png", metric)
    print(text)
    print(f"wrote {out / 'fanova.md'}, {out / 'fanova.png'}, {out / 'marginal.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
