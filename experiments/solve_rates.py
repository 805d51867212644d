"""Solution rates of a sweep (Hochreiter & Schmidhuber 1997, Gers et al. 2000 style reporting).

A trial is "solved" when its final test metrics meet ``--solved`` (a comparison on a results.csv
column, e.g. ``test_max_abs_error<0.04`` or ``test_solved_frac>=1``). For each group (default:
``model.cell`` when swept) it prints the number solved out of the trials that finished, and the
training sequences seen by the solved ones (steps x ``--batch``, since runs stop once the
criterion holds on validation): median, min and max; then, for every group after the first, the
two-sided p of Fisher's exact test of its solve rate against the first group's. A user error (no results.csv, a bad
``--solved``, an unknown column) is one line ``error: ...`` on stderr, exit status 2.

    python experiments/solve_rates.py sweeps/h97_temporal6a/results.csv \
        --solved 'test_error_rate<=0' --batch 32
"""
from __future__ import annotations

import argparse
import csv
import operator
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from lstm_research.errors import UserError  # noqa: E402

OPS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt, "==": operator.eq}


def parse_criterion(text: str):
    m = re.fullmatch(r"\s*([\w.]+)\s*(<=|>=|==|<|>)\s*([-+0-9.eE]+)\s*", text)
    try:
        return m.group(1), OPS[m.group(2)], float(m.group(3))
    except (AttributeError, ValueError):  # no match, or no number (0..5)
        raise UserError(f"--solved {text!r}: expected COLUMN OP NUMBER with OP one of "
                        f"{', '.join(OPS)}, e.g. 'test_error_rate<=0'") from None


def solve_rates(rows: list[dict], criterion: str, group_by: str | None, batch: int) -> list[dict]:
    column, op, bound = parse_criterion(criterion)
    done = [r for r in rows if r.get("status") == "done"]
    if not done:
        raise UserError(f"no finished trial in results.csv ({len(rows)} rows, none with status 'done'); "
                        "run or resume the sweep first")
    if column not in done[0]:
        raise UserError(f"--solved column {column!r} not in results.csv; columns: {', '.join(done[0])}")
    if group_by and group_by not in done[0]:
        raise UserError(f"--group_by column {group_by!r} not in results.csv; columns: {', '.join(done[0])}")
    bad = next((r[column] for r in done if isinstance(r[column], (bool, str))), None)
    if bad is not None:
        raise UserError(f"--solved column {column!r} is not numeric (it holds {bad!r})")
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in done:
        groups[r.get(group_by, "all") if group_by else "all"].append(r)
    out = []
    for name, rs in groups.items():
        solved = [r for r in rs if r[column] is not None and op(float(r[column]), bound)]
        seqs = [int(r["steps"]) * batch for r in solved]
        out.append({"group": name, "n": len(rs), "solved": len(solved),
                    "rate": len(solved) / len(rs),
                    "median_sequences": statistics.median(seqs) if seqs else None,
                    "min_sequences": min(seqs) if seqs else None,
                    "max_sequences": max(seqs) if seqs else None})
    return out


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors as one ``error: ...`` line (exit status 2)."""

    def error(self, message):
        raise UserError(f"{message} (see {self.prog} --help)")


def run(argv=None) -> None:
    p = _Parser(prog="experiments/solve_rates.py", description=__doc__.split("\n\n")[0])
    p.add_argument("results_csv", help="a sweep's results.csv, or the sweep directory")
    p.add_argument("--solved", required=True, help="e.g. 'test_max_abs_error<0.04'")
    p.add_argument("--group_by", default=None, help="results.csv column (default: model.cell if present)")
    p.add_argument("--batch", type=int, default=1, help="sequences per training step")
    p.add_argument("--unit", default="sequences", help="what --batch counts (for the header)")
    a = p.parse_args(argv)
    if a.batch < 1:
        raise UserError(f"--batch must be >= 1 (sequences per training step), got {a.batch}")
    parse_criterion(a.solved)
    path = Path(a.results_csv)
    path = path / "results.csv" if path.is_dir() else path
    if not path.is_file():
        raise UserError(f"cannot read {path}: no such file (a sweep writes results.csv when it ends; "
                        "`python experiments/sweep.py --summarize DIR` writes it at any time)")
    from lstm_research.sweeps.results import read_results_csv

    try:
        rows = read_results_csv(path)
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror} (a sweep writes results.csv when it ends; "
                        "`python experiments/sweep.py --summarize DIR` writes it at any time)") from None
    except (csv.Error, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not a results.csv: {e}") from None
    if rows and not {"status", "steps"} <= set(rows[0]):
        raise UserError(f"{path} is not a sweep's results.csv (no 'status' and 'steps' columns)")
    group_by = a.group_by or ("model.cell" if rows and "model.cell" in rows[0] else None)
    table = solve_rates(rows, a.solved, group_by, a.batch)
    print(f"| {group_by or 'group'} | solved / finished | {a.unit} to solution: median [min-max] |")
    print("|---|---|---|")
    for t in table:
        seq = (f"{t['median_sequences']:,.0f} [{t['min_sequences']:,}-{t['max_sequences']:,}]"
               if t["solved"] else "-")
        print(f"| {t['group']} | {t['solved']} / {t['n']} ({100 * t['rate']:.0f}%) | {seq} |")
    from lstm_research.sweeps.stats import fisher_exact

    for t in table[1:]:
        p_value = fisher_exact(t["solved"], t["n"], table[0]["solved"], table[0]["n"])
        print(f"Fisher's exact test, {t['group']} against {table[0]['group']}: "
              f"{t['solved']}/{t['n']} vs {table[0]['solved']}/{table[0]['n']}, "
              f"two-sided p = {p_value:.3g}")


def main(argv=None) -> int:
    """:func:`run`, with a user error as one line ``error: ...`` on stderr and exit status 2."""
    try:
        run(argv)
    except UserError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
