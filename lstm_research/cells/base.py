"""What every cell is: pure functions over a params pytree, plus the helpers they share.

A cell is a frozen dataclass whose fields are its *switches* (hidden size, gates on/off,
activations, ...). It holds no parameters and no state; it offers

* ``init(key, input_size) -> params``: a dict of named arrays,
* ``initial_carry(batch_shape, dtype) -> carry``: a dict of named arrays,
* ``project(params, x) -> px``: the part of a step that reads only the input. It accepts any
  leading dimensions, so the scanned core computes it for all time steps in one matmul
  ("hoisting"); cells whose input path depends on the state (Mogrifier) return ``x`` unchanged,
* ``recur(params, carry, px) -> (carry, y)``: the rest of the step,
* ``step(params, carry, x) = recur(params, carry, project(params, x))``.

Weights multiply from the right (``x @ w_x``), so ``w_x`` has shape ``[input, gates * hidden]``.
"""
from __future__ import annotations

import ast
import dataclasses
import math
import re
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lstm_research import prng
from lstm_research.errors import UserError

Params = dict
Carry = dict

ACTIVATIONS: dict[str, Callable] = {
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "identity": lambda x: x,
    "relu": jax.nn.relu,
    "softsign": jax.nn.soft_sign,
    "hard_tanh": jax.nn.hard_tanh,
    "hard_sigmoid": jax.nn.hard_sigmoid,
}


#: switch annotation -> the types its values may have (``bool`` only where listed: True is an
#: int to Python). Switches annotated otherwise (``tuple[int, ...]``, ...) are not type-checked
#: here; the cell's ``validate`` checks them.
_TYPES = {"int": (int,), "bool": (bool,), "str": (str,), "float": (int, float),
          "float | None": (int, float, type(None))}


class CellConfigError(UserError):
    """An unknown cell or switch name, a bad switch value, or contradictory switches."""


def activation(name: str, what: str) -> Callable:
    if name not in ACTIVATIONS:
        raise CellConfigError(
            f"unknown {what} {name!r}; valid choices: {', '.join(sorted(ACTIVATIONS))}")
    return ACTIVATIONS[name]


@dataclasses.dataclass(frozen=True)
class Cell:
    """Base class. Subclasses add switch fields and implement init/initial_carry/recur."""

    hidden_size: int

    #: carry entry fed back through recurrent weights (variational recurrent dropout acts on it);
    #: None for cells with no recurrent matrix (mLSTM, minLSTM, minGRU).
    recurrent_key = "h"
    #: carry entries zoneout may act on (state that is meaningful unit by unit)
    zoneout_keys = ("h",)
    #: True if the cell has a parallel-over-time form (``scan_parallel``).
    has_parallel_form = False

    def __post_init__(self):
        if not isinstance(self.hidden_size, int) or self.hidden_size <= 0:
            raise CellConfigError(f"hidden_size must be a positive int, got {self.hidden_size!r}")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            # the annotation as written (a string under ``from __future__ import annotations``)
            type_name = f.type.__name__ if type(f.type) is type else str(f.type)
            allowed = _TYPES.get(type_name)
            if allowed is None:
                continue
            if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
                raise CellConfigError(
                    f"{self.name}: switch {f.name}={value!r} must be of type {type_name}")
        self.validate()

    def validate(self) -> None:
        """Refuse contradictory switches (raise CellConfigError with the reason)."""

    @property
    def name(self) -> str:
        return type(self).__name__

    @property
    def output_size(self) -> int:
        return self.hidden_size

    # --- the interface -------------------------------------------------------------------
    def init(self, key: jax.Array, input_size: int) -> Params:
        raise NotImplementedError

    def initial_carry(self, batch_shape: tuple[int, ...], dtype=jnp.float32) -> Carry:
        return {"h": jnp.zeros((*batch_shape, self.hidden_size), dtype)}

    def project(self, params: Params, x: jax.Array):
        return x

    def recur(self, params: Params, carry: Carry, px) -> tuple[Carry, jax.Array]:
        raise NotImplementedError

    def recur_dropped(self, params: Params, carry: Carry, px,
                      mask: jax.Array) -> tuple[Carry, jax.Array]:
        """``recur`` under variational recurrent dropout (Gal & Ghahramani 2016): ``mask``
        multiplies ``carry[recurrent_key]`` where it enters the recurrent weights. Here the
        entry is masked before the step, which is that for a cell that uses it only through its
        recurrent weights; a cell that also carries it forward elementwise (the GRU's
        ``h_t = u_t h_{t-1} + ...``) overrides this, so dropout does not erase its memory."""
        key = self.recurrent_key
        return self.recur(params, {**carry, key: carry[key] * mask}, px)

    def recur_gates(self, params: Params, carry: Carry,
                    px) -> tuple[Carry, jax.Array, dict[str, jax.Array]]:
        """``recur`` plus the step's gate activations ``{gate name: [..., H]}`` (each in [0, 1]),
        for diagnostics (:mod:`lstm_research.training.diagnostics`); cells without gates return
        ``{}``. A cell with gates computes its step here and its ``recur`` drops the gates."""
        carry, y = self.recur(params, carry, px)
        return carry, y, {}

    def step(self, params: Params, carry: Carry, x: jax.Array) -> tuple[Carry, jax.Array]:
        """One time step on raw input ``x`` of shape ``[..., input_size]``."""
        return self.recur(params, carry, self.project(params, x))


