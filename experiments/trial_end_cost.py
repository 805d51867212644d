#!/usr/bin/env python
"""What the end of a Greff JSB trial costs in a worker: its checkpoint saves and the rest.

In one process pinned to one CPU (as a sweep worker), on ``configs/papers/greff2015.py:paper``:

* ``--pairs`` pairs of saves (best, then latest) of a trial's state at ``--width`` through
  ``training.checkpoint.Checkpoints``, as the loop saves at the end of a trial: wall time and
  CPU time of all the process's threads per pair (orbax writes from threads of its own);
* ``--trials`` one-epoch trials at that width through ``run.py``'s ``main`` after two warm-up
  trials, so the programs are held in memory (a worker's trial at a width it holds): the median
  and the minimum of their wall times.

Run it on an otherwise idle machine; compare code versions interleaved (A, B, B, A)::

  python experiments/trial_end_cost.py --width 40
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# (CONFIG is relative to REPO_ROOT, where main changes to; the import puts it on sys.path)
from sweep_throughput import CONFIG, REPO_ROOT, pin_to_one_cpu  # noqa: E402


def save_pairs(width: int, pairs: int) -> tuple[float, float]:
    """(wall, CPU) seconds per pair of saves of a width-``width`` Greff trial's state."""
    from lstm_research.training.checkpoint import Checkpoints
    from lstm_research.training.loop import Trainer
    from lstm_research.training.validate import load_config_file
    config = load_config_file(CONFIG)
    config.model.hidden_size = width
    work = Path(tempfile.mkdtemp())
    arrays, meta = Trainer(config, work / "trial", progress=False).init_state()
    ckpt = Checkpoints(work / "ckpt")

    def pair(step):
        ckpt.save_best(step, {"params": arrays["params"]}, dict(meta, step=step))
        ckpt.save_latest(step, arrays, dict(meta, step=step))
    for step in range(1, 4):  # warm-up
        pair(step)
    wall, cpu = time.perf_counter(), time.process_time()
    for step in range(4, 4 + pairs):
        pair(step)
    return (time.perf_counter() - wall) / pairs, (time.process_time() - cpu) / pairs


def held_trials(width: int, trials: int) -> list[float]:
    """Wall seconds of ``trials`` one-epoch trials at ``width``, after two warm-up trials."""
    import run
    work = tempfile.mkdtemp()

    def trial(i):
        argv = ["run.py", f"--config={CONFIG}",
                f"--config.model.hidden_size={width}", "--config.train.epochs=1",
                "--config.train.patience=0", f"--config.lr={1e-3 * (i + 1)}",
                f"--workdir={work}/{i}", "--noprogress"]
        start = time.perf_counter()
        assert run.main(argv) in (0, None)
        return time.perf_counter() - start
    trial(0), trial(1)
    return [trial(i) for i in range(2, 2 + trials)]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=int, default=40)
    p.add_argument("--pairs", type=int, default=20)
    p.add_argument("--trials", type=int, default=6)
    args = p.parse_args()
    pin_to_one_cpu()
    os.chdir(REPO_ROOT)
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp())
    wall, cpu = save_pairs(args.width, args.pairs)
    times = held_trials(args.width, args.trials)
    print(f"width {args.width}: a pair of saves (best, latest) {wall:.3f} s wall, {cpu:.3f} s CPU; "
          f"a held width's 1-epoch trial {statistics.median(times):.3f} s median, "
          f"{min(times):.3f} s min ({args.trials} trials)")


if __name__ == "__main__":
    main()
