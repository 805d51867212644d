"""Per-model hyperparameter selection on validation, then the test numbers of the chosen setting
(the protocol of papers that search a learning rate per model, e.g. Chung et al. 2014).

For each group (``--group_by``, default ``model.cell``) the settings of ``--search`` (default
``train.lr``) are ranked by their mean validation metric over the trials that finished (seeds);
the best setting's trials give the group's test metric (mean ± std), and every group after the
first gets Welch's t-test of its chosen trials' test metric against the first group's. A setting
with a non-finite validation value (a trial that diverged to NaN) ranks last. Lower is better
unless the results say otherwise for their metric (``lower_is_better``) or ``--higher_is_better``
is given. Prints a markdown table. A user error (no results.csv, an unknown column) is one line ``error: ...`` on
stderr, exit status 2.

    python experiments/select_by_valid.py sweeps/chung2014_rmsprop --search train.lr
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from lstm_research.errors import UserError  # noqa: E402
from lstm_research.sweeps.results import read_results_csv  # noqa: E402
from lstm_research.sweeps.stats import welch_test  # noqa: E402


def select(rows: list[dict], *, group_by: str, search: str, metric: str,
           lower_is_better: bool = True) -> list[dict]:
    """One dict per group: every setting's mean validation metric, the chosen setting, and the
    chosen trials' test metrics (``test``, a list) with their mean and std."""
    done = [r for r in rows if r.get("status") == "done"]
    if not done:
        raise UserError("no finished trial in results.csv; run or resume the sweep first")
    for col in (group_by, search, f"valid_{metric}", f"test_{metric}"):
        if col not in done[0]:
            raise UserError(f"column {col!r} not in results.csv; columns: {', '.join(done[0])}")
    by: dict = defaultdict(lambda: defaultdict(list))
    for r in done:
        by[r[group_by]][r[search]].append(r)
    out = []
    for group, settings in by.items():
        valid = {s: statistics.mean(float(r[f"valid_{metric}"]) for r in rs)
                 for s, rs in settings.items()}
        finite = {s: v for s, v in valid.items() if math.isfinite(v)}
        if not finite:
            raise UserError(f"group {group!r}: no setting of {search} has a finite mean valid "
                            f"{metric} (every one has a diverged trial)")
        best = (min if lower_is_better else max)(finite, key=finite.get)
        test = [float(r[f"test_{metric}"]) for r in settings[best]]
        out.append({"group": group, "valid_by_setting": valid, "chosen": best, "test": test,
                    "mean": statistics.mean(test),
                    "std": statistics.stdev(test) if len(test) > 1 else 0.0})
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("sweep", help="sweep directory or its results.csv")
    p.add_argument("--group_by", default="model.cell")
    p.add_argument("--search", default="train.lr")
    p.add_argument("--metric", default="nll")
    p.add_argument("--higher_is_better", action="store_true", default=None,
                   help="(default: as results.csv says for its metric, else lower is better)")
    args = p.parse_args(argv)
    path = Path(args.sweep)
    path = path / "results.csv" if path.is_dir() else path
    try:
        if not path.exists():
            raise UserError(f"{path} does not exist; summarize the sweep first "
                            "(python experiments/sweep.py --summarize DIR)")
        rows = read_results_csv(path)
        higher = args.higher_is_better
        if higher is None:
            own = [r.get("lower_is_better") for r in rows if r.get("metric") == args.metric]
            higher = bool(own) and own[0] is False
        groups = select(rows, group_by=args.group_by, search=args.search,
                        metric=args.metric, lower_is_better=not higher)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"| {args.group_by} | valid {args.metric} by {args.search} (mean over trials) | chosen | "
          f"n | test {args.metric}: mean ± std | Welch p vs {groups[0]['group']} |")
    print("|---|---|---|---|---|---|")
    for g in groups:
        p_value = "" if g is groups[0] else f"{welch_test(g['test'], groups[0]['test'])[1]:.3g}"
        settings = ", ".join(f"{s}: {v:.4g}" for s, v in sorted(g["valid_by_setting"].items()))
        print(f"| {g['group']} | {settings} | {g['chosen']} | {len(g['test'])} | "
              f"{g['mean']:.4g} ± {g['std']:.2g} | {p_value} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
