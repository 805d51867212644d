"""Orbax checkpoints of a run: the latest state (for resuming) and the best-by-validation one.

A checkpoint holds the arrays of the training state (params, optimizer state, carried recurrent
state) and a JSON record of the loop's bookkeeping (step, best metric, early-stopping and
plateau counters), so a resumed run continues exactly where the saved one was.
"""
from __future__ import annotations

from pathlib import Path

import jax
import orbax.checkpoint as ocp


class Checkpoints:
    def __init__(self, workdir: str | Path):
        root = Path(workdir).absolute() / "checkpoints"
        opts = ocp.CheckpointManagerOptions(max_to_keep=1, create=True,
                                            enable_async_checkpointing=False)
        self.latest = ocp.CheckpointManager(root / "latest", options=opts)
        self.best = ocp.CheckpointManager(root / "best", options=opts)

    @staticmethod
    def _save(manager, step, arrays, meta):
        manager.save(step, args=ocp.args.Composite(arrays=ocp.args.StandardSave(arrays),
                                                   meta=ocp.args.JsonSave(meta)), force=True)
        manager.wait_until_finished()

    def save_latest(self, step, arrays, meta):
        self._save(self.latest, step, arrays, meta)

    def save_best(self, step, arrays, meta):
        self._save(self.best, step, arrays, meta)

    @staticmethod
    def _restore(manager, like):
        step = manager.latest_step()
        if step is None:
            return None
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, 'sharding', None)),
            like)
        out = manager.restore(step, args=ocp.args.Composite(
            arrays=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        return out["arrays"], out["meta"]

    def restore_latest(self, like):
        """(arrays, meta) of the latest checkpoint shaped like ``like``, or None."""
        return self._restore(self.latest, like)

    def restore_best(self, like):
        return self._restore(self.best, like)

    def close(self):
        self.latest.close()
        self.best.close()
