"""minLSTM and minGRU (Feng, Tung, Ahmed, Bengio & Hajimirsadeghi 2024, "Were RNNs All We
Needed?"): gates that read only the input, so the recurrence h_t = a_t * h_{t-1} + b_t is linear
in h and can run over time as a parallel scan (:mod:`lstm_research.cells.linear_recurrence`).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from lstm_research.cells import base
from lstm_research.cells.linear_recurrence import linear_recurrence, linear_recurrence_log


def g(x):
    """The paper's positive candidate activation: x + 0.5 for x >= 0, sigmoid(x) below."""
    return jnp.where(x >= 0, x + 0.5, jax.nn.sigmoid(x))


def log_g(x):
    """log g(x), computed stably (Feng et al. 2024, Listing 8)."""
    return jnp.where(x >= 0, jnp.log(jax.nn.relu(x) + 0.5), -jax.nn.softplus(-x))


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

    def scan_parallel(self, params, px, carry, valid=None, method="associative"):
        """All time steps at once (time-major ``px`` [T, B, ...]); ``valid`` [T, B] masks steps
        past each sequence's end (state frozen there, outputs zero).

        ``method="associative"``: an associative scan, in log space with the positive
        candidate; ``"chunked"``: the chunked recurrence on the linear-space coefficients
        (the fast form on CPUs). See :mod:`lstm_research.cells.linear_recurrence`.
        """
        del params
        h0 = carry["h"]
        v = None if valid is None else valid[..., None]
        if self.positive_candidate and method == "associative":
            log_a, log_b = self.log_coefficients(px)
            if v is not None:
                log_a, log_b = jnp.where(v, log_a, 0.0), jnp.where(v, log_b, -jnp.inf)
            hs = linear_recurrence_log(log_a, log_b, h0)
        else:
            a, b = self.coefficients(px)
            if v is not None:
                a, b = jnp.where(v, a, 1.0), jnp.where(v, b, 0.0)
            hs = linear_recurrence(a, b, h0, method=method)
        ys = hs if v is None else jnp.where(v, hs, 0.0)
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
