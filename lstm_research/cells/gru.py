"""Gated recurrent unit (Cho et al. 2014) in both forms, and the Elman tanh RNN baseline."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from lstm_research.cells import base


@dataclasses.dataclass(frozen=True)
class GRU(base.Cell):
    r"""GRU, Cho et al. 2014 ("Learning Phrase Representations using RNN Encoder-Decoder", eq. 5-8).

    ``reset_after=False`` (original form, reset applied before the recurrent matmul)::

        r_t = s(W_r x_t + U_r h_{t-1} + b_r)
        u_t = s(W_u x_t + U_u h_{t-1} + b_u)                  update gate ("z" in PyTorch)
        n_t = tanh(W_n x_t + U_n (r_t * h_{t-1}) + b_n)
        h_t = u_t * h_{t-1} + (1 - u_t) * n_t

    ``reset_after=True`` (cuDNN and PyTorch ``nn.GRU``): the candidate is
    ``n_t = tanh(W_n x_t + b_n + r_t * (U_n h_{t-1} + b_hn))``, so all three recurrent products
    are one matmul.

    Gate order (r, u, n), as PyTorch's (r, z, n). Params: ``w_x`` [I, 3H], ``w_h`` [H, 3H],
    ``b`` [3H] (input-side biases, with PyTorch's recurrent r and z biases folded in) and, with
    ``reset_after``, ``b_hn`` [H] (the recurrent candidate bias, inside the reset product).
    Carry: ``h`` [B, H].
    """

    reset_after: bool = True

    @property
    def name(self):
        return "gru"

    def init(self, key, input_size):
        H = self.hidden_size
        k1, k2 = jax.random.split(key)
        params = {"w_x": base.glorot(k1, input_size, H, 3),
                  "w_h": base.orthogonal(k2, H, H, 3),
                  "b": jnp.zeros(3 * H)}
        if self.reset_after:
            params["b_hn"] = jnp.zeros(H)
        return params

    def project(self, params, x):
        return x @ params["w_x"] + params["b"]

    def recur(self, params, carry, px):
        carry, h, _ = self.recur_gates(params, carry, px)
        return carry, h

    def recur_gates(self, params, carry, px):
        """The step, and its gates ``r`` (reset) and ``u`` (update)."""
        return self._step(params, carry["h"], carry["h"], px)

    def recur_dropped(self, params, carry, px, mask):
        """Recurrent dropout masks ``h_{t-1}`` in the products with ``w_h`` only; the update
        ``h_t = u_t h_{t-1} + (1 - u_t) n_t`` keeps the unmasked state (Gal & Ghahramani
        2016's GRU; Keras's ``recurrent_dropout``)."""
        carry, h, _ = self._step(params, carry["h"], carry["h"] * mask, px)
        return carry, h

    def _step(self, params, h, h_in, px):
        """One step from state ``h``, with ``h_in`` (``h``, or ``h`` masked) into ``w_h``."""
        H = self.hidden_size
        x_r, x_u, x_n = jnp.split(px, 3, axis=-1)
        if self.reset_after:
            h_r, h_u, h_n = jnp.split(h_in @ params["w_h"], 3, axis=-1)
            r = jax.nn.sigmoid(x_r + h_r)
            u = jax.nn.sigmoid(x_u + h_u)
            n = jnp.tanh(x_n + r * (h_n + params["b_hn"]))
        else:
            h_r, h_u = jnp.split(h_in @ params["w_h"][:, :2 * H], 2, axis=-1)
            r = jax.nn.sigmoid(x_r + h_r)
            u = jax.nn.sigmoid(x_u + h_u)
            n = jnp.tanh(x_n + (r * h_in) @ params["w_h"][:, 2 * H:])
        h = u * h + (1.0 - u) * n
        return {"h": h}, h, {"r": r, "u": u}


@dataclasses.dataclass(frozen=True)
class Elman(base.Cell):
    r"""Elman (1990) simple recurrent network: ``h_t = act(W x_t + U h_{t-1} + b)``.

    PyTorch ``nn.RNN`` with ``nonlinearity='tanh'`` (or ``'relu'``). Params: ``w_x`` [I, H],
    ``w_h`` [H, H], ``b`` [H]. Carry: ``h`` [B, H].
    """

    activation: str = "tanh"

    def validate(self):
        base.activation(self.activation, "activation")

    @property
    def name(self):
        return "elman"

    def init(self, key, input_size):
        k1, k2 = jax.random.split(key)
        return {"w_x": base.glorot(k1, input_size, self.hidden_size),
                "w_h": base.orthogonal(k2, self.hidden_size, self.hidden_size),
                "b": jnp.zeros(self.hidden_size)}

    def project(self, params, x):
        return x @ params["w_x"] + params["b"]

    def recur(self, params, carry, px):
        h = base.activation(self.activation, "activation")(px + carry["h"] @ params["w_h"])
        return {"h": h}, h


PRESETS_GRU = {"gru": (GRU, {}), "gru_cho": (GRU, {"reset_after": False}), "elman": (Elman, {})}
PAPERS = {"gru": "Cho et al. 2014, cuDNN/PyTorch form (reset after matmul)",
          "gru_cho": "Cho et al. 2014, original form (reset before matmul)",
          "elman": "Elman 1990 tanh RNN (PyTorch nn.RNN)"}
