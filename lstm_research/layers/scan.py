"""Running a cell over time: one ``jax.lax.scan`` with the input projection hoisted out of it,
and the choice of path (:func:`scan`): the generic scan, the fused LSTM layer
(:mod:`lstm_research.layers.fused`), the opt-in Pallas LSTM layer
(:mod:`lstm_research.layers.pallas_lstm`), or a cell's parallel form over a linear recurrence
(:mod:`lstm_research.cells.linear_recurrence`).

Arrays here are time-major (``[T, B, ...]``); :mod:`lstm_research.layers.stack` takes
batch-major inputs and does the transposes once per stack.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from lstm_research import prng
from lstm_research.cells.base import Cell
from lstm_research.errors import UserError
from lstm_research.layers import fused as fused_lib
from lstm_research.layers import pallas_lstm

#: the values of ``fused``: "auto" uses a fast path where one supports the configuration;
#: "pallas" (opt-in, never picked by "auto") the Pallas LSTM layer
FUSED_VALUES = ("auto", True, False, "pallas")


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
    lengths = jnp.minimum(lengths, T)[None, :]  # a length above T is T, as in valid_mask
    idx = jnp.where(t < lengths, lengths - 1 - t, t)  # [T, B]
    idx = idx.reshape(idx.shape + (1,) * (xs.ndim - 2))
    return jnp.take_along_axis(xs, idx, axis=0)


def zoneout_rates(cell: Cell, zoneout) -> dict | None:
    """``zoneout`` (a float, or {carry key: rate}) as {carry key: rate} over the cell's
    ``zoneout_keys`` (a float applies to each); None for no zoneout. UserError for a cell
    without such keys, another key, or a rate outside [0, 1)."""
    if not zoneout:
        return None
    keys = cell.zoneout_keys
    if not keys:
        raise UserError(f"zoneout is not defined for cell {cell.name!r}: its state "
                        "entries are not meaningful unit by unit")
    rates = dict(zoneout) if isinstance(zoneout, dict) else {k: zoneout for k in keys}
    bad = sorted(set(rates) - set(keys))
    if bad:
        raise UserError(f"zoneout keys {bad} are not zoneable carry entries of cell "
                        f"{cell.name!r}; valid: {list(keys)}")
    for k, r in rates.items():
        if not 0.0 <= r < 1.0:
            raise UserError(f"zoneout rate for {k!r} must be in [0, 1), got {r}")
    return rates


def zoneout_update(old, new, rate, key, index, train):
    """Zoneout (Krueger et al. 2017): each unit keeps its previous value with probability
    ``rate`` at training time; at test time the expectation ``rate*old + (1-rate)*new``."""
    if not rate:
        return new
    if train:
        keep = prng.bernoulli(prng.fold_in(key, index), rate, new.shape)
        return jnp.where(keep, old, new)
    return rate * old + (1.0 - rate) * new


def scan(cell: Cell, params, xs: jax.Array, carry, *, lengths=None, reverse=False,
         recurrent_mask=None, zoneout=None, key=None, train=False, parallel=False,
         remat=False, unroll=1, fused="auto"):
    """Run ``cell`` over time-major ``xs`` [T, B, I] from ``carry``; return (final carry, ys).

    * ``lengths`` [B]: steps at t >= lengths[b] leave the carry unchanged and output zeros; the
      final carry is each sequence's state at its own end (a length above T counts as T).
    * ``reverse``: process each sequence from its own last step back to its first (outputs are
      returned in the original time order).
    * ``recurrent_mask`` [B, H]: variational dropout mask (Gal & Ghahramani 2016), multiplied
      into the recurrent state (``cell.recurrent_key``) where it enters the recurrent weights
      (``cell.recur_dropped``; the GRU's state update keeps the unmasked state); the same mask
      at every step.
    * ``zoneout``: float or {carry key: rate} (Krueger et al. 2017) over ``cell.zoneout_keys``
      (:func:`zoneout_rates`); needs ``key`` when training.
    * ``parallel``: use the cell's parallel-over-time form (minLSTM, minGRU).
    * ``remat``: recompute each step's activations in the backward pass instead of storing them.
    * ``fused``: ``"auto"`` runs LSTM-family cells through :mod:`lstm_research.layers.fused`
      (hand-written backward), and on CPUs the parallel form through the chunked linear
      recurrence, when it supports the cell and options; ``True`` requires it; ``False``
      never uses it; ``"pallas"`` (opt-in, not measured on a GPU) runs LSTM-family cells
      through :mod:`lstm_research.layers.pallas_lstm` where it supports them, else logs why
      (once) and does what ``"auto"`` does.
    * ``unroll``: loop iterations per compiled loop body (``jax.lax.scan``'s ``unroll``).
    """
    check_options(cell, parallel=parallel, fused=fused,
                  recurrent_dropout=recurrent_mask is not None, zoneout=zoneout, remat=remat)
    if reverse:
        xs = reverse_sequences(xs, lengths)
    if parallel:
        carry, ys = _scan_parallel(cell, params, xs, carry, lengths, fused)
    else:
        path = _path(cell, params, xs, carry, zoneout, remat, fused)
        if path == "pallas":  # (its kernels loop inside themselves: ``unroll`` does not apply)
            carry, ys = pallas_lstm.pallas_scan(cell, params, xs, carry, lengths=lengths,
                                                recurrent_mask=recurrent_mask)
        elif path == "fused":
            carry, ys = fused_lib.fused_scan(cell, params, xs, carry, lengths=lengths,
                                             recurrent_mask=recurrent_mask, unroll=unroll)
        else:
            carry, ys = _scan_steps(cell, params, xs, carry, lengths, recurrent_mask, zoneout,
                                    key, train, remat, unroll)
    if reverse:
        ys = reverse_sequences(ys, lengths)
    return carry, ys


def check_fused(fused) -> None:
    """Refuse a ``fused`` value other than "auto", True, False or "pallas"."""
    if not (isinstance(fused, bool) or (isinstance(fused, str) and fused in FUSED_VALUES)):
        raise UserError(f"fused must be one of {FUSED_VALUES}, got {fused!r}")


def check_options(cell: Cell, *, parallel=False, fused="auto", recurrent_dropout=False,
                  zoneout=None, remat=False) -> None:
    """UserError for options a layer of ``cell`` cannot run (:func:`scan` checks them, and
    ``Stack`` when it is built, before a run writes anything): a bad ``fused`` or ``zoneout``,
    recurrent dropout without recurrent weights, the parallel form where there is none or with
    recurrent dropout or zoneout, ``fused=True`` where the fused layer does not apply."""
    check_fused(fused)
    rates = zoneout_rates(cell, zoneout)
    if recurrent_dropout and cell.recurrent_key is None:
        raise UserError(f"cell {cell.name!r} has no recurrent weights to apply recurrent "
                        "(variational) dropout to")
    if parallel:
        if not cell.has_parallel_form:
            raise UserError(f"cell {cell.name!r} has no parallel form; only minlstm and mingru "
                            "do")
        if recurrent_dropout or rates:
            raise UserError("the parallel form supports neither recurrent dropout nor zoneout")
    elif fused is True:
        why = fused_lib.unsupported(cell, zoneout=rates, remat=remat)
        if why is not None:
            raise UserError(f"fused=True, but the fused path does not support this: {why}")


def _path(cell, params, xs, carry, zoneout, remat, fused) -> str:
    """Which layer runs a sequential scan: "pallas", "fused" or "generic" (logs why once when
    ``fused="pallas"`` falls back; ``fused=True`` where it cannot be: :func:`check_options`)."""
    why = "fused=False" if fused is False else fused_lib.unsupported(
        cell, zoneout=zoneout, remat=remat)
    if fused == "pallas":
        # in the dtype it would compute in
        dtype = jnp.result_type(xs, *jax.tree.leaves(params), *jax.tree.leaves(carry))
        why_pallas = pallas_lstm.pallas_unsupported(
            cell, getattr(cell, "hidden_size", 0), xs.shape[1], dtype, zoneout=zoneout,
            remat=remat)
        if why_pallas is None:
            return "pallas"
        pallas_lstm.log_fallback(why_pallas, "generic scan" if why else "fused LSTM layer")
    return "generic" if why else "fused"


def _scan_parallel(cell, params, xs, carry, lengths, fused):
    """The cell's parallel form: the chunked recurrence on CPUs unless ``fused`` is False,
    else the associative scan (the cell and options: :func:`check_options`)."""
    chunked = fused is not False and jax.default_backend() == "cpu"
    if fused is True and not chunked:
        raise UserError("fused=True, but the fused path does not support this: the chunked "
                        "parallel form is for CPUs (elsewhere: the associative scan)")
    return cell.scan_parallel(params, cell.project(params, xs), carry,
                              valid_mask(lengths, xs.shape[0]),
                              method="chunked" if chunked else "associative")


def _scan_steps(cell, params, xs, carry, lengths, recurrent_mask, zoneout, key, train, remat,
                unroll):
    """The generic path: ``cell.recur`` in one ``jax.lax.scan`` over the hoisted projection."""
    T = xs.shape[0]
    valid = valid_mask(lengths, T)
    px = cell.project(params, xs)
    rates = zoneout_rates(cell, zoneout)

    def body(c, inp):
        t, px_t = inp[0], inp[1]
        if recurrent_mask is None:
            new, y = cell.recur(params, c, px_t)
        else:
            new, y = cell.recur_dropped(params, c, px_t, recurrent_mask)
        if rates:
            step_key = prng.fold_in(key, t) if train else None
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
    return jax.lax.scan(body, carry, inputs, unroll=unroll)


def wavefront_scan(cell: Cell, layer_params: list, xs: jax.Array, carries: list, *,
                   lengths=None, unroll=1):
    """All layers of a unidirectional stack in ONE ``jax.lax.scan``, a wavefront: at scan step
    ``s`` layer ``l`` runs time step ``s - l`` on what layer ``l - 1`` output at the step
    before, so ``L`` layers take ``T + L - 1`` steps of one loop body instead of ``L`` loops of
    ``T`` steps (on a GPU, where a step costs its kernel launches, about ``L`` times fewer
    launches: issue #13, item 1). The same equations as the layers one after the other; layer
    0's input projection is hoisted out of the loop, the other layers' run inside it.
    ``lengths`` as in :func:`scan`. Returns (final carries, one per layer; the last layer's
    ys)."""
    L, (T, B) = len(layer_params), xs.shape[:2]
    valid = valid_mask(lengths, T)
    px = jax.tree.map(lambda a: jnp.concatenate([a, jnp.zeros((L - 1, *a.shape[1:]), a.dtype)]),
                      cell.project(layer_params[0], xs))  # (mLSTM's projection is a dict)

    def body(state, inp):
        carries, below = state  # below[l]: layer l's output at the step before
        s, px_s = inp
        new_carries, outs = [], []
        for layer, (p, c) in enumerate(zip(layer_params, carries)):
            t = s - layer
            ok = (t >= 0) & (t < T)  # outside: the wave has not reached this layer, or passed
            if valid is not None:
                ok = ok & valid[jnp.clip(t, 0, T - 1)]
            new, y = cell.recur(p, c, px_s if layer == 0 else cell.project(p, below[layer - 1]))
            new_carries.append(jax.tree.map(lambda n, o: jnp.where(_expand(ok, n), n, o), new, c))
            outs.append(jnp.where(_expand(ok, y), y, jnp.zeros_like(y)))
        return (new_carries, outs[:-1]), outs[-1]

    below = [jnp.zeros((B, cell.output_size), xs.dtype)] * (L - 1)
    (carries, _), ys = jax.lax.scan(body, (list(carries), below), (jnp.arange(T + L - 1), px),
                                    unroll=unroll)
    return carries, ys[L - 1:]


def _expand(mask, like):
    return mask.reshape(mask.shape + (1,) * (like.ndim - mask.ndim))
