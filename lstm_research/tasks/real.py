"""Tasks on real data: Penn Treebank word-level LM and JSB Chorales next-step prediction."""
from __future__ import annotations

import dataclasses
import functools

import jax.numpy as jnp
import numpy as np
import optax

from lstm_research.data import files, jsb, ptb
from lstm_research.errors import bad_choice
from lstm_research.tasks.base import Task, batch_step_mask, bernoulli_nll, epoch_stream, runtime


def _frozen(data: dict) -> dict:
    """A copy of a loaded data set whose arrays are read-only (it is shared by every trial of a
    process, see :func:`_load_cached`)."""
    out = {}
    for k, v in data.items():
        if isinstance(v, np.ndarray):
            v = v.view()
            v.flags.writeable = False
        elif isinstance(v, list) and v and isinstance(v[0], np.ndarray):
            v = list(v)
            for i, a in enumerate(v):
                v[i] = a.view()
                v[i].flags.writeable = False
        out[k] = v
    return out


@functools.lru_cache(maxsize=4)
def _load_cached(name: str, data_dir: str, download: bool) -> dict:
    """A data set loaded once per process and data dir (a sweep worker runs many trials)."""
    loader = {"jsb": jsb.load_jsb, "ptb": ptb.load_ptb}[name]
    return _frozen(loader(data_dir, download=download))


def _load(name: str, data_dir: str) -> dict:
    """Load data set ``name``; missing files are downloaded first only into the default data
    dir (``~/.cache/lstm_research/data``), never into one the user chose."""
    download = files.uses_default_data_dir(data_dir or None)
    data = _load_cached(name, str(files.resolve_data_dir(data_dir or None).resolve()), download)
    return {k: list(v) if isinstance(v, list) else v for k, v in data.items()}


@dataclasses.dataclass
class PennTreebank(Task):
    """Word-level PTB language modeling (Mikolov's 10k split, ``<eos>`` per line) with the
    contiguous batch-major streams and truncated BPTT of Zaremba et al. 2014: the recurrent
    state is carried from batch to batch and reset at the start of each epoch (and of each
    evaluation). Metric: perplexity = exp(mean NLL per token). As in Zaremba's reader, an
    evaluation covers whole [eval_batch_size, bptt] batches only: with 20 streams it scores
    81,900 of PTB test's 82,429 predictions (0.6% left out); with 1 (the paper config), all
    but 4.

    ``loss_norm``: "sum_time" (Zaremba: the sum over the unrolled steps of the batch-mean NLL;
    lr 1 depends on it) or "mean_token" (mean NLL per token).
    """
    name = "ptb"
    head, metric = "lm", "perplexity"
    labels = {"perplexity": "perplexity (per word)", "nll": "NLL (nats per word)"}
    stateful, token_inputs, predicts_next = True, True, True

    data_dir: str = ""  # "" = the default data dir
    batch_size: int = 20
    bptt: int = 35
    eval_batch_size: int = 20
    loss_norm: str = "sum_time"
    tokens: dict | None = runtime()

    def __post_init__(self):
        if self.loss_norm not in ("sum_time", "mean_token"):
            raise bad_choice("task.loss_norm", self.loss_norm, ("sum_time", "mean_token"))

    def load(self):
        self.tokens = _load("ptb", self.data_dir)

    @property
    def input_size(self):
        return len(self.tokens["vocab"])

    output_size = input_size

    @property
    def steps_per_epoch(self):
        return ptb.lm_num_batches(len(self.tokens["train"]), self.batch_size, self.bptt)

    def train_batches(self, start_step):
        def epoch(e, start):
            for x, y in ptb.lm_batches(self.tokens["train"], self.batch_size, self.bptt, start):
                yield {"x": x, "y": y}
        return epoch_stream(epoch, self.steps_per_epoch, start_step)

    def eval_batches(self, split):
        for k, (x, y) in enumerate(ptb.lm_batches(self.tokens[split], self.eval_batch_size,
                                                  self.bptt)):
            yield {"x": x, "y": y, "reset": np.bool_(k == 0)}

    def loss(self, outputs, batch):
        nll = optax.softmax_cross_entropy_with_integer_labels(outputs, batch["y"])  # [B, T]
        value = jnp.sum(jnp.mean(nll, 0)) if self.loss_norm == "sum_time" else jnp.mean(nll)
        return value, {"nll": jnp.sum(nll), "tokens": nll.size}

    def summarize(self, s):
        nll = s["nll"] / s["tokens"]
        return {"perplexity": float(np.exp(nll)), "nll": nll}


