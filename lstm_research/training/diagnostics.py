"""Gate diagnostics for evaluation (``train.gate_stats=True``): per layer and gate, the mean
activation, the fraction saturated (below 0.05 or above 0.95), and the forget gate's implied
timescale, over the real (unpadded) steps of an evaluation split.

The fused LSTM layer does not return its gates, so :func:`eval_with_gates` records the input of
the model's recurrent stack during the ordinary evaluation forward pass and runs the stack a
second time, on the generic ``lax.scan`` path, with each cell wrapped in :class:`GateRecorder`:
the wrapper calls the cell's ``recur_gates`` (the same step as ``recur``) and adds the step's
gate sums into the carry. The stack's own masking freezes the carry past each sequence's end,
so padded steps add nothing; layers, directions, zoneout (its test-time expectation) and the
carried state of stateful tasks are exactly those of the evaluated model.

Metrics (``L`` = layer index, ``_bwd`` appended for the backward direction; gate names are the
cell's: ``i``, ``f``, ``o`` for the LSTM family, ``r``, ``u`` for the GRU):

* ``gates/L<l>/<g>_mean``: mean activation over real steps, batch and units;
* ``gates/L<l>/<g>_sat``: fraction of those activations below 0.05 or above 0.95;
* ``gates/L<l>/f_timescale``: 1 / (1 - mean f), the number of steps over which a cell keeps
  1/e of its content if the forget gate stayed at its mean (of the mean gate, not a mean of
  per-step timescales, which one gate at 1.0 in float32 would make infinite).

Only the gates a cell computes are reported: NIG has no ``i``, NOG no ``o``, NFG no ``f`` (f = 1,
an infinite timescale), CIFG reports ``f`` = 1 - i (the coupled forget gate) next to ``i``; cells
without gates (Elman, minLSTM, xLSTM, Mogrifier's own gates aside) report nothing.
"""
from __future__ import annotations

import dataclasses
import inspect

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lstm_research.cells.base import Cell
from lstm_research.models.recurrent import StackModule

#: activations below LOW or above HIGH count as saturated
LOW, HIGH = 0.05, 0.95
#: prefix of every gate metric (and of the evaluation sums behind them)
PREFIX = "gates/"
_SUMS = "gate_sums"


@dataclasses.dataclass(frozen=True)
class GateRecorder(Cell):
    """``inner`` with a ``gate_sums`` carry entry: per batch element, the number of steps and,
    per gate, the sum of its activations and the count of saturated ones (summed over units).
    Run only from given carries (:func:`gate_sums` adds the zero sums)."""

    inner: Cell = None

    def __post_init__(self):
        for what in ("recurrent_key", "zoneout_keys"):
            object.__setattr__(self, what, getattr(self.inner, what))

    @property
    def name(self):
        return self.inner.name

    @property
    def output_size(self):
        return self.inner.output_size

    def project(self, params, x):
        return self.inner.project(params, x)

    def recur(self, params, carry, px):
        sums = carry[_SUMS]
        inner = {k: v for k, v in carry.items() if k != _SUMS}
        new, y, gates = self.inner.recur_gates(params, inner, px)
        out = {"steps": sums["steps"] + 1.0}
        for g, a in gates.items():
            a = a.astype(jnp.float32)
            out[f"{g}_sum"] = sums[f"{g}_sum"] + a.sum(-1)
            out[f"{g}_sat"] = sums[f"{g}_sat"] + ((a < LOW) | (a > HIGH)).sum(-1).astype(jnp.float32)
        return {**new, _SUMS: out}, y


def _zero_sums(cell: Cell, params, carry, px_like) -> dict:
    """Zero sums for every gate ``cell`` reports, [B] each (found by tracing one step)."""
    _, _, gates = jax.eval_shape(cell.recur_gates, params, carry, px_like)
    batch = jax.tree.leaves(carry)[0].shape[:-1]
    zeros = {"steps": jnp.zeros(batch, jnp.float32)}
    for g in gates:
        zeros[f"{g}_sum"] = zeros[f"{g}_sat"] = jnp.zeros(batch, jnp.float32)
    return zeros


