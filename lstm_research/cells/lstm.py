"""The LSTM family as one cell with switches: Greff's vanilla LSTM and its eight ablations, the
common LSTM of Zaremba et al. / PyTorch / cuDNN, the 1997 LSTM, layer normalization, recurrent
projection and cell clipping.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from lstm_research.cells import base
from lstm_research.cells.base import CellConfigError


@dataclasses.dataclass(frozen=True)
class LSTM(base.Cell):
    r"""LSTM with every part a switch.

    Equations (Greff et al. 2015, "LSTM: A Search Space Odyssey", Sec. 2; y is the output h)::

        z_t = g(W_z x_t + R_z y_{t-1} + b_z)                         block input
        i_t = s(W_i x_t + R_i y_{t-1} + p_i * c_{t-1} + b_i)         input gate
        f_t = s(W_f x_t + R_f y_{t-1} + p_f * c_{t-1} + b_f)         forget gate
        c_t = z_t * i_t + c_{t-1} * f_t                              cell state
        o_t = s(W_o x_t + R_o y_{t-1} + p_o * c_t + b_o)             output gate
        y_t = h(c_t) * o_t                                           block output

    with s = ``gate_activation`` (sigmoid), g = ``input_activation`` (tanh),
    h = ``output_activation`` (tanh). Switches (Greff's variants in brackets):

    * ``input_gate=False`` sets i = 1 [NIG]; ``forget_gate=False`` sets f = 1 [NFG; with
      ``peepholes=False`` this is the original LSTM of Hochreiter & Schmidhuber 1997];
      ``output_gate=False`` sets o = 1 [NOG].
    * ``input_activation='identity'`` [NIAF]; ``output_activation='identity'`` [NOAF].
    * ``peepholes=False`` drops p_i, p_f, p_o [NP]. Without peepholes the equations are those of
      Zaremba et al. 2014, PyTorch ``nn.LSTM`` and cuDNN.
    * ``coupled_forget=True`` sets f = 1 - i and drops the forget gate's weights [CIFG].
    * ``full_gate_recurrence=True`` [FGR] adds to the pre-activation of each gate a ∈ {i, f, o}
      the term sum_b R_{ba} b_{t-1} over the previous activations of all three gates (nine extra
      recurrent H x H matrices, stored together as ``w_gates``).
    * ``forget_bias``: initial value of b_f (Gers et al. 2000; Jozefowicz et al. 2015 use 1);
      ``input_bias``, ``output_bias``: initial b_i, b_o (Hochreiter & Schmidhuber 1997 start the
      gates negatively biased, e.g. ``input_bias=-3``, so cells ignore inputs at first).
    * ``cell_clip``: clip c_t to [-cell_clip, cell_clip] after its update (None: no clipping).
    * ``proj_size > 0``: LSTMP (Sak et al. 2014): the output and the recurrent input become
      r_t = W_proj y_t of size ``proj_size``.
    * ``layer_norm=True``: layer-normalized LSTM (Ba, Kiros & Hinton 2016, Sec. 3.1, eq. 20-22):
      the gate pre-activations are LN(W x_t) + LN(R y_{t-1}) + b (each LN over all gates
      together, with its own gain and bias) and y_t = o_t * h(LN(c_t)).

    Gate order inside the stacked arrays is (i, f, z, o) -- PyTorch's (i, f, g, o) -- keeping
    only the gates that exist (no i for NIG, no f for NFG and CIFG, no o for NOG).

    Params (G = number of gates present, H = hidden_size, P = proj_size or H):
        ``w_x`` [I, G*H], ``w_h`` [P, G*H], ``b`` [G*H];
        ``peephole_i``, ``peephole_f``, ``peephole_o`` [H] (for the gates present, if peepholes);
        ``w_gates`` [3H, 3H] (FGR: rows are the previous (i, f, o), columns add to (i, f, o));
        ``w_proj`` [H, P] (LSTMP);
        ``ln_x_scale``, ``ln_x_bias``, ``ln_h_scale``, ``ln_h_bias`` [G*H],
        ``ln_c_scale``, ``ln_c_bias`` [H] (layer_norm).
    Carry: ``c`` [B, H], ``h`` [B, P]; with FGR also ``gates`` [B, 3H] = (i, f, o) at t-1.
    """

    input_gate: bool = True
    forget_gate: bool = True
    output_gate: bool = True
    coupled_forget: bool = False
    peepholes: bool = False
    full_gate_recurrence: bool = False
    input_activation: str = "tanh"
    output_activation: str = "tanh"
    gate_activation: str = "sigmoid"
    forget_bias: float = 0.0
    input_bias: float = 0.0
    output_bias: float = 0.0
    cell_clip: float | None = None
    proj_size: int = 0
    layer_norm: bool = False

    zoneout_keys = ("c", "h")

    def validate(self):
        for what in ("input_activation", "output_activation", "gate_activation"):
            base.activation(getattr(self, what), what)
        if self.coupled_forget and not self.input_gate:
            raise CellConfigError(
                "coupled_forget=True (CIFG, f = 1 - i) needs the input gate, but input_gate=False")
        if self.coupled_forget and not self.forget_gate:
            raise CellConfigError(
                "coupled_forget=True (f = 1 - i) contradicts forget_gate=False (f = 1)")
        if self.full_gate_recurrence and not (
                self.input_gate and self.forget_gate and self.output_gate
                and not self.coupled_forget):
            raise CellConfigError(
                "full_gate_recurrence=True (FGR) feeds the input, forget and output gates into each "
                "other; it needs all three gates present and uncoupled")
        for what, gate in (("forget_bias", "f"), ("input_bias", "i"), ("output_bias", "o")):
            if getattr(self, what) and gate not in self.gates:
                raise CellConfigError(
                    f"{what}={getattr(self, what)} sets the initial bias of a gate this cell does "
                    f"not have (gates: {', '.join(self.gates)})")
        if self.proj_size < 0:
            raise CellConfigError(f"proj_size must be >= 0, got {self.proj_size}")
        if self.cell_clip is not None and self.cell_clip <= 0:
            raise CellConfigError(f"cell_clip must be positive or None, got {self.cell_clip}")

    @property
    def name(self):
        return "lstm"

    @property
    def gates(self) -> tuple[str, ...]:
        present = {"i": self.input_gate,
                   "f": self.forget_gate and not self.coupled_forget,
                   "z": True,
                   "o": self.output_gate}
        return tuple(g for g in ("i", "f", "z", "o") if present[g])

    @property
    def output_size(self):
        return self.proj_size or self.hidden_size

    def init(self, key, input_size, used=None):
        """The params; with ``used`` = ``(inputs, units)``, sizes of which the units (and the
        inputs above the first layer) are a traced :class:`~lstm_research.cells.base.Width`:
        the params of the cell at those sizes, each gate block in the corner of this cell's,
        one program for every width (``lstm_research.models.width``, which zeros the rest)."""
        H, P, G = self.hidden_size, self.output_size, len(self.gates)
        used_x, used_h = used or (input_size, H)
        if used is not None and (self.proj_size or self.layer_norm):
            raise ValueError("traced sizes: only LSTMs without projection or layer norm")
        k = jax.random.split(key, 6)
        b = jnp.zeros((G, H))
        for gate, value in (("f", self.forget_bias), ("i", self.input_bias),
                            ("o", self.output_bias)):
            if gate in self.gates:
                b = b.at[self.gates.index(gate)].set(value)
        params = {"w_x": base.glorot(k[0], input_size, H, G, used=(used_x, used_h)),
                  "w_h": base.orthogonal(k[1], P, H, G, used=(used_h, used_h)),
                  "b": b.reshape(G * H)}
        if self.peepholes:  # i, f, o from three keys split from k[2], in one vmapped draw
            drawn = jax.vmap(lambda kk: base.uniform(kk, (H,), 0.1, used=(used_h,)))(
                jax.random.split(k[2], 3))
            for j, gate in enumerate("ifo"):
                if gate in self.gates:
                    params[f"peephole_{gate}"] = drawn[j]
        if self.full_gate_recurrence:  # [3H, 3H] drawn as [3, H, 3, H]: the same bits
            scale = base.tabulate(lambda h: 1.0 / h ** 0.5, used_h)
            params["w_gates"] = base.uniform(k[3], (3, H, 3, H), scale,
                                             used=(3, used_h, 3, used_h)).reshape(3 * H, 3 * H)
        if self.proj_size:
            params["w_proj"] = base.glorot(k[4], H, P)
        if self.layer_norm:
            params.update(ln_x_scale=jnp.ones(G * H), ln_x_bias=jnp.zeros(G * H),
                          ln_h_scale=jnp.ones(G * H), ln_h_bias=jnp.zeros(G * H),
                          ln_c_scale=jnp.ones(H), ln_c_bias=jnp.zeros(H))
        return params

    def initial_carry(self, batch_shape, dtype=jnp.float32):
        carry = {"c": jnp.zeros((*batch_shape, self.hidden_size), dtype),
                 "h": jnp.zeros((*batch_shape, self.output_size), dtype)}
        if self.full_gate_recurrence:
            carry["gates"] = jnp.zeros((*batch_shape, 3 * self.hidden_size), dtype)
        return carry

    def project(self, params, x):
        wx = x @ params["w_x"]
        if self.layer_norm:
            return base.layer_norm(wx, params["ln_x_scale"], params["ln_x_bias"]) + params["b"]
        return wx + params["b"]

    def recur(self, params, carry, px):
        carry, y, _ = self.recur_gates(params, carry, px)
        return carry, y

    def recur_gates(self, params, carry, px):
        """The step, and its gates ``i``, ``f``, ``o`` where the cell computes them: ``f`` is
        1 - i under CIFG, absent under NFG (f = 1); ``i`` absent under NIG, ``o`` under NOG."""
        sigma = base.activation(self.gate_activation, "gate_activation")
        g = base.activation(self.input_activation, "input_activation")
        h_act = base.activation(self.output_activation, "output_activation")
        c_prev, y_prev = carry["c"], carry["h"]

        rec = y_prev @ params["w_h"]
        if self.layer_norm:
            rec = base.layer_norm(rec, params["ln_h_scale"], params["ln_h_bias"])
        pre = base.split_gates(px + rec, self.gates)
        if self.full_gate_recurrence:
            extra = base.split_gates(carry["gates"] @ params["w_gates"], ("i", "f", "o"))
            pre = {k: v + extra.get(k, 0.0) for k, v in pre.items()}

        def peep(gate, c):
            return params[f"peephole_{gate}"] * c if self.peepholes else 0.0

        i = sigma(pre["i"] + peep("i", c_prev)) if self.input_gate else 1.0
        if self.coupled_forget:
            f = 1.0 - i
        elif self.forget_gate:
            f = sigma(pre["f"] + peep("f", c_prev))
        else:
            f = 1.0
        c = g(pre["z"]) * i + c_prev * f
        if self.cell_clip is not None:
            c = jnp.clip(c, -self.cell_clip, self.cell_clip)
        o = sigma(pre["o"] + peep("o", c)) if self.output_gate else 1.0
        c_out = base.layer_norm(c, params["ln_c_scale"], params["ln_c_bias"]) if self.layer_norm else c
        y = h_act(c_out) * o
        if self.proj_size:
            y = y @ params["w_proj"]
        new = {"c": c, "h": y}
        if self.full_gate_recurrence:
            new["gates"] = jnp.concatenate([i, f, o], axis=-1)
        gates = {"i": i, "f": f, "o": o}
        present = {"i": self.input_gate, "f": self.forget_gate or self.coupled_forget,
                   "o": self.output_gate}
        return new, y, {k: v for k, v in gates.items() if present[k]}


# name -> switches; every Greff variant is vanilla with one change.
VANILLA = dict(peepholes=True)
PRESETS = {
    "vanilla": dict(VANILLA),
    "nig": dict(VANILLA, input_gate=False),
    "nfg": dict(VANILLA, forget_gate=False),
    "nog": dict(VANILLA, output_gate=False),
    "niaf": dict(VANILLA, input_activation="identity"),
    "noaf": dict(VANILLA, output_activation="identity"),
    "np": dict(VANILLA, peepholes=False),
    "cifg": dict(VANILLA, coupled_forget=True),
    "fgr": dict(VANILLA, full_gate_recurrence=True),
    "lstm": dict(),
    "lstm1997": dict(forget_gate=False),
    "layernorm_lstm": dict(layer_norm=True),
    "lstmp": dict(),  # needs proj_size > 0, checked by the registry
}
PAPERS = {
    "vanilla": "Greff et al. 2015 (vanilla: peepholes, all gates)",
    "nig": "Greff et al. 2015: no input gate",
    "nfg": "Greff et al. 2015: no forget gate",
    "nog": "Greff et al. 2015: no output gate",
    "niaf": "Greff et al. 2015: no input activation",
    "noaf": "Greff et al. 2015: no output activation",
    "np": "Greff et al. 2015: no peepholes",
    "cifg": "Greff et al. 2015: coupled input and forget gate",
    "fgr": "Greff et al. 2015: full gate recurrence",
    "lstm": "Zaremba et al. 2014; PyTorch nn.LSTM / cuDNN (no peepholes)",
    "lstm1997": "Hochreiter & Schmidhuber 1997 (no forget gate)",
    "layernorm_lstm": "Ba, Kiros & Hinton 2016 (layer normalization)",
    "lstmp": "Sak, Senior & Beaufays 2014 (recurrent projection)",
}
