"""What the training loop needs from a task: batches, a loss, and the paper's metric.

A batch is a dict of numpy arrays: ``x`` (inputs, [B, T, ...]), ``y`` (targets), optionally
``lengths`` [B] (real steps of each padded sequence) and ``reset`` (a bool: start of an epoch of a
stateful stream, the recurrent state is zeroed before this batch).

Losses come as (value to differentiate, sums for the metric): the loop adds the sums over an
evaluation split and ``summarize`` turns them into metrics, so a metric averages over all
frames/tokens of the split, not over batches.
"""
from __future__ import annotations

import dataclasses
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass
class Task:
    name: str
    #: "seq2one" (one output per sequence), "per_step" (an output every step), "lm" (tokens)
    head: str
    input_size: int
    output_size: int
    metric: str
    lower_is_better: bool = True
    #: the recurrent state is carried from batch to batch (truncated BPTT over a stream)
    stateful: bool = False
    #: train batches per epoch; None for an endless generated stream
    steps_per_epoch: int | None = None
    #: token inputs (embedding lookup) rather than feature vectors
    token_inputs: bool = False
    #: targets are the next inputs: a model must not see the future (no bidirectional layers)
    predicts_next: bool = False

    def train_batches(self, start_step: int) -> Iterator[dict]:
        """Endless training batches from global step ``start_step`` on (a resumed run sees
        exactly the batches an uninterrupted one would)."""
        raise NotImplementedError

    def eval_batches(self, split: str) -> Iterator[dict]:
        raise NotImplementedError

    def loss(self, outputs: jax.Array, batch: dict) -> tuple[jax.Array, dict]:
        raise NotImplementedError

    def summarize(self, sums: dict) -> dict:
        raise NotImplementedError

    def describe(self) -> str:
        return self.name


def step_mask(batch: dict, T: int) -> jax.Array:
    """[B, T] float mask of the real steps (all ones without ``lengths``)."""
    lengths = batch.get("lengths")
    B = batch["y"].shape[0]
    if lengths is None:
        return jnp.ones((B, T), jnp.float32)
    return (jnp.arange(T)[None, :] < lengths[:, None]).astype(jnp.float32)


def bernoulli_nll(logits, targets):
    """Elementwise -log p(targets) under independent Bernoullis with these logits."""
    return jnp.maximum(logits, 0) - logits * targets + jnp.log1p(jnp.exp(-jnp.abs(logits)))


def epoch_stream(make_epoch, steps_per_epoch: int, start_step: int) -> Iterator[dict]:
    """Endless batches over epochs; ``make_epoch(epoch, start)`` yields one epoch's batches
    from batch ``start``. The first batch of each epoch carries ``reset=True``."""
    epoch, start = divmod(start_step, steps_per_epoch)
    while True:
        for k, batch in enumerate(make_epoch(epoch, start)):
            batch["reset"] = np.bool_(start + k == 0)
            yield batch
        epoch, start = epoch + 1, 0
