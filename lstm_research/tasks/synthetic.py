"""Synthetic long-time-lag tasks generated from a seed (inputs/targets and the papers' success
criteria from :mod:`lstm_research.data.synthetic`; this module adds batching, losses and
metrics)."""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax.numpy as jnp
import numpy as np
import optax

from lstm_research.data import synthetic as gen
from lstm_research.data.arrays import pad_batch
from lstm_research.errors import bad_choice
from lstm_research.tasks.base import Task, batch_step_mask, bernoulli_nll, epoch_stream, runtime

_SPLIT_SEED = {"train": 0, "valid": 1, "test": 2}


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _SPLIT_SEED[split], index])


@dataclasses.dataclass
class Generated(Task):
    """Train batch k is drawn from rng(seed, 'train', k); valid/test are fixed sets of
    ``eval_size`` sequences."""
    batch_size: int = 50
    eval_size: int = 1000
    seed: int = runtime(0)
    eval_batch_size: ClassVar[int] = 500

    def make(self, rng, n) -> dict:
        raise NotImplementedError

    def train_batches(self, start_step):
        step = start_step
        while True:
            yield self.make(_rng(self.seed, "train", step), self.batch_size)
            step += 1

    def eval_batches(self, split):
        n, k = self.eval_size, 0
        while n > 0:
            m = min(n, self.eval_batch_size)
            yield self.make(_rng(self.seed, split, k), m)
            n, k = n - m, k + 1


@dataclasses.dataclass
class Adding(Generated):
    """Adding problem: regress the sum of the two marked values (metric: MSE).

    ``variant='le'``: Le et al. 2015 (predicting the mean scores MSE 1/6).
    ``variant='hochreiter'``: Hochreiter & Schmidhuber 1997 exp. 4 (target 0.5 + (X1+X2)/4,
    variable lengths; solved when every test sequence has |error| < 0.04).
    """
    name = "adding"
    head, input_size, output_size = "seq2one", 2, 1
    VARIANTS: ClassVar[tuple[str, ...]] = ("le", "hochreiter")

    T: int = 100
    variant: str = "le"

    def __post_init__(self):
        if self.variant not in self.VARIANTS:
            raise bad_choice("task.variant", self.variant, self.VARIANTS)

    @property
    def metric(self):
        # the 1997 criterion is on the worst sequence: |error| < 0.04 on every one
        return "mse" if self.variant == "le" else "max_abs_error"

    def make(self, rng, n):
        return gen.adding_problem(rng, n, self.T, self.variant)

    def loss(self, outputs, batch):
        err = outputs[:, 0] - batch["y"]
        return jnp.mean(err ** 2), {"se": jnp.sum(err ** 2), "n": err.shape[0],
                                    "ok": jnp.sum(gen.adding_within(outputs[:, 0], batch["y"])),
                                    "max_abs": jnp.max(jnp.abs(err))}

    def summarize(self, s):
        return {"mse": s["se"] / s["n"], "frac_within_0.04": s["ok"] / s["n"],
                "max_abs_error": s["max_abs"]}


@dataclasses.dataclass
class CopyMemory(Generated):
    """Copy memory (Arjovsky et al. 2016): recall 10 symbols after T blanks. Metric:
    cross-entropy per step in nats (memoryless baseline 10 ln 8 / (T + 20))."""
    name = "copy"
    head, input_size, output_size, metric = "per_step", 10, 10, "ce"
    labels = {"ce": "cross-entropy (nats per step)", "copy_accuracy": "copy accuracy (fraction)"}

    T: int = 100

    def make(self, rng, n):
        b = gen.copy_memory(rng, n, self.T)
        return {"x": np.eye(10, dtype=np.float32)[b["x"]], "y": b["y"]}

    def loss(self, outputs, batch):
        ce = optax.softmax_cross_entropy_with_integer_labels(outputs, batch["y"])
        tail = ce[:, -10:]
        correct = jnp.argmax(outputs[:, -10:], -1) == batch["y"][:, -10:]
        return jnp.mean(ce), {"ce": jnp.sum(ce), "steps": ce.size,
                              "copied": jnp.sum(correct), "copy_steps": tail.size}

    def summarize(self, s):
        return {"ce": s["ce"] / s["steps"], "copy_accuracy": s["copied"] / s["copy_steps"],
                "baseline_ce": gen.copy_memory_baseline(self.T)}


