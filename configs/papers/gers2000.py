"""Gers, Schmidhuber & Cummins 2000, "Learning to Forget: Continual Prediction with LSTM":
the continual embedded Reber grammar (CERG), LSTM without forget gates against LSTM with them.

``--config=configs/papers/gers2000.py:forget`` (or ``:no_forget``). The net reads one unsegmented
stream of embedded Reber strings (no reset between strings) and predicts the set of allowed next
symbols at every step. Test (the paper's): 10 streams of 100,000 symbols; a stream "ends at the
first error" (any output unit on the wrong side of 0.5); a run is solved when no test stream has
an error (``solved_frac`` = 1). Training stops once that holds on 10 validation streams.

Deviations, stated in REPRODUCTIONS.md: truncated BPTT over chunks of 100 symbols with the state
carried (the paper: truncated RTRL), Adam on 16 streams at once (the paper: online SGD, lr 0.5,
a training stream ends at the first error), 8 cells with their own gates (the paper: 4 memory
blocks of 2 cells sharing gates), and no learning-rate decay.
"""
from lstm_research.training import base_config

VARIANTS = {"forget": "lstm:forget_bias=1", "no_forget": "lstm1997"}


def get_config(variant="forget"):
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")
    # training streams of steps_per_epoch * bptt = 1,000 symbols, fresh streams and a reset state
    # every "epoch" (the paper's streams end at the first error, so the net often starts afresh)
    c = base_config("continual_reber", batch_size=16, bptt=100, steps_per_epoch=10,
                    eval_size=10, eval_length=100_000)
    c.model.cell = VARIANTS[variant]
    c.model.hidden_size = 8
    c.train.optimizer = "adam"
    c.train.lr = 1e-2
    c.train.clip_norm = 1.0
    c.train.epochs = 600  # 6,000 steps of 16 x 100 symbols
    c.train.eval_every = 500
    c.train.log_every = 100
    c.train.target = 100_000.0  # every validation stream free of errors
    return c
