"""Mogrifier LSTM (Melis, Kocisky & Blunsom 2020, "Mogrifier LSTM", ICLR; arXiv 2019)."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from lstm_research.cells import base
from lstm_research.cells.base import CellConfigError


@dataclasses.dataclass(frozen=True)
class Mogrifier(base.Cell):
    r"""LSTM whose input and previous output modulate each other before the step (Sec. 2)::

        x^{-1} = x_t,  h^0 = h_{t-1}
        x^i = 2 s(Q^i h^{i-1}) * x^{i-2}     for odd  i in 1..rounds
        h^i = 2 s(R^i x^{i-1}) * h^{i-2}     for even i in 1..rounds

    then the common LSTM (no peepholes, gate order (i, f, z, o)) on the last x^i and h^i::

        [i, f, z, o] = W x^* + U h^* + b
        c_t = s(f) * c_{t-1} + s(i) * tanh(z);   h_t = s(o) * tanh(c_t)

    ``rounds=0`` is the plain LSTM. The input path depends on the state, so there is no
    hoisted input projection.

    Params: ``w_x`` [I, 4H], ``w_h`` [H, 4H], ``b`` [4H], ``mog_q`` [ceil(r/2), H, I]
    (Q^1, Q^3, ... as right-multiplied ``h @ q``), ``mog_r`` [floor(r/2), I, H].
    Carry: ``c``, ``h`` [B, H].
    """

    rounds: int = 5
    forget_bias: float = 0.0

    zoneout_keys = ("c", "h")

    def validate(self):
        if self.rounds < 0:
            raise CellConfigError(f"rounds must be >= 0, got {self.rounds}")

    @property
    def name(self):
        return "mogrifier"

    def init(self, key, input_size):
        H = self.hidden_size
        k = jax.random.split(key, 4)
        nq, nr = (self.rounds + 1) // 2, self.rounds // 2
        b = jnp.zeros((4, H)).at[1].set(self.forget_bias).reshape(4 * H)
        return {"w_x": base.glorot(k[0], input_size, H, 4),
                "w_h": base.orthogonal(k[1], H, H, 4),
                "b": b,
                "mog_q": base.uniform(k[2], (nq, H, input_size), (6 / (H + input_size)) ** 0.5),
                "mog_r": base.uniform(k[3], (nr, input_size, H), (6 / (H + input_size)) ** 0.5)}

    def initial_carry(self, batch_shape, dtype=jnp.float32):
        z = jnp.zeros((*batch_shape, self.hidden_size), dtype)
        return {"c": z, "h": z}

    def recur(self, params, carry, x):
        h, c = carry["h"], carry["c"]
        for i in range(1, self.rounds + 1):
            if i % 2:
                x = 2 * jax.nn.sigmoid(h @ params["mog_q"][i // 2]) * x
            else:
                h = 2 * jax.nn.sigmoid(x @ params["mog_r"][i // 2 - 1]) * h
        i_, f, z, o = jnp.split(x @ params["w_x"] + h @ params["w_h"] + params["b"], 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i_) * jnp.tanh(z)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return {"c": c, "h": h}, h
