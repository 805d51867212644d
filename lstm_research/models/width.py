"""Hidden units padded to a multiple (``model.width_multiple``): one compiled program for every
hidden size of a bucket.

A sweep over hidden sizes compiles a program for each one: Greff et al. 2015 draw them
log-uniform in 20-200, 963 distinct variant-widths among their 1800 trials, and on a 2-core CPU
a new width's compile (5-14 s) costs more than many of those trials' training. With
``model.width_multiple=m`` the recurrent stack runs at the hidden size rounded up to a multiple
of ``m`` and the extra units are exactly zero throughout:

* the model is initialized at its own width, with the bits of a run without padding, and
  embedded into the wider arrays with zeros (:func:`embed`; each gate block padded on its own).
  Where :func:`shared_init` allows (the LSTM with the sequence-to-one or per-step head and the
  cells' own init, as the Greff study), one program initializes every width of the bucket, the
  width a traced input (:func:`with_init_width`): each draw hashes the counters of the width's
  own draw (``prng.uniform_in``), so a new width of a compiled bucket compiles nothing. The
  same bits, but for the orthogonal init above 128 units (LAPACK's blocked QR of the
  identity-completed draw: up to about 2e-6 apart, unless the width is a multiple of 8;
  :func:`lstm_research.cells.base.orthogonal`);
* a padded unit's pre-activations are then 0 at every step, so ``c = f * 0 + i * tanh(0) = 0``
  and ``h = o * tanh(0) = 0``; its outgoing weights are 0, so no real unit or output sees it;
* the gradients of its parameters are multiplied by 0 (the train step's ``grad_mask``,
  :func:`lstm_research.training.steps.grad_mask`), so no optimizer moves them. Most are exactly
  0 anyway (products with a zero ``h``, ``c`` or outgoing weight), but not all: under full gate
  recurrence (FGR) a padded unit's gates are 0.5, and the rows of ``w_gates`` they feed would
  learn.

The results are those of the model without padding up to float rounding (the matmuls sum over
more terms, zeros, in another order; ``tests/test_width.py``). Padding needs an LSTM-family cell
without layer norm or projection, and no dropout or zoneout, whose random masks depend on the
width (:func:`unpaddable`). Packed trials of different widths (:mod:`lstm_research.training.pack`)
are embedded the same way.
"""
from __future__ import annotations

import copy

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lstm_research import cells as cells_lib
from lstm_research import prng
from lstm_research.errors import UserError

WIDTH_KEY = "model.hidden_size"


def multiple(model_cfg) -> int:
    """``model.width_multiple`` (1, no padding, where a saved config predates it)."""
    return model_cfg.get("width_multiple", 1) or 1


