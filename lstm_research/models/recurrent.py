"""The recurrent stack of every model: ``config.model`` -> one :class:`~lstm_research.layers.Stack`,
and the linen module that holds its params.

The stack's knobs are the fields of ``Stack`` (read with ``dataclasses.fields``): every
``config.model`` key that names a ``Stack`` field is passed to it, so a new ``Stack`` field needs
only its default in ``config.model`` (:func:`lstm_research.training.base_config`). The other
``config.model`` keys are the model's own (:data:`MODEL_KEYS`).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from lstm_research import cells as cells_lib
from lstm_research.errors import UserError
from lstm_research.layers import Stack

#: the Stack's knobs: its dataclass fields besides the cell
STACK_KNOBS = tuple(f.name for f in dataclasses.fields(Stack) if f.name != "cell")
#: config.model keys that are not Stack knobs: the cell, and the model around the stack
MODEL_KEYS = ("cell", "hidden_size", "width_multiple", "embedding_size", "tie_embeddings",
              "dtype")
DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}
#: config.model.fused is a string on the command line; the Stack takes "auto", a bool or
#: "pallas" (the opt-in Pallas LSTM kernel, :mod:`lstm_research.layers.pallas_lstm`)
FUSED = {"auto": "auto", "true": True, "false": False, "pallas": "pallas"}


def stack_knobs(values: dict) -> dict:
    """The entries of ``values`` that are Stack knobs (a zoneout of 0 is no zoneout)."""
    knobs = {k: v for k, v in values.items() if k in STACK_KNOBS}
    if "zoneout" in knobs:
        knobs["zoneout"] = knobs["zoneout"] or None
    if isinstance(knobs.get("fused"), str):
        if knobs["fused"] not in FUSED:
            raise UserError(f"model.fused={knobs['fused']!r}; valid: {', '.join(FUSED)}")
        knobs["fused"] = FUSED[knobs["fused"]]
    return knobs


def make_stack(cfg) -> Stack:
    """The Stack of ``config.model``; UserError on a key that is neither a knob nor a model key
    (and, from ``cells.get``, on a bad cell or switch, listing the valid choices)."""
    unknown = sorted(set(cfg) - set(STACK_KNOBS) - set(MODEL_KEYS))
    if unknown:
        raise UserError(f"unknown model key(s) {unknown}; valid: "
                        f"{sorted(STACK_KNOBS + MODEL_KEYS)}")
    return Stack(cells_lib.get(cfg["cell"], cfg["hidden_size"]), **stack_knobs(dict(cfg)))


def compute_dtype(name: str):
    if name not in DTYPES:
        raise UserError(f"model.dtype={name!r}; valid: 'float32', 'bfloat16'")
    return DTYPES[name]


def stack_layer(module: nn.Module, stack: Stack, xs, carries, lengths, train: bool, dtype=None,
                rates=None, init_width=None):
    """Run ``stack`` inside the linen ``module``: its params are one param ``"stack"`` in the
    Stack's own layout, dropout draws from the ``"dropout"`` rng stream; ``rates``: see
    :meth:`Stack.apply`; ``init_width``: see :meth:`Stack.init`."""
    params = module.param("stack", lambda key: stack.init(key, xs.shape[-1], init_width))
    key = module.make_rng("dropout") if train and stack.stochastic else None
    return stack.apply(params, xs, carries, lengths=lengths, train=train, key=key, dtype=dtype,
                       rates=rates)


class StackModule(nn.Module):
    """A built :class:`Stack` as a linen module: ``(ys, carries) = module(xs, carries, lengths,
    train)``. Models name it ``"rnn"``, so its params sit at ``params/rnn/stack``."""
    stack: Stack
    dtype: Any = None
    init_width: Any = None  # initialized at this traced width (lstm_research.models.width)

    @nn.compact
    def __call__(self, xs, carries=None, lengths=None, train: bool = False, rates=None):
        return stack_layer(self, self.stack, xs, carries, lengths, train, self.dtype, rates,
                           self.init_width)
