"""Chung, Gulcehre, Cho & Bengio 2014, "Empirical Evaluation of Gated Recurrent Neural Networks
on Sequence Modeling": JSB Chorales, a tanh RNN, a GRU and an LSTM of about 20k parameters each.

``--config=configs/papers/chung2014.py:lstm`` (or ``:gru``, ``:tanh``). Sizes as in the paper's
Table 1: LSTM 36 units, GRU 46 units, tanh RNN 100 units, one layer, sigmoid outputs over the 88
keys; metric = test NLL per time step (the paper's Table 2: tanh 9.19, GRU 8.54, LSTM 8.67).
The paper's GRU is Cho et al.'s (reset gate applied before the recurrent matmul: ``gru_cho``) and
its LSTM has peepholes (Graves 2013: ``vanilla``).

The defaults train with Adam (lr 3e-3) on mini-batches of 8 sequences with early stopping on
validation NLL. REPRODUCTIONS.md's main run uses the paper's RMSProp with a learning-rate search
per model instead (``--set train.optimizer=rmsprop --set train.momentum=0 --grid
'train.lr=1e-3,3e-3,1e-2'``, then ``experiments/select_by_valid.py``); no weight noise.
"""
from lstm_research.training import base_config

VARIANTS = {"lstm": ("vanilla", 36), "gru": ("gru_cho", 46), "tanh": ("elman", 100)}


def get_config(variant="lstm"):
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")
    c = base_config("jsb", batch_size=8, eval_batch_size=100)
    c.model.cell, c.model.hidden_size = VARIANTS[variant]
    c.train.optimizer = "adam"
    c.train.lr = 3e-3
    c.train.clip_norm = 1.0
    c.train.epochs = 300  # an upper bound: early stopping ends every run before it
    c.train.patience = 10
    c.train.log_every = 10
    return c
