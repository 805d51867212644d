"""One run's pieces as functions of its config: the task (at the global batch size), the length of
training, the model's forward pass, the train and eval steps, and the initial state.

Both trainers build on these: :class:`~lstm_research.training.loop.Trainer` jit-compiles the
steps for one run, :class:`~lstm_research.training.pack.PackTrainer` vmaps the same steps over
K trials. Everything here is pure or builds pure functions.
"""
from __future__ import annotations

import copy
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lstm_research import models, prng, tasks, visited
from lstm_research.errors import UserError
from lstm_research.models import width
from lstm_research.training import optim, parallel, programs
from lstm_research.training.batches import pad_time, time_keys


def build_task(config, mesh) -> tasks.Task:
    """The task of ``config.task`` with its batch size settled to the global batch
    (``parallel.batch_per_device`` x data-parallel devices, when set) before it is built."""
    cfg = config.task
    if "batch_size" in cfg:
        cfg = copy.deepcopy(cfg)
        cfg.batch_size = parallel.global_batch_size(cfg.batch_size, config.parallel, mesh)
    return tasks.build(cfg, config.seed)


def run_length(train_config, task) -> tuple[int, int]:
    """``(total_steps, eval_every)`` from ``config.train`` and the task's epoch length."""
    tc, spe = train_config, task.steps_per_epoch
    if tc.epochs and not spe:
        raise UserError(f"train.epochs is set but task {task.name!r} has no epochs; "
                        "use train.steps")
    total_steps = tc.epochs * spe if tc.epochs else tc.steps
    return total_steps, tc.eval_every or spe or max(total_steps // 10, 1)


def make_apply(model, task, noisy: bool):
    """``apply(params, batch, carries, train, key, input_noise=None, rates=None) -> (outputs,
    carries)``: the model's forward pass. With ``noisy`` (``train.input_noise > 0``) training
    adds Gaussian noise of std ``input_noise`` (a traced scalar: one program serves every std) to
    the inputs; ``rates`` (packed trials) gives the dropout rates as values
    (:meth:`lstm_research.layers.Stack.apply`)."""
    def apply(params, batch, carries, train, key, input_noise=None, rates=None):
        x = batch["x"]
        if train and noisy and not task.token_inputs:
            x = with_noise(prng.fold_in(key, 1), x, input_noise, batch.get("lengths"))
        extra = {"rates": rates} if rates is not None else {}
        return model.apply({"params": params}, x, carries, batch.get("lengths"),
                           train=train, rngs={"dropout": key} if train else None, **extra)
    return apply


def with_noise(key, x, std, lengths=None):
    """``x + std * prng.normal(key, x.shape)`` (``x``: ``[B, T, ...]``). With ``lengths`` the
    noise is drawn and added only on the steps up to the batch's longest sequence, in chunks
    (:func:`lstm_research.visited.at_visited_length`); the padding after them stays as it is.
    The same bits where drawn, for a fraction of the hashing: a Greff JSB update pads its
    sequence (59 steps on average) to 128, and the noise of a width-63 update took 40-65 us of
    its 0.53 ms (one core, 2026-12-02)."""
    def noisy(length, key, x):  # the sum in one fusion as over all T (the same rounding)
        z = prng.normal(key, (x.shape[0], length, *x.shape[2:]), x.dtype, within=x.shape)
        return jnp.concatenate([x[:, :length] + std * z, x[:, length:]], axis=1)
    return visited.at_visited_length(visited.longest_of(lengths), x.shape[1], noisy, key, x)


def make_steps(apply, task, train_config, gate_apply=None):
    """The (unjitted) ``train_step(params, opt_state, batch, carries, key, hyper)`` and
    ``eval_step(params, batch, carries)``. ``hyper`` is
    :func:`~lstm_research.training.optim.runtime_hyperparams` (learning rate, momentum, input
    noise), plus for packed trials ``grad_mask`` (a params-shaped 0/1 tree multiplying the
    gradients), ``dropout_rates`` (see :func:`make_apply`), ``clip_norm`` and ``weight_decay``
    (see :func:`~lstm_research.training.optim.build_optimizer`): inputs of the compiled step,
    not constants in it. With ``gate_apply``
    (:func:`lstm_research.training.diagnostics.eval_with_gates`) the eval step runs through it
    and its sums also hold the gate statistics' sums."""
    def train_step(params, opt_state, batch, carries, key, hyper):
        def loss_fn(p):
            out, new_carries = apply(p, batch, carries, True, key, hyper["input_noise"],
                                     hyper.get("dropout_rates"))
            loss, _ = task.loss(out, batch)
            return loss, new_carries
        (loss, new_carries), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        if "grad_mask" in hyper:  # a packed trial narrower than its pack (training.pack)
            grads = jax.tree.map(lambda g, m: g * m, grads, hyper["grad_mask"])
        opt_state = optim.set_learning_rate(opt_state, hyper["lr"])
        tx = optim.build_optimizer(train_config, momentum=hyper["momentum"],
                                   clip_norm=hyper.get("clip_norm"),
                                   weight_decay=hyper.get("weight_decay"))
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        carries_out = jax.lax.stop_gradient(new_carries) if task.stateful else None
        return params, opt_state, carries_out, {"loss": loss,
                                                "grad_norm": optax.tree.norm(grads)}

    def eval_step(params, batch, carries):
        if gate_apply is None:
            (out, new_carries), gates = apply(params, batch, carries, False, None), {}
        else:
            out, new_carries, gates = gate_apply(params, batch, carries)
        _, sums = task.loss(out, batch)
        return {**sums, **gates}, (new_carries if task.stateful else None)

    return train_step, eval_step


def keyed_by_step(train_step):
    """``train_step`` taking ``(..., base_key, step, hyper)``: the step's key is
    ``fold_in(base_key, step)``, computed inside the compiled program (same bits as outside)."""
    def keyed_train_step(params, opt_state, batch, carries, base_key, step, hyper):
        return train_step(params, opt_state, batch, carries, prng.fold_in(base_key, step),
                          hyper)
    return keyed_train_step


def chunked(train_step):
    """``train_step`` (of a task without carried state) as ``(params, opt_state, batches, n,
    base_key, first_step, lrs, hyper) -> (params, opt_state, metrics)``: updates
    ``first_step + j`` on ``batches[j]`` (stacked by :func:`stack_chunk`) with learning rate
    ``lrs[j]``, for ``j < n`` -- a traced count, so one program serves every ``n`` up to
    ``len(lrs)``; ``metrics`` holds each update's loss and gradient norm (zeros past ``n``).
    Each update's key is ``fold_in(base_key, step)`` as in :func:`keyed_by_step`: the same bits as
    one call per update (``tests/test_training.py``), without a host round trip per update (a
    tenth of a batch-1 update at width 63 on a 2-core CPU)."""
    def train_steps(params, opt_state, batches, n, base_key, first_step, lrs, hyper):
        def body(j, carry):
            params, opt_state, loss, norm = carry
            batch = jax.tree.map(lambda a: a[j], batches)
            params, opt_state, _, m = train_step(params, opt_state, batch, None,
                                                 prng.fold_in(base_key, first_step + j),
                                                 dict(hyper, lr=lrs[j]))
            return params, opt_state, loss.at[j].set(m["loss"]), norm.at[j].set(m["grad_norm"])
        zeros = jnp.zeros(lrs.shape, jnp.float32)
        params, opt_state, loss, norm = jax.lax.fori_loop(0, n, body,
                                                          (params, opt_state, zeros, zeros))
        return params, opt_state, {"loss": loss, "grad_norm": norm}
    return train_steps


def stack_chunk(batches: list[dict], size: int, T: int | None = None) -> dict:
    """Batches of one shape stacked along a new first axis of ``size`` (the rest zeros); with
    ``T``, variable-length batches (with ``lengths``) padded with zeros along time to ``T`` steps
    as :func:`~lstm_research.training.batches.pad_time_to` pads them, in the same copy (padding
    each batch first cost most of the host time of a batch-1 epoch: fresh arrays each)."""
    first = {k: np.asarray(v) for k, v in batches[0].items() if k != "reset"}
    timed = time_keys(first) if T else ()
    out = {k: np.zeros((size, *v.shape[:1], T, *v.shape[2:]) if k in timed
                       else (size, *v.shape), v.dtype) for k, v in first.items()}
    for j, batch in enumerate(batches):
        for k in out:
            v = batch[k]
            if k in timed:
                out[k][j, :, :v.shape[1]] = v
            else:
                out[k][j] = v
    return out


#: per forward pass: the carries' shapes by the shapes of (params, batch) (tracing the model
#: for them took about 0.15 s, at every reset and every evaluation of a stateful task)
_CARRY_SHAPES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def zero_carries(apply, task, mesh, params, batch):
    """Zero recurrent state for ``batch`` (None for tasks that do not carry state)."""
    if not task.stateful:
        return None
    leaves, treedef = jax.tree.flatten((params, batch))
    key = (treedef, tuple((np.shape(a), a.dtype if hasattr(a, "dtype") else np.result_type(a))
                          for a in leaves))
    known = _CARRY_SHAPES.setdefault(apply, {})
    shapes = known.get(key)
    if shapes is None:
        shapes = known[key] = jax.eval_shape(lambda p, b: apply(p, b, None, False, None)[1],
                                             params, batch)
    zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    if not parallel.divides(mesh, zeros):  # replicated, as feed_batch leaves such a batch
        return parallel.replicate(mesh, zeros)
    return parallel.shard_batch(mesh, zeros)


def initial_meta() -> dict:
    """The loop's counters at step 0 (checkpointed next to the arrays)."""
    return {"step": 0, "best_step": -1, "best": None, "best_valid": None, "bad_evals": 0,
            "plateau_scale": 1.0, "plateau_bad": 0, "wall_time": 0.0, "stopped": None}


#: how the init program is compiled on CPU. It runs once, so it is compiled for compile time:
#: without LLVM's optimizations (about 1 s instead of 2 s per new width; other bits of the same
#: distributions than an optimized compile gives: transcendentals are vectorized differently),
#: and with XLA's older loop emitters instead of its fusion emitters (the same bits at level 0;
#: 0.30-0.33 s instead of 0.63-0.67 s at widths 37-150, one core, 2026-12-03; the train step
#: compiled so ran 8-11% slower, so only init is)
INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}
_INIT_PROGRAMS: dict = {}  # compiled init programs of this process, by what decides them
_INIT_PROGRAMS_KEPT = 64


