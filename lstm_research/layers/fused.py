"""The fused LSTM-family layer behind :func:`lstm_research.layers.scan.scan`: the forward loop
and a hand-written backward pass (``jax.custom_vjp``) for the :class:`~lstm_research.cells.lstm.LSTM`
cell. ``Stack(cell, fused="auto")`` (the default) uses it wherever :func:`unsupported` allows.

``jax.grad`` of the generic scan computes, inside its reverse loop, the weight-gradient outer
products of every step and accumulates them in the loop carry. The fused layer does what cuDNN
and oneDNN do instead:

* forward: the input projection ``xs @ w_x + b`` for all steps at once, as one ``[T, B, H]``
  array per gate *before* the loop (per-step slices of a ``[T, B, G*H]`` array split four ways
  inside the loop were the slowest variant measured); then a loop doing only the recurrent
  matmul and the gate math;
* backward: every factor of the per-step gradient that does not depend on the incoming gradient
  (activation derivatives; peephole, CIFG, clipping and masking terms) is computed for all
  steps at once, outside the loop; the reverse loop does two multiply-adds, one ``[B, G*H]``
  product and the matmul ``dh(t-1) = dpre(t) @ w_h^T``; after it, ONE matmul over all ``T*B``
  rows each gives ``d w_h = h_prev^T @ dpre`` and ``d w_x``, and ``d b``, ``d xs`` come from the
  same ``dpre``.

What else the measurements on a 2-core CPU said (see ``experiments/benchmark.py``):

* every value a loop saves is written into a loop-carried buffer and read back from it, so
  that XLA fuses its computation with the in-place update instead of adding one copy kernel
  per saved value (13 kernels per forward step became 5); the backward loop overwrites the
  precomputed factors with ``dpre`` in place (no zero-filled buffer);
* the weight-gradient matmuls take materialized transposes: XLA ran ``h_prev^T @ dpre`` with
  the transpose folded into the dot single-threaded at about half the speed;
* ``unroll`` > 1 and computing the input projection inside the loop for ``I = 1`` were slower;
* with ``lengths``, the work outside the loops runs only over the chunks of :data:`ROW_CHUNK`
  steps that the loops visit (up to the batch's longest sequence), not over every padded step:
  the input projection (one matmul per gate), the backward's factors (one fusion) and its
  weight gradients (one matmul each), each at the static length of those chunks through a
  ``lax.switch`` over the ``T // ROW_CHUNK`` lengths (:func:`_over_visited`; the loops
  themselves are compiled once). On the Greff JSB protocol (batch 1, padded to 128 steps, 59
  on average) chunks in a loop made the training epoch 1.03x, 1.04x and 1.08x faster at widths
  20, 63 and 200 (2026-12-01); the switch, with the factors as one concatenate (a select on the
  gate index computed every gate's factor for each element), another 1.0x, 1.15-1.2x and
  1.2x (one core, 2026-12-02).

Supported: the :class:`~lstm_research.cells.lstm.LSTM` cell with sigmoid gates, tanh or identity
input/output activations, any subset of gates, CIFG, peepholes, cell clipping and full gate
recurrence (FGR: (i, f, o) of the previous step times ``w_gates`` add to the gates'
pre-activations; the backward loop also carries the gradient of that (i, f, o) carry, and
``d w_gates`` is one matmul after it), with ``lengths`` masking, ``reverse`` (done by the
caller) and variational recurrent dropout (``recurrent_mask``). Everything else (layer norm,
projection, other activations, zoneout, remat, other cells) goes through the generic scan; see
:func:`unsupported`.

Results equal the autodiff of the generic scan up to float rounding (``tests/test_fused.py``
checks outputs and gradients with respect to params, inputs and the initial carry at 1e-5).
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from lstm_research import visited
from lstm_research.cells.base import Cell
from lstm_research.cells.lstm import LSTM

_SUPPORTED_ACT = ("tanh", "identity")


def unsupported(cell: Cell, *, zoneout=None, remat=False) -> str | None:
    """Why the fused layer cannot run this configuration (None if it can). (Until 2026-12-02
    ``fused="auto"`` also kept FGR below 64 units on the generic scan, measured as fast then;
    since the backward's work outside its loop runs over the visited steps only, a Greff JSB
    epoch of FGR is 1.43x, 1.44-1.48x and 1.24-1.34x faster fused at widths 20, 40 and 63,
    one core, two interleaved runs: ``experiments/sweep_throughput.py --modes none --widths
    20,40,63 --timing_set model.cell=fgr --timing_set model.fused=true`` against ``=false``.)"""
    if type(cell) is not LSTM:
        return f"cell {cell.name!r} is not the LSTM family"
    if zoneout:
        return "zoneout"
    if remat:
        return "remat"
    if cell.layer_norm:
        return "layer_norm"
    if cell.proj_size:
        return "proj_size (LSTMP)"
    if cell.gate_activation != "sigmoid":
        return f"gate_activation={cell.gate_activation!r}"
    for what in ("input_activation", "output_activation"):
        if getattr(cell, what) not in _SUPPORTED_ACT:
            return f"{what}={getattr(cell, what)!r}"
    return None


class Spec(NamedTuple):
    """The static switches the fused kernels specialize on (hashable)."""
    H: int
    gates: tuple            # subset of ("i", "f", "z", "o") present in w_x/w_h/b, in order
    cifg: bool              # f = 1 - i
    peep: tuple             # gates with a peephole
    tanh_in: bool           # g = tanh (else identity)
    tanh_out: bool          # h = tanh (else identity)
    clip: float | None
    masked: bool            # lengths given
    dropmask: bool          # recurrent_mask given
    unroll: int
    fgr: bool = False       # full gate recurrence: (i, f, o) of t-1 feed the gates (see _lstm)


def make_spec(cell, masked, dropmask, unroll=1) -> Spec:
    """The :class:`Spec` of the LSTM ``cell`` (check :func:`unsupported` first)."""
    return Spec(H=cell.hidden_size, gates=cell.gates, cifg=cell.coupled_forget,
                 peep=tuple(g for g in "ifo" if cell.peepholes and g in cell.gates),
                 tanh_in=cell.input_activation == "tanh",
                 tanh_out=cell.output_activation == "tanh",
                 clip=cell.cell_clip, masked=masked, dropmask=dropmask,
                 unroll=unroll, fgr=cell.full_gate_recurrence)


def fused_scan(cell: Cell, params, xs, carry, *, lengths=None, recurrent_mask=None, unroll=1):
    """Run the LSTM ``cell`` over time-major ``xs`` [T, B, I] from ``carry``; return ``(final
    carry, ys [T, B, H])`` like the generic scan with ``reverse=False`` (the caller reverses).
    ``lengths`` [B] masks steps past each sequence's end; ``recurrent_mask`` [B, H] multiplies
    h before every recurrent matmul. Check :func:`unsupported` first.
    """
    T = xs.shape[0]
    unroll = T if unroll is True else unroll  # (True == 1 in Python: "fully" must be said as T)
    spec = make_spec(cell, lengths is not None, recurrent_mask is not None, unroll)
    valid = None
    if lengths is not None:
        valid = (jnp.arange(T)[:, None] < lengths[None, :]).astype(xs.dtype)[..., None]
    peeps = tuple(params[f"peephole_{g}"] for g in spec.peep)
    w_rec = (params["w_h"], params["w_gates"] if spec.fgr else None)
    hT, cT, gT, ys = _lstm(spec, params["w_x"], w_rec, params["b"], peeps, xs, carry["h"],
                           carry["c"], carry.get("gates"), valid, recurrent_mask)
    final = {"c": cT, "h": hT}
    if spec.fgr:
        final["gates"] = gT
    return final, ys


# --- forward --------------------------------------------------------------------------------
def _split(a, n, H):
    return tuple(a[..., k * H:(k + 1) * H] for k in range(n))


def _at(a, t):
    return jax.lax.dynamic_index_in_dim(a, t, keepdims=False)


def _put(a, v, t):
    return jax.lax.dynamic_update_index_in_dim(a, v, t, 0)


def _forward(spec, w_x, w_rec, b, peeps, xs, h0, c0, g0, valid, rmask, save_gates=True):
    """The forward loop. Returns the buffers ``Y`` [T+1, B, H] and ``C`` [T+1, B, H] (the
    carries h and c before the first and after every step), with FGR ``R`` [T+1, B, 3H] (the
    carried (i, f, o), from ``g0``; else an empty array), and the activated gates present,
    in order, each [T, B, H] (with ``save_gates=False``, for a forward pass that is not
    differentiated, the gates are not kept: empty tuple).

    Every saved value is written straight into a buffer carried by the loop and the state is
    read back from the buffers: each value then has a single consumer, so XLA fuses its
    computation with the in-place update instead of adding a copy kernel per saved value.
    (A gate buffer read back inside the loop cannot be dropped by XLA when nothing uses it
    after the loop: writing it was a third of an evaluation's loop time, hence ``save_gates``.)
    """
    H, gates = spec.H, spec.gates
    n = len(gates)
    T, B, I = xs.shape
    w_h, w_g = w_rec
    peep = dict(zip(spec.peep, peeps))
    sig = jax.nn.sigmoid
    g_act = jnp.tanh if spec.tanh_in else (lambda v: v)
    h_act = jnp.tanh if spec.tanh_out else (lambda v: v)

    # The input projection for all steps at once, one [T, B, H] array per gate (one matmul per
    # gate, so no copies to split it): per-step slices of a [T, B, G*H] array split four ways
    # inside the loop were the slowest variant measured. (Computing x @ w_x inside the loop
    # for tiny inputs, I = 1, was slower too.)
    ws, bs = _split(w_x, n, H), _split(b, n, H)
    # (with lengths, over the steps that the loop visits only: the rest is zero, unread)
    seq = _over_visited(spec, valid, _row_chunk(spec), lambda xs: tuple(
        (xs.reshape(-1, I) @ wk + bk).reshape(-1, B, H) for wk, bk in zip(ws, bs)), xs)
    if spec.masked:
        seq = seq + (valid,)

    dt = xs.dtype
    o_peep = "o" in peep            # o then depends on the new c: it gets a buffer of its own
    first = gates[:-1] if o_peep else gates
    Y = jnp.zeros((T + 1, B, H), dt).at[0].set(h0)
    C = jnp.zeros((T + 1, B, H), dt).at[0].set(c0)
    G = jnp.zeros((T, len(first), B, H) if save_gates else (0,), dt)
    O = jnp.zeros((T, B, H) if o_peep and save_gates else (0,), dt)
    R = jnp.zeros((T + 1, B, 3 * H), dt).at[0].set(g0) if spec.fgr else jnp.zeros((0,), dt)

    def step(t, bufs):
        # Strictly write-then-read-back, one buffer per write: XLA can then update every
        # buffer in place (no copies of whole buffers) and fuse each computation with its write.
        Y, C, G, O, R = bufs
        h, c_prev = _at(Y, t), _at(C, t)
        inp = tuple(_at(a, t) for a in seq)
        if spec.masked:
            v = inp[-1]
            inp = inp[:-1]
        h_in = h * rmask if spec.dropmask else h
        rec = _split(h_in @ w_h, n, H)
        pre = {g: p + r for g, p, r in zip(gates, inp, rec)}
        if spec.fgr:  # (i, f, o) of t-1 times w_gates, added to the i, f, o pre-activations
            extra = dict(zip("ifo", _split(_at(R, t) @ w_g, 3, H)))
            pre = {g: v + extra[g] if g in extra else v for g, v in pre.items()}
        acts = []
        for g in first:
            if g == "z":
                acts.append(g_act(pre["z"]))
            elif g in peep:
                acts.append(sig(pre[g] + peep[g] * c_prev))
            else:
                acts.append(sig(pre[g]))
        if save_gates:
            G = jax.lax.dynamic_update_slice(G, jnp.stack(acts)[None], (t, 0, 0, 0))
            gt = dict(zip(first, _at(G, t)))
        else:
            gt = dict(zip(first, acts))
        keep = v > 0 if spec.masked else None
        C = _put(C, cell_update(spec, gt, c_prev, keep), t + 1)
        c_new = _at(C, t + 1)
        if o_peep and save_gates:
            # (at padded steps c_new = c_prev: o and y are then unused)
            O = _put(O, sig(pre["o"] + peep["o"] * c_new), t)
            o = _at(O, t)
        elif o_peep:
            o = sig(pre["o"] + peep["o"] * c_new)
        else:
            o = gt.get("o", 1.0)
        y = h_act(c_new) * o
        Y = _put(Y, jnp.where(keep, y, h) if spec.masked else y, t + 1)
        if spec.fgr:
            r = jnp.concatenate([gt["i"], gt["f"], o], axis=-1)
            R = _put(R, jnp.where(keep, r, _at(R, t)) if spec.masked else r, t + 1)
        return Y, C, G, O, R

    Y, C, G, O, R = jax.lax.fori_loop(0, _steps(spec, valid, T), step, (Y, C, G, O, R),
                                      unroll=spec.unroll)
    if not save_gates:
        return Y, C, R, ()
    acts = tuple(G[:, k] for k in range(len(first))) + ((O,) if o_peep else ())
    return Y, C, R, acts


def cell_update(spec, gates, c_prev, keep=None):
    """``c_t = z * i + c_{t-1} * f`` (f = 1 - i under CIFG; absent gates are 1), clipped to
    ``spec.clip``, and ``c_{t-1}`` where ``keep`` is False (padded steps). ``gates``: the
    activated i, f, z present. (Also the Pallas kernel's step.)"""
    i = gates.get("i", 1.0)
    f = (1.0 - i) if spec.cifg else gates.get("f", 1.0)
    c = gates["z"] * i + c_prev * f
    if spec.clip is not None:
        c = jnp.clip(c, -spec.clip, spec.clip)
    return c if keep is None else jnp.where(keep, c, c_prev)


#: steps per chunk of the work outside the loops (see :func:`_over_visited`); None: always over
#: all T steps. Each chunk length is a branch compiled into the program: on the Greff JSB
#: protocol (training batches padded to 128 steps, 59 on average; evaluation to 160) chunks of
#: 64 trained as fast as chunks of 32 (0.049-0.054 / 0.108-0.113 / 0.364-0.368 s against
#: 0.049-0.053 / 0.107-0.112 / 0.362-0.369 s per training epoch at widths 20 / 63 / 200, one
#: core, two interleaved runs) and compiled a new width's train and evaluation steps in 2.0 s
#: instead of 2.9 s (2026-12-02).
ROW_CHUNK = 64


def _row_chunk(spec):
    """The chunk of steps by which the work outside the loops follows the steps the loops visit
    (:func:`_over_visited`; batches are padded far beyond their longest sequence: the trainer
    pads each batch to its split's longest); None: over all T steps."""
    return ROW_CHUNK if spec.masked and spec.unroll == 1 else None


def _pad_rows(tree, T):
    """The arrays of ``tree`` padded with zero rows to ``T`` along their first axis."""
    return jax.tree.map(lambda a: jnp.pad(a, [(0, T - a.shape[0])] + [(0, 0)] * (a.ndim - 1)),
                        tree)


def _over_visited(spec, valid, chunk, fn, *args, pad=_pad_rows):
    """``fn(*args)`` over the steps the loops visit only: every ``[T, ...]`` (``[T + 1, ...]``)
    argument cut to its first ``L`` (``L + 1``) rows, ``L`` the length of the chunks of ``chunk``
    steps up to the batch's longest sequence; the outputs padded to ``T`` by ``pad(out, T)``.
    One matmul or fusion at a static length each, through a ``lax.switch`` over the ``T //
    chunk`` lengths (:func:`lstm_research.visited.at_visited_length`; a loop over chunks added
    the chunks' partial results, and a fusion in chunks was slower than one over all T). With
    ``chunk`` None: ``fn(*args)`` over all steps."""
    if chunk is None:
        return fn(*args)
    T = valid.shape[0]

    def run(length, args):
        return pad(fn(*(None if a is None else a[:length + a.shape[0] - T] for a in args)), T)
    return visited.at_visited_length(_steps(spec, valid, T), T, run, args, chunk=chunk)


def _steps(spec, valid, T):
    """The loops' trip count: with ``lengths``, the batch's longest sequence (a traced value:
    padding a batch to any length then costs only the work outside the loops, and one compiled
    program serves every length); else T."""
    if not spec.masked or spec.unroll != 1:
        return T
    # the default int (x64 too); in a pack, the longest of all its members
    return visited.longest(jnp.sum(jnp.max(valid[..., 0], axis=1)).astype(int))


def _outputs(spec, Y, C, R, valid):
    """``(h, c, (i, f, o) with FGR else None)`` after the last step, and the outputs ys."""
    ys = Y[1:]
    n = _steps(spec, valid, ys.shape[0])  # the loop stopped there: the final carries
    if spec.masked:
        ys = jnp.where(valid > 0, ys, jnp.zeros_like(ys))
    return _at(Y, n), _at(C, n), (_at(R, n) if spec.fgr else None), ys


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _lstm(spec, w_x, w_rec, b, peeps, xs, h0, c0, g0, valid, rmask):
    """``(hT, cT, gT, ys)``. ``w_rec`` is ``(w_h, w_gates)`` (FGR) or ``(w_h, None)``;
    ``g0``/``gT`` the carried (i, f, o) of FGR (None without)."""
    Y, C, R, _ = _forward(spec, w_x, w_rec, b, peeps, xs, h0, c0, g0, valid, rmask,
                          save_gates=False)
    return _outputs(spec, Y, C, R, valid)


def _lstm_fwd(spec, w_x, w_rec, b, peeps, xs, h0, c0, g0, valid, rmask):
    Y, C, R, G = _forward(spec, w_x, w_rec, b, peeps, xs, h0, c0, g0, valid, rmask)
    return _outputs(spec, Y, C, R, valid), (w_x, w_rec, peeps, xs, valid, rmask, Y, C, R, G)


# --- backward -------------------------------------------------------------------------------
def gate_factors(spec, act, c, c_prev, peep, one=1.0):
    """The factors of an LSTM step's backward that do not depend on the incoming gradient,
    ``(K, Kc, F)`` with ``K`` a dict over the gates present, elementwise over any shape::

        dh = dh' + dy;  dc = dc' + dh * Kc;  dpre_o = dh * K["o"];  dpre_g = dc * K[g] (i, f, z);
        dc_prev = dc * F;  dh_prev = dpre @ w_h^T

    ``act``: the activated gates present; ``c``, ``c_prev``: the cell state after and before
    the step; ``peep``: the peepholes present; ``one``: 1 in the computation's dtype. (Also the
    Pallas kernel's, :mod:`lstm_research.layers.pallas_lstm`, per step.)"""
    i = act.get("i", one)
    f = (1.0 - i) if spec.cifg else act.get("f", one)
    z, o = act["z"], act.get("o", one)
    a = jnp.tanh(c) if spec.tanh_out else c
    K = {}
    Kc = o * (1.0 - a * a) if spec.tanh_out else o * one
    if "o" in act:
        K["o"] = a * o * (1.0 - o)
        if "o" in peep:
            Kc = Kc + K["o"] * peep["o"]
    inr = one if spec.clip is None else (jnp.abs(c) < spec.clip).astype(c.dtype)
    dz = (1.0 - z * z) if spec.tanh_in else one
    if "i" in act:
        K["i"] = ((z - c_prev) if spec.cifg else z) * i * (1.0 - i) * inr
    if "f" in act:
        K["f"] = c_prev * f * (1.0 - f) * inr
    K["z"] = i * dz * inr
    F = f * inr
    for g in ("i", "f"):
        if g in peep:
            F = F + K[g] * peep[g]
    return K, Kc, F


def _lstm_bwd(spec, res, cotangents):
    w_x, (w_h, w_g), peeps, xs, valid, rmask, Y, C, R, acts = res
    dhT, dcT, dgT, dys = cotangents
    dvalid = None if valid is None else jnp.zeros_like(valid)
    chunk = _row_chunk(spec)
    # the work outside the loop over the steps that the loop visits only (with lengths)
    D, seq = _over_visited(spec, valid, chunk, lambda C, valid, dys, *acts: _factors(
        spec, peeps, valid, C, acts, dys), C, valid, dys, *acts)
    dh0, dc0, dg0, dpre = _reverse_loop(spec, w_h, w_g, rmask, valid, D, seq, dhT, dcT, dgT)
    grads = _over_visited(
        spec, valid, chunk,
        lambda xs, Y, C, R, dpre: _gradients(spec, w_x, w_h, w_g, xs, rmask, Y, C, R, dpre),
        xs, Y, C, R if spec.fgr else None, dpre,
        pad=lambda g, T: g[:4] + (_pad_rows(g[4], T),) + g[5:])  # d xs: padded
    return grads[:5] + (dh0, dc0, dg0, dvalid) + grads[5:]


def _factors(spec, peeps, valid, C, acts, dys):
    """The backward's per-step factors that do not depend on the incoming gradient, for all
    steps at once (:func:`gate_factors`): ``D`` [T, B, n*H], the gate factors that the loop
    overwrites with ``dpre``, and the sequences the loop reads per step."""
    gates = spec.gates
    peep = dict(zip(spec.peep, peeps))
    act = dict(zip(gates, acts))
    cs, c_prev = C[1:], C[:-1]
    T, B, H = cs.shape
    one = jnp.ones((), cs.dtype)
    # peepholes, CIFG, clipping and masking only change these factors
    K, Kc, F = gate_factors(spec, act, cs, c_prev, peep, one)
    if spec.masked:
        # padded steps: no gradient into the gates, carries pass through unchanged
        K = {g: k * valid for g, k in K.items()}
        Kc = Kc * valid
        F = F * valid + (1.0 - valid)
        dys = dys * valid
    Kc = jnp.broadcast_to(Kc, cs.shape)
    F = jnp.broadcast_to(F, cs.shape)
    # The gate factors as one [T, B, n*H] array, one fusion with the concatenate (each element
    # computes its own gate's factor; a select on the gate index computed all n, and was
    # 2.4x slower at width 200); the backward loop overwrites each step's factors with that
    # step's dpre, in place.
    Kcat = jnp.concatenate([jnp.broadcast_to(K[g], cs.shape) for g in gates], axis=-1)
    seq = (dys, Kc, F) + ((valid,) if spec.masked else ())
    if spec.fgr:
        # FGR: dg(t), the gradient of the carried (i, f, o) of step t (from step t+1's matmul,
        # or the final carry's), adds dg_a * a(1 - a) to dpre_a (a = i, f, o) and, through the
        # peepholes, dg_o * o(1 - o) * p_o to dc(t) and dg_a * a(1 - a) * p_a to dc(t-1) (a = i, f)
        S = {g: act[g] * (1.0 - act[g]) * (valid if spec.masked else one) for g in "ifo"}
        zero = jnp.zeros_like(S["i"])
        S_peep = {g: S[g] * peep[g] if g in peep else zero for g in "ifo"}
        seq = seq + (jnp.concatenate([S["i"], S["f"], zero, S["o"]], axis=-1),
                     S_peep["o"], S_peep["i"], S_peep["f"])
    return Kcat, seq


def _reverse_loop(spec, w_h, w_g, rmask, valid, D, seq, dhT, dcT, dgT):
    """The backward loop from the last visited step down: ``(dh0, dc0, dg0, dpre)``, with
    ``dpre`` [T, B, n*H] written over the factors ``D`` (rows past the longest sequence stay
    zero: their factors are masked)."""
    H, gates = spec.H, spec.gates
    n_c = sum(g != "o" for g in gates)

    n_steps = _steps(spec, valid, D.shape[0])

    def body(k, carry):
        dh, dc, dg, D = carry
        t = n_steps - 1 - k
        dy, kc, ff, *rest = (_at(a_, t) for a_ in seq)
        v = rest.pop(0) if spec.masked else None
        dh = dh + dy
        dc = dc + dh * kc
        if spec.fgr:
            s_cat, s_po, s_pi, s_pf = rest
            dc = dc + dg[:, 2 * H:] * s_po
        parts = [dc] * n_c + ([dh] if "o" in gates else [])
        dpre = jnp.concatenate(parts, axis=-1) * _at(D, t)
        if spec.fgr:
            dpre = dpre + jnp.concatenate([dg[:, :2 * H], jnp.zeros_like(dh), dg[:, 2 * H:]],
                                          axis=-1) * s_cat
        # dpre overwrites this step's factors in D and is read back for the matmul, so that
        # its computation is fused with the in-place write (see _forward)
        D = _put(D, dpre, t)
        dh_prev, dg_prev = _dot_wT(_at(D, t), w_h), None
        if spec.fgr:
            dg_prev = _dot_wT(_ifo(_at(D, t)), w_g)
        if spec.dropmask:
            dh_prev = dh_prev * rmask
        if spec.masked:
            dh_prev = jnp.where(v > 0, dh_prev, dh)
            if spec.fgr:
                dg_prev = jnp.where(v > 0, dg_prev, dg)
        dc_prev = dc * ff
        if spec.fgr:
            dc_prev = dc_prev + dg[:, :H] * s_pi + dg[:, H:2 * H] * s_pf
        return dh_prev, dc_prev, dg_prev, D

    return jax.lax.fori_loop(0, n_steps, body, (dhT, dcT, dgT, D), unroll=spec.unroll)


def _gradients(spec, w_x, w_h, w_g, xs, rmask, Y, C, R, dpre):
    """``(d w_x, d (w_h, w_gates), d b, d peepholes, d xs, d recurrent_mask)`` from
    ``dpre`` over all steps given: the weight gradients one matmul each over all T*B rows."""
    T, B, I = xs.shape
    H, gates = spec.H, spec.gates
    n = len(gates)
    h_prev = Y[:-1]
    if spec.dropmask:
        h_prev = h_prev * rmask
    dpre2 = dpre.reshape(T * B, n * H)
    rows = (h_prev, xs, dpre) + ((R[:-1],) if spec.fgr else ())
    dw_h, dw_x, db, *dw_g = _weight_grads(*(r.reshape(T * B, -1) for r in rows))
    dw_rec = (dw_h, dw_g[0] if spec.fgr else None)
    dxs = (dpre2 @ w_x.T).reshape(T, B, I)
    dpre_g = dict(zip(gates, _split(dpre, n, H)))
    cs, c_prev = C[1:], C[:-1]
    dpeeps = tuple(jnp.sum(dpre_g[g] * (cs if g == "o" else c_prev), axis=(0, 1))
                   for g in spec.peep)
    drmask = None
    if spec.dropmask:
        # rmask multiplies h before the matmul: d rmask = sum_t h_prev * (dpre @ w_h^T)
        drmask = jnp.sum(Y[:-1] * _dot_wT(dpre2, w_h).reshape(T, B, H), axis=0)
    return (dw_x, dw_rec, db, dpeeps, dxs, drmask)


def _dot_wT(d, w):
    """``d @ w^T`` without materializing the transpose."""
    return jax.lax.dot_general(d, w, (((1,), (1,)), ((), ())))


def _ifo(dpre):
    """The i, f and o columns of FGR's dpre [..., 4H] (gates i, f, z, o), [..., 3H]."""
    H = dpre.shape[-1] // 4
    return jnp.concatenate([dpre[..., :2 * H], dpre[..., 3 * H:]], axis=-1)


def _weight_grads(h_prev, xs, dpre, gates=None):
    """``(h_prev^T @ dpre, xs^T @ dpre, column sums of dpre)`` over the rows given, and with
    FGR's carried ``gates`` (i, f, o), ``gates^T @`` the i, f, o columns of dpre."""
    # The transposes materialized (the barrier keeps XLA from folding them into the dot):
    # [K, T*B] @ [T*B, N] then runs as a plain multi-threaded matmul; the transposed-operand
    # form ran single-threaded at about half the speed.
    lhs = jax.lax.optimization_barrier((h_prev.T, xs.T) + (() if gates is None else (gates.T,)))
    # db as a matmul, not .sum(axis=0): XLA's CPU reduction splits into one partial sum per
    # thread, so its rounding (and a whole training run) depended on the number of visible CPUs
    out = (lhs[0] @ dpre, lhs[1] @ dpre, (jnp.ones((1, dpre.shape[0]), dpre.dtype) @ dpre)[0])
    return out if gates is None else out + (lhs[2] @ _ifo(dpre),)


_lstm.defvjp(_lstm_fwd, _lstm_bwd)
