"""What the training loop needs from a task: batches, a loss, and the paper's metric.

A task is one dataclass. Its class attributes say what the model must look like (``head``,
``input_size``, ``output_size``) and how the run is judged (``metric``, ``lower_is_better``);
its dataclass fields are exactly its ``config.task`` keys, with their defaults. Values that
depend on a field (the adding task's metric on its variant) are properties; values set by
:func:`lstm_research.tasks.build` rather than by the config (the seed, loaded data) are
:func:`runtime` fields.

A batch is a dict of numpy arrays: ``x`` (inputs, [B, T, ...]), ``y`` (targets), optionally
``lengths`` [B] (real steps of each padded sequence) and ``reset`` (a bool: start of an epoch of a
stateful stream, the recurrent state is zeroed before this batch).

Losses come as (value to differentiate, sums for the metric): the loop adds the sums over an
evaluation split and ``summarize`` turns them into metrics, so a metric averages over all
frames/tokens of the split, not over batches.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from lstm_research.data.arrays import step_mask


def runtime(default: Any = None) -> Any:
    """A dataclass field that :func:`lstm_research.tasks.build` sets (seed, loaded data); it is
    not a config key."""
    return dataclasses.field(default=default, repr=False, compare=False,
                             metadata={"config": False})


def config_fields(cls) -> dict[str, Any]:
    """``{config key: default}`` of a task class: its dataclass fields except :func:`runtime`
    ones, in declaration order."""
    return {f.name: f.default for f in dataclasses.fields(cls) if f.metadata.get("config", True)}


class Task:
    """Base of every task (subclasses are dataclasses; see the module docstring)."""

    #: the task's name in ``config.task.name`` (the registry key)
    name: ClassVar[str]
    #: "seq2one" (one output per sequence), "per_step" (an output every step), "lm" (tokens)
    head: ClassVar[str]
    input_size: ClassVar[int]
    output_size: ClassVar[int]
    #: the key of ``summarize``'s output that selects the best checkpoint
    metric: ClassVar[str]
    lower_is_better: ClassVar[bool] = True
    #: axis labels with units of ``summarize``'s metrics, e.g. {"nll": "NLL (nats per frame)"}
    #: (sweep plots; a metric not listed is labeled with its key)
    labels: ClassVar[dict[str, str]] = {}
    #: the recurrent state is carried from batch to batch (truncated BPTT over a stream)
    stateful: ClassVar[bool] = False
    #: train batches per epoch; None for an endless generated stream
    steps_per_epoch: ClassVar[int | None] = None
    #: token inputs (embedding lookup) rather than feature vectors
    token_inputs: ClassVar[bool] = False
    #: targets are the next inputs: a model must not see the future (no bidirectional layers)
    predicts_next: ClassVar[bool] = False

    def load(self) -> None:
        """Read the task's data (real corpora); called once by ``tasks.build``."""

    def train_batches(self, start_step: int) -> Iterator[dict]:
        """Endless training batches from global step ``start_step`` on (a resumed run sees
        exactly the batches an uninterrupted one would)."""
        raise NotImplementedError

    def eval_batches(self, split: str) -> Iterator[dict]:
        raise NotImplementedError

    def max_length(self, split: str) -> int | None:
        """The longest time dimension of any batch of ``split`` for variable-length tasks
        (batches with ``lengths``); None when the task does not know it."""
        return None

    def loss(self, outputs: jax.Array, batch: dict) -> tuple[jax.Array, dict]:
        raise NotImplementedError

    def summarize(self, sums: dict) -> dict:
        raise NotImplementedError


def batch_step_mask(batch: dict, T: int) -> jax.Array:
    """[B, T] float mask of the real steps of ``batch`` (all ones without ``lengths``)."""
    lengths = batch.get("lengths")
    if lengths is None:
        return jnp.ones((batch["y"].shape[0], T), jnp.float32)
    return step_mask(lengths, T).astype(jnp.float32)


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
