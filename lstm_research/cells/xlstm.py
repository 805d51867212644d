"""xLSTM's sLSTM and mLSTM cells (Beck et al. 2024, "xLSTM: Extended Long Short-Term Memory")."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from lstm_research.cells import base
from lstm_research.cells.base import CellConfigError


def _log_forget(f_pre, kind):
    return f_pre if kind == "exp" else jax.nn.log_sigmoid(f_pre)


def _check_forget(kind):
    if kind not in ("exp", "sigmoid"):
        raise CellConfigError(f"forget_activation must be 'exp' or 'sigmoid', got {kind!r}")


@dataclasses.dataclass(frozen=True)
class SLSTM(base.Cell):
    r"""sLSTM: scalar memory, exponential gating, normalizer and stabilizer state (Sec. 2.2).

    Pre-activations ``a~ = W_a x_t + R_a h_{t-1} + b_a`` for a in (i, f, z, o), then (eq. 8-17)::

        z_t = tanh(z~),  o_t = s(o~),  log f_t = f~ (exp) or log s(f~) (sigmoid)
        m_t = max(log f_t + m_{t-1}, i~)                     stabilizer (i~ where n_{t-1} = 0)
        i'_t = exp(i~ - m_t),  f'_t = exp(log f_t + m_{t-1} - m_t)
        c_t = f'_t c_{t-1} + i'_t z_t                         cell state
        n_t = f'_t n_{t-1} + i'_t                             normalizer state
        h_t = o_t * c_t / n_t

    The stabilizer rescales c and n together, so h equals the unstabilized
    ``o * (f c + exp(i~) z) / (f n + exp(i~))``. ``forget_activation`` picks exp or sigmoid
    (the paper allows both; the official code uses sigmoid). Gate order (i, f, z, o).

    Params: ``w_x`` [I, 4H], ``w_h`` [H, 4H], ``b`` [4H]. Carry: ``c``, ``n``, ``m``, ``h`` [B, H].
    """

    forget_activation: str = "sigmoid"
    forget_bias: float = 0.0

    # c and n are a ratio under a shared stabilizer m: zoning them out unit by unit breaks it
    zoneout_keys = ()

    def validate(self):
        _check_forget(self.forget_activation)

    @property
    def name(self):
        return "slstm"

    def init(self, key, input_size):
        H = self.hidden_size
        k1, k2 = jax.random.split(key)
        b = jnp.zeros((4, H)).at[1].set(self.forget_bias).reshape(4 * H)
        return {"w_x": base.glorot(k1, input_size, H, 4),
                "w_h": base.orthogonal(k2, H, H, 4), "b": b}

    def initial_carry(self, batch_shape, dtype=jnp.float32):
        z = jnp.zeros((*batch_shape, self.hidden_size), dtype)
        return {"c": z, "n": z, "m": z, "h": z}

    def project(self, params, x):
        return x @ params["w_x"] + params["b"]

    def recur(self, params, carry, px):
        i_pre, f_pre, z_pre, o_pre = jnp.split(px + carry["h"] @ params["w_h"], 4, axis=-1)
        log_f = _log_forget(f_pre, self.forget_activation)
        # from an empty normalizer (the initial state) m_t = i~, as the official code does: with
        # max(log f, i~) a tiny exp(i~ - m) underflowed to n_t = 0 and h_t = 0/0
        empty = carry["n"] == 0
        m = jnp.where(empty, i_pre, jnp.maximum(log_f + carry["m"], i_pre))
        i = jnp.exp(i_pre - m)
        f = jnp.where(empty, 0.0, jnp.exp(jnp.where(empty, 0.0, log_f + carry["m"] - m)))
        c = f * carry["c"] + i * jnp.tanh(z_pre)
        n = f * carry["n"] + i
        h = jax.nn.sigmoid(o_pre) * c / n
        return {"c": c, "n": n, "m": m, "h": h}, h


@dataclasses.dataclass(frozen=True)
class MLSTM(base.Cell):
    r"""mLSTM: matrix memory with a covariance update rule, fully parallelizable (Sec. 2.3).

    Per head (d = head size = hidden_size / num_heads), from the input only (eq. 19-27)::

        q_t = W_q x_t + b_q,  k_t = (W_k x_t) / sqrt(d) + b_k,  v_t = W_v x_t + b_v
        o_t = s(W_o x_t + b_o),  i~ = w_i x_t + b_i,  f~ = w_f x_t + b_f   (scalars per head)
        log f_t = log s(f~) (sigmoid) or f~ (exp)
        m_t = max(log f_t + m_{t-1}, i~),  i' = exp(i~ - m_t),  f' = exp(log f_t + m_{t-1} - m_t)
        C_t = f' C_{t-1} + i' v_t k_t^T                        [d, d] memory
        n_t = f' n_{t-1} + i' k_t                              normalizer
        h_t = o_t * (C_t q_t) / max(|n_t^T q_t|, exp(-m_t))

    (``exp(-m_t)`` is the stabilized form of the paper's lower bound 1.) There is no recurrent
    weight matrix: everything but the memory update is hoisted out of the time loop.

    Params: ``w_x`` [I, 4H + 2*heads] and ``b`` [4H + 2*heads], columns in the order
    (q, k, v, o, i, f). Carry: ``C`` [B, heads, d, d], ``n`` [B, heads, d], ``m`` [B, heads].
    """

    num_heads: int = 1
    forget_activation: str = "sigmoid"
    forget_bias: float = 0.0

    recurrent_key = None
    zoneout_keys = ()

    def validate(self):
        _check_forget(self.forget_activation)
        if self.num_heads < 1 or self.hidden_size % self.num_heads:
            raise CellConfigError(f"num_heads={self.num_heads} must be >= 1 and divide "
                                  f"hidden_size={self.hidden_size}")

    @property
    def name(self):
        return "mlstm"

    @property
    def head_size(self):
        return self.hidden_size // self.num_heads

    def init(self, key, input_size):
        H, NH = self.hidden_size, self.num_heads
        k1, k2 = jax.random.split(key)
        w = jnp.concatenate([base.glorot(k1, input_size, H, 4),
                             base.glorot(k2, input_size, NH, 2)], axis=-1)
        b = jnp.zeros(4 * H + 2 * NH).at[4 * H + NH:].set(self.forget_bias)
        return {"w_x": w, "b": b}

    def initial_carry(self, batch_shape, dtype=jnp.float32):
        NH, d = self.num_heads, self.head_size
        return {"C": jnp.zeros((*batch_shape, NH, d, d), dtype),
                "n": jnp.zeros((*batch_shape, NH, d), dtype),
                "m": jnp.zeros((*batch_shape, NH), dtype)}

    def project(self, params, x):
        H, NH, d = self.hidden_size, self.num_heads, self.head_size
        wx, b = x @ params["w_x"], params["b"]
        heads = lambda a: a.reshape(*a.shape[:-1], NH, d)
        q, k, v, o = (heads(wx[..., j * H:(j + 1) * H]) for j in range(4))
        bq, bk, bv, bo = (heads(b[j * H:(j + 1) * H]) for j in range(4))
        pre = wx[..., 4 * H:] + b[4 * H:]
        return {"q": q + bq, "k": k / d ** 0.5 + bk, "v": v + bv,
                "o": jax.nn.sigmoid(o + bo), "i": pre[..., :NH],
                "log_f": _log_forget(pre[..., NH:], self.forget_activation)}

    def recur(self, params, carry, px):
        m = jnp.maximum(px["log_f"] + carry["m"], px["i"])
        i = jnp.exp(px["i"] - m)
        f = jnp.exp(px["log_f"] + carry["m"] - m)
        C = f[..., None, None] * carry["C"] + i[..., None, None] * (
            px["v"][..., :, None] * px["k"][..., None, :])
        n = f[..., None] * carry["n"] + i[..., None] * px["k"]
        num = jnp.einsum("...ij,...j->...i", C, px["q"])
        den = jnp.maximum(jnp.abs(jnp.sum(n * px["q"], axis=-1)), jnp.exp(-m))
        h = px["o"] * num / den[..., None]
        h = h.reshape(*h.shape[:-2], self.hidden_size)
        return {"C": C, "n": n, "m": m}, h
