"""The training loop: train, validate on a schedule, checkpoint, stop early, test the best.

Everything a step needs is a function of the global step number (the task's batch, the
dropout key, the learning rate), and the checkpoint holds the rest (params, optimizer state,
carried recurrent state, the loop's counters), so a run killed at any point and started again
ends with exactly the metrics of an uninterrupted run.
"""
from __future__ import annotations

import json
import math
import shutil
import signal
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from lstm_research import models, tasks
from lstm_research.errors import UserError
from lstm_research.training import optim, parallel
from lstm_research.training.checkpoint import Checkpoints
from lstm_research.training.reporting import Reporter, write_atomic

TIME_BUCKET = 32  # variable-length batches are padded to a multiple of this (fewer recompiles)


class NonFiniteLoss(RuntimeError):
    pass


class WorkdirMismatch(UserError):
    pass


def pad_time_to(batch: dict, T: int) -> dict:
    """Zero-pad the time axis of a variable-length batch's ``x`` and per-step ``y`` to ``T``."""
    t = batch["x"].shape[1]
    if "lengths" not in batch or t == T:
        return batch
    out = dict(batch)
    for k in ("x", "y"):
        if batch[k].ndim >= 2 and batch[k].shape[1] == t:
            pad = [(0, 0)] * batch[k].ndim
            pad[1] = (0, T - t)
            out[k] = np.pad(batch[k], pad)
    return out


def _pad_time(batch: dict) -> dict:
    """Pad variable-length batches along time to a multiple of TIME_BUCKET."""
    T = batch["x"].shape[1]
    return pad_time_to(batch, T + (-T % TIME_BUCKET))


def prepare_workdir(config, workdir: Path, overwrite: bool) -> None:
    """Refuse a workdir that holds a run of a different config, unless ``overwrite``."""
    saved = workdir / "config.json"
    current = json.loads(config.to_json_best_effort())
    if saved.exists():
        old = json.loads(saved.read_text())
        if old != current:
            if not overwrite:
                diff = sorted(_diff(old, current))
                raise WorkdirMismatch(
                    f"workdir {workdir} holds a run of a different config (differs in: "
                    f"{', '.join(diff[:10])}); use another --workdir, or --overwrite to "
                    "discard that run")
            shutil.rmtree(workdir)
    elif overwrite and workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if not saved.exists():
        write_atomic(saved, json.dumps(current, indent=2, sort_keys=True))


def _diff(a, b, prefix=""):
    keys = set(a) | set(b) if isinstance(a, dict) and isinstance(b, dict) else set()
    for k in keys:
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            yield from _diff(a[k], b[k], f"{prefix}{k}.")
        elif a.get(k) != b.get(k):
            yield f"{prefix}{k}"


