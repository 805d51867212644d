#!/usr/bin/env python
"""Sweeps and ablations from the command line; summaries with Welch tests and plots.

Run (from the repo root)::

  # Greff-style ablation of the 9 cell variants x 2 seeds, 2 trials at a time:
  python experiments/sweep.py --config=configs/adding.py --sweep_dir=sweeps/abl \\
      --ablation --grid seed=0,1 --parallel 2 --set train.steps=200

  # grid x zip x random search (20 log-uniform learning rates per grid point):
  python experiments/sweep.py --config=configs/adding.py --sweep_dir=sweeps/lr \\
      --grid model.cell=vanilla,cifg --grid seed=0:3 --random train.lr='loguniform(1e-4,1e-2)' --trials 20

  # re-summarize an existing sweep dir (results.csv, summary.md, PNGs):
  python experiments/sweep.py --summarize sweeps/abl [--group_by model.cell --baseline vanilla]

Fixed overrides: ``--set train.steps=200`` or, equivalently, ``--config.train.steps=200``.
Re-running the same command resumes: done trials are skipped, unfinished ones relaunched (they resume
from their checkpoints), failed ones only with --retry_failed. ^C / SIGTERM stops the running trials
cleanly (SIGTERM, so they checkpoint). ``--workers [N]`` runs the trials in N long-lived processes
(default: one per CPU available) instead of one process per trial; ``--pack K`` trains up to K trials that
share a compiled program as one vmapped program; see lstm_research/sweeps/README.md. Every key and value of the sweep is checked against the trial
config before anything is launched or written (``--dry_run`` included). Exit status: 0 when every trial
is done, 1 if some failed or are unfinished, 128+signal when interrupted, 2 on a user error (one line
``error: ...`` on stderr).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from lstm_research.errors import UserError  # noqa: E402


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors as one ``error: ...`` line (exit status 2)."""

    def error(self, message):
        raise UserError(f"{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="experiments/sweep.py", description=__doc__.split("\n\n")[0], allow_abbrev=False,
        epilog="See the module docstring (python -c 'help(\"experiments.sweep\")') for examples.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("sweep definition")
    g.add_argument("--config", help="trial config file, optionally with :variant (passed to run.py)")
    g.add_argument("--sweep_dir", help="directory holding sweep.json, one subdir per trial, results")
    g.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2|A:B[:S]",
                   help="grid axis (repeatable; cartesian product)")
    g.add_argument("--zip", action="append", default=[], metavar="KEY=V1,V2",
                   help="zipped axis (repeatable; all --zip axes advance together, same length)")
    g.add_argument("--random", action="append", default=[], metavar="KEY=DIST(...)",
                   help="random axis: uniform(a,b) loguniform(a,b) choice(a,b,..) int_uniform(a,b) "
                        "int_loguniform(a,b) (int bounds inclusive); needs --trials")
    g.add_argument("--trials", type=int, default=None, help="random draws per grid point")
    g.add_argument("--sweep_seed", type=int, default=0, help="seed of the random draws")
    g.add_argument("--ablation", action="store_true",
                   help="add the Greff ablation axis model.cell over vanilla,nig,nfg,nog,niaf,noaf,np,cifg,fgr")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="fixed override for every trial (repeatable); --config.KEY=VALUE also works")
    r = p.add_argument_group("execution")
    r.add_argument("--parallel", type=int, default=1, help="trials at once")
    r.add_argument("--workers", type=int, nargs="?", const="auto", default=None, metavar="N",
                   help="run the trials in N long-lived worker processes (data loaded and programs "
                        "compiled once per worker, a shared compilation cache); --workers alone: one per "
                        "CPU this process may use (os.sched_getaffinity). Replaces --parallel")
    r.add_argument("--pack", type=int, default=None, metavar="K",
                   help="train up to K trials that share a compiled program (they differ only in seed, "
                        "optimizer hyperparameters, input noise, initial gate biases or LSTM width) as one "
                        "vmapped program per process (for accelerators; on the 2-core CPU workers are faster: "
                        "see README)")
    r.add_argument("--worker_max_trials", type=int, default=argparse.SUPPRESS,
                   help="a worker is replaced after this many trials (default: 300, "
                        "lstm_research.sweeps.workers.WorkerOptions)")
    r.add_argument("--worker_max_rss_gb", type=float, default=4.0,
                   help="a worker is replaced when its resident memory exceeds this (GB) after a trial")
    r.add_argument("--executor", default="local", choices=("local", "submitit_local", "slurm"))
    r.add_argument("--retry_failed", action="store_true", help="rerun failed trials")
    r.add_argument("--restore_results", default=None, metavar="RESULTS_CSV",
                   help="first record the done trials of RESULTS_CSV (this sweep's results.csv, e.g. committed "
                        "from a machine whose sweep directory is gone) as done, then run the rest; their "
                        "curves and checkpoints are not restored")
    r.add_argument("--overwrite", action="store_true",
                   help="replace a different spec in --sweep_dir (trial dirs are kept and reused)")
    r.add_argument("--dry_run", action="store_true", help="print the trials and their commands, run nothing")
    r.add_argument("--entry", default="run.py", help="trial script, relative to --cwd")
    r.add_argument("--python", default=sys.executable, help="python executable for the trials")
    r.add_argument("--cwd", default=str(REPO_ROOT), help="working directory of the trials")
    r.add_argument("--gpus", default=None,
                   help="local executor: comma-separated device ids assigned round-robin per slot")
    r.add_argument("--kill_timeout", type=float, default=60.0,
                   help="seconds a trial gets after SIGTERM to save a checkpoint before SIGKILL")
    r.add_argument("--no_progress", action="store_true", help="no progress bar")
    s = p.add_argument_group("slurm / submitit")
    s.add_argument("--slurm_partition", default=None)
    s.add_argument("--slurm_time", type=int, default=240, help="job time limit in minutes")
    s.add_argument("--slurm_cpus", type=int, default=None, help="cpus per task")
    s.add_argument("--slurm_gpus", type=int, default=None, help="gpus per node")
    s.add_argument("--slurm_mem_gb", type=float, default=None)
    s.add_argument("--slurm_account", default=None)
    s.add_argument("--slurm_qos", default=None)
    s.add_argument("--slurm_constraint", default=None)
    o = p.add_argument_group("summary")
    o.add_argument("--summarize", metavar="SWEEP_DIR", default=None,
                   help="only (re)write results.csv, summary.md and the plots of SWEEP_DIR")
    o.add_argument("--group_by", default=None, help="comma-separated swept key(s) defining groups")
    o.add_argument("--baseline", default=None, help="baseline group (default vanilla for model.cell)")
    o.add_argument("--metric", default=None, help="metric to summarize (default: the trials' primary)")
    o.add_argument("--higher_is_better", action="store_true", default=None,
                   help="for a --metric other than the primary one")
    o.add_argument("--alpha", type=float, default=0.05, help="significance level")
    o.add_argument("--top", type=float, default=None, metavar="FRACTION",
                   help="also analyze each group's best FRACTION of trials, ranked by validation "
                        "(Greff et al. 2015: 0.1): table, Welch tests, box_<metric>_top.png")
    o.add_argument("--holm", action="store_true",
                   help="Holm-adjust the p-values of each table's comparisons with the baseline "
                        "(verdicts and the box plots' significance marks use the adjusted p)")
    o.add_argument("--no_plots", action="store_true")
    o.add_argument("--no_summary", action="store_true", help="do not summarize after running")
    return p


