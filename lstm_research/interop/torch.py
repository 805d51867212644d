"""Converters between our stack params and ``torch.nn.LSTM`` / ``torch.nn.GRU`` state dicts.

PyTorch is imported lazily, only by the functions that produce torch tensors, so that users who
never convert never need it.

PyTorch stores ``weight_ih_l{k}`` [G*H, I] and ``weight_hh_l{k}`` [G*H, P] with gates stacked
along rows in the order (i, f, g, o) for the LSTM and (r, z, n) for the GRU, two biases, and the
suffix ``_reverse`` for the backward direction. Our cells keep the same gate order, store the
transposes (``x @ w_x``) and one bias (the sum), except the GRU's ``b_hn``, which sits inside
the reset product and so stays separate.
"""
from __future__ import annotations

import dataclasses
import re

import jax.numpy as jnp
import numpy as np

from lstm_research import cells as cells_lib
from lstm_research.errors import UserError
from lstm_research.layers import Stack


def _numpy(v):
    return v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)


def _state_dict(state_dict) -> dict:
    """A state dict (or a module, via its ``state_dict()``) as {key: numpy array}."""
    return {k: _numpy(v)
            for k, v in getattr(state_dict, "state_dict", lambda: state_dict)().items()}


def _select(sd: dict, prefix: str) -> dict:
    """The entries of ``sd`` under ``prefix`` (e.g. ``"encoder.lstm."``), prefix removed; a
    UserError naming the prefixes that do hold RNN weights when there are none."""
    if prefix:
        sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    if "weight_ih_l0" not in sd:
        found = sorted(prefix + k[:-len("weight_ih_l0")]
                       for k in sd if k.endswith("weight_ih_l0"))
        hint = (f"; RNN weights sit under prefix={', '.join(map(repr, found))}" if found
                else f"; keys: {list(sd)[:6]}")
        raise UserError(f"no torch.nn.LSTM/GRU weights (weight_ih_l0) under prefix={prefix!r}"
                        + hint)
    return sd


def _layout(sd):
    layers = {int(m.group(1)) for k in sd if (m := re.match(r"weight_ih_l(\d+)$", k))}
    return len(layers), any(k.endswith("_reverse") for k in sd)


def _directions(bidirectional):
    return (("fwd", ""), ("bwd", "_reverse")) if bidirectional else (("fwd", ""),)


def _from_torch(state_dict, one, prefix) -> dict:
    """A torch RNN state dict (or module) -> our stack params, ``one(sd, suffix)`` giving the
    cell params of one layer and direction (suffix ``_l<layer>[_reverse]``)."""
    sd = _select(_state_dict(state_dict), prefix)
    num_layers, bidirectional = _layout(sd)
    return {"layers": [{d: one(sd, f"_l{layer}{sfx}") for d, sfx in _directions(bidirectional)}
                       for layer in range(num_layers)]}


def _to_torch(params, one, bias) -> dict:
    """Our stack params -> a torch state dict (torch tensors), ``one(p, suffix)`` giving the
    entries of one layer and direction; ``bias=False`` leaves out the biases (all zero, or a
    UserError), as a torch module built with ``bias=False`` has none."""
    import torch

    sd = {}
    for layer, entry in enumerate(params["layers"]):
        for d, sfx in _directions("bwd" in entry):
            sd.update(one(entry[d], f"_l{layer}{sfx}"))
    if not bias:
        nonzero = [k for k, v in sd.items() if k.startswith("bias_") and np.any(np.asarray(v))]
        if nonzero:
            raise UserError(f"bias=False, but the params have non-zero biases ({nonzero[0]}, "
                            "...): a torch module built with bias=False cannot hold them; "
                            "use bias=True")
        sd = {k: v for k, v in sd.items() if not k.startswith("bias_")}
    return {k: torch.tensor(np.array(v)) for k, v in sd.items()}


def _lstm_from(sd, s):
    p = {"w_x": jnp.asarray(sd["weight_ih" + s].T), "w_h": jnp.asarray(sd["weight_hh" + s].T),
         "b": jnp.asarray(sd.get("bias_ih" + s, 0) + sd.get("bias_hh" + s, 0)
                          + np.zeros(sd["weight_ih" + s].shape[0], np.float32))}
    if "weight_hr" + s in sd:
        p["w_proj"] = jnp.asarray(sd["weight_hr" + s].T)
    return p


