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

import re

import jax.numpy as jnp
import numpy as np

from lstm_research import cells as cells_lib
from lstm_research.errors import UserError
from lstm_research.layers import Stack


def _numpy(v):
    return v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)


def _layout(state_dict):
    keys = list(state_dict)
    layers = {int(m.group(1)) for k in keys if (m := re.match(r"weight_ih_l(\d+)$", k))}
    if not layers:
        raise UserError(f"not a torch.nn.LSTM/GRU state dict: keys {keys[:6]}...")
    return len(layers), any(k.endswith("_reverse") for k in keys)


def _directions(bidirectional):
    return (("fwd", ""), ("bwd", "_reverse")) if bidirectional else (("fwd", ""),)


def _from_torch(state_dict, one) -> dict:
    """A torch RNN state dict (or module) -> our stack params, ``one(sd, suffix)`` giving the
    cell params of one layer and direction (suffix ``_l<layer>[_reverse]``)."""
    sd = {k: _numpy(v) for k, v in getattr(state_dict, "state_dict", lambda: state_dict)().items()}
    num_layers, bidirectional = _layout(sd)
    return {"layers": [{d: one(sd, f"_l{layer}{sfx}") for d, sfx in _directions(bidirectional)}
                       for layer in range(num_layers)]}


def _to_torch(params, one) -> dict:
    """Our stack params -> a torch state dict (torch tensors), ``one(p, suffix)`` giving the
    entries of one layer and direction."""
    import torch

    sd = {}
    for layer, entry in enumerate(params["layers"]):
        for d, sfx in _directions("bwd" in entry):
            sd.update(one(entry[d], f"_l{layer}{sfx}"))
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


def lstm_from_torch(state_dict) -> dict:
    """``torch.nn.LSTM`` state dict (or module) -> our stack params for cell ``lstm``
    (``lstmp:proj_size=P`` when the LSTM has ``proj_size``)."""
    return _from_torch(state_dict, _lstm_from)


def lstm_to_torch(params) -> dict:
    """Our ``lstm`` / ``lstmp`` stack params -> a ``torch.nn.LSTM`` state dict (torch tensors)."""
    return _to_torch(params, _lstm_to)


def gru_from_torch(state_dict) -> dict:
    """``torch.nn.GRU`` state dict (or module) -> our stack params for cell ``gru``."""
    return _from_torch(state_dict, _gru_from)


def gru_to_torch(params) -> dict:
    """Our ``gru`` stack params -> a ``torch.nn.GRU`` state dict (torch tensors)."""
    return _to_torch(params, _gru_to)


def stack_from_torch(module) -> tuple[Stack, dict]:
    """A ``torch.nn.LSTM`` or ``torch.nn.GRU`` module -> (our Stack, its params).

    The module must be ``batch_first`` for the outputs to line up with ``Stack.apply``'s
    batch-major default; dropout is not carried over (set it on the Stack).
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
    return Stack(cell, num_layers=module.num_layers, bidirectional=module.bidirectional), params