@dataclasses.dataclass
class TemporalOrder(Generated):
    """Temporal order (Hochreiter & Schmidhuber 1997, exp. 6a: 4 classes, 6b: 8 classes).
    Metric: classification error rate on the split."""
    name = "temporal_order"
    head, input_size, metric = "seq2one", 8, "error_rate"
    labels = {"error_rate": "error rate (fraction of sequences)", "ce": "cross-entropy (nats per sequence)"}
    CLASSES: ClassVar[dict[str, int]] = {"6a": 4, "6b": 8}

    variant: str = "6a"

    def __post_init__(self):
        if self.variant not in self.CLASSES:
            raise bad_choice("task.variant", self.variant, tuple(self.CLASSES))

    @property
    def output_size(self):
        return self.CLASSES[self.variant]

    def make(self, rng, n):
        b = gen.temporal_order(rng, n, self.variant)
        return {"x": b["x"], "y": b["y"], "lengths": b["lengths"]}

    def loss(self, outputs, batch):
        ce = optax.softmax_cross_entropy_with_integer_labels(outputs, batch["y"])
        wrong = jnp.argmax(outputs, -1) != batch["y"]
        return jnp.mean(ce), {"ce": jnp.sum(ce), "wrong": jnp.sum(wrong), "n": ce.shape[0]}

    def summarize(self, s):
        return {"error_rate": s["wrong"] / s["n"], "ce": s["ce"] / s["n"]}


@dataclasses.dataclass
class EmbeddedReber(Generated):
    """Embedded Reber grammar (Hochreiter & Schmidhuber 1997, exp. 1): predict the set of
    allowed next symbols at every step. Metric: fraction of strings with any wrong step
    (outputs thresholded at 0.5: a string is wrong when its first error comes before its end)."""
    name = "reber"
    head, input_size, output_size, metric = "per_step", 7, 7, "string_error"
    labels = {"string_error": "string error (fraction of strings)", "nll": "NLL (nats per symbol)"}
    predicts_next = True

    batch_size: int = 20

    def make(self, rng, n):
        strings = [gen.embedded_reber_string(rng) for _ in range(n)]
        x, lengths = pad_batch([gen.encode_reber(s) for s in strings])
        y, _ = pad_batch([gen.embedded_reber_next_sets(s) for s in strings])
        return {"x": x, "y": y, "lengths": lengths}

    def loss(self, outputs, batch):
        mask = batch_step_mask(batch, outputs.shape[1])
        nll = jnp.sum(bernoulli_nll(outputs, batch["y"]), -1) * mask
        # logits > 0 is probability > 0.5; an error on a padded step comes after the string
        first = gen.first_error_index(outputs, batch["y"], threshold=0.0)
        bad = first < batch["lengths"]
        return jnp.sum(nll) / jnp.sum(mask), {
            "nll": jnp.sum(nll), "frames": jnp.sum(mask),
            "bad_strings": jnp.sum(bad), "n": outputs.shape[0]}

    def summarize(self, s):
        return {"string_error": s["bad_strings"] / s["n"], "nll": s["nll"] / s["frames"]}


@dataclasses.dataclass
class ContinualReber(Task):
    """Continual embedded Reber grammar (Gers, Schmidhuber & Cummins 2000): one unsegmented
    stream of ERG strings, no state reset between strings. Training: ``batch_size`` streams cut
    into chunks of ``bptt`` steps with the state carried (an "epoch" is ``steps_per_epoch``
    chunks of fresh streams). Test: ``eval_size`` streams of ``eval_length`` symbols; a stream
    "ends at the first error" (any output unit on the wrong side of 0.5). Metrics: mean number
    of symbols before the first error and the fraction of streams without error."""
    name = "continual_reber"
    head, input_size, output_size, metric = "per_step", 7, 7, "symbols_to_error"
    lower_is_better, stateful, predicts_next = False, True, True

    batch_size: int = 1
    bptt: int = 100
    steps_per_epoch: int = 100
    eval_size: int = 10
    eval_length: int = 100_000
    seed: int = runtime(0)

    def train_batches(self, start_step):
        def epoch(e, start):
            rng = _rng(self.seed, "train", e)
            n = self.steps_per_epoch * self.bptt
            streams = [gen.continual_reber_stream(rng, n) for _ in range(self.batch_size)]
            x = np.stack([s["x"] for s in streams])
            y = np.stack([s["y"] for s in streams])
            for k in range(start, self.steps_per_epoch):
                sl = slice(k * self.bptt, (k + 1) * self.bptt)
                yield {"x": x[:, sl], "y": y[:, sl]}
        return epoch_stream(epoch, self.steps_per_epoch, start_step)

    def eval_batches(self, split):
        rng = _rng(self.seed, split, 0)
        streams = [gen.continual_reber_stream(rng, self.eval_length) for _ in range(self.eval_size)]
        yield {"x": np.stack([s["x"] for s in streams]), "y": np.stack([s["y"] for s in streams])}

    def loss(self, outputs, batch):
        nll = jnp.sum(bernoulli_nll(outputs, batch["y"]), -1)
        T = outputs.shape[1]
        first = gen.first_error_index(outputs, batch["y"], threshold=0.0)  # logits > 0: p > 0.5
        return jnp.mean(nll), {"nll": jnp.sum(nll), "frames": nll.size,
                               "symbols": jnp.sum(first), "solved": jnp.sum(first == T),
                               "n": first.shape[0]}

    def summarize(self, s):
        return {"symbols_to_error": s["symbols"] / s["n"], "solved_frac": s["solved"] / s["n"],
                "nll": s["nll"] / s["frames"]}
