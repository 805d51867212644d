"""Models around the recurrent stack: a language model, a sequence-to-one regressor/classifier
and a per-step predictor. ``build(config.model, task)`` builds the stack (:mod:`.recurrent`) and
picks the head the task needs."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lstm_research.errors import UserError
from lstm_research.layers.stack import dropout
from lstm_research.models import width
from lstm_research.models.recurrent import (STACK_KNOBS, StackModule, compute_dtype,
                                            make_stack)


class _Dropout(nn.Module):
    """``nn.Dropout``'s draws (name it as flax names those: ``Dropout_<i>``, so that its rng
    stream is the same) with a rate that may be traced (packed trials)."""

    @nn.compact
    def __call__(self, x, rate, deterministic: bool):
        if deterministic or (isinstance(rate, (int, float)) and not rate):
            return x
        return dropout(self.make_rng("dropout"), x, rate)


class LanguageModel(nn.Module):
    """Embedding -> dropout -> RNN stack (dropout between layers) -> dropout -> softmax, the
    model of Zaremba et al. 2014 (dropout on the non-recurrent connections only). With
    ``tie_embeddings`` the softmax reuses the embedding matrix (Press & Wolf 2017; needs the
    top layer's output size to equal the embedding size). ``rates`` (packed trials): the
    dropout rates as values, see :meth:`lstm_research.layers.Stack.apply`."""
    rnn: StackModule
    output_size: int
    embedding_size: int
    tie_embeddings: bool = False

    @nn.compact
    def __call__(self, tokens, carries=None, lengths=None, train=False, rates=None):
        static = self.rnn.stack.dropout
        rate = (rates or {}).get("dropout", static) if static else 0.0
        embed = nn.Embed(self.output_size, self.embedding_size, name="embed")
        x = _Dropout(name="Dropout_0")(embed(tokens), rate, not train)
        ys, carries = self.rnn(x, carries, lengths, train, rates)
        ys = _Dropout(name="Dropout_1")(ys, rate, not train)
        if self.tie_embeddings:
            logits = embed.attend(ys.astype(jnp.float32)) + self.param(
                "softmax_bias", nn.initializers.zeros, (self.output_size,))
        else:
            logits = nn.Dense(self.output_size, name="softmax")(ys.astype(jnp.float32))
        return logits, carries


class SequenceToOne(nn.Module):
    """RNN stack -> the output at each sequence's last real step -> dense."""
    rnn: StackModule
    output_size: int
    init_width: Any = None  # initialized at this traced width (lstm_research.models.width)

    @nn.compact
    def __call__(self, xs, carries=None, lengths=None, train=False, rates=None):
        ys, carries = self.rnn(xs, carries, lengths, train, rates)
        if lengths is None:
            last = ys[:, -1]
        else:
            last = jnp.take_along_axis(ys, (lengths - 1)[:, None, None], axis=1)[:, 0]
        head = nn.Dense(self.output_size, name="head",
                        kernel_init=width.head_init(self.init_width))
        return head(last.astype(jnp.float32)), carries


class PerStep(nn.Module):
    """RNN stack -> dense at every step (logits for classes or independent labels)."""
    rnn: StackModule
    output_size: int
    init_width: Any = None  # initialized at this traced width (lstm_research.models.width)

    @nn.compact
    def __call__(self, xs, carries=None, lengths=None, train=False, rates=None):
        ys, carries = self.rnn(xs, carries, lengths, train, rates)
        head = nn.Dense(self.output_size, name="head",
                        kernel_init=width.head_init(self.init_width))
        return head(ys.astype(jnp.float32)), carries


def build(cfg, task) -> nn.Module:
    """The model for ``task`` from ``config.model`` (its hidden size padded to
    ``model.width_multiple``, :mod:`.width`)."""
    cfg = width.padded(cfg)
    stack = make_stack(cfg)  # fails now, with the valid choices, on a bad cell or switch
    rnn = StackModule(stack, dtype=compute_dtype(cfg.dtype))
    if stack.bidirectional and (task.stateful or task.predicts_next):
        raise UserError(f"model.bidirectional=True is not possible for task {task.name!r}: "
                        "its targets are the next inputs or its state is carried across "
                        "batches, and a backward layer would see the future")
    if task.head == "lm":
        return LanguageModel(rnn, task.output_size, cfg.embedding_size or cfg.hidden_size,
                             cfg.tie_embeddings)
    return {"seq2one": SequenceToOne, "per_step": PerStep}[task.head](rnn, task.output_size)


def length_free(model: nn.Module) -> bool:
    """Whether one compiled program of ``model`` serves every sequence length (see
    :attr:`lstm_research.layers.Stack.length_free`)."""
    return model.rnn.stack.length_free


def count_params(params) -> int:
    return int(sum(p.size for p in jax.tree.leaves(params)))


__all__ = ["LanguageModel", "SequenceToOne", "PerStep", "STACK_KNOBS", "build", "count_params"]