def _init_program(what: tuple, init, args):
    """The compiled ``init`` for ``args``, compiled once per process for ``what`` (the model,
    task and init scheme it initializes) and the arguments' shapes (the trials of a pack, or a
    worker's trials of one width or bucket, differ only in the values they pass)."""
    key = what + (tuple((a.shape, str(a.dtype)) for a in jax.tree.leaves(args)),)
    program = _INIT_PROGRAMS.get(key)
    if program is None:
        # one compiled program: run eagerly, init compiled dozens of small per-shape programs
        # (about 3 s for every new width)
        options = INIT_COMPILER_OPTIONS if jax.default_backend() == "cpu" else None
        program = programs.compiled("init", repr(what), init, args, compiler_options=options)
        if len(_INIT_PROGRAMS) >= _INIT_PROGRAMS_KEPT:
            _INIT_PROGRAMS.pop(next(iter(_INIT_PROGRAMS)))
        _INIT_PROGRAMS[key] = program
    return program


_SHAPES: dict = {}  # params' shapes of this process's models, by what decides them
_SHAPES_KEPT = 64


def forget_programs() -> None:
    """Drop this process's compiled init programs and traced params shapes."""
    _INIT_PROGRAMS.clear()
    _SHAPES.clear()


def _params_shapes(task_cfg, model_cfg, model, args):
    """``model``'s params as shapes (traced once per process for each model, task and shape)."""
    key = (model_cfg.to_json_best_effort(), task_cfg.to_json_best_effort(),
           tuple((a.shape, str(a.dtype)) for a in jax.tree.leaves(args)))
    if key not in _SHAPES:
        if len(_SHAPES) >= _SHAPES_KEPT:
            _SHAPES.pop(next(iter(_SHAPES)))
        _SHAPES[key] = jax.eval_shape(
            lambda x, lengths: model.init(jax.random.key(0), x, None, lengths)["params"], *args)
    return _SHAPES[key]


