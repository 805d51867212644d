"""``run.py`` with two test hooks, for tests/test_multiprocess.py and tests/test_slurm.py:

    python tests/multiprocess_worker.py [--crash_at=N] RUN.PY-ARGS...

``--crash_at=N`` raises an exception at the run's N-th train step (in every process of the job at
the same step, as when the whole job is lost; the checkpoints written before it stay). A run that
finishes writes its final params and carried recurrent state to ``<workdir>/params.npz`` (from
process 0, gathered from all processes), which the tests compare across process counts.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402

import run  # noqa: E402
from lstm_research.training import loop  # noqa: E402


class Crash(Exception):
    pass


def main(argv):
    crash_at = 0
    if len(argv) > 1 and argv[1].startswith("--crash_at="):
        crash_at = int(argv.pop(1).partition("=")[2])
    workdir = next(a.partition("=")[2] for a in argv if a.startswith("--workdir="))
    compile_, finish = loop.Trainer._compile, loop.Trainer._finish

    def _compile(self):
        compile_(self)
        real, n = self.train_step, [0]

        def step(*a):
            n[0] += 1
            if n[0] == crash_at:
                raise Crash
            return real(*a)
        self.train_step = step

    def _finish(self, arrays, meta, ckpt, n_params):
        leaves = [np.asarray(multihost_utils.process_allgather(x, tiled=True))
                  for x in jax.tree.leaves((arrays["params"], arrays["carries"]))]
        if jax.process_index() == 0:
            np.savez(Path(workdir) / "params.npz", *leaves)
        return finish(self, arrays, meta, ckpt, n_params)

    loop.Trainer._compile, loop.Trainer._finish = _compile, _finish
    try:
        return run.main(argv)
    except Crash:
        print(f"process {jax.process_index()}: crashed as planned", flush=True)
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