def input_size_of(params: Params) -> int | None:
    for name in ("w_x", "mog_r"):
        if name in params:
            return params[name].shape[-2] if name == "w_x" else params[name].shape[-1]
    return None


# --- initializers shared by the cells ---------------------------------------------------------
# ``used`` (optional): the sizes, per axis of ``shape``, of the array drawn, where one of them is
# a :class:`Width` (traced): that array is laid out in the leading corner of ``shape`` (of each
# gate block), with the bits of the draw at those sizes (``prng.uniform_in``); the entries
# outside it are not zeros (the caller zeros them). ``lstm_research.models.width`` initializes
# every width of a bucket so, in one program.

class Width(NamedTuple):
    """A hidden size known when the program runs: ``value`` (a traced int32 scalar), one of the
    consecutive static ``choices``."""
    value: Any
    choices: tuple[int, ...]


def _traced(sizes) -> Width | None:
    widths = [s for s in sizes if isinstance(s, Width)]
    if any(w.choices != widths[0].choices for w in widths):
        raise ValueError("sizes of one draw must be one Width")
    return widths[0] if widths else None


def tabulate(f, *sizes):
    """``f(*sizes)``; where a size is a :class:`Width`, ``f`` at each of its choices (Python
    floats, as for a static size), as float32 and taken at its value: the bits a static size
    gives its constant."""
    w = _traced(sizes)
    if w is None:
        return f(*sizes)
    table = np.asarray([f(*(c if isinstance(s, Width) else s for s in sizes))
                        for c in w.choices], np.float32)
    return jnp.asarray(table)[w.value - w.choices[0]]


def value(size):
    """A size's value: the int, or a :class:`Width`'s traced value."""
    return size.value if isinstance(size, Width) else size


def inside(n, used) -> jax.Array:
    """``[n]``: True on the first ``used`` entries."""
    return jnp.arange(n) < value(used)


def uniform(key, shape, scale, dtype=jnp.float32, used=None):
    if used is None or _traced(used) is None:
        return jax.random.uniform(key, shape, dtype, -scale, scale)
    return prng.uniform_in(key, shape, tuple(map(value, used)), -scale, scale).astype(dtype)


