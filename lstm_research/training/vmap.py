"""K trials of one small model in ONE jit-compiled program, with ``jax.vmap``.

``train.vmap_trials=K`` trains seeds ``seed, seed+1, ..., seed+K-1`` (each with its own init,
data stream and dropout keys, as K separate runs would); ``train.vmap_lrs="1e-3,3e-3,..."``
instead trains one seed with K learning rates. Each trial's results land in
``workdir/trial_<k>/result.json`` in the format of a single run, and equal those of K separate
``run.py`` runs (up to float rounding: a batched matmul may sum in another order). Small models
leave a CPU core mostly idle between tiny kernels; batching K of them fills it (see README for
the measured speedup).

Per-trial early stopping and ``train.target`` would make the trials diverge in length, so they
are refused here; everything else (schedules, clipping, dropout, stateful tasks) works.
"""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from lstm_research import models
from lstm_research.errors import UserError
from lstm_research.training import optim, parallel, steps
from lstm_research.training.batches import pad_time, pad_to_longest
from lstm_research.training.checkpoint import Checkpoints
from lstm_research.training.reporting import Reporter
from lstm_research.training.results import merge_eval_sums, run_result, summary_line
from lstm_research.training.workdir import prepare_workdir


def trial_configs(config):
    tc = config.train
    lrs = [float(v) for v in str(tc.vmap_lrs).split(",") if v.strip()]
    if tc.patience or tc.target is not None:
        raise UserError("train.patience and train.target stop trials at different steps; "
                         "they cannot be used with vmap trials")
    if tc.schedule == "plateau":
        raise UserError("train.schedule='plateau' depends on each trial's validation history; "
                         "it cannot be used with vmap trials")
    out = []
    for k in range(len(lrs) or tc.vmap_trials):
        c = copy.deepcopy(config)
        with c.unlocked():
            c.train.vmap_trials, c.train.vmap_lrs = 0, ""
            if lrs:
                c.train.lr = lrs[k]
            else:
                c.seed = config.seed + k
        out.append(c)
    return out


def _stack(trees):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


class _Trial:
    """One trial's own pieces: its config, workdir and task (the data stream of its seed)."""

    def __init__(self, config, workdir, mesh, overwrite):
        self.config, self.workdir = config, workdir
        prepare_workdir(config, workdir, overwrite)
        self.task = steps.build_task(config, mesh)


