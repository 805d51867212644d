"""The training loop: train, validate on a schedule, checkpoint, stop early, test the best.

Everything a step needs is a function of the global step number (the task's batch, the
dropout key, the learning rate), and the checkpoint holds the rest (params, optimizer state,
carried recurrent state, the loop's counters), so a run killed at any point and started again
ends with exactly the metrics of an uninterrupted run. For the same reason a finished run can be
extended to a larger ``train.epochs`` / ``train.steps`` (:meth:`Trainer.run`): it resumes from its
last checkpoint and ends with the metrics of a run given the larger budget from the start,
where that holds (:meth:`Trainer._check_extension`).
"""
from __future__ import annotations

import functools
import json
import math
import signal
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from lstm_research import models
from lstm_research.errors import UserError
from lstm_research.models import width
from lstm_research.training import checkpoint, diagnostics, optim, parallel, programs, steps
from lstm_research.training.batches import (length_groups, pad_time_at_least, pad_time_to,
                                             padded_length)
from lstm_research.training.checkpoint import Checkpoints, end_sigterm_handling
from lstm_research.training.reporting import Reporter, loss_metric, write_atomic
from lstm_research.training.results import (merge_eval_sums, run_result, summary_line,
                                            target_reached)
from lstm_research.training.workdir import (WorkdirMismatch, extension_of, prepare_workdir,
                                            write_config)

__all__ = ["NonFiniteLoss", "Trainer", "WorkdirMismatch", "prepare_workdir", "summary_line",
           "train_and_evaluate"]

#: on one device, evaluation batches of a split up to this many bytes stay on the device
EVAL_CACHE_BYTES = 64 * 2 ** 20
#: on the CPU, a variable-length evaluation batch of a model whose loops stop at the batch's
#: longest sequence is evaluated in groups of up to this many rows, longest sequences first
#: (:func:`~lstm_research.training.batches.length_groups`). Greff JSB's validation batch (77
#: sequences padded to 160 steps, 59 frames on average, the longest 143) took 90 ms at width
#: 200 in one batch and 40 ms in 7 groups of 11 (7.8 / 7.5 ms at width 20, 20.0 / 15.7 ms at
#: 63; one core, 2026-12-02). On a GPU a step costs its launches whatever its rows, so there
#: it stays one batch.
EVAL_GROUP_ROWS = 20


class NonFiniteLoss(RuntimeError):
    pass


_STEPS: dict = {}  # this process's jitted steps, by what they are traced from (_steps_key)
#: the most recently used jitted steps kept: a Greff study's worker cycles through nine variants
#: and their widths, so its trials find their programs in memory only with enough kept (a
#: simulation of the study's 1800 trials, widths padded to multiples of 8, in 2 workers: 0 hits
#: at 8 kept first in first out, 321 at 32 most recently used with workers replaced after 100
#: trials, 723 at 64 with 300). A miss loads the executables from the program store
#: (training.programs; such a trial costs 0.4-0.6 s besides its epochs, 0.9-2.2 s before
#: 2026-12-03, when a miss traced the steps again for JAX's persistent cache). Memory: each
#: program compiled or loaded adds 10-20 MB of resident memory, FGR's 60-90 MB, kept or not
#: (freed, it stays mapped until the worker trims its heap: sweeps.worker.release_free_memory;
#: measured 2026-12-03)
STEPS_KEPT = 64


#: train keys that only the host-side loop reads (budget, schedule, evaluation and checkpoint
#: cadence), never the jitted steps
_LOOP_ONLY = ("steps", "epochs", "schedule", "decay_after_epochs", "decay_factor",
              "plateau_patience", "eval_every", "log_every", "patience", "target",
              "checkpoint_every", "checkpoint_secs")


def forget_programs() -> None:
    """Drop this process's jitted steps and init programs: a later run loads them from the
    program store (:mod:`lstm_research.training.programs`) where it has them, as a sweep worker
    does for the programs it no longer keeps."""
    _STEPS.clear()
    steps.forget_programs()


