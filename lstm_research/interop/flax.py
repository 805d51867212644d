"""Flax linen adapters for users of ``nn.RNN`` and linen models: the whole stack as a module with
string knobs (:class:`RNNStack`), and any cell as an ``nn.RNNCellBase`` (:class:`FlaxCell`).

The training models do not go through here: they build their Stack in
:mod:`lstm_research.models.recurrent`, whose knobs :class:`RNNStack` shares."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

from lstm_research import cells as cells_lib
from lstm_research.cells.base import Cell
from lstm_research.layers import Stack
from lstm_research.models.recurrent import stack_knobs


def linen_layout(stack_params: dict) -> dict:
    """Stack params ``{"layers": [layer 0, layer 1, ...]}`` -> :class:`RNNStack`'s ``"stack"``
    param ``{"layers": {"0": layer 0, "1": layer 1, ...}}``.

    Why dicts: linen variables are nested dicts down to arrays, and ``nnx.bridge.ToNNX`` makes
    one ``nnx.Param`` per leaf of that tree. A Python list is a leaf to it, so the list layout
    became a single Param holding a list, which ``nnx.Optimizer`` broke on its second step
    (the optimizer state's list came back as an ``nnx.State``)."""
    return {"layers": {str(i): layer for i, layer in enumerate(stack_params["layers"])}}


def stack_layout(linen_params: dict) -> dict:
    """:class:`RNNStack`'s ``"stack"`` param -> Stack params (the inverse of
    :func:`linen_layout`), e.g. for ``Stack.apply`` or the PyTorch converters."""
    layers = linen_params["layers"]
    return {"layers": [layers[str(i)] for i in range(len(layers))]}


class RNNStack(nn.Module):
    """A :class:`~lstm_research.layers.Stack` as a linen module.

    ``RNNStack(cell="vanilla:peepholes=false", hidden_size=128, num_layers=2)(xs)`` returns
    ``(ys, carries)``. Its params are one param ``"stack"``, the Stack's params with the list of
    layers as a dict keyed ``"0", "1", ...`` (:func:`linen_layout`; :func:`stack_layout` goes
    back, e.g. for the converters in :mod:`lstm_research.interop.torch`), so that
    ``nnx.bridge.ToNNX(RNNStack(...))`` gets one ``nnx.Param`` per array. Dropout draws from
    the ``"dropout"`` rng stream when ``train=True``.
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
        stack = self.make_stack()
        params = self.param("stack", lambda key: linen_layout(stack.init(key, xs.shape[-1])))
        key = self.make_rng("dropout") if train and stack.stochastic else None
        return stack.apply(stack_layout(params), xs, carries, lengths=lengths, train=train,
                           key=key, dtype=self.dtype)


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