@dataclasses.dataclass
class JSBChorales(Task):
    """JSB Chorales (Boulanger-Lewandowski et al. 2012 split, quarter notes): predict the next
    88-key piano-roll frame from the frames so far. Metric (Greff et al. 2015, Chung et al.
    2014): NLL per time step = the sum of the 88 Bernoulli NLLs, averaged over all predicted
    frames of the split.

    ``loss_norm`` (the training loss; the metric is always per frame): "mean_frame" (mean NLL
    per predicted frame of the batch) or "sum_time" (each sequence's NLL summed over its frames,
    averaged over the batch: the per-sequence error that a per-sequence SGD learning rate as in
    Greff et al. 2015 multiplies).
    """
    name = "jsb"
    head, input_size, output_size, metric = "per_step", jsb.N_KEYS, jsb.N_KEYS, "nll"
    labels = {"nll": "NLL (nats per frame)"}
    predicts_next = True

    data_dir: str = ""  # "" = the default data dir
    batch_size: int = 1
    eval_batch_size: int = 100
    loss_norm: str = "mean_frame"
    seed: int = runtime(0)
    rolls: dict | None = runtime()

    def __post_init__(self):
        if self.loss_norm not in ("mean_frame", "sum_time"):
            raise bad_choice("task.loss_norm", self.loss_norm, ("mean_frame", "sum_time"))

    def load(self):
        self.rolls = _load("jsb", self.data_dir)

    @property
    def steps_per_epoch(self):
        return jsb.jsb_num_batches(len(self.rolls["train"]), self.batch_size)

    @staticmethod
    def _shifted(x, lengths):
        # predict frame t+1 from frames <= t: inputs x[:, :-1], targets x[:, 1:]
        return {"x": x[:, :-1], "y": x[:, 1:], "lengths": np.maximum(lengths - 1, 0)}

    def train_batches(self, start_step):
        def epoch(e, start):
            for x, lengths in jsb.jsb_batches(self.rolls["train"], self.batch_size, self.seed,
                                              e, start=start):
                yield self._shifted(x, lengths)
        return epoch_stream(epoch, self.steps_per_epoch, start_step)

    def eval_batches(self, split):
        # every batch of valid and test has the same rows (empty sequences pad a short one;
        # the metric sums over real frames only) and, through max_length, the same time
        # length: one compiled eval program per run instead of one per split
        rows = min(self.eval_batch_size, max(len(self.rolls[s]) for s in ("valid", "test")))
        for x, lengths in jsb.jsb_batches(self.rolls[split], self.eval_batch_size, 0, 0,
                                          shuffle=False):
            pad = rows - x.shape[0]
            if pad > 0:
                x = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)])
                lengths = np.concatenate([lengths, np.zeros(pad, lengths.dtype)])
            yield self._shifted(x, lengths)

    def max_length(self, split):
        splits = ("train",) if split == "train" else ("valid", "test")  # see eval_batches
        # inputs are the frames but the last
        return max(len(r) for s in splits for r in self.rolls[s]) - 1

    def loss(self, outputs, batch):
        mask = batch_step_mask(batch, outputs.shape[1])
        nll = jnp.sum(bernoulli_nll(outputs, batch["y"]), -1) * mask
        frames = jnp.sum(mask)
        value = (jnp.sum(nll) / frames if self.loss_norm == "mean_frame"
                 else jnp.sum(nll) / nll.shape[0])
        return value, {"nll": jnp.sum(nll), "frames": frames}

    def summarize(self, s):
        return {"nll": s["nll"] / s["frames"]}