def _summarize(sweep_dir: str, args) -> None:
    if not (Path(sweep_dir) / "sweep.json").is_file():  # before the (slower) summary imports
        what = "does not exist" if not Path(sweep_dir).exists() else "has no sweep.json"
        raise UserError(f"--summarize {sweep_dir}: not a sweep directory, it {what} "
                        "(pass the --sweep_dir of a sweep that has started)")
    from lstm_research.sweeps.summary import summarize

    out = summarize(sweep_dir, group_by=args.group_by, baseline=args.baseline, metric=args.metric,
                    lower_is_better=None if args.higher_is_better is None else not args.higher_is_better,
                    alpha=args.alpha, plots=not args.no_plots, top=args.top,
                    holm_adjust=args.holm)
    print(f"wrote {out['results_csv']}\nwrote {out['summary_md']}")
    for p in out["plots"]:
        print(f"wrote {p}")


def _worker_options(args):
    from lstm_research.sweeps.workers import WorkerOptions, available_cpus

    given = ({"max_trials": args.worker_max_trials} if hasattr(args, "worker_max_trials")
             else {})
    return WorkerOptions(workers=available_cpus() if args.workers == "auto" else args.workers,
                         max_rss_gb=args.worker_max_rss_gb, **given)


def _check_args(args) -> None:
    """Numbers that make no sense, refused before anything runs."""
    from lstm_research.sweeps.check import check_run_options

    check_run_options(args.executor, args.parallel, args.workers is not None, args.pack, args.kill_timeout)
    if args.top is not None and not 0 < args.top <= 1:
        raise UserError(f"--top must be a fraction in (0, 1], e.g. 0.1, got {args.top:g}")
    if not 0 < args.alpha < 1:
        raise UserError(f"--alpha must be a significance level in (0, 1), e.g. 0.05, got {args.alpha:g}")
    if args.workers is not None:
        _worker_options(args)  # its own checks
    if args.slurm_time < 1:
        raise UserError(f"--slurm_time must be >= 1 minute, got {args.slurm_time}")