class VmapTrainer:
    def __init__(self, config, workdir, overwrite=False, progress=True):
        self.workdir = Path(workdir)
        prepare_workdir(config, self.workdir, overwrite)
        self.configs = trial_configs(config)
        parallel.initialize_distributed(config.parallel)
        self.mesh = parallel.make_mesh(config.parallel.model_axis)
        self.trials = [_Trial(c, self.workdir / f"trial_{k}", self.mesh, overwrite)
                       for k, c in enumerate(self.configs)]
        c0, self.task = self.configs[0], self.trials[0].task
        self.model = models.build(c0.model, self.task)
        self.total_steps, self.eval_every = steps.run_length(c0.train, self.task)
        self.tx = optim.build_optimizer(c0.train)
        self.progress = progress
        self.apply = steps.make_apply(self.model, self.task, c0.train.input_noise > 0)
        train_step, eval_step = steps.make_steps(self.apply, self.task, c0.train)
        self.train_step = jax.jit(jax.vmap(train_step))
        self.eval_step = jax.jit(jax.vmap(eval_step))

    def _zero_carries(self, params, batch):
        if not self.task.stateful:
            return None
        one = jax.tree.map(lambda x: x[0], (params, batch))
        return _stack([steps.zero_carries(self.apply, self.task, self.mesh, *one)]
                      * len(self.trials))

    def evaluate(self, params, split):
        sums, carries = None, None
        for batches in zip(*(t.task.eval_batches(split) for t in self.trials)):
            batches = pad_to_longest([pad_time(b) for b in batches])
            reset = bool(batches[0].pop("reset", carries is None))
            for b in batches[1:]:
                b.pop("reset", None)
            batch = _stack([jax.tree.map(jnp.asarray, b) for b in batches])
            if self.task.stateful and (reset or carries is None):
                carries = self._zero_carries(params, batch)
            s, carries = self.eval_step(params, batch, carries)
            sums = merge_eval_sums(sums, jax.device_get(s))
        return [{k: float(v) for k, v in self.task.summarize(
            {name: val[i] for name, val in sums.items()}).items()}
            for i in range(len(self.trials))]

    def run(self) -> list[dict]:
        K = len(self.trials)
        arrays = _stack([steps.init_arrays(t.config, t.task, self.model, self.tx, self.mesh,
                                           self.apply) for t in self.trials])
        arrays["best_params"] = arrays["params"]
        meta = {"step": 0, "best": [None] * K, "best_step": [-1] * K, "best_valid": [None] * K,
                "wall_time": 0.0}
        ckpt = Checkpoints(self.workdir)
        restored = ckpt.restore_latest(arrays)
        if restored is not None:
            arrays, meta = restored
        reporter = Reporter(self.workdir, True, resume_step=meta["step"])
        reporter.start(self.total_steps, meta["step"], self.progress)
        streams = [t.task.train_batches(meta["step"]) for t in self.trials]
        keys = [jax.random.key(c.seed + 1) for c in self.configs]
        seg = time.time()
        try:
            while meta["step"] < self.total_steps:
                step = meta["step"]
                batches = pad_to_longest([pad_time(next(s)) for s in streams])
                reset = bool(batches[0].pop("reset", False))
                for b in batches[1:]:
                    b.pop("reset", None)
                batch = _stack([jax.tree.map(jnp.asarray, b) for b in batches])
                if self.task.stateful and reset:
                    arrays["carries"] = self._zero_carries(arrays["params"], batch)
                hyper = _stack([optim.runtime_hyperparams(c.train, optim.learning_rate(
                    c.train, step, self.task.steps_per_epoch, self.total_steps, 1.0))
                    for c in self.configs])
                step_keys = jnp.stack([jax.random.fold_in(k, step) for k in keys])
                params, opt_state, carries, m = self.train_step(
                    arrays["params"], arrays["opt_state"], batch, arrays["carries"], step_keys,
                    hyper)
                arrays.update(params=params, opt_state=opt_state, carries=carries)
                meta["step"] = step + 1
                if meta["step"] % self.configs[0].train.log_every == 0:
                    losses = np.asarray(m["loss"])
                    reporter.train(meta["step"], loss=float(losses.mean()), lr=float(hyper["lr"][0]),
                                   losses=losses.tolist())
                if meta["step"] % self.eval_every == 0 or meta["step"] == self.total_steps:
                    self._validate(arrays, meta, reporter)
                    meta["wall_time"] += time.time() - seg
                    seg = time.time()
                    ckpt.save_latest(meta["step"], arrays, meta)
            reporter.end()
            return self._finish(arrays, meta, seg)
        finally:
            reporter.close()
            ckpt.close()

    def _validate(self, arrays, meta, reporter):
        results = self.evaluate(arrays["params"], "valid")
        better = []
        for k, r in enumerate(results):
            v, best = r[self.task.metric], meta["best"][k]
            ok = best is None or (v < best if self.task.lower_is_better else v > best)
            better.append(ok)
            if ok:
                meta["best"][k], meta["best_step"][k], meta["best_valid"][k] = v, meta["step"], r
        mask = jnp.array(better)
        arrays["best_params"] = jax.tree.map(
            lambda new, old: jnp.where(mask.reshape((-1,) + (1,) * (new.ndim - 1)), new, old),
            arrays["params"], arrays["best_params"])
        reporter.valid(meta["step"], {self.task.metric: float(np.mean([r[self.task.metric]
                                                                       for r in results]))})

    def _finish(self, arrays, meta, seg):
        tests = self.evaluate(arrays["best_params"], "test")
        wall = meta["wall_time"] + time.time() - seg
        n_params = models.count_params(jax.tree.map(lambda x: x[0], arrays["params"]))
        out = []
        for k, t in enumerate(self.trials):
            r = run_result(t.config, self.task, valid=meta["best_valid"][k], test=tests[k],
                           best_step=meta["best_step"][k], steps=meta["step"],
                           stopped="all steps done",
                           wall_time=round(wall / len(self.configs), 2), num_params=n_params,
                           vmap_trials=len(self.configs))
            (t.workdir / "result.json").write_text(json.dumps(r, indent=2))
            print(f"trial {k}: " + summary_line(r))
            out.append(r)
        (self.workdir / "result.json").write_text(json.dumps(
            {"status": "done", "vmap_trials": out, "wall_time": round(wall, 2)}, indent=2))
        return out
