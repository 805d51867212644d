"""Greff et al. 2015, "LSTM: A Search Space Odyssey", JSB Chorales: one hidden layer of any
Greff variant (``--config.model.cell=nfg``), sigmoid outputs, next-step NLL per frame, SGD with
momentum on one sequence at a time, early stopping on validation.

Two variants:

* ``paper`` (``--config=configs/papers/greff2015.py:paper``), the paper's protocol (Sec. IV):
  SGD with Nesterov-style momentum and the learning rate rescaled by (1 - momentum), one update
  per sequence, full BPTT, Gaussian input noise, at most 150 epochs, stopping after 15 epochs
  without validation improvement. The random search draws ``lr`` (the paper's learning rate,
  log-uniform in [1e-6, 1e-2]); the optimizer gets ``train.lr = lr * (1 - momentum)``.
* ``capped`` (the default, kept so the recorded 423-trial sweep reruns as it was): classical
  momentum without the rescaling, at most 20 epochs, early stopping after 3 epochs.

Both draw momentum as ``1 - one_minus_momentum`` (log-uniform in [0.01, 1] in the search), hidden
size log-uniform in [20, 200] and input-noise std uniform in [0, 1]. The driver commands are in
REPRODUCTIONS.md.

The training loss is each sequence's NLL summed over its frames (``task.loss_norm="sum_time"``),
the error a per-sequence SGD step of the paper's learning-rate range is meant for; with a
per-frame mean the same learning rates move 60x less (an average chorale has about 60 frames).
"""
import ml_collections

from lstm_research.training import base_config

VARIANTS = ("capped", "paper")


def get_config(variant="capped"):
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")
    c = base_config("jsb", batch_size=1, eval_batch_size=100, loss_norm="sum_time")
    c.model.cell = "vanilla"
    c.model.hidden_size = 100
    # the drawn widths run padded to a multiple of 8 (lstm_research/models/width.py): one
    # compiled program per 8 widths, the same model up to float rounding
    c.model.width_multiple = 8
    one_minus = ml_collections.FieldReference(0.1)
    c.one_minus_momentum = one_minus
    c.train.momentum = 1.0 - one_minus
    c.train.input_noise = 0.0
    c.train.log_every = 100
    if variant == "capped":
        c.train.optimizer = "momentum"
        c.train.lr = 1e-3
        c.train.epochs = 20
        c.train.patience = 3
    else:
        lr = ml_collections.FieldReference(1e-3)
        c.lr = lr
        c.train.optimizer = "nesterov"
        c.train.lr = lr * one_minus
        c.train.epochs = 150
        c.train.patience = 15
        c.train.checkpoint_secs = 30.0  # a trial is short: a kill loses at most 30 s of it
        c.train.steps_per_call = 16  # batch-1 updates: no host round trip each (same bits)
    return c