class Trainer:
    def __init__(self, config, workdir, overwrite=False, progress=True):
        self.config, self.workdir = config, Path(workdir)
        parallel.initialize_distributed(config.parallel)
        self.is_main = jax.process_index() == 0
        self.task = tasks.build(config.task, config.seed)
        self.mesh = parallel.make_mesh(config.parallel.model_axis)
        if hasattr(self.task, "batch_size"):
            self.task.batch_size = parallel.global_batch_size(
                self.task.batch_size, config.parallel, self.mesh)
        self.model = models.build(config.model, self.task)
        tc = config.train
        spe = self.task.steps_per_epoch
        if tc.epochs and not spe:
            raise ValueError(f"train.epochs is set but task {self.task.name!r} has no epochs; "
                             "use train.steps")
        self.total_steps = tc.epochs * spe if tc.epochs else tc.steps
        self.eval_every = tc.eval_every or spe or max(self.total_steps // 10, 1)
        self.tx = optim.build_optimizer(tc)
        self.progress = progress
        self._stop_requested = False
        self._compile()
        if self.is_main:  # last: a config that fails above leaves nothing in the workdir
            prepare_workdir(config, self.workdir, overwrite)

    # --- pure functions, jit-compiled -----------------------------------------------------
    def _apply(self, params, batch, carries, train, key):
        x = batch["x"]
        if train and self.config.train.input_noise and not self.task.token_inputs:
            x = x + self.config.train.input_noise * jax.random.normal(
                jax.random.fold_in(key, 1), x.shape, x.dtype)
        return self.model.apply({"params": params}, x, carries, batch.get("lengths"),
                                train=train, rngs={"dropout": key} if train else None)

    def _compile(self):
        task = self.task

        def train_step(params, opt_state, batch, carries, key, lr):
            def loss_fn(p):
                out, new_carries = self._apply(p, batch, carries, True, key)
                loss, _ = task.loss(out, batch)
                return loss, new_carries
            (loss, new_carries), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
            opt_state = optim.set_learning_rate(opt_state, lr)
            updates, opt_state = self.tx.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            carries_out = jax.lax.stop_gradient(new_carries) if task.stateful else None
            return params, opt_state, carries_out, {"loss": loss,
                                                    "grad_norm": optax.tree.norm(grads)}

        def eval_step(params, batch, carries):
            out, new_carries = self._apply(params, batch, carries, False, None)
            _, sums = task.loss(out, batch)
            return sums, (new_carries if task.stateful else None)

        self.train_step_fn, self.eval_step_fn = train_step, eval_step
        self.train_step = jax.jit(train_step, donate_argnums=(0, 1))
        self.eval_step = jax.jit(eval_step)

    def zero_carries(self, params, batch):
        if not self.task.stateful:
            return None
        shapes = jax.eval_shape(lambda p, b: self._apply(p, b, None, False, None)[1], params, batch)
        return parallel.shard_batch(self.mesh, jax.tree.map(
            lambda s: np.zeros(s.shape, s.dtype), shapes))

    # --- state ----------------------------------------------------------------------------
    def init_state(self):
        key = jax.random.key(self.config.seed)
        k_init, k_reinit = jax.random.split(key)
        batch = _pad_time(next(iter(self.task.train_batches(0))))
        batch.pop("reset", None)
        variables = self.model.init(k_init, batch["x"], None, batch.get("lengths"))
        params = optim.initialize(self.config.train, variables["params"], k_reinit)
        params = parallel.shard_params(self.mesh, params)
        opt_state = parallel.shard_params(self.mesh, self.tx.init(params))
        carries = self.zero_carries(params, parallel.shard_batch(self.mesh, batch))
        arrays = {"params": params, "opt_state": opt_state, "carries": carries}
        meta = {"step": 0, "best_step": -1, "best": None, "best_valid": None, "bad_evals": 0,
                "plateau_scale": 1.0, "plateau_bad": 0, "wall_time": 0.0, "stopped": None}
        return arrays, meta

    def _is_better(self, value, best):
        if best is None:
            return True
        return value < best if self.task.lower_is_better else value > best

    # --- evaluation -----------------------------------------------------------------------
    def evaluate(self, params, split):
        sums, carries = None, None
        for batch in self.task.eval_batches(split):
            batch = _pad_time(batch)
            reset = bool(batch.pop("reset", carries is None))
            batch = parallel.shard_batch(self.mesh, batch) if self._divisible(batch) else batch
            if self.task.stateful and (reset or carries is None):
                carries = self.zero_carries(params, batch)
            s, carries = self.eval_step(params, batch, carries)
            s = jax.device_get(s)
            sums = s if sums is None else {
                k: (max(sums[k], s[k]) if k.startswith("max") else sums[k] + s[k]) for k in s}
        return {k: float(v) for k, v in self.task.summarize(sums).items()}

    def _divisible(self, batch):
        return batch["x"].shape[0] % self.mesh.shape["data"] == 0

    # --- the loop -------------------------------------------------------------------------
    def run(self) -> dict:
        result_path = self.workdir / "result.json"
        if result_path.exists():
            result = json.loads(result_path.read_text())
            print(f"{self.workdir}: already finished. {summary_line(result)}")
            return result
        self._segment_start = time.time()
        arrays, meta = self.init_state()
        ckpt = Checkpoints(self.workdir)
        restored = ckpt.restore_latest(arrays)
        if restored is not None:
            arrays, meta = restored
            logging.info("resumed from step %d", meta["step"])
        # best is saved before latest: after a kill in between, best is ahead; the resumed
        # run recreates it
        ckpt.drop_best_after(meta["step"])
        reporter = Reporter(self.workdir, self.is_main, resume_step=meta["step"])
        n_params = models.count_params(arrays["params"])
        prev_handler = signal.signal(signal.SIGTERM, self._on_sigterm)
        try:
            self._loop(arrays, meta, ckpt, reporter)
            if self._stop_requested:
                return {"status": "interrupted", "step": meta["step"]}
            result = self._finish(arrays, meta, ckpt, n_params)
        finally:
            signal.signal(signal.SIGTERM, prev_handler)
            reporter.close()
            ckpt.close()
        return result

    def _on_sigterm(self, signum, frame):
        self._stop_requested = True

    def _save_latest(self, ckpt, arrays, meta):
        if ckpt.latest.latest_step() == meta["step"]:
            return  # just saved (an evaluation step, then SIGTERM)
        if not _finite(arrays["params"]):
            raise NonFiniteLoss(f"non-finite parameters at step {meta['step']}; "
                                f"{_last_good(ckpt, self.workdir)}; lower train.lr or set "
                                "train.clip_norm")
        now = time.time()
        meta["wall_time"] += now - self._segment_start
        self._segment_start = now
        ckpt.save_latest(meta["step"], arrays, meta)

    def _loop(self, arrays, meta, ckpt, reporter):
        tc, task = self.config.train, self.task
        base_key = jax.random.key(self.config.seed + 1)
        batches = task.train_batches(meta["step"])
        reporter.start(self.total_steps, meta["step"], self.progress)
        while meta["step"] < self.total_steps and not meta["stopped"]:
            step = meta["step"]
            batch = _pad_time(next(batches))
            reset = bool(batch.pop("reset", False))
            batch = parallel.shard_batch(self.mesh, batch)
            if task.stateful and reset:
                arrays["carries"] = self.zero_carries(arrays["params"], batch)
            lr = optim.learning_rate(tc, step, task.steps_per_epoch, self.total_steps,
                                     meta["plateau_scale"])
            params, opt_state, carries, m = self.train_step(
                arrays["params"], arrays["opt_state"], batch, arrays["carries"],
                jax.random.fold_in(base_key, step), jnp.float32(lr))
            arrays.update(params=params, opt_state=opt_state, carries=carries)
            meta["step"] = step + 1
            if meta["step"] % tc.log_every == 0 or meta["step"] == self.total_steps:
                loss = float(m["loss"])
                if not math.isfinite(loss):
                    raise NonFiniteLoss(
                        f"loss is {loss} at step {meta['step']}; stopping; "
                        f"{_last_good(ckpt, self.workdir)}; lower train.lr or set "
                        "train.clip_norm")
                reporter.train(meta["step"], loss=loss, lr=lr, grad_norm=float(m["grad_norm"]))
            if meta["step"] % self.eval_every == 0 or meta["step"] == self.total_steps:
                self._validate(arrays, meta, ckpt, reporter)
                self._save_latest(ckpt, arrays, meta)
            elif tc.checkpoint_every and meta["step"] % tc.checkpoint_every == 0:
                self._save_latest(ckpt, arrays, meta)
            if self._stop_requested:
                self._save_latest(ckpt, arrays, meta)
                reporter.message(f"SIGTERM: saved step {meta['step']} to {self.workdir}; "
                                 "run the same command again to resume")
                return
        reporter.end()

    def _validate(self, arrays, meta, ckpt, reporter):
        tc, task = self.config.train, self.task
        metrics = self.evaluate(arrays["params"], "valid")
        value = metrics[task.metric]
        reporter.valid(meta["step"], metrics)
        # a non-finite score or parameters never become best (NaN compares as "better" than None)
        if (math.isfinite(value) and _finite(arrays["params"])
                and self._is_better(value, meta["best"])):
            meta.update(best=value, best_step=meta["step"], best_valid=metrics, bad_evals=0,
                        plateau_bad=0)
            ckpt.save_best(meta["step"], {"params": arrays["params"]}, meta)
        else:
            meta["bad_evals"] += 1
            meta["plateau_bad"] += 1
            if tc.schedule == "plateau" and meta["plateau_bad"] >= tc.plateau_patience:
                meta["plateau_scale"] /= tc.decay_factor
                meta["plateau_bad"] = 0
        if tc.patience and meta["bad_evals"] >= tc.patience:
            meta["stopped"] = f"early stopping: no improvement in {tc.patience} evaluations"
        target = tc.target
        if target is not None and not (value > target if task.lower_is_better else value < target):
            meta["stopped"] = f"target reached: valid {task.metric} {value:.4g}"

    def _finish(self, arrays, meta, ckpt, n_params):
        best = ckpt.restore_best({"params": arrays["params"]}, at_most=meta["step"])
        params = best[0]["params"] if best else arrays["params"]
        test = self.evaluate(params, "test")
        wall = meta["wall_time"] + time.time() - self._segment_start
        result = {"status": "done", "task": self.task.name, "metric": self.task.metric,
                  "lower_is_better": self.task.lower_is_better,
                  "valid": meta["best_valid"], "test": test, "best_step": meta["best_step"],
                  "steps": meta["step"], "stopped": meta["stopped"] or "all steps done",
                  "wall_time": round(wall, 2), "num_params": n_params,
                  "devices": jax.device_count(), "platform": jax.devices()[0].platform,
                  "config": json.loads(self.config.to_json_best_effort())}
        if self.is_main:
            write_atomic(self.workdir / "result.json", json.dumps(result, indent=2))
            print(summary_line(result))
        return result


def _finite(tree) -> bool:
    return all(bool(jnp.isfinite(x).all()) for x in jax.tree.leaves(tree))


def _last_good(ckpt, workdir) -> str:
    step = ckpt.latest.latest_step()
    if step is None:
        return "no checkpoint was saved yet"
    return f"the last good checkpoint (step {step}) is kept in {workdir}/checkpoints/latest"


def summary_line(r: dict) -> str:
    m = r["metric"]
    valid = r["valid"][m] if r.get("valid") else float("nan")
    return (f"{r['task']}: test {m} {r['test'][m]:.4g} | valid {m} {valid:.4g} "
            f"(best at step {r['best_step']}) | {r['steps']} steps, {r['wall_time']:.0f} s, "
            f"{r['num_params']:,} params | {r['stopped']}")


def train_and_evaluate(config, workdir, overwrite=False, progress=True) -> dict:
    """One run, or K vmapped trials when ``train.vmap_trials`` / ``train.vmap_lrs`` is set."""
    if config.train.vmap_trials or config.train.vmap_lrs:
        from lstm_research.training.vmap import VmapTrainer
        done = Path(workdir) / "result.json"
        if done.exists():
            return json.loads(done.read_text())
        return {"status": "done", "vmap_trials": VmapTrainer(config, workdir, overwrite,
                                                             progress).run()}
    return Trainer(config, workdir, overwrite, progress).run()
