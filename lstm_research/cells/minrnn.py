"""minLSTM and minGRU (Feng, Tung, Ahmed, Bengio & Hajimirsadeghi 2024, "Were RNNs All We
Needed?"): gates that read only the input, so the recurrence h_t = a_t * h_{t-1} + b_t is linear
in h and can run over time as a parallel (associative) scan.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from lstm_research.cells import base


def g(x):
    """The paper's positive candidate activation: x + 0.5 for x >= 0, sigmoid(x) below."""
    return jnp.where(x >= 0, x + 0.5, jax.nn.sigmoid(x))


def log_g(x):
    """log g(x), computed stably (Feng et al. 2024, Listing 8)."""
    return jnp.where(x >= 0, jnp.log(jax.nn.relu(x) + 0.5), -jax.nn.softplus(-x))


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


def linear_recurrence(a, b, h0):
    """h_t = a_t h_{t-1} + b_t over axis 0, for any signs, by an associative scan."""
    def combine(p1, p2):
        a1, b1 = p1
        a2, b2 = p2
        return a1 * a2, a2 * b1 + b2

    A, B = jax.lax.associative_scan(combine, (a, b))
    return B + A * h0


@dataclasses.dataclass(frozen=True)
class _MinRNN(base.Cell):
    positive_candidate: bool = True

    recurrent_key = None
    has_parallel_form = True

    def init(self, key, input_size):
        n = self.n_blocks
        return {"w_x": base.glorot(key, input_size, self.hidden_size, n),
                "b": jnp.zeros(n * self.hidden_size)}

    def project(self, params, x):
        return x @ params["w_x"] + params["b"]

    def _candidate(self, pre_h):
        return g(pre_h) if self.positive_candidate else pre_h

    def recur(self, params, carry, px):
        a, b = self.coefficients(px)
        h = a * carry["h"] + b
        return {"h": h}, h

    def scan_parallel(self, params, px, carry, valid=None):
        """All time steps at once (time-major ``px`` [T, B, ...]); ``valid`` [T, B] masks steps
        past each sequence's end (state frozen there, outputs zero)."""
        del params
        h0 = carry["h"]
        if self.positive_candidate:
            log_a, log_b = self.log_coefficients(px)
            if valid is not None:
                v = valid[..., None]
                log_a, log_b = jnp.where(v, log_a, 0.0), jnp.where(v, log_b, -jnp.inf)
            hs = linear_recurrence_log(log_a, log_b, h0)
        else:
            a, b = self.coefficients(px)
            if valid is not None:
                v = valid[..., None]
                a, b = jnp.where(v, a, 1.0), jnp.where(v, b, 0.0)
            hs = linear_recurrence(a, b, h0)
        ys = hs if valid is None else jnp.where(valid[..., None], hs, 0.0)
        return {"h": hs[-1]}, ys


@dataclasses.dataclass(frozen=True)
class MinLSTM(_MinRNN):
    r"""minLSTM (Feng et al. 2024, Sec. 3.2)::

        f_t = s(W_f x_t + b_f),  i_t = s(W_i x_t + b_i),  h~_t = g(W_h x_t + b_h)
        f'_t = f_t / (f_t + i_t),  i'_t = i_t / (f_t + i_t)
        h_t = f'_t * h_{t-1} + i'_t * h~_t

    g is the positive activation of the paper's log-space version (``positive_candidate``; with
    False, h~ = W_h x + b_h). Parallel log-space form: log f' = -softplus(d),
    log i' = -softplus(-d) with d = softplus(-f~) - softplus(-i~).

    Params: ``w_x`` [I, 3H], ``b`` [3H] in the order (f, i, h). Carry: ``h`` [B, H].
    """

    n_blocks = 3

    @property
    def name(self):
        return "minlstm"

    def coefficients(self, px):
        f_pre, i_pre, h_pre = jnp.split(px, 3, axis=-1)
        f, i = jax.nn.sigmoid(f_pre), jax.nn.sigmoid(i_pre)
        return f / (f + i), i / (f + i) * self._candidate(h_pre)

    def log_coefficients(self, px):
        f_pre, i_pre, h_pre = jnp.split(px, 3, axis=-1)
        diff = jax.nn.softplus(-f_pre) - jax.nn.softplus(-i_pre)
        return -jax.nn.softplus(diff), -jax.nn.softplus(-diff) + log_g(h_pre)


@dataclasses.dataclass(frozen=True)
class MinGRU(_MinRNN):
    r"""minGRU (Feng et al. 2024, Sec. 3.1)::

        z_t = s(W_z x_t + b_z),  h~_t = g(W_h x_t + b_h)
        h_t = (1 - z_t) * h_{t-1} + z_t * h~_t

    Parallel log-space form: log(1 - z) = -softplus(z~), log z = -softplus(-z~).
    Params: ``w_x`` [I, 2H], ``b`` [2H] in the order (z, h). Carry: ``h`` [B, H].
    """

    n_blocks = 2

    @property
    def name(self):
        return "mingru"

    def coefficients(self, px):
        z_pre, h_pre = jnp.split(px, 2, axis=-1)
        z = jax.nn.sigmoid(z_pre)
        return 1.0 - z, z * self._candidate(h_pre)

    def log_coefficients(self, px):
        z_pre, h_pre = jnp.split(px, 2, axis=-1)
        return -jax.nn.softplus(z_pre), -jax.nn.softplus(-z_pre) + log_g(h_pre)
