"""Models around the recurrent stack: a language model, a sequence-to-one regressor/classifier
and a per-step predictor. ``build(config.model, task)`` picks the one the task needs."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from lstm_research.interop.flax import RNNStack


class _WithStack(nn.Module):
    """A model around ``rnn`` (an :class:`RNNStack`) with ``output_size`` outputs."""
    rnn: RNNStack
    output_size: int = 1


class LanguageModel(_WithStack):
    """Embedding -> dropout -> RNN stack (dropout between layers) -> dropout -> softmax, the
    model of Zaremba et al. 2014 (dropout on the non-recurrent connections only). With
    ``tie_embeddings`` the softmax reuses the embedding matrix (Press & Wolf 2017; needs the
    top layer's output size to equal the embedding size)."""
    embedding_size: int = 0
    tie_embeddings: bool = False

    @nn.compact
    def __call__(self, tokens, carries=None, lengths=None, train=False):
        embed = nn.Embed(self.output_size, self.embedding_size or self.rnn.hidden_size,
                         name="embed")
        x = nn.Dropout(self.rnn.dropout, deterministic=not train)(embed(tokens))
        ys, carries = self.rnn(x, carries, lengths, train)
        ys = nn.Dropout(self.rnn.dropout, deterministic=not train)(ys)
        if self.tie_embeddings:
            logits = embed.attend(ys.astype(jnp.float32)) + self.param(
                "softmax_bias", nn.initializers.zeros, (self.output_size,))
        else:
            logits = nn.Dense(self.output_size, name="softmax")(ys.astype(jnp.float32))
        return logits, carries


class SequenceToOne(_WithStack):
    """RNN stack -> the output at each sequence's last real step -> dense."""

    @nn.compact
    def __call__(self, xs, carries=None, lengths=None, train=False):
        ys, carries = self.rnn(xs, carries, lengths, train)
        if lengths is None:
            last = ys[:, -1]
        else:
            last = jnp.take_along_axis(ys, (lengths - 1)[:, None, None], axis=1)[:, 0]
        return nn.Dense(self.output_size, name="head")(last.astype(jnp.float32)), carries


class PerStep(_WithStack):
    """RNN stack -> dense at every step (logits for classes or independent labels)."""

    @nn.compact
    def __call__(self, xs, carries=None, lengths=None, train=False):
        ys, carries = self.rnn(xs, carries, lengths, train)
        return nn.Dense(self.output_size, name="head")(ys.astype(jnp.float32)), carries


def build(cfg, task) -> nn.Module:
    """The model for ``task`` from ``config.model``."""
    rnn = RNNStack(cell=cfg.cell, hidden_size=cfg.hidden_size, num_layers=cfg.num_layers,
                   bidirectional=cfg.bidirectional, dropout=cfg.dropout,
                   input_dropout=cfg.input_dropout, recurrent_dropout=cfg.recurrent_dropout,
                   zoneout=cfg.zoneout or None, parallel=cfg.parallel, remat=cfg.remat,
                   dtype={"float32": None, "bfloat16": jnp.bfloat16}[_dtype(cfg.dtype)])
    rnn.make_stack()  # fail now, with the valid choices, on a bad cell or switch
    common = dict(rnn=rnn, output_size=task.output_size)
    if cfg.bidirectional and (task.stateful or task.predicts_next):
        raise ValueError(f"model.bidirectional=True is not possible for task {task.name!r}: "
                         "its targets are the next inputs or its state is carried across "
                         "batches, and a backward layer would see the future")
    if task.head == "lm":
        return LanguageModel(embedding_size=cfg.embedding_size, tie_embeddings=cfg.tie_embeddings,
                             **common)
    return {"seq2one": SequenceToOne, "per_step": PerStep}[task.head](**common)


def _dtype(name):
    if name not in ("float32", "bfloat16"):
        raise ValueError(f"model.dtype={name!r}; valid: 'float32', 'bfloat16'")
    return name


def count_params(params) -> int:
    return int(sum(p.size for p in jax.tree.leaves(params)))
