"""Stacked (optionally bidirectional) recurrent layers with dropout, zoneout and masking; the
switches of how each layer runs over time (``parallel``, ``remat``, ``unroll``, ``fused``) are
:class:`Stack` fields."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from lstm_research import cells as cells_lib
from lstm_research import prng
from lstm_research.cells.base import Cell
from lstm_research.errors import UserError
from lstm_research.layers import fused as fused_lib
from lstm_research.layers.scan import check_options, wavefront_scan, zoneout_rates
from lstm_research.layers.scan import scan as scan_over_time


#: the Stack's dropout rates, which :meth:`Stack.apply` also takes as (traced) values
RATES = ("dropout", "input_dropout", "recurrent_dropout")


def dropout(key, x, rate, shape=None):
    """Inverted dropout; ``shape`` (broadcastable to x) shares one mask across the other dims.
    ``rate`` may be traced (packed trials, each with its own rate; 0 then keeps every unit)."""
    if isinstance(rate, (int, float)) and not rate:
        return x
    keep = prng.bernoulli(key, 1.0 - rate, shape or x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


@dataclasses.dataclass(frozen=True)
class Stack:
    """``num_layers`` layers of ``cell``; layer l > 0 reads layer l-1's outputs (both directions
    concatenated, forward first, when ``bidirectional``).

    Regularization, active only with ``train=True`` (and an rng ``key``):

    * ``dropout``: on the outputs of every layer but the last (the non-recurrent connections
      between layers, Zaremba et al. 2014), a fresh mask per time step;
    * ``input_dropout``: variational dropout on each layer's input, one mask per sequence;
    * ``recurrent_dropout``: variational dropout on the recurrent state h where it enters the
      recurrent weights (Gal & Ghahramani 2016; the GRU's state update keeps the unmasked h),
      one mask per sequence and layer;
    * ``zoneout``: zoneout on the carry (Krueger et al. 2017), a float or {carry key: rate}.

    How each layer runs over time (same results up to float rounding; speed and memory differ):

    * ``parallel``: the cell's parallel-over-time form (minLSTM, minGRU);
    * ``remat``: recompute each step's activations in the backward pass;
    * ``unroll``: loop iterations per compiled loop body (a positive int; True unrolls fully);
    * ``wavefront``: every layer in one loop, layer l at time step s - l
      (:func:`lstm_research.layers.scan.wavefront_scan`; generic cell steps, whatever
      ``fused``): a unidirectional stack without dropout or zoneout; opt-in, for measuring on a
      GPU, where it launches each step's kernels once for all layers;
    * ``fused``: ``"auto"`` (default) takes the fused LSTM layer, and on CPUs the chunked
      parallel form, where they support the configuration; ``True`` requires them;
      ``False`` never uses them; ``"pallas"`` (opt-in: verified in Pallas interpret mode on
      CPU only, never measured on a GPU) takes the persistent Pallas LSTM kernel
      (:mod:`lstm_research.layers.pallas_lstm`) where it supports the configuration and
      otherwise does what ``"auto"`` does, logging why once (see
      :func:`lstm_research.layers.scan.scan`).

    Params: ``{"layers": [{"fwd": cell params, "bwd": cell params (bidirectional)}, ...]}``.
    Carries: a list (one per layer) of ``{"fwd": carry, "bwd": carry}``.
    """

    cell: Cell
    num_layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.0
    input_dropout: float = 0.0
    recurrent_dropout: float = 0.0
    zoneout: float | dict | None = None
    parallel: bool = False
    remat: bool = False
    unroll: int = 1
    fused: bool | str = "auto"
    wavefront: bool = False

    def __post_init__(self):
        if self.num_layers < 1:
            raise UserError(f"num_layers must be >= 1, got {self.num_layers}")
        for what in ("dropout", "input_dropout", "recurrent_dropout"):
            rate = getattr(self, what)
            if not 0.0 <= rate < 1.0:
                raise UserError(f"{what} must be in [0, 1), got {rate}")
        if not isinstance(self.unroll, int) or (self.unroll < 1
                                                and not isinstance(self.unroll, bool)):
            raise UserError(f"unroll must be a positive int (or True: fully unrolled), "
                            f"got {self.unroll!r}")
        if self.wavefront:
            conflicts = [f"{k}={getattr(self, k)!r}" for k in (
                "bidirectional", "dropout", "input_dropout", "recurrent_dropout", "zoneout",
                "parallel", "remat") if getattr(self, k)]
            if conflicts:
                raise UserError("wavefront=True runs the layers of a unidirectional stack "
                                "without dropout or zoneout in one loop; this stack has "
                                + ", ".join(conflicts))
        # what scanning would refuse, refused now (before a run writes its workdir)
        check_options(self.cell, parallel=self.parallel, fused=self.fused,
                      recurrent_dropout=bool(self.recurrent_dropout), zoneout=self.zoneout,
                      remat=self.remat)

    @property
    def length_free(self) -> bool:
        """Whether every layer runs the fused LSTM layer, whose loops stop at each batch's longest
        sequence: padding batches to one length then costs only the work outside the loops, and
        one compiled program serves every length. Not with ``fused="pallas"``: its kernels run
        over all T steps (even where it falls back to the fused layer: only slower bucketing)."""
        return (not self.parallel and not self.wavefront and self.fused not in (False, "pallas")
                and self.unroll == 1 and self.unroll is not True
                and fused_lib.unsupported(self.cell, zoneout=self.zoneout_rates(),
                                          remat=self.remat) is None)

    def zoneout_rates(self) -> dict | None:
        """``zoneout`` as {carry key: rate}; a float applies to the cell's ``zoneout_keys``."""
        return zoneout_rates(self.cell, self.zoneout)

    @property
    def directions(self):
        return ("fwd", "bwd") if self.bidirectional else ("fwd",)

    @property
    def output_size(self):
        return self.cell.output_size * len(self.directions)

    @property
    def stochastic(self):
        return bool(self.dropout or self.input_dropout or self.recurrent_dropout or self.zoneout)

    def init(self, key, input_size, used=None):
        """The params; with ``used`` (a traced :class:`~lstm_research.cells.base.Width`, cells
        that take it: the LSTM) those of a stack of that width in the corners of this one's
        arrays; the caller zeros the rest (``lstm_research.models.width``)."""
        layers = []
        for layer in range(self.num_layers):
            key, *ks = jax.random.split(key, 1 + len(self.directions))
            size = input_size if layer == 0 else self.output_size
            sizes = {} if used is None else {"used": (size if layer == 0 else used, used)}
            layers.append({d: self.cell.init(k, size, **sizes)
                           for d, k in zip(self.directions, ks)})
        return {"layers": layers}

    def initial_carry(self, batch_size, dtype=jnp.float32):
        return [{d: self.cell.initial_carry((batch_size,), dtype) for d in self.directions}
                for _ in range(self.num_layers)]

    def apply(self, params, xs, carries=None, *, lengths=None, train=False, key=None,
              dtype=None, time_major=False, rates=None):
        """Run the stack on ``xs`` [B, T, I] (or [T, B, I] with ``time_major``).

        Returns ``(ys, carries)``: outputs [B, T, output_size] and the final carries, ready to
        pass back in for truncated BPTT. ``dtype`` (e.g. ``jnp.bfloat16``) casts the params,
        inputs and carries for the computation. ``rates`` ({name in :data:`RATES`: value})
        replaces those dropout rates by values that may be traced; which dropouts run at all
        is still decided by the Stack's own (nonzero) rates.
        """
        rate = {name: (rates or {}).get(name, getattr(self, name)) for name in RATES}
        first = params["layers"][0][self.directions[0]]
        expected = cells_lib.base.input_size_of(first)
        if xs.ndim != 3 or (expected is not None and xs.shape[-1] != expected):
            raise ValueError(f"expected inputs of shape [batch, time, {expected}]"
                             f"{' (time-major: [time, batch, ...])' if time_major else ''}, "
                             f"got shape {tuple(xs.shape)}")
        if train and self.stochastic and key is None:
            raise UserError("training with dropout/zoneout needs an rng key: apply(..., key=...)")
        if not time_major:
            xs = jnp.swapaxes(xs, 0, 1)
        T, B = xs.shape[:2]
        if dtype is not None:
            params = jax.tree.map(lambda p: p.astype(dtype), params)
            xs = xs.astype(dtype)
        if carries is None:
            carries = self.initial_carry(B, xs.dtype)
        elif dtype is not None:
            carries = jax.tree.map(lambda c: c.astype(dtype), carries)
        train = train and self.stochastic
        if self.wavefront:
            cs, xs = wavefront_scan(self.cell, [p["fwd"] for p in params["layers"]], xs,
                                    [c["fwd"] for c in carries], lengths=lengths,
                                    unroll=self.unroll)
            return (xs if time_major else jnp.swapaxes(xs, 0, 1)), [{"fwd": c} for c in cs]

        new_carries = []
        for layer, (p_layer, c_layer) in enumerate(zip(params["layers"], carries)):
            if train:
                key, k_in, k_drop = prng.split(key, 3)
                xs = dropout(k_in, xs, rate["input_dropout"] if self.input_dropout else 0,
                             (1, B, xs.shape[-1]))
            outs, c_out = [], {}
            for d in self.directions:
                rec_mask, zkey = None, None
                if train:
                    key, k_rec, zkey = prng.split(key, 3)
                    if self.recurrent_dropout:  # (a cell with recurrent_key: __post_init__)
                        ones = jnp.ones((B, c_layer[d][self.cell.recurrent_key].shape[-1]), xs.dtype)
                        rec_mask = dropout(k_rec, ones, rate["recurrent_dropout"])
                c_out[d], ys = scan_over_time(
                    self.cell, p_layer[d], xs, c_layer[d], lengths=lengths, reverse=d == "bwd",
                    recurrent_mask=rec_mask, zoneout=self.zoneout_rates(), key=zkey, train=train,
                    parallel=self.parallel, remat=self.remat, unroll=self.unroll,
                    fused=self.fused)
                outs.append(ys)
            xs = outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=-1)
            if train and layer < self.num_layers - 1:
                xs = dropout(k_drop, xs, rate["dropout"] if self.dropout else 0)
            new_carries.append(c_out)
        if not time_major:
            xs = jnp.swapaxes(xs, 0, 1)
        return xs, new_carries