def _first_batch(task) -> dict:
    batch = pad_time(next(iter(task.train_batches(0))))
    batch.pop("reset", None)
    return batch


def init_arrays(config, task, model, tx, mesh, apply) -> dict:
    """Initial params (:func:`init_params`), optimizer state and zero carries."""
    batch = _first_batch(task)
    params = parallel.shard_params(mesh, init_params(config, task, model, batch))
    opt_state = parallel.shard_params(mesh, optim.init_state(tx, params, config.train.lr))
    carries = zero_carries(apply, task, mesh, params, parallel.shard_batch(mesh, batch))
    return {"params": params, "opt_state": opt_state, "carries": carries}


def init_params(config, task, model, batch=None):
    """Initial params, seeded by ``config.seed``. With ``model.width_multiple``
    (:mod:`lstm_research.models.width`) they are those of the model at its own width, embedded
    with zeros into ``model``'s padded arrays: drawn by one program for every width of the
    bucket, the width a traced input (:func:`~lstm_research.models.width.with_init_width`), where
    :func:`~lstm_research.models.width.shared_init` allows, else by the width's own program."""
    key = jax.random.key(config.seed)
    k_init, k_reinit = jax.random.split(key)
    batch = _first_batch(task) if batch is None else batch  # (traced from its shapes)
    W, Wp = config.model.hidden_size, width.padded_width(config.model)
    if width.shared_init(config, task) is None:  # (train.init "default": no k_reinit)
        def init(k_init, x, lengths, w):
            return width.with_init_width(model, w, config.model).init(
                k_init, x, None, lengths)["params"]
        args = (k_init, batch["x"], batch.get("lengths"), np.int32(W))
        what = ("bucket", width.padded(config.model).to_json_best_effort(),
                config.task.to_json_best_effort())
        params = jax.tree.map(lambda p, m: np.where(m, p, 0).astype(p.dtype),
                              _init_program(what, init, args)(*args),
                              grad_mask(config, task, model))
    else:
        own_config = width.unpadded(config)
        own = model if own_config is config else models.build(own_config.model, task)

        def init(k_init, k_reinit, x, lengths):
            variables = own.init(k_init, x, None, lengths)
            return optim.initialize(config.train, variables["params"], k_reinit)
        args = (k_init, k_reinit, batch["x"], batch.get("lengths"))
        what = (own_config.model.to_json_best_effort(), config.task.to_json_best_effort(),
                config.train.init, config.train.init_scale)
        params = _init_program(what, init, args)(*args)
        if Wp != W:
            big = _params_shapes(config.task, config.model, model, args[2:])
            params = width.embed(params, big, W, Wp)
    return params


def grad_mask(config, task, model):
    """With ``model.width_multiple`` > 1 (:mod:`lstm_research.models.width`), 1 on the params of
    the real units and 0 on those of the padded ones, in ``model``'s padded shapes (the train step
    multiplies the gradients by it: ``hyper["grad_mask"]``). Every width of a bucket passes one,
    all ones where nothing is padded, so that they share one program. None without padding."""
    if width.multiple(config.model) == 1:
        return None
    batch = _first_batch(task)
    args = (batch["x"], batch.get("lengths"))
    # the shapes at the bucket's width and one unit narrower, traced once per bucket (tracing
    # the model at each width cost a new width about 0.1 s)
    below = width.narrower(config.model)
    return width.units_mask(_params_shapes(config.task, config.model, model, args),
                            _params_shapes(config.task, below, models.build(below, task), args),
                            config.model.hidden_size, width.padded_width(config.model))