def padded_width(model_cfg) -> int:
    """The width the stack runs at: ``hidden_size`` rounded up to ``width_multiple``."""
    m = multiple(model_cfg)
    return -(-model_cfg.hidden_size // m) * m


def unpaddable(model_cfg) -> str | None:
    """None when ``model_cfg``'s units can be padded exactly, else why not."""
    cell = cells_lib.get(model_cfg.cell, model_cfg.hidden_size)
    if cell.name != "lstm" or getattr(cell, "layer_norm", False) or getattr(cell, "proj_size", 0):
        return (f"model.cell={model_cfg.cell!r}: only LSTM-family cells without layer norm or "
                "projection are padded exactly")
    for what in ("dropout", "input_dropout", "recurrent_dropout", "zoneout"):
        if model_cfg.get(what):
            return f"model.{what}={model_cfg.get(what)}: its random masks depend on the width"
    return None


def shared_init(config, task) -> str | None:
    """None when every width of ``config``'s bucket is initialized by one program (the width a
    traced input, :func:`with_init_width`), else why not (the width's own program then initializes it,
    embedded with zeros by :func:`embed`)."""
    if multiple(config.model) == 1:
        return "model.width_multiple=1"
    if config.train.init != "default":
        return f"train.init={config.train.init!r} draws at the arrays' (padded) shapes"
    if task.head not in ("per_step", "seq2one"):
        return f"the {task.head!r} head"
    if config.model.get("bidirectional"):  # (the layers above and the head read two blocks)
        return "model.bidirectional=True"
    if not prng.counter_based(jax.random.key(0)):
        return "the random keys are not counter-based threefry"
    return unpaddable(config.model)


def with_init_width(model, value, model_cfg):
    """``model`` (built from the padded ``model_cfg``) initializing the params of a model of
    width ``value`` (traced, one of the bucket's widths) in the corner of its own arrays (of each
    gate block): the draws of that width's init (same bits; the orthogonal init's QR: see
    :func:`lstm_research.cells.base.orthogonal`). The rest is not zero: the caller zeros it
    (``training.steps.init_arrays``, with the gradient mask)."""
    Hp, m = padded_width(model_cfg), multiple(model_cfg)
    w = cells_lib.base.Width(value, tuple(range(Hp - m + 1, Hp + 1)))
    return model.clone(init_width=w, rnn=model.rnn.clone(init_width=w))


def head_init(used=None):
    """Flax ``Dense``'s kernel init (LeCun normal) for inputs of the traced width ``used``
    (:class:`lstm_research.cells.base.Width`): its rows past ``used`` zero."""
    if used is None:
        return nn.initializers.lecun_normal()

    def init(key, shape, dtype=jnp.float32):  # as jax.nn.initializers.variance_scaling
        # its stddev, sqrt(1 / fan_in) / 0.8796..., as XLA folds those constants (in float32;
        # computed in the program, the division became a multiplication: 1 ulp apart)
        stddev = cells_lib.base.tabulate(lambda fan_in: np.sqrt(np.float32(1.0 / fan_in))
                                         / np.float32(.87962566103423978), used)
        draw = prng.truncated_normal_in(key, -2, 2, shape, (used.value, shape[1]))
        return (draw * stddev).astype(dtype)
    return init


def _with(model_cfg, **values):
    out = copy.deepcopy(model_cfg)
    with out.unlocked():
        for k, v in values.items():
            out[k] = v
    return out


def padded(model_cfg):
    """``model_cfg`` of the stack that runs: its hidden size :func:`padded_width`."""
    Wp = padded_width(model_cfg)
    return model_cfg if Wp == model_cfg.hidden_size else _with(model_cfg, hidden_size=Wp)


def unpadded(config):
    """``config`` (a whole run's) without padding: the model that is initialized."""
    if multiple(config.model) == 1:
        return config
    out = copy.deepcopy(config)
    out.model = _with(config.model, width_multiple=1)
    return out


def narrower(model_cfg):
    """``model_cfg`` without padding at one unit less than its padded width: the axes whose
    size differs from the padded model's are those that hold units (:func:`units_mask`)."""
    return _with(model_cfg, hidden_size=padded_width(model_cfg) - 1, width_multiple=1)


def units_mask(big, below, W: int, Hp: int):
    """1 on the params of a width-``W`` model embedded in ``big`` (shapes at width ``Hp``) as
    :func:`embed` embeds it, 0 on the padded units: along every axis whose size differs in
    ``below`` (the shapes at width ``Hp - 1``, :func:`narrower`), which holds blocks of ``Hp``
    units, the first ``W`` of each block."""
    def one(b, s):
        mask = np.ones(b.shape, b.dtype)
        for ax, (nb, ns) in enumerate(zip(b.shape, s.shape)):
            if nb != ns:
                if nb != (nb - ns) * Hp:
                    raise UserError(f"{WIDTH_KEY}: an array of shape {b.shape} does not grow by "
                                    f"blocks of the width; this model cannot be padded")
                keep = np.arange(nb) % Hp < W
                mask = mask * keep.reshape([-1 if a == ax else 1 for a in range(b.ndim)])
        return mask
    return jax.tree.map(one, big, below)


def embed(small, big, W: int, Hp: int):
    """``small`` (a width-``W`` model's arrays) inside the zeros of ``big``'s shapes (width
    ``Hp``): every axis whose size differs is ``n`` blocks of ``W`` units (gates, directions),
    each block padded to ``Hp``."""
    def one(s, b):
        s = np.asarray(s)
        for ax, (ns, nb) in enumerate(zip(s.shape, b.shape)):
            if ns == nb:
                continue
            n = ns // W
            if ns != n * W or nb != n * Hp:
                raise UserError(f"{WIDTH_KEY}: an array of shape {s.shape} does not grow by "
                                f"blocks of the width ({W} -> {Hp}); this model cannot be padded "
                                "to another width")
            blocks = s.reshape(s.shape[:ax] + (n, W) + s.shape[ax + 1:])
            pad = [(0, 0)] * blocks.ndim
            pad[ax + 1] = (0, Hp - W)
            s = np.pad(blocks, pad).reshape(s.shape[:ax] + (n * Hp,) + s.shape[ax + 1:])
        if s.shape != b.shape:
            raise UserError(f"{WIDTH_KEY}: cannot embed shape {s.shape} into {b.shape}")
        return s.astype(b.dtype)
    return jax.tree.map(one, small, big)
