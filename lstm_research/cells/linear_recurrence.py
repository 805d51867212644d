"""The linear recurrence ``h_t = a_t * h_{t-1} + b_t`` over the time axis (axis 0), the one
recurrence of the parallel form of minLSTM and minGRU (:mod:`lstm_research.cells.minrnn`).

Three ways to run it, chosen by the caller (:func:`lstm_research.layers.scan.scan` picks
``chunked`` on CPUs and the associative scan elsewhere):

* :func:`linear_recurrence` with ``method="associative"``: ``jax.lax.associative_scan``,
  ~2*log2(T) passes over whole arrays; the fast form on accelerators;
* :func:`linear_recurrence` with ``method="chunked"``: the time axis cut into chunks of about
  sqrt(T) steps (see :func:`_chunked`); the fast form on CPUs, with a custom VJP;
* :func:`linear_recurrence_log`: the associative scan with ``a``, ``b`` > 0 given in log space
  (the paper's numerically stable form for a positive candidate).

It lives under ``cells/`` because the cells call it and ``cells`` import nothing from
``layers``.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

METHODS = ("associative", "chunked")


def linear_recurrence(a, b, h0, *, method="associative", chunk=None):
    """``h_t = a_t * h_{t-1} + b_t`` over axis 0 of ``a``, ``b`` [T, ...] from ``h0`` [...], for
    any signs; returns ``h`` [T, ...] (every step's state).

    ``method``: ``"associative"`` (an associative scan) or ``"chunked"`` (chunks of ``chunk``
    steps, default about sqrt(T), a power of 2; its backward pass is the same recurrence run
    backwards in time, so nothing per step is stored but ``h``).
    """
    if method == "associative":
        def combine(p1, p2):
            a1, b1 = p1
            a2, b2 = p2
            return a1 * a2, a2 * b1 + b2

        A, B = jax.lax.associative_scan(combine, (a, b))
        return B + A * h0
    if method == "chunked":
        return _chunked(a, b, h0, chunk)
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def linear_recurrence_log(log_a, log_b, h0):
    """h_t = a_t h_{t-1} + b_t over axis 0 with a, b > 0 given in log space.

    An associative scan of (log A, log B) pairs, (A1, B1) then (A2, B2) -> (A1 A2, A2 B1 + B2),
    gives h_t = B_t + A_t h0; the h0 term is added in linear space so that any h0 works.
    """
    def combine(p1, p2):
        la1, lb1 = p1
        la2, lb2 = p2
        return la1 + la2, jnp.logaddexp(lb1 + la2, lb2)

    log_A, log_B = jax.lax.associative_scan(combine, (log_a, log_b))
    return jnp.exp(log_B) + jnp.exp(log_A) * h0


# --- the chunked form ------------------------------------------------------------------------
# A loop of ``chunk`` steps runs every chunk at once from state 0 (keeping only its end state and
# the product of its ``a``), a loop over the chunks carries the state from chunk to chunk, and a
# second loop of ``chunk`` steps recomputes every chunk from its true incoming state. About
# 3*sqrt(T) loop steps instead of T, 2x the elementwise work of the sequential loop, against the
# associative scan's ~2*log2(T) passes over whole arrays (4-8x slower than the sequential loop on
# 2 CPU cores at T = 4096).
def _chunk_len(T, chunk):
    return min(T, chunk or max(8, 1 << round(math.log2(max(T, 1)) / 2)))


def _chunked_forward(a, b, h0, chunk):
    T = a.shape[0]
    L = _chunk_len(T, chunk)
    C = -(-T // L)
    if C * L != T:  # pad with identity steps (a = 1, b = 0)
        pad = ((0, C * L - T),) + ((0, 0),) * (a.ndim - 1)
        a = jnp.pad(a, pad, constant_values=1)
        b = jnp.pad(b, pad)
    # [T, ...] -> [L, C, ...]: step within the chunk first
    ac = jnp.swapaxes(a.reshape((C, L) + a.shape[1:]), 0, 1)
    bc = jnp.swapaxes(b.reshape((C, L) + b.shape[1:]), 0, 1)
    shape = (C,) + a.shape[1:]

    def ends(carry, ab):
        A, Bv = carry
        return (ab[0] * A, ab[0] * Bv + ab[1]), None

    (A_end, B_end), _ = jax.lax.scan(ends, (jnp.ones(shape, a.dtype), jnp.zeros(shape, b.dtype)),
                                     (ac, bc))
    _, h_in = jax.lax.scan(lambda h, ab: (ab[0] * h + ab[1], h), h0, (A_end, B_end))

    def run(h, ab):
        h = ab[0] * h + ab[1]
        return h, h

    _, hs = jax.lax.scan(run, h_in, (ac, bc))
    return jnp.swapaxes(hs, 0, 1).reshape((C * L,) + hs.shape[2:])[:T]


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _chunked(a, b, h0, chunk):
    return _chunked_forward(a, b, h0, chunk)


def _chunked_fwd(a, b, h0, chunk):
    hs = _chunked_forward(a, b, h0, chunk)
    return hs, (a, hs, h0)


def _chunked_bwd(chunk, res, dhs):
    # g_t = dh_t + a_{t+1} g_{t+1}: the same recurrence backwards in time
    a, hs, h0 = res
    a_next = jnp.concatenate([a[1:], jnp.zeros_like(a[:1])])
    g = _chunked_forward(a_next[::-1], dhs[::-1], jnp.zeros_like(h0), chunk)[::-1]
    h_prev = jnp.concatenate([h0[None], hs[:-1]])
    return g * h_prev, g, a[0] * g[0]


_chunked.defvjp(_chunked_fwd, _chunked_bwd)
