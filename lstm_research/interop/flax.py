"""Flax linen wrappers: the whole stack as a module, and any cell as an ``nn.RNNCellBase``."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

from lstm_research import cells as cells_lib
from lstm_research.cells.base import Cell
from lstm_research.layers import Stack


class RNNStack(nn.Module):
    """A :class:`~lstm_research.layers.Stack` as a linen module.

    ``RNNStack(cell="vanilla:peepholes=false", hidden_size=128, num_layers=2)(xs)`` returns
    ``(ys, carries)``. Params live under ``"stack"`` in our layout (see ``Stack``), so the
    converters in :mod:`lstm_research.interop.torch` apply to them. Dropout draws from the
    ``"dropout"`` rng stream when ``train=True``.
    """

    cell: str = "lstm"
    hidden_size: int = 128
    num_layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.0
    input_dropout: float = 0.0
    recurrent_dropout: float = 0.0
    zoneout: Any = None
    parallel: bool = False
    remat: bool = False
    dtype: Any = None

    def make_stack(self) -> Stack:
        return Stack(cells_lib.get(self.cell, self.hidden_size), num_layers=self.num_layers,
                     bidirectional=self.bidirectional, dropout=self.dropout,
                     input_dropout=self.input_dropout, recurrent_dropout=self.recurrent_dropout,
                     zoneout=self.zoneout, parallel=self.parallel, remat=self.remat)

    @nn.compact
    def __call__(self, xs, carries=None, lengths=None, train: bool = False):
        stack = self.make_stack()
        params = self.param("stack", lambda key: stack.init(key, xs.shape[-1]))
        key = self.make_rng("dropout") if train and stack.stochastic else None
        return stack.apply(params, xs, carries, lengths=lengths, train=train, key=key,
                           dtype=self.dtype)


class FlaxCell(nn.RNNCellBase):
    """Any of our cells as a linen RNN cell, for ``nn.RNN`` and ``nn.Bidirectional``.

    ``nn.RNN(FlaxCell(cells.get("cifg", 64)))(xs)``. The cell's params are one param named
    ``"cell"`` holding our params dict.
    """

    cell: Cell

    @nn.compact
    def __call__(self, carry, x):
        params = self.param("cell", lambda key: self.cell.init(key, x.shape[-1]))
        return self.cell.step(params, carry, x)

    @nn.nowrap
    def initialize_carry(self, rng: jax.Array, input_shape: tuple[int, ...]):
        del rng
        return self.cell.initial_carry(tuple(input_shape[:-1]))

    @property
    def num_feature_axes(self) -> int:
        return 1
