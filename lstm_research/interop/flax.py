"""Flax linen adapters for users of ``nn.RNN`` and linen models: the whole stack as a module with
string knobs (:class:`RNNStack`), and any cell as an ``nn.RNNCellBase`` (:class:`FlaxCell`).

The training models do not go through here: they build their Stack in
:mod:`lstm_research.models.recurrent`, which :class:`RNNStack` shares."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

from lstm_research import cells as cells_lib
from lstm_research.cells.base import Cell
from lstm_research.layers import Stack
from lstm_research.models.recurrent import stack_knobs, stack_layer


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
        """The Stack: every attribute of this module that names a Stack knob is passed on."""
        knobs = stack_knobs({k: getattr(self, k) for k in self.__dataclass_fields__})
        return Stack(cells_lib.get(self.cell, self.hidden_size), **knobs)

    @nn.compact
    def __call__(self, xs, carries=None, lengths=None, train: bool = False):
        return stack_layer(self, self.make_stack(), xs, carries, lengths, train, self.dtype)


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