def run(argv: list[str] | None = None) -> int:
    """The command; a :class:`UserError` leaves it before anything is launched or written."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    fixed = list(args.set)
    for arg in unknown:
        if arg.startswith("--config.") and "=" in arg:
            fixed.append(arg[len("--config."):])
        else:
            parser.error(f"unrecognized argument {arg!r} (fixed config overrides: --set KEY=VALUE "
                         "or --config.KEY=VALUE)")
    _check_args(args)
    if args.summarize:
        _summarize(args.summarize, args)
        return 0
    if not args.config or not args.sweep_dir:
        parser.error("--config and --sweep_dir are required to run a sweep (or use --summarize DIR)")
    from lstm_research.sweeps.check import check_spec
    from lstm_research.sweeps.spec import spec_from_strings

    spec = spec_from_strings(args.config, grid=args.grid, zip=args.zip, random=args.random,
                             trials=args.trials, sweep_seed=args.sweep_seed, ablation=args.ablation,
                             fixed=fixed)
    if args.dry_run:
        import shlex

        check_spec(spec, Path(args.cwd).resolve())
        for t in spec.expand():
            workdir = os.path.join(args.sweep_dir, t.id)
            print(t.id + "\n    " + shlex.join(spec.command(t, workdir, python="python", entry=args.entry)))
        print(f"{len(spec)} trials")
        if args.pack:
            from lstm_research.sweeps.packs import plan_packs

            packs = plan_packs(spec, Path(args.sweep_dir), spec.run_order(spec.expand()), args.pack,
                               Path(args.cwd).resolve())
            for p in packs:
                print(f"{p.id}: {', '.join(t.id for t in p.trials)}")
            print(f"{len(packs)} packs")
        return 0
    from lstm_research.sweeps.scheduler import SubmititOptions, run_sweep

    options = SubmititOptions(partition=args.slurm_partition, time_min=args.slurm_time,
                              cpus_per_task=args.slurm_cpus, gpus_per_node=args.slurm_gpus,
                              mem_gb=args.slurm_mem_gb, account=args.slurm_account, qos=args.slurm_qos,
                              constraint=args.slurm_constraint,
                              job_name=f"sweep-{Path(args.sweep_dir).name}")
    workers = None
    if args.workers is not None:
        workers = _worker_options(args)
    report = run_sweep(spec, args.sweep_dir, parallel=args.parallel, executor=args.executor,
                       entry=args.entry, python=args.python, cwd=args.cwd,
                       retry_failed=args.retry_failed, overwrite=args.overwrite,
                       kill_timeout=args.kill_timeout,
                       gpus=args.gpus.split(",") if args.gpus else None, submitit_options=options,
                       workers=workers, pack=args.pack, progress=not args.no_progress,
                       restore_from=args.restore_results)
    c = report.counts
    print(f"sweep {report.sweep_dir}: " + ", ".join(f"{n} {s}" for s, n in c.items() if n))
    if report.interrupted is not None:
        print("interrupted; rerun the same command to finish the sweep", file=sys.stderr)
        return 128 + int(report.interrupted)
    if not args.no_summary:
        _summarize(args.sweep_dir, args)
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    """:func:`run`, with a user error as one line ``error: ...`` on stderr and exit status 2."""
    try:
        return run(argv)
    except UserError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
