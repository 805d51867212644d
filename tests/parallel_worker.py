"""Worker for test_parallel.py: train a small stateful model on however many (forced CPU)
devices this process has; optionally crash at a step. Writes the final params to params.npz.

``parallel_worker.py WORKDIR[:CRASH_AT[:MODEL_AXIS[:EVAL_SIZE]]] ...`` runs the jobs one after the other in
this process (one process start per device count, not per job)."""
import sys
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lstm_research.training.checkpoint import Checkpoints  # noqa: E402
from lstm_research.training.loop import Trainer  # noqa: E402

from conftest import small_config  # noqa: E402  (tests/ is this script's folder)


def config():
    # continual Reber: the recurrent state of each of the 8 streams is carried across batches
    return small_config("continual_reber", batch_size=8, bptt=6, steps_per_epoch=5, eval_size=4,
                        eval_length=40, num_layers=2, dropout=0.1, steps=16, eval_every=4,
                        log_every=4, lr=1e-2)


class Crash(Exception):
    pass


def main(workdir, crash_at=0, model_axis=1, eval_size=4):
    workdir = Path(workdir)
    c = config()
    c.parallel.model_axis, c.task.eval_size = model_axis, eval_size
    t = Trainer(c, workdir, progress=False)
    if crash_at:
        real, n = t.train_step, [0]

        def step(*a):
            n[0] += 1
            if n[0] == crash_at:
                raise Crash
            return real(*a)
        t.train_step = step
        try:
            t.run()
        except Crash:
            print("JOB crashed as planned")
            return
    result = t.run()
    arrays, meta = Checkpoints(workdir).restore_latest(t.init_state()[0])
    leaves = [np.asarray(x) for x in jax.tree.leaves(arrays["params"])]
    carries = [np.asarray(x) for x in jax.tree.leaves(arrays["carries"])]
    np.savez(workdir / "params.npz", *leaves, *carries)
    sharded = sum(1 for x in jax.tree.leaves(arrays["params"]) if "model" in str(x.sharding.spec))
    print("JOB devices", jax.device_count(), "step", meta["step"], "model-sharded params", sharded,
          "test", result["test"])


if __name__ == "__main__":
    for job in sys.argv[1:]:
        workdir, *numbers = job.split(":")
        main(workdir, *map(int, numbers))
