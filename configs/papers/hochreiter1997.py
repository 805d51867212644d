"""Hochreiter & Schmidhuber 1997, "Long Short-Term Memory": adding problem (exp. 4) and
temporal order (exp. 6a/6b), with the paper's success criteria.

``--config=configs/papers/hochreiter1997.py:adding100`` (``adding500``, ``adding1000``,
``temporal6a``, ``temporal6b``). A run stops once the criterion holds on the validation set and
reports "sequences to solution" = steps x batch size; the paper's Table 7 / Table 9 give 74,000
(T=100), 209,000 (T=500), 853,000 (T=1000), 31,390 (6a) and 571,100 (6b) training sequences.

Deviations, stated in REPRODUCTIONS.md: we train with full BPTT through time and Adam on
mini-batches, not with the paper's truncated RTRL and online SGD; the network is the 1997 LSTM
without forget gate (``lstm1997``) with every input-gate bias starting at -3 (the paper: per
block values), with more units than the paper's tiny nets.
"""
from lstm_research.training import base_config

VARIANTS = {"adding100": ("adding", 100), "adding500": ("adding", 500),
            "adding1000": ("adding", 1000),
            "temporal6a": ("temporal_order", "6a"), "temporal6b": ("temporal_order", "6b")}


def get_config(variant="adding100"):
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")
    task, arg = VARIANTS[variant]
    if task == "adding":
        # solved: |error| < 0.04 on every one of 2560 test sequences
        c = base_config("adding", T=arg, variant="hochreiter", batch_size=32, eval_size=2560)
        c.train.target = 0.04
    else:
        # solved in the paper: the final absolute error of every output unit below 0.3 on all
        # test sequences; we stop at 0 misclassified validation sequences
        c = base_config("temporal_order", variant=arg, batch_size=32, eval_size=2560)
        c.train.target = 0.0
    # the 1997 nets start with negatively biased input gates, so that cells ignore their inputs
    # until learning opens the gates (the paper uses several negative values, per block);
    # REPRODUCTIONS.md has T = 500 with and without it
    c.model.cell = "lstm1997:input_bias=-3"
    c.model.hidden_size = 32
    c.train.optimizer = "adam"
    c.train.lr = 3e-3
    c.train.clip_norm = 1.0
    c.train.steps = 20000
    c.train.eval_every = 100
    c.train.log_every = 50
    return c