def _steps_key(config) -> str:
    """What a run's jitted steps are traced from: its config but the seed, the values that the
    steps take as inputs (:func:`optim.runtime_hyperparams`: learning rate, momentum, input
    noise, the last only as on or off) and the loop's own keys (:data:`_LOOP_ONLY`). The trials
    of a sweep worker that differ only in these reuse one set of jitted steps, traced and
    compiled once (about 1.3 s of each such trial on 2 cores even with the persistent
    compilation cache). It rests on the tasks' contract: a loss reads the batch, never a
    runtime field such as the seed or the loaded data (:mod:`lstm_research.tasks.base`)."""
    c = json.loads(config.to_json_best_effort())
    c.pop("seed", None)
    train = {k: v for k, v in c["train"].items() if k not in _LOOP_ONLY}
    train["lr"] = train["momentum"] = None
    train["input_noise"] = train["input_noise"] > 0
    c["train"] = train
    # model.width_multiple: the widths of a bucket run one program (models.width)
    c["model"]["hidden_size"] = width.padded_width(config.model)
    c["model"].pop("width_multiple", None)
    return json.dumps({k: c[k] for k in ("model", "task", "train", "parallel")}, sort_keys=True)


class Trainer:
    def __init__(self, config, workdir, overwrite=False, progress=True):
        self.config, self.workdir = config, Path(workdir)
        parallel.initialize_distributed(config.parallel)
        self.is_main = jax.process_index() == 0
        self.mesh = parallel.make_mesh(config.parallel.model_axis)
        self.task = steps.build_task(config, self.mesh)
        self.model = models.build(config.model, self.task)
        self.total_steps, self.eval_every = steps.run_length(config.train, self.task)
        # a model whose loops stop at each batch's longest sequence gets every batch of a split
        # padded to the split's longest: one compiled program per split instead of one per
        # length bucket (compiling dominated short trials)
        self.time_bound = ({s: self.task.max_length(s) for s in ("train", "valid", "test")}
                           if models.length_free(self.model) else {})
        self.tx = optim.build_optimizer(config.train)
        self.progress = progress
        self._stop_requested = False
        self._eval_cache = {}  # split -> its evaluation batches on the device (_eval_batches)
        self._compile()
        # the saved config of a run this one extends (a larger budget, nothing else changed)
        self.extends = None if overwrite else extension_of(config, self.workdir)
        if self.extends is not None:
            self._check_extension(self.extends)
        if self.is_main:  # last: a config that fails above leaves nothing in the workdir
            prepare_workdir(config, self.workdir, overwrite, extending=self.extends is not None)

    def _compile(self):
        tc = self.config.train
        # train.steps_per_call > 1: up to that many updates in one call (same bits; see
        # steps.chunked); the metrics stay on the device until a step is logged
        self.steps_per_call = tc.get("steps_per_call", 1)
        if self.steps_per_call > 1:
            has = (f"carried state (task {self.task.name!r})" if self.task.stateful
                   else f"{self.mesh.size} devices" if self.mesh.size > 1 else None)
            if has:
                raise UserError(f"train.steps_per_call={self.steps_per_call}: several updates "
                                "per call run on one device for tasks without carried state; "
                                f"this run has {has}; set train.steps_per_call=1")
        key = _steps_key(self.config)
        jitted = _STEPS.pop(key, None)
        if jitted is None:
            apply = steps.make_apply(self.model, self.task, tc.input_noise > 0)
            train_fn, eval_fn = steps.make_steps(apply, self.task, tc)
            # the step's dropout/noise key is made inside the compiled step from numpy scalars,
            # and its learning rate, momentum and input noise come in as numpy scalars: eager
            # fold_in and jnp scalars cost more host time than a batch-1 update computes
            # (measured in experiments/sweep_throughput.py), and trials differing only in those
            # hyperparameters share the compiled program
            # compiled per argument types, and stored for the next process (training.programs)
            jitted = (apply, train_fn, eval_fn,
                      programs.Program("train_step", key, steps.keyed_by_step(train_fn),
                                       donate_argnums=(0, 1)),
                      programs.Program("eval_step", key, eval_fn),
                      programs.Program("train_steps", key, steps.chunked(train_fn),
                                       donate_argnums=(0, 1))
                      if self.steps_per_call > 1 else None)
            if len(_STEPS) >= STEPS_KEPT:
                _STEPS.pop(next(iter(_STEPS)))
        _STEPS[key] = jitted  # the most recently used last
        (self.apply, self.train_step_fn, self.eval_step_fn, self.train_step, self.eval_step,
         self.train_steps) = jitted

    def zero_carries(self, params, batch):
        return steps.zero_carries(self.apply, self.task, self.mesh, params, batch)

    # --- state ----------------------------------------------------------------------------
    def init_state(self):
        arrays = steps.init_arrays(self.config, self.task, self.model, self.tx, self.mesh,
                                   self.apply)
        return arrays, steps.initial_meta()

    def _is_better(self, value, best):
        if best is None:
            return True
        return value < best if self.task.lower_is_better else value > best

    # --- evaluation -----------------------------------------------------------------------
    @functools.cached_property
    def gate_eval_step(self):
        """The jitted eval step that also sums gate statistics (``train.gate_stats``)."""
        gate_apply = diagnostics.eval_with_gates(self.apply, self.model)
        return jax.jit(steps.make_steps(self.apply, self.task, self.config.train, gate_apply)[1])

    def evaluate(self, params, split):
        """The task's metrics on ``split`` and, with ``train.gate_stats``, the gate metrics
        (:mod:`lstm_research.training.diagnostics`) after them."""
        gate_stats = self.config.train.get("gate_stats", False)
        eval_step = self.gate_eval_step if gate_stats else self.eval_step
        sums, carries = None, None
        for batch, reset in self._eval_batches(split):
            reset = bool(carries is None if reset is None else reset)
            if self.task.stateful and (reset or carries is None):
                carries = self.zero_carries(params, batch)
            s, carries = eval_step(params, batch, carries)
            sums = merge_eval_sums(sums, diagnostics.to_host(jax.device_get(s)))
        task_sums, gate_sums = diagnostics.split_sums(sums)
        return {**{k: float(v) for k, v in self.task.summarize(task_sums).items()},
                **diagnostics.gate_metrics(gate_sums)}

    def _eval_batches(self, split):
        """``(batch, reset flag or None)`` for each evaluation batch of ``split``, padded and fed
        as the eval step takes them. On one device, a split whose batches come to at most
        :data:`EVAL_CACHE_BYTES` is kept on the device after its first pass: the next passes
        (an evaluation every epoch) neither rebuild nor copy it (building JSB's validation
        batch took about 7 ms on the host, as long as a width-20 evaluation computes)."""
        if split in self._eval_cache:
            yield from self._eval_cache[split]
            return
        keep, size = self.mesh.size == 1 and jax.process_count() == 1, 0
        kept = []
        for batch in self._padded_eval_batches(split, group=keep):
            reset = batch.pop("reset", None)
            size += sum(np.asarray(v).nbytes for v in batch.values())
            keep = keep and size <= EVAL_CACHE_BYTES
            if keep:
                batch = jax.device_put(batch)
                kept.append((batch, reset))
            else:
                batch = parallel.feed_batch(self.mesh, batch)
            yield batch, reset
        if keep:
            self._eval_cache[split] = kept

    def _padded_eval_batches(self, split, group: bool):
        """The task's evaluation batches of ``split`` padded to the split's longest; with
        ``group`` (one device), in groups of :data:`EVAL_GROUP_ROWS` where that pays."""
        group = (group and split in self.time_bound and not self.task.stateful
                 and jax.default_backend() == "cpu")
        for batch in self.task.eval_batches(split):
            batch = pad_time_at_least(batch, self.time_bound.get(split))
            if group and "lengths" in batch:
                yield from length_groups(batch, EVAL_GROUP_ROWS)
            else:
                yield batch

    # --- extending a finished run ---------------------------------------------------------
    def _budget_text(self) -> str:
        tc = self.config.train
        return f"train.epochs={tc.epochs}" if tc.epochs else f"train.steps={tc.steps}"

    def _refuse_extension(self, why: str,
                          so: str = "the result would differ from a run given that budget from "
                                    "the start"):
        raise UserError(f"workdir {self.workdir} cannot be extended to {self._budget_text()}: "
                        f"{why}, so {so}; use another --workdir, or --overwrite to start over")

    def _check_extension(self, old: dict) -> None:
        """Refuse, before anything is written, to extend a run whose result would depend on its
        budget: a schedule over the total steps, an evaluation cadence derived from it, or a
        last step between evaluations (the run evaluated there because it ended there; a longer
        run would not, and that evaluation moved its best and early-stopping counters)."""
        tc, spe = self.config.train, self.task.steps_per_epoch
        old_total = old["train"]["epochs"] * spe if old["train"].get("epochs") else \
            old["train"]["steps"]
        if tc.schedule == "cosine":
            self._refuse_extension("train.schedule='cosine' decays the learning rate over the "
                                   "whole budget, so every step's rate depends on it")
        if not tc.eval_every and not spe:
            self._refuse_extension("with train.eval_every=0 the run evaluates every tenth of "
                                   "its budget")
        if old_total % self.eval_every:
            self._refuse_extension(f"the run ended at step {old_total}, between evaluations "
                                   f"(every {self.eval_every} steps), and evaluated there")

    def _begin_extension(self, meta, ckpt) -> None:
        """The run resumed at ``meta`` is extended: refuse one that stopped early, then drop
        its ``result.json`` and save the new config (in this order: a kill in between leaves a
        run that the old or the new command resumes)."""
        if meta["stopped"]:
            ckpt.close()
            self._refuse_extension(f"the run stopped early at step {meta['step']} "
                                   f"({meta['stopped']}); a run given the longer budget from "
                                   "the start stops there too",
                                   so="there is nothing to extend: its result is this run's")
        if self.is_main:
            (self.workdir / "result.json").unlink(missing_ok=True)
            write_config(self.workdir, self.config)
        print(f"{self.workdir}: extending the run from step {meta['step']} to "
              f"{self.total_steps} ({self._budget_text()})", flush=True)

    def _train_logged(self, step: int) -> bool:
        """Whether the loop writes a training record at ``step`` (every ``train.log_every``
        steps and at the last)."""
        return step % self.config.train.log_every == 0 or step == self.total_steps

    # --- the loop -------------------------------------------------------------------------
    def run(self) -> dict:
        """Train from the latest checkpoint (or from scratch) to the end of the budget, test the
        best checkpoint and write ``result.json``. A finished run returns its result; one whose
        budget this config raises (``self.extends``) is extended."""
        result_path = self.workdir / "result.json"
        if result_path.exists() and self.extends is None:
            result = json.loads(result_path.read_text())
            print(f"{self.workdir}: already finished. {summary_line(result)}")
            return result
        self._segment_start = self._last_save = time.time()
        self._unsaved_best = None
        self._best = None  # (step, params) of this process's best evaluation, for _finish
        arrays, meta = self.init_state()
        ckpt = Checkpoints(self.workdir)
        restored = ckpt.restore_latest(arrays)
        if restored is not None:
            arrays, meta = restored
            logging.info("resumed from step %d", meta["step"])
        self._check_global_batch(meta, ckpt)
        if self.extends is not None:
            self._begin_extension(meta, ckpt)
        # best is saved before latest: after a kill in between, best is ahead; the resumed
        # run recreates it
        ckpt.drop_best_after(meta["step"])
        reporter = Reporter(self.workdir, self.is_main, resume_step=meta["step"],
                            train_logged=self._train_logged, loss_metric=loss_metric(self.task),
                            metric=self.task.metric)
        mask = steps.grad_mask(self.config, self.task, self.model)
        n_params = (models.count_params(arrays["params"]) if mask is None else
                    int(sum(map(np.count_nonzero, jax.tree.leaves(mask)))))
        prev_handler = signal.signal(signal.SIGTERM, self._on_sigterm)
        try:
            self._loop(arrays, meta, ckpt, reporter, mask)
            if self._stop_requested:
                return {"status": "interrupted", "step": meta["step"]}
            result = self._finish(arrays, meta, ckpt, n_params)
            reporter.result(result)
        finally:
            end_sigterm_handling(prev_handler, self._stop_requested)
            reporter.close()
            ckpt.close()
        return result

    def _check_global_batch(self, meta, ckpt) -> None:
        """With ``parallel.batch_per_device`` the global batch follows the device count, which
        config.json does not hold: a run resumed or extended on another count is refused (it
        would go on with another batch). The checkpoints record it from the first save on."""
        batch = getattr(self.task, "batch_size", None)
        was = meta.get("global_batch")
        if self.config.parallel.batch_per_device and was is not None and was != batch:
            ckpt.close()
            raise UserError(
                f"workdir {self.workdir} was trained with a global batch of {was} "
                f"(parallel.batch_per_device={self.config.parallel.batch_per_device} on "
                f"{was // self.config.parallel.batch_per_device} data-parallel devices); here it "
                f"would be {batch}: resume it on the same number of devices, or use another "
                "--workdir")
        meta["global_batch"] = batch

    def _on_sigterm(self, signum, frame):
        self._stop_requested = True

    def _save_latest(self, ckpt, arrays, meta):
        if self._unsaved_best is not None:
            ckpt.save_best(*self._unsaved_best)
            self._unsaved_best = None
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
        self._last_save = time.time()

    def _checkpoint_due(self, meta) -> bool:
        """At an evaluation: save unless ``train.checkpoint_secs`` have not passed since the last
        save (always at the end and on early stopping)."""
        secs = self.config.train.get("checkpoint_secs", 0)
        return (not secs or bool(meta["stopped"]) or meta["step"] >= self.total_steps
                or time.time() - self._last_save >= secs)

    def _call_length(self, step: int) -> int:
        """How many updates the next call makes from ``step``: ``train.steps_per_call``, but
        never past the next evaluation, extra checkpoint or the end of the budget."""
        n = min(self.steps_per_call, self.total_steps - step,
                self.eval_every - step % self.eval_every)
        every = self.config.train.checkpoint_every
        return min(n, every - step % every) if every else n

    def _next_batches(self, batches, n: int, pending: list) -> tuple[list, int]:
        """Up to ``n`` training batches that are one shape once padded as the split is (a call's),
        and that time length; a batch of another shape waits in ``pending`` for the next call.
        The batches are not padded yet (see ``steps.stack_chunk``)."""
        def shape(b):
            T = padded_length(b, self.time_bound.get("train"))
            return b["x"].shape[:1] + (T,) + b["x"].shape[2:], T
        out = pending[:1] or [next(batches)]
        del pending[:]
        first, T = shape(out[0])
        while len(out) < n:
            batch = next(batches)
            if shape(batch)[0] != first:
                pending.append(batch)
                break
            out.append(batch)
        return out, T

    def _loop(self, arrays, meta, ckpt, reporter, grad_mask=None):
        tc, task = self.config.train, self.task
        base_key = jax.random.key(self.config.seed + 1)
        batches, pending = task.train_batches(meta["step"]), []
        # momentum and input noise are fixed for the run: read from the config once
        fixed_hyper = optim.runtime_hyperparams(tc, tc.lr)
        if grad_mask is not None:  # padded units (model.width_multiple) keep zero gradients
            fixed_hyper["grad_mask"] = parallel.shard_params(self.mesh, grad_mask)
        reporter.start(self.total_steps, meta["step"], self.progress)
        while meta["step"] < self.total_steps and not meta["stopped"]:
            step = meta["step"]
            chunk, T = self._next_batches(batches, self._call_length(step), pending)
            lrs = [optim.learning_rate(tc, s, task.steps_per_epoch, self.total_steps,
                                       meta["plateau_scale"])
                   for s in range(step, step + len(chunk))]
            if self.steps_per_call > 1:
                k = self.steps_per_call
                params, opt_state, m = self.train_steps(
                    arrays["params"], arrays["opt_state"], steps.stack_chunk(chunk, k, T),
                    np.int32(len(chunk)), base_key, np.int32(step),
                    np.array(lrs + [0.0] * (k - len(lrs)), np.float32), fixed_hyper)
            else:
                batch = pad_time_to(chunk[0], T)
                reset = bool(batch.pop("reset", False))
                batch = parallel.feed_batch(self.mesh, batch)
                if task.stateful and reset:
                    arrays["carries"] = self.zero_carries(arrays["params"], batch)
                params, opt_state, carries, m = self.train_step(
                    arrays["params"], arrays["opt_state"], batch, arrays["carries"], base_key,
                    np.int32(step), dict(fixed_hyper, lr=np.float32(lrs[0])))
                arrays["carries"] = carries
            arrays.update(params=params, opt_state=opt_state)
            meta["step"] = step + len(chunk)
            self._log_train(step, lrs, m, ckpt, reporter)
            if meta["step"] % self.eval_every == 0 or meta["step"] == self.total_steps:
                self._validate(arrays, meta, ckpt, reporter)
                if self._checkpoint_due(meta):
                    self._save_latest(ckpt, arrays, meta)
            elif tc.checkpoint_every and meta["step"] % tc.checkpoint_every == 0:
                self._save_latest(ckpt, arrays, meta)
            if self._stop_requested:
                self._save_latest(ckpt, arrays, meta)
                reporter.message(f"SIGTERM: saved step {meta['step']} to {self.workdir}; "
                                 "run the same command again to resume")
                return
        reporter.end()

    def _log_train(self, step, lrs, m, ckpt, reporter):
        """Write the training records of the steps after ``step`` that are logged (metrics
        ``m`` of one call: scalars, or one entry per step with ``train.steps_per_call``)."""
        logged = [j for j in range(len(lrs)) if self._train_logged(step + j + 1)]
        if not logged:
            return
        loss, grad_norm = (np.atleast_1d(np.asarray(m[k])) for k in ("loss", "grad_norm"))
        for j in logged:
            if not math.isfinite(loss[j]):
                raise NonFiniteLoss(
                    f"loss is {loss[j]} at step {step + j + 1}; stopping; "
                    f"{_last_good(ckpt, self.workdir)}; lower train.lr or set train.clip_norm")
            reporter.train(step + j + 1, loss=float(loss[j]), lr=lrs[j],
                           grad_norm=float(grad_norm[j]))

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
            # written with the next latest checkpoint (best before latest), and tested at the
            # end from this copy: the params are copied because the next train step donates
            # their buffers (device_put copies without compiling a copy program per shape)
            self._best = (meta["step"], jax.tree.map(
                lambda x: jax.device_put(x, x.sharding, may_alias=False), arrays["params"]))
            self._unsaved_best = (meta["step"], {"params": self._best[1]}, dict(meta))
        else:
            meta["bad_evals"] += 1
            meta["plateau_bad"] += 1
            if tc.schedule == "plateau" and meta["plateau_bad"] >= tc.plateau_patience:
                meta["plateau_scale"] /= tc.decay_factor
                meta["plateau_bad"] = 0
        if tc.patience and meta["bad_evals"] >= tc.patience:
            meta["stopped"] = f"early stopping: no improvement in {tc.patience} evaluations"
        if target_reached(value, tc.target, task.lower_is_better):
            meta["stopped"] = f"target reached: valid {task.metric} {value:.4g}"

    def _finish(self, arrays, meta, ckpt, n_params):
        best_step, valid, extra = meta["best_step"], meta["best_valid"], {}
        if self._best is not None and self._best[0] == best_step:
            params = self._best[1]  # what the best checkpoint holds: not read back (0.03 s)
        else:  # best before this process resumed the run, or none
            best = ckpt.restore_best({"params": arrays["params"]}, at_most=meta["step"])
            params = best[0]["params"] if best else arrays["params"]
            found = best[1]["step"] if best else None
            if best_step >= 0 and found != best_step:
                # the best step's checkpoint is damaged or gone: report one step's parameters,
                # validation and test alike (an older best's, else the last step's)
                if best:
                    best_step, valid = found, best[1]["best_valid"]
                else:
                    best_step, valid = meta["step"], self.evaluate(params, "valid")
                extra["best_fallback"] = (f"the best checkpoint of step {meta['best_step']} is "
                                          f"damaged or gone; valid and test are step "
                                          f"{best_step}'s")
                if self.is_main:
                    checkpoint.warn(extra["best_fallback"])
        test = self.evaluate(params, "test")
        wall = meta["wall_time"] + time.time() - self._segment_start
        result = run_result(self.config, self.task, valid=valid, test=test,
                            best_step=best_step, steps=meta["step"],
                            stopped=meta["stopped"] or "all steps done",
                            wall_time=round(wall, 2), num_params=n_params, **extra)
        if self.is_main:
            write_atomic(self.workdir / "result.json", json.dumps(result, indent=2))
            print(summary_line(result))
        return result


@jax.jit
def _all_finite(tree):
    return jnp.all(jnp.stack([jnp.isfinite(x).all() for x in jax.tree.leaves(tree)]))


def _finite(tree) -> bool:
    """Every value of ``tree`` is finite. On CPU NumPy reads the arrays where they are (no
    program to compile for every new width: about a second each on 2 cores); elsewhere one
    compiled program per tree of shapes, so nothing is copied to the host (an eager
    ``isfinite(x).all()`` per array compiled two per parameter shape)."""
    leaves = jax.tree.leaves(tree)
    if jax.default_backend() == "cpu" and all(x.is_fully_addressable for x in leaves):
        return all(np.isfinite(np.asarray(x)).all() for x in leaves)
    return bool(_all_finite(tree))


def _last_good(ckpt, workdir) -> str:
    step = ckpt.latest.latest_step()
    if step is None:
        return "no checkpoint was saved yet"
    return f"the last good checkpoint (step {step}) is kept in {workdir}/checkpoints/latest"


def train_and_evaluate(config, workdir, overwrite=False, progress=True) -> dict:
    """One run (K trials in one program: :mod:`lstm_research.training.pack`)."""
    return Trainer(config, workdir, overwrite, progress).run()
