"""One life of a run in the kill-storm test (tests/test_kill_storm.py): train a tiny config in
``workdir`` and SIGKILL itself at the instant ``KILL`` names:

* ``time:<s>``   s seconds after the first training step (a random instant);
* ``best:<n>``   right after the n-th best checkpoint of this life is written, before the latest
                 of the same step (best ahead of latest); at a random instant within
                 ``BEST_FALLBACK_S`` if no n-th best comes (validation may have stopped
                 improving: the life would otherwise run to the end);
* ``rename:<n>`` inside the n-th orbax save, all files written, before the tmp folder is renamed;
* ``append:<n>`` in the n-th ``metrics.jsonl`` record, half of the line written;
* ``sparse``     no kill, and checkpoints at evaluations only (when checkpoints are written is
                 not part of what a run computes: the reference run of the storm saves time so).

Without ``KILL`` it runs to the end. When the run is done it writes ``final.npz`` (every array of
the latest checkpoint) for the comparison.

python tests/kill_storm_worker.py WORKDIR CONFIG_NAME     (one life; KILL, KILL_STORM_STEPS from env)
python tests/kill_storm_worker.py --zygote                 (many lives, see :func:`zygote`)
"""
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from lstm_research.training import base_config  # noqa: E402
from lstm_research.training import checkpoint as ckpt_mod  # noqa: E402
from lstm_research.training import reporting  # noqa: E402
from lstm_research.training.loop import Trainer  # noqa: E402


def _tiny(c, steps):
    """A few cheap steps with a checkpoint every step and an evaluation every 4."""
    c.model.hidden_size = 4
    c.train.steps = steps
    c.train.eval_every = 4
    c.train.log_every = 1
    c.train.checkpoint_every = 1
    c.train.lr = 1e-2
    return c


def tiny_adding(steps=60):
    return _tiny(base_config("adding", T=6, batch_size=8, eval_size=32), steps)


def tiny_stateful(steps=60):
    c = base_config("continual_reber", batch_size=2, bptt=4, steps_per_epoch=6, eval_size=2,
                    eval_length=24)
    c.model.dropout = 0.1
    return _tiny(c, steps)


CONFIGS = {"adding": tiny_adding, "stateful": tiny_stateful}


def die():
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)


BEST_FALLBACK_S = 3.0


def arm(kill: str, trainer: Trainer):
    how, _, arg = kill.partition(":")
    if how == "best":
        rng = random.Random(os.getpid())  # every life is a process of its own
        arm(f"time:{rng.uniform(BEST_FALLBACK_S / 2, BEST_FALLBACK_S):.3f}", trainer)
    count = [0]

    def nth():
        count[0] += 1
        return count[0] == int(arg)

    if how == "time":
        real_step, started = trainer.train_step, []

        def step(*a):
            out = real_step(*a)
            if not started:
                started.append(threading.Timer(float(arg), die))
                started[0].daemon = True
                started[0].start()
            return out
        trainer.train_step = step
    elif how == "best":
        real_best = ckpt_mod.Checkpoints.save_best

        def save_best(self, *a, **k):
            real_best(self, *a, **k)
            if nth():
                die()
        ckpt_mod.Checkpoints.save_best = save_best
    elif how == "rename":
        from orbax.checkpoint._src.path import async_path
        real_rename = async_path.rename

        async def rename(src, dst):
            if nth():
                die()
            return await real_rename(src, dst)
        async_path.rename = rename
    elif how == "append":
        real_write = reporting.Reporter._write

        def write(self, record):
            if nth() and self.is_main:
                import json
                line = json.dumps(record) + "\n"
                self.file.write(line[:len(line) // 2])
                self.file.flush()
                die()
            real_write(self, record)
        reporting.Reporter._write = write
    elif how:
        raise SystemExit(f"unknown KILL={kill!r}")


def life(workdir, name, kill, steps):
    config = CONFIGS[name](steps)
    if kill == "sparse":  # no kill; checkpoints only at evaluations (the reference run)
        config.train.checkpoint_every, kill = 0, ""
    trainer = Trainer(config, workdir, progress=False)
    arm(kill, trainer)
    result = trainer.run()
    if result.get("status") == "done":
        like = trainer.init_state()[0]
        arrays, meta = ckpt_mod.Checkpoints(workdir).restore_latest(like)
        leaves = jax.tree_util.tree_leaves_with_path(arrays)
        np.savez(Path(workdir) / "final.npz",
                 **{jax.tree_util.keystr(p): np.asarray(x) for p, x in leaves})


def zygote():
    """Start every life as a fork of this process, which has imported JAX, Flax, orbax and the
    project but not started JAX's backend (no threads yet): each life is still a process of its
    own, killed by a real SIGKILL, but it starts in milliseconds instead of seconds of imports.
    Reads ``WORKDIR NAME KILL STEPS`` lines (KILL may be ``-``) from stdin and answers each with
    the life's exit status (negative: killed by that signal) once it has ended."""
    from jax._src import xla_bridge
    for line in sys.stdin:
        workdir, name, kill, steps = line.split()
        assert not xla_bridge._backends, "the zygote must not start JAX's backend"
        pid = os.fork()
        if pid == 0:
            os.dup2(2, 1)  # the life's prints go to stderr: stdout carries only exit statuses
            code = 0
            try:
                life(workdir, name, "" if kill == "-" else kill, int(steps))
            except BaseException:  # noqa: BLE001 - reported through the exit status
                import traceback
                traceback.print_exc()
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        print(code, flush=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["--zygote"]:
        zygote()
    else:
        life(sys.argv[1], sys.argv[2], os.environ.get("KILL", ""),
             int(os.environ.get("KILL_STORM_STEPS", "60")))