def gate_sums(stack, params, xs, carries, lengths, dtype=None) -> dict:
    """Evaluation sums of the gate metrics of ``stack`` (a :class:`~lstm_research.layers.Stack`)
    with ``params`` on batch-major ``xs`` [B, T, I] from ``carries`` (None: zeros): one
    ``{PREFIX}L<l>[_bwd]/{count|<g>_sum|<g>_sat}`` scalar each, summed over the batch
    (``count``: real steps x units, the number of activations of each gate)."""
    if dtype is not None:
        params = jax.tree.map(lambda p: p.astype(dtype), params)
        xs = xs.astype(dtype)
    B = xs.shape[0]
    if carries is None:
        carries = stack.initial_carry(B, xs.dtype)
    cell = stack.cell
    recorded = []
    for layer, (p_layer, c_layer) in enumerate(zip(params["layers"], carries)):
        c_rec = {}
        for d in stack.directions:
            c = jax.tree.map(lambda a: a.astype(xs.dtype), c_layer[d])
            px_like = jax.eval_shape(cell.project, p_layer[d],
                                     jax.ShapeDtypeStruct((B, _in_size(stack, layer, xs)), xs.dtype))
            c_rec[d] = {**c, _SUMS: _zero_sums(cell, p_layer[d], c, px_like)}
        recorded.append(c_rec)
    rerun = dataclasses.replace(stack, cell=GateRecorder(cell.hidden_size, cell), fused=False,
                                parallel=False)
    _, final = rerun.apply(params, xs, recorded, lengths=lengths, train=False)
    out = {}
    for layer, c_layer in enumerate(final):
        for d in stack.directions:
            name = f"{PREFIX}L{layer}" + ("_bwd" if d == "bwd" else "")
            sums = c_layer[d][_SUMS]
            out[f"{name}/count"] = sums.pop("steps").sum() * cell.hidden_size
            out.update({f"{name}/{k}": v.sum() for k, v in sums.items()})
    return out


def _in_size(stack, layer, xs) -> int:
    return xs.shape[-1] if layer == 0 else stack.output_size


def gate_metrics(sums: dict) -> dict[str, float]:
    """The gate metrics (see the module docstring) from :func:`gate_sums` merged over batches."""
    layers = sorted({k[len(PREFIX):].split("/")[0] for k in sums if k.startswith(PREFIX)})
    out = {}
    for name in layers:
        base = f"{PREFIX}{name}/"
        n = float(sums[base + "count"])
        gates = [k[len(base):-len("_sum")] for k in sums if k.startswith(base) and k.endswith("_sum")]
        for g in gates:
            out[f"{base}{g}_mean"] = float(sums[f"{base}{g}_sum"]) / n if n else float("nan")
            out[f"{base}{g}_sat"] = float(sums[f"{base}{g}_sat"]) / n if n else float("nan")
        if "f" in gates:
            out[f"{base}f_timescale"] = 1.0 / max(1.0 - out[f"{base}f_mean"], 1e-12)
    return out


def split_sums(sums: dict) -> tuple[dict, dict]:
    """(the task's sums, the gate sums) of merged evaluation sums."""
    gates = {k: v for k, v in sums.items() if k.startswith(PREFIX)}
    return {k: v for k, v in sums.items() if not k.startswith(PREFIX)}, gates


def eval_with_gates(apply, model):
    """``run(params, batch, carries) -> (outputs, carries, gate sums)``: ``apply``'s evaluation
    forward pass (``steps.make_apply``), plus :func:`gate_sums` of ``model``'s recurrent stack on
    the input the stack received (recorded by intercepting the stack module's call)."""
    module = model.rnn
    signature = inspect.signature(StackModule.__call__)

    def run(params, batch, carries):
        seen = []

        def record(next_fun, args, kwargs, context):
            if isinstance(context.module, StackModule) and context.method_name == "__call__":
                bound = signature.bind(context.module, *args, **kwargs)
                bound.apply_defaults()
                seen.append(bound.arguments)
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(record):
            outputs, new_carries = apply(params, batch, carries, False, None)
        (a,) = seen
        return outputs, new_carries, gate_sums(module.stack, params["rnn"]["stack"], a["xs"],
                                               a["carries"], a["lengths"], module.dtype)
    return run


def to_host(sums: dict) -> dict:
    """Fetched evaluation sums with the gate sums as numpy float64 (merged over many batches
    without float32 rounding)."""
    return {k: np.float64(v) if k.startswith(PREFIX) else v for k, v in sums.items()}