def blocks(draw, key, n_blocks):
    """``draw(k)`` (an ``[rows, cols]`` array) for each of ``n_blocks`` keys split from ``key``,
    side by side: ``[rows, n_blocks * cols]``, block ``g`` drawn with the ``g``-th key. One
    vmapped draw: the same bits as ``n_blocks`` separate draws concatenated, in half the compile
    time of those (a new width's init program, 2026-12-03: Glorot 0.32 -> 0.15 s, orthogonal
    0.40 -> 0.21 s for four gate blocks; ``tests/test_cells_reference.py`` checks the bits)."""
    w = jax.vmap(draw)(jax.random.split(key, n_blocks))  # [n_blocks, rows, cols]
    return jnp.moveaxis(w, 0, -2).reshape(*w.shape[1:-1], n_blocks * w.shape[-1])


def glorot(key, fan_in, fan_out, n_blocks=1, dtype=jnp.float32, used=None):
    """Glorot-uniform ``[fan_in, n_blocks * fan_out]``, each gate block scaled on its own fan."""
    scale = tabulate(lambda i, o: math.sqrt(6.0 / (i + o)), *(used or (fan_in, fan_out)))
    return blocks(lambda k: uniform(k, (fan_in, fan_out), scale, dtype, used), key, n_blocks)


def orthogonal(key, rows, cols, n_blocks=1, dtype=jnp.float32, used=None):
    """Orthogonal ``[rows, n_blocks * cols]``, one orthogonal matrix per gate block. With a
    traced ``used`` (square, ``(w, w)``) each block is the QR of the width's normal draw
    completed by the identity to ``[rows, rows]`` (``Q = diag(Q_w, I)``): the same bits as at
    the width up to 128 units; above, LAPACK's blocked QR rounds otherwise unless the width is
    a multiple of 8 (up to about 2e-6)."""
    if used is None or _traced(used) is None:
        init = jax.nn.initializers.orthogonal()
        return blocks(lambda k: init(k, (rows, cols), dtype), key, n_blocks)
    if rows != cols or used[0] is not used[1]:
        raise ValueError(f"an orthogonal init of traced sizes must be square, got {used}")

    def square(k):  # as jax.random.orthogonal computes it
        # the draw in the corner and the identity around it: D z D + (I - D), D = diag(units
        # used), as matmuls (exact; a select fused into the draw rounds it otherwise: see prng)
        d = jnp.diag(inside(rows, used[0]).astype(jnp.float32))
        z = d @ prng.normal_in(k, (rows, rows), tuple(map(value, used))) @ d
        q, r = jnp.linalg.qr(z + (jnp.eye(rows, dtype=jnp.float32) - d))
        return (q * jnp.expand_dims(jnp.sign(jnp.diagonal(r)), -2)).astype(dtype)
    return blocks(square, key, n_blocks)


def split_gates(pre: jax.Array, names: tuple[str, ...]) -> dict[str, jax.Array]:
    """Split ``[..., len(names) * H]`` into a dict of ``[..., H]`` arrays, in ``names`` order."""
    return dict(zip(names, jnp.split(pre, len(names), axis=-1)))


def layer_norm(x, scale, bias, eps=1e-5):
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps) * scale + bias


def parse_switch_value(text: str) -> Any:
    """Parse one command-line value; the one parser for cell strings and sweep specs.

    ``true``/``false`` (any case) -> bool; ``none``/``null`` -> None; ``3`` -> int;
    ``1e-3``/``0.5``/``.5`` -> float; ``(64,64)``/``[1,2]`` -> tuple; ``'3'`` or ``"3"`` -> the
    str ``3``; anything else (``tanh``, ``inf``, ``a:b``) -> the stripped string. A malformed
    tuple/list literal raises :class:`CellConfigError`.
    """
    s = text.strip()
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "'\"":
        return s[1:-1]
    low = s.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    if re.fullmatch(r"[+-]?\d+", s):
        return int(s)
    if re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", s):
        return float(s)
    if s[:1] in "([" and s[-1:] in ")]":
        try:
            value = ast.literal_eval(s)
        except (ValueError, SyntaxError) as e:
            raise CellConfigError(f"cannot parse the value {text!r} as a tuple/list literal: {e}") from None

        def as_tuples(v):
            return tuple(as_tuples(x) for x in v) if isinstance(v, (list, tuple)) else v

        return as_tuples(value)
    return s

