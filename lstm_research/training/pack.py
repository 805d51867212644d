"""K trials in ONE jit-compiled, vmapped program (``experiments/sweep.py --pack K``).

A pack trains trials that share a compiled program: their configs may differ only in

* ``seed`` (init, data order, noise keys), the optimizer's hyperparameters ``train.lr``,
  ``train.momentum``, ``train.weight_decay``, ``train.clip_norm`` and the learning-rate
  schedule, ``train.input_noise`` (inputs of the compiled step, or computed on the host per
  trial), the init scheme ``train.init``/``train.init_scale``, and the stopping rules
  ``train.patience`` and ``train.target`` (:data:`PACKABLE_TRAIN`); the optimizer's kind
  (``train.optimizer``) changes the program;
* the initial gate biases of the cell string (``vanilla:forget_bias=1``; :data:`INIT_SWITCHES`);
* the dropout rates ``model.dropout``, ``model.input_dropout``, ``model.recurrent_dropout``
  (inputs of the compiled step: the pack's program runs each dropout some trial uses, a trial
  with rate 0 keeps every unit, as its run alone does without drawing a mask);
* ``model.hidden_size``, for LSTM-family cells without layer norm or projection and without
  dropout or zoneout: every trial is padded to the pack's widest. A trial of width W is
  initialized as it would be alone (the same bits: at width W, or with ``model.width_multiple``
  by its bucket's init program, as :func:`~lstm_research.training.steps.init_params` does for
  it alone) and embedded into the wider arrays with zeros for the padded units (each gate
  block padded on its own, :mod:`lstm_research.models.width`); its gradients are multiplied
  by a 0/1 mask, so the padded units stay exactly zero and never touch the real ones.

Anything else (the cell's equations, the task, the epoch budget, the optimizer's kind,
zoneout) changes the program: :func:`pack_conflict` names the first such key.

Each trial keeps its own counters: early stopping, ``train.target`` and divergence act per
trial; a stopped trial is frozen (its parameters and optimizer state no longer change) while
the others go on, and the pack ends when every trial has stopped or the budget is spent. Each
trial's workdir gets the files of a single run (``config.json``, ``metrics.jsonl``, TensorBoard,
``result.json``), so sweep summaries and plots read it unchanged; the stacked checkpoint lives
in the pack's own directory, and a killed pack resumes from it. A trial whose loss or
parameters become non-finite gets ``pack_failure.json`` (its error) instead of a result. Results
equal the same trial run alone through ``run.py`` up to float rounding (the batched matmuls sum
in another order; tests/test_pack.py checks each axis above at relative 1e-5). A pack makes one
vmapped call per update: ``train.steps_per_call`` (same bits alone) does not apply here. A pack
checkpoints at its evaluations (``train.checkpoint_secs`` applies), not every
``train.checkpoint_every`` steps.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import signal
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from lstm_research import cells as cells_lib
from lstm_research import models, visited
from lstm_research.errors import UserError
from lstm_research.models import width
from lstm_research.layers.stack import RATES
from lstm_research.training import optim, parallel, steps
from lstm_research.training.batches import pad_time, pad_time_at_least, pad_to_longest
from lstm_research.training.checkpoint import Checkpoints, end_sigterm_handling
from lstm_research.training.reporting import Reporter, loss_metric, write_atomic
from lstm_research.training.results import (merge_eval_sums, run_result, summary_line,
                                            target_reached)
from lstm_research.training.workdir import prepare_workdir

#: train.* keys that may differ within a pack (host-side, or inputs of the compiled step)
PACKABLE_TRAIN = ("lr", "momentum", "input_noise", "weight_decay", "clip_norm", "schedule",
                  "decay_factor", "decay_after_epochs", "plateau_patience", "init", "init_scale",
                  "patience", "target")
#: cell switches that only set initial values (a pack may mix them)
INIT_SWITCHES = ("forget_bias", "input_bias", "output_bias")
WIDTH_KEY = width.WIDTH_KEY
AXIS = "pack"  # the vmapped axis of the trials
FAILURE_JSON = "pack_failure.json"


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def _cell(model_cfg):
    return cells_lib.get(model_cfg.cell, model_cfg.hidden_size)


def program_key(config, with_width: bool) -> dict:
    """What decides a trial's compiled program: its task, model and train sections (resolved)
    without the packable keys; the cell with its init-only switches reset; the width only when
    ``with_width``. Top-level helper keys of a paper config (``lr``) reach the program only
    through these sections."""
    d = json.loads(config.to_json_best_effort())
    out = {k: v for section in ("task", "model", "train", "parallel")
           for k, v in _flat(d.get(section, {}), f"{section}.").items()}
    for k in PACKABLE_TRAIN:
        out.pop(f"train.{k}", None)
    cell = _cell(config.model)
    reset = {s: 0.0 for s in INIT_SWITCHES if hasattr(cell, s)}
    out["model.cell"] = repr(dataclasses.replace(cell, hidden_size=1, **reset))
    if not with_width:
        out.pop(WIDTH_KEY)
    for k in RATES:
        out.pop(f"model.{k}", None)
    return out


def pack_conflict(configs) -> str | None:
    """None when ``configs`` can train as one pack; else one line naming the first key whose
    values force separate programs."""
    widths = {c.model.hidden_size for c in configs}
    why_not = (next(filter(None, (width.unpaddable(c.model) for c in configs)), None)
               if len(widths) > 1 else None)
    keys = [program_key(c, with_width=why_not is not None) for c in configs]
    for k in keys[0]:
        values = [key.get(k) for key in keys]
        if any(v != values[0] for v in values[1:]):
            shown = sorted({str(v) for v in values})[:4]
            extra = f" ({why_not})" if k == WIDTH_KEY else ""
            return (f"{k} differs between the trials ({', '.join(shown)}) and changes the "
                    f"compiled program{extra}")
    return None


def _stack(trees):
    return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees)


def _select(mask, new, old):
    """Per trial (leading axis): ``new`` where ``mask`` else ``old``."""
    return jax.tree.map(
        lambda n, o: jnp.where(mask.reshape((-1,) + (1,) * (n.ndim - 1)), n, o), new, old)


class PackTrainer:
    """Trains ``configs`` (one per trial, writing to ``workdirs``) as one pack; the stacked
    checkpoint goes to ``pack_dir``. See the module docstring."""

    def __init__(self, configs, workdirs, pack_dir, overwrite=False, progress=True):
        if not configs:
            raise UserError("a pack needs at least one trial")
        if configs[0].train.get("gate_stats"):
            raise UserError("train.gate_stats=True is not supported in a pack (packed trials "
                            "evaluate without gate statistics); run those trials alone")
        conflict = pack_conflict(configs)
        if conflict:
            raise UserError(f"these trials cannot share one program: {conflict}")
        self.configs, self.workdirs = list(configs), [Path(w) for w in workdirs]
        self.pack_dir, self.progress = Path(pack_dir), progress
        self.mesh = parallel.make_mesh(1)
        self.tasks = [steps.build_task(c, self.mesh) for c in self.configs]
        # each trial's width as it runs alone (model.width_multiple rounds it up)
        self.widths = [width.padded_width(c.model) for c in self.configs]
        self.Hp = max(self.widths)
        template = copy.deepcopy(self.configs[0])
        with template.unlocked():
            template.model.hidden_size = self.Hp
            for k in RATES:  # the program runs every dropout some trial uses
                template.model[k] = max(c.model[k] for c in self.configs)
            for k in ("clip_norm", "weight_decay"):  # ... and clips and decays if some trial does
                template.train[k] = max(c.train[k] for c in self.configs)
        self.template, task = template, self.tasks[0]
        self.model = models.build(template.model, task)
        self.total_steps, self.eval_every = steps.run_length(template.train, task)
        self.time_bound = ({s: task.max_length(s) for s in ("train", "valid", "test")}
                           if models.length_free(self.model) else {})
        self.tx = optim.build_optimizer(template.train)
        noisy = any(c.train.input_noise > 0 for c in self.configs)
        self.apply = steps.make_apply(self.model, task, noisy)
        train_step, eval_step = steps.make_steps(self.apply, task, template.train)
        keyed = steps.keyed_by_step(train_step)

        def pack_step(params, opt_state, batch, carries, base_key, step, hyper, active):
            with visited.shared_trip_count(AXIS):
                p, o, c, m = keyed(params, opt_state, batch, carries, base_key, step, hyper)
            keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(active, a, b), new, old)
            return keep(p, params), keep(o, opt_state), c, m

        def pack_eval(params, batch, carries):
            with visited.shared_trip_count(AXIS):
                return eval_step(params, batch, carries)

        self.train_step = jax.jit(jax.vmap(pack_step, in_axes=(0, 0, 0, 0, 0, None, 0, 0),
                                           axis_name=AXIS), donate_argnums=(0, 1))
        self.eval_step = jax.jit(jax.vmap(pack_eval, axis_name=AXIS))
        self.shared_eval_step = jax.jit(jax.vmap(pack_eval, in_axes=(0, None, None),
                                                 axis_name=AXIS))
        self._shared: dict[str, bool] = {}
        self._finite = jax.jit(jax.vmap(lambda t: jnp.all(jnp.stack(
            [jnp.isfinite(x).all() for x in jax.tree.leaves(t)]))))
        for c, w in zip(self.configs, self.workdirs):
            prepare_workdir(c, w, overwrite)
        self._stop_requested = False

    # --- state ------------------------------------------------------------------------------
    def _init_trial(self, k):
        """Trial k's params as a run of its own config initializes them (the same bits: one init
        program per width bucket, as there), embedded at width Hp, and its gradient mask."""
        c, task = self.configs[k], self.tasks[k]
        model = models.build(c.model, task)  # at the trial's own padded width
        params = steps.init_params(c, task, model)
        mask = steps.grad_mask(c, task, model)  # None without padding
        if mask is None:
            mask = jax.tree.map(np.ones_like, params)
        W, big = self.widths[k], self._big_shapes
        return width.embed(params, big, W, self.Hp), width.embed(mask, big, W, self.Hp)

    def _initial_state(self):
        batch = pad_time(next(iter(self.tasks[0].train_batches(0))))
        self._big_shapes = jax.eval_shape(
            lambda x, lengths: self.model.init(jax.random.key(0), x, None, lengths)["params"],
            batch["x"], batch.get("lengths"))
        params, masks = zip(*(self._init_trial(k) for k in range(len(self.configs))))
        opt_states = [self.tx.init(p) for p in params]
        arrays = {"params": _stack(params), "opt_state": _stack(opt_states)}
        arrays["best_params"] = arrays["params"]
        arrays["carries"] = None
        K = len(self.configs)
        meta = {"step": 0, "wall_time": 0.0, "active": [True] * K, "stopped": [None] * K,
                "failed": [None] * K, "stop_step": [None] * K, "best": [None] * K,
                "best_step": [-1] * K, "best_valid": [None] * K, "bad_evals": [0] * K,
                "plateau_scale": [1.0] * K, "plateau_bad": [0] * K}
        return arrays, meta, jax.device_put(_stack(masks))

    def _zero_carries(self, params, batch):
        if not self.tasks[0].stateful:
            return None
        one = jax.tree.map(lambda x: x[0], (params, batch))
        return _stack([steps.zero_carries(self.apply, self.tasks[0], self.mesh, *one)]
                      * len(self.configs))

    def _batch(self, batches, split):
        bound = self.time_bound.get(split)
        batches = [pad_time_at_least(b, bound) for b in batches]
        if not bound:
            batches = pad_to_longest(batches)
        reset = bool(batches[0].pop("reset", False))
        for b in batches[1:]:
            b.pop("reset", None)
        return _stack(batches), reset

    # --- evaluation -------------------------------------------------------------------------
    def _shared_split(self, split) -> bool:
        """Whether every trial evaluates ``split`` on the same batches (real data sets: their
        splits do not depend on the seed); then one copy is fed to all trials, not K copies
        (K = 1024 copies of JSB's validation set would be 5 GB). Checked once per split."""
        if split not in self._shared:
            def same(a, b):
                return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
            first = list(self.tasks[0].eval_batches(split))
            self._shared[split] = not self.tasks[0].stateful and all(
                len(other) == len(first) and all(map(same, first, other))
                for other in (list(t.eval_batches(split)) for t in self.tasks[1:]))
        return self._shared[split]

    def evaluate(self, params, split) -> list[dict]:
        sums, carries = None, None
        if self._shared_split(split):
            for batch in self.tasks[0].eval_batches(split):
                batch, _ = self._batch([batch], split)
                s, _ = self.shared_eval_step(params, jax.tree.map(lambda x: x[0], batch), None)
                sums = merge_eval_sums(sums, jax.device_get(s))
        else:
            for batches in zip(*(t.eval_batches(split) for t in self.tasks)):
                batch, reset = self._batch(list(batches), split)
                if self.tasks[0].stateful and (reset or carries is None):
                    carries = self._zero_carries(params, batch)
                s, carries = self.eval_step(params, batch, carries)
                sums = merge_eval_sums(sums, jax.device_get(s))
        return [{k: float(v) for k, v in self.tasks[0].summarize(
            {name: val[i] for name, val in sums.items()}).items()}
            for i in range(len(self.configs))]

    # --- the loop ---------------------------------------------------------------------------
    def _on_sigterm(self, signum, frame):
        self._stop_requested = True

    def run(self) -> list[dict | None]:
        """Train every trial to its stop, test each one's best parameters, write each
        ``result.json`` (or ``pack_failure.json``); returns the results (None for a failed
        trial), or ``[]`` when stopped by SIGTERM (after saving)."""
        arrays, meta, self.masks = self._initial_state()
        ckpt = Checkpoints(self.pack_dir)
        restored = ckpt.restore_latest(arrays)
        if restored is not None:
            arrays, meta = restored
        for w in self.workdirs:
            (w / FAILURE_JSON).unlink(missing_ok=True)
        self.reporters = [Reporter(w, True, resume_step=meta["step"], console=False,
                                   loss_metric=loss_metric(self.tasks[0])) for w in self.workdirs]
        prev = signal.signal(signal.SIGTERM, self._on_sigterm)
        self._segment = self._last_save = time.time()
        try:
            self._loop(arrays, meta, ckpt)
            if self._stop_requested:
                return []
            return self._finish(arrays, meta)
        finally:
            end_sigterm_handling(prev, self._stop_requested)
            for r in self.reporters:
                r.close()
            ckpt.close()

    def _trials_finite(self, arrays):
        return np.asarray(self._finite(arrays["params"])) & np.asarray(
            self._finite(arrays["opt_state"]))

    def _save(self, ckpt, arrays, meta):
        now = time.time()
        meta["wall_time"] += now - self._segment
        self._segment = now
        finite = self._trials_finite(arrays)
        for k in np.flatnonzero(~finite):
            if meta["active"][k]:
                self._fail(k, meta, f"non-finite parameters at step {meta['step']}; lower "
                           "train.lr or set train.clip_norm")
        # a failed (frozen) trial's non-finite arrays are saved as zeros: it never trains
        # again, and checkpoints refuse non-finite values
        clean = {k: (_select(jnp.asarray(finite), v, jax.tree.map(jnp.zeros_like, v))
                     if k in ("params", "opt_state") else v)
                 for k, v in arrays.items()}
        ckpt.save_latest(meta["step"], clean, meta)
        self._last_save = time.time()

    def _fail(self, k, meta, text):
        meta["active"][k] = False
        meta["failed"][k] = text
        meta["stop_step"][k] = meta["step"]
        print(f"{self.workdirs[k].name}: {text}", flush=True)

    def _loop(self, arrays, meta, ckpt):
        K, task = len(self.configs), self.tasks[0]
        base_keys = jnp.stack([jax.random.key(c.seed + 1) for c in self.configs])
        streams = [t.train_batches(meta["step"]) for t in self.tasks]
        fixed = _stack([optim.runtime_hyperparams(c.train, c.train.lr) for c in self.configs])
        fixed["grad_mask"] = self.masks
        if self.template.train.clip_norm:  # a trial without clipping: an infinite norm
            fixed["clip_norm"] = np.asarray([c.train.clip_norm or np.inf for c in self.configs],
                                            np.float32)
        if self.template.train.weight_decay:
            fixed["weight_decay"] = np.asarray([c.train.weight_decay for c in self.configs],
                                               np.float32)
        if any(self.template.model[k] for k in RATES):
            fixed["dropout_rates"] = {k: np.asarray([c.model[k] for c in self.configs], np.float32)
                                      for k in RATES}
        log_every = self.template.train.log_every
        secs = self.template.train.get("checkpoint_secs", 0)
        if self.progress:
            print(f"pack of {K} trials (widths {min(self.widths)}-{self.Hp}), "
                  f"{self.total_steps} steps", flush=True)
        while meta["step"] < self.total_steps and any(meta["active"]):
            step = meta["step"]
            batch, reset = self._batch([next(s) for s in streams], "train")
            if task.stateful and reset:
                arrays["carries"] = self._zero_carries(arrays["params"], batch)
            lrs = [optim.learning_rate(c.train, step, task.steps_per_epoch, self.total_steps,
                                       meta["plateau_scale"][k])
                   for k, c in enumerate(self.configs)]
            hyper = dict(fixed, lr=np.asarray(lrs, np.float32))
            params, opt_state, carries, m = self.train_step(
                arrays["params"], arrays["opt_state"], batch, arrays["carries"], base_keys,
                np.int32(step), hyper, np.asarray(meta["active"]))
            arrays.update(params=params, opt_state=opt_state, carries=carries)
            meta["step"] = step + 1
            if meta["step"] % log_every == 0 or meta["step"] == self.total_steps:
                losses, norms = np.asarray(m["loss"]), np.asarray(m["grad_norm"])
                for k in range(K):
                    if not meta["active"][k]:
                        continue
                    if not math.isfinite(losses[k]):
                        self._fail(k, meta, f"loss is {losses[k]} at step {meta['step']}; "
                                   "lower train.lr or set train.clip_norm")
                        continue
                    self.reporters[k].train(meta["step"], loss=float(losses[k]),
                                            lr=float(lrs[k]), grad_norm=float(norms[k]))
            if meta["step"] % self.eval_every == 0 or meta["step"] == self.total_steps:
                self._validate(arrays, meta)
                if (not secs or not any(meta["active"]) or meta["step"] >= self.total_steps
                        or time.time() - self._last_save >= secs):
                    self._save(ckpt, arrays, meta)
            if self._stop_requested:
                if ckpt.latest.latest_step() != meta["step"]:
                    self._save(ckpt, arrays, meta)
                print(f"SIGTERM: saved step {meta['step']} to {self.pack_dir}; rerun to resume",
                      flush=True)
                return

    def _validate(self, arrays, meta):
        K, task = len(self.configs), self.tasks[0]
        results = self.evaluate(arrays["params"], "valid")
        finite = self._trials_finite(arrays)
        better = [False] * K
        for k, r in enumerate(results):
            if not meta["active"][k]:
                continue
            tc, value = self.configs[k].train, r[task.metric]
            self.reporters[k].valid(meta["step"], r)
            if not finite[k]:
                self._fail(k, meta, f"non-finite parameters at step {meta['step']}; lower "
                           "train.lr or set train.clip_norm")
                continue
            best = meta["best"][k]
            if math.isfinite(value) and (best is None or (value < best if task.lower_is_better
                                                          else value > best)):
                better[k] = True
                meta["best"][k], meta["best_step"][k], meta["best_valid"][k] = \
                    value, meta["step"], r
                meta["bad_evals"][k] = meta["plateau_bad"][k] = 0
            else:
                meta["bad_evals"][k] += 1
                meta["plateau_bad"][k] += 1
                if tc.schedule == "plateau" and meta["plateau_bad"][k] >= tc.plateau_patience:
                    meta["plateau_scale"][k] /= tc.decay_factor
                    meta["plateau_bad"][k] = 0
            stop = None
            if tc.patience and meta["bad_evals"][k] >= tc.patience:
                stop = f"early stopping: no improvement in {tc.patience} evaluations"
            if target_reached(value, tc.target, task.lower_is_better):
                stop = f"target reached: valid {task.metric} {value:.4g}"
            if stop:
                meta["active"][k], meta["stopped"][k], meta["stop_step"][k] = \
                    False, stop, meta["step"]
        if self.progress:
            bests = [b for b in meta["best"] if b is not None]
            best = (f"; best valid {task.metric} "
                    f"{(min if task.lower_is_better else max)(bests):.4g}" if bests else "")
            print(f"step {meta['step']}/{self.total_steps}: {sum(meta['active'])} of {K} trials "
                  f"training{best}", flush=True)
        if any(better):
            arrays["best_params"] = _select(jnp.asarray(better), arrays["params"],
                                            arrays["best_params"])

    def _count_params(self, k):
        return int(sum(np.asarray(m).sum() for m in jax.tree.leaves(
            jax.tree.map(lambda x: x[k], self.masks))))

    def _finish(self, arrays, meta):
        tests = self.evaluate(arrays["best_params"], "test")
        wall = meta["wall_time"] + time.time() - self._segment
        K, out = len(self.configs), []
        for k, (c, w) in enumerate(zip(self.configs, self.workdirs)):
            if meta["failed"][k]:
                write_atomic(w / FAILURE_JSON, json.dumps(
                    {"error": meta["failed"][k], "step": meta["stop_step"][k]}, indent=2))
                out.append(None)
                continue
            r = run_result(c, self.tasks[k], valid=meta["best_valid"][k], test=tests[k],
                           best_step=meta["best_step"][k],
                           steps=meta["stop_step"][k] or meta["step"],
                           stopped=meta["stopped"][k] or "all steps done",
                           wall_time=round(wall / K, 2), num_params=self._count_params(k),
                           pack={"size": K, "width": self.Hp, "wall_time": round(wall, 2)})
            self.reporters[k].result(r)
            write_atomic(w / "result.json", json.dumps(r, indent=2))
            print(f"{w.name}: {summary_line(r)}", flush=True)
            out.append(r)
        return out
