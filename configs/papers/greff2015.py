"""Greff et al. 2015, "LSTM: A Search Space Odyssey", JSB Chorales: one hidden layer of any
Greff variant (``--config.model.cell=nfg``), sigmoid outputs, next-step NLL per frame, SGD with
momentum on one sequence at a time, early stopping on validation.

The paper's random search draws hidden size log-uniform in [20, 200], learning rate log-uniform
in [1e-6, 1e-2], momentum 1 - log-uniform in [0.01, 1] and input-noise std uniform in [0, 1]:
the field ``one_minus_momentum`` sets ``train.momentum = 1 - one_minus_momentum``, so a sweep
can draw it log-uniformly. The driver command is in REPRODUCTIONS.md.

The training loss is each sequence's NLL summed over its frames (``task.loss_norm="sum_time"``),
the error a per-sequence SGD step of the paper's learning-rate range is meant for; with a
per-frame mean the same learning rates move 60x less (an average chorale has about 60 frames).
Budget (a deviation, stated in REPRODUCTIONS.md): at most 20 epochs, early stopping after 3
evaluations without improvement.
"""
import ml_collections

from lstm_research.training import base_config


def get_config():
    c = base_config("jsb", batch_size=1, eval_batch_size=100, loss_norm="sum_time")
    c.model.cell = "vanilla"
    c.model.hidden_size = 100
    one_minus = ml_collections.FieldReference(0.1)
    c.one_minus_momentum = one_minus
    c.train.optimizer = "momentum"
    c.train.momentum = 1.0 - one_minus
    c.train.lr = 1e-3
    c.train.input_noise = 0.0
    c.train.epochs = 20
    c.train.patience = 3
    c.train.log_every = 100
    return c
