"""Running a cell over time: one ``jax.lax.scan`` with the input projection hoisted out of it.

Arrays here are time-major (``[T, B, ...]``); :mod:`lstm_research.layers.stack` takes
batch-major inputs and does the transposes once per stack.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from lstm_research.cells.base import Cell


def valid_mask(lengths: jax.Array | None, T: int) -> jax.Array | None:
    """[T, B] boolean: step t of sequence b is real (t < lengths[b])."""
    if lengths is None:
        return None
    return jnp.arange(T)[:, None] < lengths[None, :]


def reverse_sequences(xs: jax.Array, lengths: jax.Array | None) -> jax.Array:
    """Reverse time-major ``xs`` [T, B, ...] within each sequence's own length; padding stays
    where it is. Applying it twice is the identity."""
    if lengths is None:
        return xs[::-1]
    T = xs.shape[0]
    t = jnp.arange(T)[:, None]
    idx = jnp.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)  # [T, B]
    idx = idx.reshape(idx.shape + (1,) * (xs.ndim - 2))
    return jnp.take_along_axis(xs, idx, axis=0)


def zoneout_update(old, new, rate, key, index, train):
    """Zoneout (Krueger et al. 2017): each unit keeps its previous value with probability
    ``rate`` at training time; at test time the expectation ``rate*old + (1-rate)*new``."""
    if not rate:
        return new
    if train:
        keep = jax.random.bernoulli(jax.random.fold_in(key, index), rate, new.shape)
        return jnp.where(keep, old, new)
    return rate * old + (1.0 - rate) * new


def scan(cell: Cell, params, xs: jax.Array, carry, *, lengths=None, reverse=False,
         recurrent_mask=None, zoneout=None, key=None, train=False, parallel=False,
         remat=False, unroll=1, fused="auto"):
    """Run ``cell`` over time-major ``xs`` [T, B, I] from ``carry``; return (final carry, ys).

    * ``lengths`` [B]: steps at t >= lengths[b] leave the carry unchanged and output zeros; the
      final carry is each sequence's state at its own end.
    * ``reverse``: process each sequence from its own last step back to its first (outputs are
      returned in the original time order).
    * ``recurrent_mask`` [B, H]: variational dropout mask (Gal & Ghahramani 2016), multiplied
      into the recurrent state (``cell.recurrent_key``) before every step; the same mask at
      every step.
    * ``zoneout``: float or {carry key: rate} (Krueger et al. 2017); needs ``key`` when training.
    * ``parallel``: use the cell's parallel-over-time form (minLSTM, minGRU).
    * ``remat``: recompute each step's activations in the backward pass instead of storing them.
    * ``fused``: ``"auto"`` runs LSTM-family cells through :mod:`lstm_research.layers.fused`
      (hand-written backward), and on CPUs the parallel form through its chunked recurrence,
      when it supports the cell and options; ``True`` requires it; ``False`` never uses it.
    """
    T = xs.shape[0]
    if reverse:
        xs = reverse_sequences(xs, lengths)
    if fused:
        from lstm_research.layers import fused as fused_lib
        why = fused_lib.unsupported(cell, recurrent_mask=recurrent_mask, zoneout=zoneout,
                                    parallel=parallel, remat=remat, unroll=unroll)
        if why is None:
            carry, ys = fused_lib.fused_scan(cell, params, xs, carry, lengths=lengths,
                                             recurrent_mask=recurrent_mask, unroll=unroll,
                                             parallel=parallel)
            return carry, (reverse_sequences(ys, lengths) if reverse else ys)
        if fused is True:
            raise ValueError(f"fused=True, but the fused path does not support this: {why}")
    valid = valid_mask(lengths, T)
    px = cell.project(params, xs)

    if parallel:
        if not cell.has_parallel_form:
            raise ValueError(f"cell {cell.name!r} has no parallel form; only minlstm and mingru do")
        if recurrent_mask is not None or zoneout:
            raise ValueError("the parallel form supports neither recurrent dropout nor zoneout")
        carry, ys = cell.scan_parallel(params, px, carry, valid)
    else:
        if recurrent_mask is not None and cell.recurrent_key is None:
            raise ValueError(f"cell {cell.name!r} has no recurrent weights to apply "
                             "recurrent (variational) dropout to")
        rates = zoneout if isinstance(zoneout, dict) or not zoneout else {k: zoneout for k in carry}

        def body(c, inp):
            t, px_t = inp[0], inp[1]
            c_in = c
            if recurrent_mask is not None:
                c_in = {**c, cell.recurrent_key: c[cell.recurrent_key] * recurrent_mask}
            new, y = cell.recur(params, c_in, px_t)
            if rates:
                step_key = jax.random.fold_in(key, t) if train else None
                new = {k: zoneout_update(c[k], v, rates.get(k, 0.0), step_key, i, train)
                       for i, (k, v) in enumerate(new.items())}
            if valid is not None:
                ok = inp[2]
                new = jax.tree.map(lambda n, o: jnp.where(_expand(ok, n), n, o), new, c)
                y = jnp.where(ok[:, None], y, jnp.zeros_like(y))
            return new, y

        if remat:
            body = jax.checkpoint(body)
        inputs = (jnp.arange(T), px) if valid is None else (jnp.arange(T), px, valid)
        carry, ys = jax.lax.scan(body, carry, inputs, unroll=unroll)

    if reverse:
        ys = reverse_sequences(ys, lengths)
    return carry, ys


def _expand(mask, like):
    return mask.reshape(mask.shape + (1,) * (like.ndim - mask.ndim))