def _lstm_to(p, s):
    extra = set(p) - {"w_x", "w_h", "b", "w_proj"}
    if extra:
        raise UserError(f"only the standard LSTM (cells 'lstm', 'lstmp') maps to "
                        f"torch.nn.LSTM; these params have no counterpart: {sorted(extra)}")
    out = {"weight_ih" + s: np.asarray(p["w_x"]).T, "weight_hh" + s: np.asarray(p["w_h"]).T,
           "bias_ih" + s: np.asarray(p["b"]), "bias_hh" + s: np.zeros_like(np.asarray(p["b"]))}
    if "w_proj" in p:
        out["weight_hr" + s] = np.asarray(p["w_proj"]).T
    return out


def _gru_from(sd, s):
    H = sd["weight_hh" + s].shape[1]
    b_ih = sd.get("bias_ih" + s, np.zeros(3 * H, np.float32))
    b_hh = sd.get("bias_hh" + s, np.zeros(3 * H, np.float32))
    b = b_ih + np.concatenate([b_hh[:2 * H], np.zeros(H, b_hh.dtype)])
    return {"w_x": jnp.asarray(sd["weight_ih" + s].T), "w_h": jnp.asarray(sd["weight_hh" + s].T),
            "b": jnp.asarray(b), "b_hn": jnp.asarray(b_hh[2 * H:])}


def _gru_to(p, s):
    if set(p) != {"w_x", "w_h", "b", "b_hn"}:
        raise UserError("only cell 'gru' (reset_after=True) maps to torch.nn.GRU")
    H = p["b_hn"].shape[0]
    return {"weight_ih" + s: np.asarray(p["w_x"]).T, "weight_hh" + s: np.asarray(p["w_h"]).T,
            "bias_ih" + s: np.asarray(p["b"]),
            "bias_hh" + s: np.concatenate([np.zeros(2 * H, np.float32), np.asarray(p["b_hn"])])}


def lstm_from_torch(state_dict, prefix: str = "") -> dict:
    """``torch.nn.LSTM`` state dict (or module) -> our stack params for cell ``lstm``
    (``lstmp:proj_size=P`` when the LSTM has ``proj_size``). ``prefix`` picks the LSTM out of a
    whole model's state dict: ``lstm_from_torch(model.state_dict(), prefix="encoder.lstm.")``.
    A module built with ``bias=False`` gives zero biases."""
    return _from_torch(state_dict, _lstm_from, prefix)


#: switches of the LSTM family that only set initial values (torch's LSTM can hold the result)
_INIT_ONLY = ("forget_bias", "input_bias", "output_bias")


def _check_standard(cell, kind: str) -> None:
    """UserError unless ``cell`` (a Cell or a Stack) computes what ``torch.nn.<kind>`` does: the
    params alone cannot tell (a cell clip or other activations have the same arrays)."""
    cell = getattr(cell, "cell", cell)
    if kind == "LSTM":
        if cell.name != "lstm" or dataclasses.replace(
                cell, **{k: 0.0 for k in _INIT_ONLY}) != cells_lib.get(
                "lstmp" if cell.proj_size else "lstm", cell.hidden_size,
                **({"proj_size": cell.proj_size} if cell.proj_size else {})):
            raise UserError(f"only the standard LSTM (cells 'lstm', 'lstmp') maps to "
                            f"torch.nn.LSTM; this cell is {cell!r}")
    elif cell != cells_lib.get("gru", cell.hidden_size):
        raise UserError(f"only cell 'gru' (reset_after=True) maps to torch.nn.GRU; this cell is "
                        f"{cell!r}")


def lstm_to_torch(params, bias: bool = True, *, cell=None) -> dict:
    """Our ``lstm`` / ``lstmp`` stack params -> a ``torch.nn.LSTM`` state dict (torch tensors);
    ``bias=False`` for a module built with ``bias=False`` (the biases must then be zero).
    ``cell``: the cell (or Stack) the params belong to; pass it to have one that torch computes
    otherwise refused (a cell clip, other activations: their params look the same)."""
    if cell is not None:
        _check_standard(cell, "LSTM")
    return _to_torch(params, _lstm_to, bias)


