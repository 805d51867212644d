"""An opt-in persistent recurrent LSTM layer written with Pallas (``Stack(fused="pallas")``,
``--config.model.fused=pallas``): the recurrent weights are loaded once per kernel program and
kept on chip for the whole sequence, which runs in ONE kernel launch per layer and direction,
forward and backward (the ``lax`` loops of :mod:`~lstm_research.layers.fused` launch kernels at
every step on a GPU).

Equations (the :class:`~lstm_research.cells.lstm.LSTM` cell; gates present in the order
i, f, z, o; s = sigmoid, g and h = tanh or identity)::

    pre_t = x_t @ W_x + b + (m * h_{t-1}) @ W_h       m: recurrent_mask (or 1)
    i, f  = s(pre_i + p_i * c_{t-1}), s(pre_f + p_f * c_{t-1})   (CIFG: f = 1 - i)
    z     = g(pre_z)
    c_t   = clip(z * i + c_{t-1} * f)
    o     = s(pre_o + p_o * c_t)
    h_t   = h(c_t) * o

(absent gates are 1; with ``lengths``, steps t >= length keep the carry and output zeros). With
full gate recurrence (FGR) the activated (i, f, o) of step t-1, ``r_{t-1}``, are carried too and
``r_{t-1} @ W_gates`` (one [Hp, Hp] block per source and target gate, on chip as well) adds to
the pre-activations of i, f and o.

Structure:

* forward: the input projection ``xs @ w_x + b`` for all steps at once, outside the kernel
  (plain XLA); then ONE ``pallas_call`` whose grid runs over blocks of :data:`BLOCK_B`
  sequences (a parallel axis). Each program loads ``w_h`` (one [Hp, Hp] matrix per gate) and the
  peepholes once, then loops over time inside the kernel (``lax.fori_loop``): the recurrent
  matmul, the gate math, and writes of h (and, when differentiated, c and the activated gates);
* backward (``jax.custom_vjp``): ONE reverse-time ``pallas_call`` of the same structure that
  computes each step's ``dpre`` and ``dh_prev = dpre @ w_h^T``, ``dc_prev``; then, as in the
  fused layer, one XLA matmul each over all ``T*B`` rows for ``d w_h = h_prev^T @ dpre``,
  ``d w_x``, ``d xs``, and ``d b``, the peephole and ``recurrent_mask`` gradients.

Shapes are padded for the Triton lowering inside the wrapper and sliced back: the hidden size to
a power of two >= 16 (``Hp``), the batch to a multiple of :data:`BLOCK_B` = 16 (the smallest M
of a Triton ``dot``). Padded units have zero weights, biases, peepholes and initial state, so
their z, c and h stay exactly 0 and they change no result; padded sequences are sliced off.
Matmul operands are in the compute dtype (float32 or bfloat16) with float32 accumulation; the
gate math and the cell state are float32; outputs are cast back to the input dtype.

Covered: what :func:`lstm_research.layers.fused.unsupported` accepts (any subset of gates, CIFG,
peepholes, cell clipping, tanh/identity input and output activations, full gate recurrence,
``lengths``, ``recurrent_mask``), in float32 and bfloat16, within :data:`ON_CHIP_BUDGET`; see
:func:`pallas_unsupported`. :func:`lstm_research.layers.scan.scan` falls back to the fused
layer (or the generic scan) otherwise. Unlike the fused layer, the loops run over all T steps
(no traced trip count), so a Stack with ``fused="pallas"`` is not ``length_free``.

Verified: ``tests/test_pallas_lstm.py`` runs the kernels in Pallas interpret mode on CPU and
checks outputs, final carries and gradients against autodiff of the generic scan, and lowers a
gradient for a GPU on the CPU: exactly two Triton kernels (Pallas' Triton rules hold; nothing is
compiled to PTX). NOT verified: compiling and running on a GPU, the numerics there, whether
``w_h`` really stays resident, and the speed -- never measured. (``vmap`` over params, as packed
trials do, agreed with the generic scan in interpret mode in one check by hand; not a test.)
Until a path has been measured on a GPU it is opt-in only: ``fused="auto"`` never picks it.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from absl import logging
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from lstm_research.cells.base import Cell
from lstm_research.layers import fused as fused_lib

#: sequences per kernel program: 16 is the smallest M of a Triton ``dot``; the smallest block
#: gives the most programs (GPU SMs in use) for a batch. Untuned.
BLOCK_B = 16
#: bytes a program keeps on chip for the whole sequence: ``w_h`` (G matrices [Hp, Hp] in the
#: compute dtype; with FGR also the 9 blocks of ``w_gates``) plus the float32 [BLOCK_B, Hp] tiles
#: of one step (h, c, the G gates and FGR's carried i, f, o). 160
#: KiB fits the shared memory of one block on an A100 (at most 163 KiB) and an H100/H200 (227
#: KiB) and is below an SM's 256 KiB register file, so ``w_h`` can stay resident instead of being
#: re-read from L2/HBM at every step. Whether Triton keeps it resident is NOT measured.
ON_CHIP_BUDGET = 160 * 1024
#: selects the Triton lowering (this JAX otherwise lowers ``pallas_call`` with Mosaic GPU);
#: one software-pipelining stage, as each step depends on the last. Untuned.
TRITON_PARAMS = pltriton.CompilerParams(num_warps=4, num_stages=1)
_DTYPES = ("float32", "bfloat16")
_LOGGED: set[tuple[str, str]] = set()  # (reason, fallback) already logged


def padded_size(n: int) -> int:
    """The power of two >= max(n, 16) that ``n`` units are padded to."""
    return max(16, 1 << (n - 1).bit_length())


def pallas_unsupported(cell: Cell, H: int, B: int, dtype, *, zoneout=None,
                       remat=False) -> str | None:
    """Why the Pallas layer cannot run this configuration (None if it can): what the fused layer
    refuses (:func:`~lstm_research.layers.fused.unsupported`), an empty batch, a dtype other
    than float32/bfloat16, or an on-chip footprint above :data:`ON_CHIP_BUDGET` (hidden size
    ``H`` padded to a power of two; e.g. the 4-gate LSTM fits up to H = 64, FGR up to H = 32 in
    float32 and 64 in bfloat16)."""
    why = fused_lib.unsupported(cell, zoneout=zoneout, remat=remat)
    if why is not None:
        return why
    if B < 1:
        return "an empty batch"
    if jnp.dtype(dtype).name not in _DTYPES:
        return f"dtype {jnp.dtype(dtype).name} (only float32 and bfloat16)"
    G, Hp, fgr = len(cell.gates), padded_size(H), cell.full_gate_recurrence
    need = ((G + 9 * fgr) * Hp * Hp * jnp.dtype(dtype).itemsize
            + (G + 2 + 3 * fgr) * BLOCK_B * Hp * 4)
    if need > ON_CHIP_BUDGET:
        return (f"hidden size {H} (padded {Hp}, {G} gates{', FGR' if fgr else ''}, "
                f"{jnp.dtype(dtype).name}) needs "
                f"{need // 1024} KiB on chip, above the {ON_CHIP_BUDGET // 1024} KiB budget")
    return None


def log_fallback(why: str, to: str) -> None:
    """Log (once per reason and target) that ``fused="pallas"`` fell back to another path."""
    if (why, to) not in _LOGGED:
        _LOGGED.add((why, to))
        logging.warning("fused='pallas': the Pallas LSTM layer does not support this (%s); "
                        "using the %s instead", why, to)


class _Cfg(NamedTuple):
    """The static configuration of the kernels (hashable)."""
    spec: fused_lib.Spec
    Hp: int
    interpret: bool


def pallas_scan(cell: Cell, params, xs, carry, *, lengths=None, recurrent_mask=None,
                interpret=None):
    """Run the LSTM ``cell`` over time-major ``xs`` [T, B, I] from ``carry``; return ``(final
    carry, ys [T, B, H])`` like :func:`lstm_research.layers.fused.fused_scan` (check
    :func:`pallas_unsupported` first). ``interpret=None``: Pallas interpret mode when the
    default backend is the CPU, the real (Triton) lowering otherwise."""
    if interpret is None:
        interpret = jax.default_backend() == "cpu"
    spec = fused_lib.make_spec(cell, lengths is not None, recurrent_mask is not None)
    cfg = _Cfg(spec, padded_size(spec.H), bool(interpret))
    peeps = tuple(params[f"peephole_{g}"] for g in spec.peep)
    args = (params["w_x"], params["w_h"], params.get("w_gates"), params["b"], peeps, xs,
            carry["h"], carry["c"], carry.get("gates"))
    dt = jnp.result_type(*jax.tree.leaves(args))  # one compute dtype (autodiff casts back)
    w_x, w_h, w_g, b, peeps, xs, h0, c0, g0, rmask = jax.tree.map(
        lambda a: a.astype(dt), args + (recurrent_mask,))
    hT, cT, gT, ys = _lstm(cfg, w_x, w_h, w_g, b, peeps, xs, h0, c0, g0, lengths, rmask)
    final = {"c": cT, "h": hT}
    if spec.fgr:
        final["gates"] = gT
    return final, ys


# --- padding and launching ------------------------------------------------------------------
def _pad(a, shape):
    return jnp.pad(a, [(0, n - m) for m, n in zip(a.shape, shape)])


def _gates_last(w, n, H, Hp):
    """[..., n*H] -> [..., n, Hp], the units of each gate padded with zeros."""
    w = w.reshape(w.shape[:-1] + (n, H))
    return _pad(w, w.shape[:-1] + (Hp,))


def _gate_blocks(w_g, H, Hp):
    """FGR's ``w_gates`` [3H (source i, f, o), 3H (target i, f, o)] -> [3, 3, Hp, Hp] blocks."""
    w = _gates_last(w_g, 3, H, Hp)                                  # [3H, 3, Hp]
    return _pad(w.reshape(3, H, 3, Hp), (3, Hp, 3, Hp)).transpose(0, 2, 1, 3)


