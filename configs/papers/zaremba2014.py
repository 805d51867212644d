"""Zaremba, Sutskever & Vinyals 2014, "Recurrent Neural Network Regularization", PTB word LM.

``--config=configs/papers/zaremba2014.py:small`` (or ``medium``, ``large``). Table 1 reports
valid / test perplexity 120.7 / 114.5 (small, non-regularized), 86.2 / 82.7 (medium),
82.2 / 78.4 (large). Protocol: 2 layers, no peepholes, forget bias 0; uniform init +-s of every
parameter; SGD with lr 1, constant for k epochs, then divided by d every epoch; batch 20;
clipping of the global gradient norm; dropout on non-recurrent connections only; state carried
across batches; loss = sum over the unrolled steps of the batch-mean NLL.
"""
from lstm_research.training import base_config

VARIANTS = {
    #          hidden, init, bptt, epochs, const_epochs, divide_by, clip, dropout
    "small": (200, 0.1, 20, 13, 4, 2.0, 5.0, 0.0),
    "medium": (650, 0.05, 35, 39, 6, 1.2, 5.0, 0.5),
    "large": (1500, 0.04, 35, 55, 14, 1.15, 10.0, 0.65),
}


def get_config(variant="small"):
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")
    hidden, init, bptt, epochs, const, divide, clip, dropout = VARIANTS[variant]
    c = base_config("ptb", batch_size=20, bptt=bptt, eval_batch_size=1, loss_norm="sum_time")
    c.model.cell = "lstm"
    c.model.hidden_size = hidden
    c.model.num_layers = 2
    c.model.dropout = dropout
    c.train.optimizer = "sgd"
    c.train.lr = 1.0
    c.train.init = "uniform"
    c.train.init_scale = init
    c.train.clip_norm = clip
    c.train.epochs = epochs
    c.train.schedule = "zaremba"
    c.train.decay_after_epochs = const
    c.train.decay_factor = divide
    c.train.log_every = 50
    return c