def gru_from_torch(state_dict, prefix: str = "") -> dict:
    """``torch.nn.GRU`` state dict (or module) -> our stack params for cell ``gru``; ``prefix``
    as for :func:`lstm_from_torch`."""
    return _from_torch(state_dict, _gru_from, prefix)


def gru_to_torch(params, bias: bool = True, *, cell=None) -> dict:
    """Our ``gru`` stack params -> a ``torch.nn.GRU`` state dict (torch tensors); ``bias`` and
    ``cell`` as for :func:`lstm_to_torch`."""
    if cell is not None:
        _check_standard(cell, "GRU")
    return _to_torch(params, _gru_to, bias)


def carries_from_torch(h0, c0=None, *, bidirectional: bool = False) -> list:
    """PyTorch's initial state -> our Stack carries.

    ``h0`` (and the LSTM's ``c0``) are [num_layers * directions, batch, size] in torch's order
    (layer 0 forward, layer 0 backward, layer 1 forward, ...), for ``batch_first`` modules too;
    the result is a list (one per layer) of ``{"fwd": {"h": ..., "c": ...}, "bwd": ...}``."""
    dirs = ("fwd", "bwd") if bidirectional else ("fwd",)
    states = {"h": jnp.asarray(_numpy(h0))}
    if c0 is not None:
        states["c"] = jnp.asarray(_numpy(c0))
    rows = states["h"].shape[0]
    if states["h"].ndim != 3 or rows % len(dirs) or ("c" in states
                                                     and states["c"].shape[0] != rows):
        raise UserError(f"h0/c0 must be [num_layers * {len(dirs)}, batch, size] "
                        f"(bidirectional={bidirectional}); got h0 {tuple(states['h'].shape)}"
                        + (f", c0 {tuple(states['c'].shape)}" if "c" in states else ""))
    return [{d: {k: v[layer * len(dirs) + i] for k, v in states.items()}
             for i, d in enumerate(dirs)} for layer in range(rows // len(dirs))]


def carries_to_torch(carries):
    """Our Stack carries -> PyTorch's state: ``(h_n, c_n)`` for an LSTM's carries, ``h_n`` for a
    GRU's (torch tensors [num_layers * directions, batch, size], torch's order)."""
    import torch

    flat = [layer[d] for layer in carries for d in ("fwd", "bwd") if d in layer]
    h = torch.tensor(np.stack([np.asarray(c["h"]) for c in flat]))
    if "c" not in flat[0]:
        return h
    return h, torch.tensor(np.stack([np.asarray(c["c"]) for c in flat]))


def stack_from_torch(module, *, time_major: bool = False) -> tuple[Stack, dict]:
    """A ``torch.nn.LSTM`` or ``torch.nn.GRU`` module -> (our Stack, its params).

    ``Stack.apply`` reads [batch, time, features] unless called with ``time_major=True``, so a
    module with ``batch_first=False`` (torch's default, [time, batch, features]) is refused
    unless ``time_major=True`` says the Stack will be applied time-major too
    (``stack.apply(params, xs, time_major=True)``): fed the same tensor, the two would
    otherwise silently differ. Dropout is not carried over (set it on the Stack).
    """
    kind = type(module).__name__
    if kind == "LSTM":
        proj = getattr(module, "proj_size", 0)
        cell = cells_lib.get("lstmp" if proj else "lstm", module.hidden_size,
                             **({"proj_size": proj} if proj else {}))
        params = lstm_from_torch(module)
    elif kind == "GRU":
        cell, params = cells_lib.get("gru", module.hidden_size), gru_from_torch(module)
    else:
        raise UserError(f"expected torch.nn.LSTM or torch.nn.GRU, got {kind}")
    if module.batch_first and time_major:
        raise UserError(f"this torch.nn.{kind} has batch_first=True: it reads [batch, time, "
                        "features]; call stack_from_torch(module) (time_major=False) and feed "
                        "Stack.apply the same [batch, time, features] tensor")
    if not module.batch_first and not time_major:
        raise UserError(
            f"this torch.nn.{kind} has batch_first=False: it reads [time, batch, features], "
            "Stack.apply [batch, time, features]; call stack_from_torch(module, "
            "time_major=True) and stack.apply(params, xs, time_major=True), or build the "
            "module with batch_first=True")
    return Stack(cell, num_layers=module.num_layers, bidirectional=module.bidirectional), params