def _ifo_first(a, B, H):
    """[B, 3H] (i, f, o) -> [3, B, H]."""
    return a.reshape(B, 3, H).transpose(1, 0, 2)


def _call(kernel, ins, in_bdims, outs, out_bdims, interpret, name):
    """``pallas_call`` with a 1-D grid over batch blocks: an array whose batch dim is given
    (``bdims``) gets blocks of :data:`BLOCK_B` along it, the others are whole."""
    def spec(shape, bdim):
        if bdim is None:
            return pl.BlockSpec(shape, lambda i, r=len(shape): (0,) * r)
        block = tuple(BLOCK_B if d == bdim else s for d, s in enumerate(shape))
        return pl.BlockSpec(block, lambda i, r=len(shape), bd=bdim: tuple(
            i if d == bd else 0 for d in range(r)))
    Bp = ins[0].shape[in_bdims[0]]
    return pl.pallas_call(
        kernel, grid=(Bp // BLOCK_B,),
        in_specs=[spec(a.shape, d) for a, d in zip(ins, in_bdims)],
        out_specs=[spec(o.shape, d) for o, d in zip(outs, out_bdims)],
        out_shape=outs, interpret=interpret, name=name, compiler_params=TRITON_PARAMS)(*ins)


# --- forward --------------------------------------------------------------------------------
def _fwd_kernel(spec, T, save, *refs):
    gates, f32 = spec.gates, jnp.float32
    refs = list(refs)
    px_ref, w_ref = refs.pop(0), refs.pop(0)
    p_ref = refs.pop(0) if spec.peep else None
    wg_ref = refs.pop(0) if spec.fgr else None
    h0_ref, c0_ref = refs.pop(0), refs.pop(0)
    g0_ref = refs.pop(0) if spec.fgr else None
    len_ref = refs.pop(0) if spec.masked else None
    m_ref = refs.pop(0) if spec.dropmask else None
    ys_ref, hT_ref, cT_ref = refs.pop(0), refs.pop(0), refs.pop(0)
    gT_ref = refs.pop(0) if spec.fgr else None
    c_ref, a_ref = (refs.pop(0), refs.pop(0)) if save else (None, None)
    r_ref = refs.pop(0) if save and spec.fgr else None

    w = [w_ref[k] for k in range(len(gates))]                 # on chip for the whole sequence
    # FGR: wg[s][d] adds carried gate s (i, f, o) to the pre-activation of gate d (i, f, o)
    wg = [[wg_ref[s, d] for d in range(3)] for s in range(3)] if spec.fgr else None
    peep = {g: p_ref[k][None, :] for k, g in enumerate(spec.peep)}
    lens = len_ref[...][:, None] if spec.masked else None
    mask = m_ref[...].astype(f32) if spec.dropmask else None
    sig = jax.nn.sigmoid
    g_act = jnp.tanh if spec.tanh_in else (lambda v: v)
    h_act = jnp.tanh if spec.tanh_out else (lambda v: v)
    h0, c0 = h0_ref[...].astype(f32), c0_ref[...].astype(f32)
    r0 = tuple(g0_ref[s].astype(f32) for s in range(3)) if spec.fgr else ()
    if save:
        c_ref[0] = c0
        for s in range(len(r0)):
            r_ref[0, s] = r0[s]

    def step(t, carry):
        h, c_prev, r = carry
        h_in = (h * mask if spec.dropmask else h).astype(w[0].dtype)
        pre = {g: px_ref[t, k] + jnp.dot(h_in, w[k], preferred_element_type=f32)
               for k, g in enumerate(gates)}
        if spec.fgr:
            r_in = [a.astype(w[0].dtype) for a in r]
            for d, g in enumerate("ifo"):
                for s in range(3):
                    pre[g] = pre[g] + jnp.dot(r_in[s], wg[s][d], preferred_element_type=f32)

        def gate(g, c):
            return sig(pre[g] + peep[g] * c) if g in peep else sig(pre[g])
        act = {g: gate(g, c_prev) for g in gates if g in "if"}
        act["z"] = g_act(pre["z"])
        keep = t < lens if spec.masked else None
        c = fused_lib.cell_update(spec, act, c_prev, keep)
        if "o" in gates:
            act["o"] = gate("o", c)
        y = h_act(c) * act.get("o", 1.0)
        if spec.masked:
            ys_ref[t] = jnp.where(keep, y, 0.0).astype(ys_ref.dtype)
            y = jnp.where(keep, y, h)
        else:
            ys_ref[t] = y.astype(ys_ref.dtype)
        if spec.fgr:
            r = tuple(jnp.where(keep, act[g], r_s) if spec.masked else act[g]
                      for g, r_s in zip("ifo", r))
        if save:
            c_ref[t + 1] = c
            for k, g in enumerate(gates):
                a_ref[t, k] = act[g]
            for s in range(len(r)):
                r_ref[t + 1, s] = r[s]
        return y, c, r

    h, c, r = jax.lax.fori_loop(0, T, step, (h0, c0, r0))
    hT_ref[...] = h.astype(hT_ref.dtype)
    cT_ref[...] = c.astype(cT_ref.dtype)
    for s in range(len(r)):
        gT_ref[s] = r[s].astype(gT_ref.dtype)


def _forward(cfg, w_x, w_h, w_g, b, peeps, xs, h0, c0, g0, lengths, rmask, save):
    """Pad, project the inputs, run the forward kernel; returns ``(hT, cT, gT, ys)`` (``gT``: FGR's
    final (i, f, o) [B, 3H], else None) and, with ``save``, the residuals (padded, float32): c
    before the first and after every step [T+1, Bp, Hp], the activated gates [T, G, Bp, Hp] and
    with FGR the carried (i, f, o) before the first and after every step [T+1, 3, Bp, Hp]."""
    spec, Hp = cfg.spec, cfg.Hp
    H, n = spec.H, len(spec.gates)
    T, B, _ = xs.shape
    Bp = -(-B // BLOCK_B) * BLOCK_B
    dt = xs.dtype
    f32 = jnp.float32
    # the input projection for all steps at once, as [T, G, Bp, Hp] (a block per gate and step)
    px = jnp.einsum("tbi,igh->tgbh", _pad(xs, (T, Bp, xs.shape[2])), _gates_last(w_x, n, H, Hp),
                    preferred_element_type=f32) + _gates_last(b.astype(f32), n, H, Hp)[:, None]
    w = _pad(_gates_last(w_h, n, H, Hp), (Hp, n, Hp)).transpose(1, 0, 2)   # [G, Hp, Hp]
    ins, bdims = [px, w], [2, None]
    if spec.peep:
        ins.append(_pad(jnp.stack(peeps).astype(f32), (len(peeps), Hp)))
        bdims.append(None)
    if spec.fgr:
        ins.append(_gate_blocks(w_g, H, Hp))
        bdims.append(None)
    ins += [_pad(h0, (Bp, Hp)), _pad(c0, (Bp, Hp))]
    bdims += [0, 0]
    if spec.fgr:
        ins.append(_pad(_ifo_first(g0, B, H), (3, Bp, Hp)))
        bdims.append(1)
    if spec.masked:
        ins.append(_pad(lengths.astype(jnp.int32), (Bp,)))
        bdims.append(0)
    if spec.dropmask:
        ins.append(_pad(rmask.astype(dt), (Bp, Hp)))
        bdims.append(0)
    outs = [jax.ShapeDtypeStruct((T, Bp, Hp), dt), jax.ShapeDtypeStruct((Bp, Hp), dt),
            jax.ShapeDtypeStruct((Bp, Hp), c0.dtype)]
    out_bdims = [1, 0, 0]
    if spec.fgr:
        outs.append(jax.ShapeDtypeStruct((3, Bp, Hp), g0.dtype))
        out_bdims.append(1)
    if save:
        outs += [jax.ShapeDtypeStruct((T + 1, Bp, Hp), f32),
                 jax.ShapeDtypeStruct((T, n, Bp, Hp), f32)]
        out_bdims += [1, 2]
        if spec.fgr:
            outs.append(jax.ShapeDtypeStruct((T + 1, 3, Bp, Hp), f32))
            out_bdims.append(2)
    res = list(_call(functools.partial(_fwd_kernel, spec, T, save), ins, bdims, outs,
                     out_bdims, cfg.interpret, "lstm_forward"))
    ys, hT, cT = res.pop(0)[:, :B, :H], res.pop(0)[:B, :H], res.pop(0)[:B, :H]
    gT = res.pop(0)[:, :B, :H].transpose(1, 0, 2).reshape(B, 3 * H) if spec.fgr else None
    return (hT, cT, gT, ys), tuple(res)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _lstm(cfg, w_x, w_h, w_g, b, peeps, xs, h0, c0, g0, lengths, rmask):
    """``(hT, cT, gT, ys)``; ``w_g``/``g0``/``gT``: FGR's ``w_gates`` and carried (i, f, o)
    (None without FGR)."""
    return _forward(cfg, w_x, w_h, w_g, b, peeps, xs, h0, c0, g0, lengths, rmask,
                    save=False)[0]


def _lstm_fwd(cfg, w_x, w_h, w_g, b, peeps, xs, h0, c0, g0, lengths, rmask):
    out, saved = _forward(cfg, w_x, w_h, w_g, b, peeps, xs, h0, c0, g0, lengths, rmask,
                          save=True)
    return out, (w_x, w_h, w_g, peeps, xs, h0, out[3], lengths, rmask) + saved


# --- backward -------------------------------------------------------------------------------
def _bwd_kernel(spec, T, *refs):
    gates, f32 = spec.gates, jnp.float32
    refs = list(refs)
    dys_ref, dhT_ref, dcT_ref, c_ref, a_ref, w_ref = (refs.pop(0) for _ in range(6))
    p_ref = refs.pop(0) if spec.peep else None
    wg_ref, dgT_ref = (refs.pop(0), refs.pop(0)) if spec.fgr else (None, None)
    len_ref = refs.pop(0) if spec.masked else None
    m_ref = refs.pop(0) if spec.dropmask else None
    dpre_ref, dh0_ref, dc0_ref = refs.pop(0), refs.pop(0), refs.pop(0)
    dg0_ref = refs.pop(0) if spec.fgr else None

    wT = [w_ref[k] for k in range(len(gates))]                # w_h^T, on chip throughout
    # FGR: wgT[s][d] = (block of w_gates from carried gate s to gate d)^T
    wgT = [[wg_ref[s, d] for d in range(3)] for s in range(3)] if spec.fgr else None
    peep = {g: p_ref[k][None, :] for k, g in enumerate(spec.peep)}
    lens = len_ref[...][:, None] if spec.masked else None
    mask = m_ref[...].astype(f32) if spec.dropmask else None

    def body(k, carry):
        # dh = dh' + dy;  dc = dc' + dh * Kc;  dpre_o = dh * K_o;  dpre_g = dc * K_g (i, f, z);
        # dc_prev = dc * F;  dh_prev = dpre @ w_h^T  (the factors as in the fused layer).
        # FGR, with dg the gradient of the carried r_t = (i, f, o) and S_a = a (1 - a): dc gains
        # dg_o S_o p_o, dpre_a gains dg_a S_a (a = i, f, o), dc_prev gains dg_a S_a p_a (a = i,
        # f), and dg_prev = dpre_ifo @ w_gates^T
        dh, dc, dg = carry
        t = T - 1 - k
        c, c_prev = c_ref[t + 1], c_ref[t]
        act = {g: a_ref[t, j] for j, g in enumerate(gates)}
        K, Kc, F = fused_lib.gate_factors(spec, act, c, c_prev, peep)
        S = {g: act[g] * (1.0 - act[g]) for g in "ifo"} if spec.fgr else {}
        dy = dys_ref[t].astype(f32)
        if spec.masked:  # padded steps: no gradient into the gates, the carries pass through
            keep = t < lens
            v = keep.astype(f32)
            K = {g: kg * v for g, kg in K.items()}
            S = {g: sg * v for g, sg in S.items()}
            Kc, F, dy = Kc * v, F * v + (1.0 - v), dy * v
        dh = dh + dy
        dc = dc + dh * Kc
        if spec.fgr and "o" in peep:
            dc = dc + dg[2] * S["o"] * peep["o"]
        dh_prev, dpre_ifo = 0.0, []
        for j, g in enumerate(gates):
            dpre = (dh if g == "o" else dc) * K[g]
            if spec.fgr and g in "ifo":
                dpre = dpre + dg["ifo".index(g)] * S[g]
                dpre_ifo.append(dpre.astype(wT[j].dtype))
            dpre_ref[t, j] = dpre
            dh_prev = dh_prev + jnp.dot(dpre.astype(wT[j].dtype), wT[j],
                                        preferred_element_type=f32)
        if spec.dropmask:
            dh_prev = dh_prev * mask
        dc_prev = dc * F
        if spec.fgr:
            dg_prev = tuple(sum(jnp.dot(dpre_ifo[d], wgT[s][d], preferred_element_type=f32)
                                for d in range(3)) for s in range(3))
            for s, g in enumerate("if"):
                if g in peep:
                    dc_prev = dc_prev + dg[s] * S[g] * peep[g]
        if spec.masked:
            dh_prev = jnp.where(keep, dh_prev, dh)
            if spec.fgr:
                dg_prev = tuple(jnp.where(keep, a, b) for a, b in zip(dg_prev, dg))
        return dh_prev, dc_prev, dg_prev if spec.fgr else ()

    dgT = tuple(dgT_ref[s].astype(f32) for s in range(3)) if spec.fgr else ()
    dh0, dc0, dg0 = jax.lax.fori_loop(0, T, body, (dhT_ref[...].astype(f32),
                                                  dcT_ref[...].astype(f32), dgT))
    dh0_ref[...] = dh0
    dc0_ref[...] = dc0
    for s in range(len(dg0)):
        dg0_ref[s] = dg0[s]


def _lstm_bwd(cfg, res, cotangents):
    w_x, w_h, w_g, peeps, xs, h0, ys, lengths, rmask, C, A, *R = res
    dhT, dcT, dgT, dys = cotangents
    spec, Hp = cfg.spec, cfg.Hp
    H, gates, n = spec.H, spec.gates, len(spec.gates)
    T, B, I = xs.shape
    Bp = C.shape[1]
    dt, f32 = xs.dtype, jnp.float32
    wT = _pad(_gates_last(w_h, n, H, Hp), (Hp, n, Hp)).transpose(1, 2, 0)  # [G, out, in]
    ins = [_pad(dys, (T, Bp, Hp)), _pad(dhT, (Bp, Hp)), _pad(dcT, (Bp, Hp)), C, A, wT]
    bdims = [1, 0, 0, 1, 2, None]
    if spec.peep:
        ins.append(_pad(jnp.stack(peeps).astype(f32), (len(peeps), Hp)))
        bdims.append(None)
    if spec.fgr:
        ins += [_gate_blocks(w_g, H, Hp).transpose(0, 1, 3, 2),      # [src, dst, out, in]
                _pad(_ifo_first(dgT, B, H), (3, Bp, Hp))]
        bdims += [None, 1]
    if spec.masked:
        ins.append(_pad(lengths.astype(jnp.int32), (Bp,)))
        bdims.append(0)
    if spec.dropmask:
        ins.append(_pad(rmask, (Bp, Hp)))
        bdims.append(0)
    outs = [jax.ShapeDtypeStruct((T, n, Bp, Hp), f32), jax.ShapeDtypeStruct((Bp, Hp), f32),
            jax.ShapeDtypeStruct((Bp, Hp), f32)]
    out_bdims = [2, 0, 0]
    if spec.fgr:
        outs.append(jax.ShapeDtypeStruct((3, Bp, Hp), f32))
        out_bdims.append(1)
    dpre, dh0, dc0, *dg0 = _call(functools.partial(_bwd_kernel, spec, T), ins, bdims, outs,
                                 out_bdims, cfg.interpret, "lstm_backward")

    # Weight gradients: one matmul each over all T*B rows, after the kernel (operands in the
    # compute dtype, float32 accumulation).
    dpre = dpre[:, :, :B, :H]                                   # [T, G, B, H]
    d2 = dpre.transpose(0, 2, 1, 3).reshape(T * B, n * H)
    d2c = d2.astype(dt)

    def dot(a, b):
        return jnp.dot(a, b, preferred_element_type=f32)
    h_prev = jnp.concatenate([h0[None], ys[:-1]])              # (ys past an end: dpre is 0)
    h_in = h_prev * rmask if spec.dropmask else h_prev
    dw_h = dot(h_in.reshape(T * B, H).T, d2c).astype(dt)
    dw_x = dot(xs.reshape(T * B, I).T, d2c).astype(dt)
    db = dot(jnp.ones((1, T * B), f32), d2)[0].astype(dt)     # a matmul: see fused._weight_grads
    dxs = dot(d2c, w_x.T).reshape(T, B, I).astype(dt)
    cs = C[:, :B, :H]
    dpeeps = tuple(jnp.sum(dpre[:, gates.index(g)] * (cs[1:] if g == "o" else cs[:-1]),
                           axis=(0, 1)).astype(dt) for g in spec.peep)
    drmask = None
    if spec.dropmask:  # rmask multiplies h before the matmul: sum_t h_prev * (dpre @ w_h^T)
        drmask = jnp.sum(h_prev.astype(f32) * dot(d2c, w_h.T).reshape(T, B, H),
                         axis=0).astype(dt)
    dw_g = dg0_out = None
    if spec.fgr:  # d w_gates = r_{t-1}^T @ dpre_ifo over all T*B rows
        r_prev = R[0][:T, :, :B, :H].transpose(0, 2, 1, 3).reshape(T * B, 3 * H)
        dpre_ifo = dpre[:, [gates.index(g) for g in "ifo"]]
        dpre_ifo = dpre_ifo.transpose(0, 2, 1, 3).reshape(T * B, 3 * H)
        dw_g = dot(r_prev.astype(dt).T, dpre_ifo.astype(dt)).astype(dt)
        dg0_out = dg0[0][:, :B, :H].transpose(1, 0, 2).reshape(B, 3 * H).astype(dt)
    return (dw_x, dw_h, dw_g, db, dpeeps, dxs, dh0[:B, :H].astype(dt), dc0[:B, :H].astype(dt),
            dg0_out, None, drmask)


_lstm.defvjp(_lstm_fwd, _lstm_bwd)
