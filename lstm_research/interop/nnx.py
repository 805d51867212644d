"""Flax NNX adapters: any cell (:class:`NNXCell`) and a whole :class:`~lstm_research.layers.Stack`
(:class:`NNXStack`) as native ``nnx.Module`` s, one ``nnx.Param`` per array, trainable with
``nnx.Optimizer``.

They hold params only; every call rebuilds the pure params dict and runs the pure cell / Stack
on it, so a wrapper computes exactly what ``cell.step`` / ``Stack.apply`` compute with the same
params (``tests/test_nnx.py``). ``pure_params()`` gives that dict (for the PyTorch converters,
checkpoints, ``Stack.apply``); ``params=`` in the constructor copies one in.
"""
from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from lstm_research.cells.base import Cell
from lstm_research.errors import UserError
from lstm_research.layers import Stack


class NNXCell(nnx.Module):
    """A cell as an NNX module: ``carry, y = NNXCell(cell, input_size, rngs=rngs)(carry, x)``.

    Each array of the cell's params (``w_x``, ``w_h``, ``b``, ... as the cell's docstring names
    them) is one ``nnx.Param`` in ``self.params``. ``params=`` (a cell params dict) takes the
    place of ``cell.init(rngs.params(), input_size)``.
    """

    def __init__(self, cell: Cell, input_size: int | None = None, *,
                 rngs: nnx.Rngs | None = None, params: dict | None = None):
        if params is None:
            if input_size is None or rngs is None:
                raise UserError("NNXCell needs input_size= and rngs= (to initialize), "
                                "or params=")
            params = cell.init(rngs.params(), input_size)
        self.cell = cell
        self.params = nnx.Dict({k: nnx.Param(jnp.asarray(v)) for k, v in params.items()})

    def pure_params(self) -> dict:
        """The cell's params dict (current values), as ``cell.init`` lays it out."""
        return {k: v[...] for k, v in self.params.items()}

    def initial_carry(self, batch_shape: tuple[int, ...], dtype=jnp.float32) -> dict:
        return self.cell.initial_carry(tuple(batch_shape), dtype)

    def __call__(self, carry: dict, x):
        """One time step on ``x`` [..., input_size]: ``cell.step(params, carry, x)``."""
        return self.cell.step(self.pure_params(), carry, x)


class NNXStack(nnx.Module):
    """A :class:`~lstm_research.layers.Stack` as an NNX module:
    ``ys, carries = NNXStack(stack, input_size, rngs=rngs)(xs)``.

    ``self.layers[l][direction]`` is an :class:`NNXCell`. Initialized with
    ``stack.init(rngs.params(), input_size)``, or from ``params=`` (Stack params, e.g. from
    :mod:`lstm_research.interop.torch`). Dropout and zoneout act when the module is not
    ``deterministic`` (``model.train()`` / ``model.eval()`` set it for every NNX module, as
    for ``nnx.Dropout``; ``deterministic=`` on a call overrides it) and draw their keys from
    the ``dropout`` stream of ``rngs`` (its ``default`` stream if it has none).
    """

    def __init__(self, stack: Stack, input_size: int | None = None, *,
                 rngs: nnx.Rngs | None = None, params: dict | None = None,
                 deterministic: bool = False, dtype=None):
        if params is None:
            if input_size is None or rngs is None:
                raise UserError("NNXStack needs input_size= and rngs= (to initialize), "
                                "or params=")
            params = stack.init(rngs.params(), input_size)
        if stack.stochastic and rngs is None:
            raise UserError("NNXStack with dropout or zoneout needs rngs= (their masks draw "
                            "from its dropout stream)")
        self.stack = stack
        self.dtype = dtype
        self.deterministic = deterministic
        self.rngs = rngs.dropout.fork() if stack.stochastic else nnx.data(None)
        self.layers = nnx.List([
            nnx.Dict({d: NNXCell(stack.cell, params=layer[d]) for d in stack.directions})
            for layer in params["layers"]])

    def pure_params(self) -> dict:
        """The Stack params (current values): ``{"layers": [{"fwd": ..., "bwd": ...}, ...]}``."""
        return {"layers": [{d: layer[d].pure_params() for d in self.stack.directions}
                           for layer in self.layers]}

    def initial_carry(self, batch_size: int, dtype=jnp.float32) -> list:
        return self.stack.initial_carry(batch_size, dtype)

    def __call__(self, xs, carries=None, *, lengths=None, deterministic: bool | None = None,
                 time_major: bool = False):
        """``Stack.apply`` with this module's params: ``(ys, carries)``."""
        deterministic = self.deterministic if deterministic is None else deterministic
        train = not deterministic and self.stack.stochastic
        return self.stack.apply(self.pure_params(), xs, carries, lengths=lengths, train=train,
                                key=self.rngs() if train else None, dtype=self.dtype,
                                time_major=time_major)
