"""Optimizers, learning-rate schedules and parameter initialization schemes."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lstm_research.errors import UserError

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "rmsprop")
SCHEDULES = ("constant", "zaremba", "plateau", "cosine")
INITS = ("default", "uniform", "glorot")


def build_optimizer(cfg, momentum=None, clip_norm=None,
                    weight_decay=None) -> optax.GradientTransformation:
    """optax chain: global-norm clipping, then the optimizer with an injectable learning rate
    (the loop sets it every step from the schedule, so it lives in the optimizer state).

    ``momentum`` overrides ``cfg.momentum``: the train step passes it as a traced scalar
    (:func:`runtime_hyperparams`), so that one compiled program serves every momentum. The
    optimizer state does not depend on it. ``clip_norm`` and ``weight_decay`` likewise override
    the config's values (packed trials, each with its own): whether clipping and weight decay
    are in the chain at all is still decided by the config's (nonzero) values; a trial that has
    none passes an infinite norm and a decay of 0, which change nothing."""
    name = cfg.optimizer
    if name not in OPTIMIZERS:
        raise UserError(f"train.optimizer={name!r}; valid: {', '.join(OPTIMIZERS)}")
    momentum = cfg.momentum if momentum is None else momentum
    decay = cfg.weight_decay if weight_decay is None else weight_decay

    def make(learning_rate):
        if name == "sgd":
            return optax.sgd(learning_rate)
        if name in ("momentum", "nesterov"):
            return optax.sgd(learning_rate, momentum=momentum, nesterov=name == "nesterov")
        if name == "adam":
            return optax.adamw(learning_rate, weight_decay=decay) if cfg.weight_decay \
                else optax.adam(learning_rate)
        return optax.rmsprop(learning_rate, momentum=momentum)

    clip = cfg.clip_norm if clip_norm is None else clip_norm
    parts = [optax.clip_by_global_norm(clip)] if cfg.clip_norm else []
    if cfg.weight_decay and name != "adam":
        parts.append(optax.add_decayed_weights(decay))
    parts.append(optax.inject_hyperparams(make)(learning_rate=cfg.lr))
    return optax.chain(*parts)


def runtime_hyperparams(cfg, lr: float) -> dict:
    """The hyperparameters that the compiled train step takes as inputs rather than constants,
    as numpy float32 scalars: the step's learning rate ``lr`` (from :func:`learning_rate`),
    ``cfg.momentum`` and ``cfg.input_noise``. Trials of a sweep that differ only in these
    lower to the same program, so a sweep worker compiles it once (JAX's persistent compilation
    cache serves the rest)."""
    return {"lr": np.float32(lr), "momentum": np.float32(cfg.momentum),
            "input_noise": np.float32(cfg.input_noise)}


def init_state(tx: optax.GradientTransformation, params, lr):
    """``tx.init(params)`` for an optimizer of :func:`build_optimizer` with learning rate ``lr``,
    without compiling anything per parameter shape.

    Every optimizer of :data:`OPTIMIZERS` starts its per-parameter buffers (momentum trace, Adam's
    moments, RMSProp's square average) and its counts at zero; the one other leaf is the injected
    learning rate. So the state is zeros of the shapes ``tx.init`` would give (traced, not run),
    with the learning rate set. (An eager ``tx.init`` compiled one zeros program per parameter
    shape: six per new LSTM width, a quarter of a second of every new width's fixed cost in a
    sweep. ``tests/test_training.py`` checks the two are equal for every optimizer.)"""
    shapes = jax.eval_shape(tx.init, params)
    return set_learning_rate(jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes), lr)


def set_learning_rate(opt_state, lr):
    """Return ``opt_state`` with the injected learning rate replaced by ``lr``."""
    *rest, inner = opt_state
    hp = dict(inner.hyperparams, learning_rate=jnp.asarray(lr, inner.hyperparams["learning_rate"].dtype))
    return (*rest, inner._replace(hyperparams=hp))


def learning_rate(cfg, step: int, steps_per_epoch: int | None, total_steps: int,
                  plateau_scale: float) -> float:
    """The learning rate for global step ``step``.

    * constant;
    * zaremba (Zaremba et al. 2014): lr for the first ``decay_after_epochs`` epochs, then divided
      by ``decay_factor`` at the start of every further epoch;
    * plateau: lr times ``plateau_scale`` (divided by ``decay_factor`` by the loop whenever the
      validation metric has not improved for ``plateau_patience`` evaluations);
    * cosine: cosine decay to 0 over the run.
    """
    name = cfg.schedule
    if name not in SCHEDULES:
        raise UserError(f"train.schedule={name!r}; valid: {', '.join(SCHEDULES)}")
    if name == "zaremba":
        if not steps_per_epoch:
            raise UserError("train.schedule='zaremba' needs an epoch-based task (ptb, jsb)")
        epoch = step // steps_per_epoch
        return cfg.lr / cfg.decay_factor ** max(0, epoch + 1 - cfg.decay_after_epochs)
    if name == "plateau":
        return cfg.lr * plateau_scale
    if name == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
    return cfg.lr


def initialize(cfg, params, key):
    """Re-initialize every parameter by ``train.init``: 'uniform' draws U(-init_scale,
    init_scale) for all of them (Zaremba et al. 2014) and adds the cell's initial gate biases
    to its biases ``b`` (``forget_bias``, ``input_bias``, ``output_bias``: an LSTM-b of
    Jozefowicz et al. 2015 is ``lstm:forget_bias=1`` with ``b_f`` drawn U(-s, s) + 1; every cell
    initializes ``b`` to those switches and zeros, so without them the draw is unchanged);
    'glorot' draws Glorot-uniform for every matrix and keeps vectors (biases, peepholes, norms);
    'default' keeps each cell's own init (Glorot inputs, orthogonal recurrent weights, forget
    bias from the cell's ``forget_bias``)."""
    if cfg.init not in INITS:
        raise UserError(f"train.init={cfg.init!r}; valid: {', '.join(INITS)}")
    if cfg.init == "default":
        return params
    paths, treedef = jax.tree_util.tree_flatten_with_path(params)
    keys = jax.random.split(key, len(paths))

    def draw(k, path, p):
        if cfg.init == "uniform":
            u = jax.random.uniform(k, p.shape, p.dtype, -cfg.init_scale, cfg.init_scale)
            return u + p if _is_gate_bias(path) else u
        if p.ndim >= 2:
            s = math.sqrt(6.0 / (p.shape[-2] + p.shape[-1]))
            return jax.random.uniform(k, p.shape, p.dtype, -s, s)
        return p

    return jax.tree.unflatten(treedef, [draw(k, path, p) for k, (path, p) in zip(keys, paths)])


def _is_gate_bias(path) -> bool:
    """Whether a params path ends in a cell's gate biases ``b`` (see the cells' docstrings)."""
    last = path[-1] if path else None
    return getattr(last, "key", None) == "b"
