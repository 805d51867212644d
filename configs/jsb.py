"""JSB Chorales next-step prediction (NLL per time step, Greff et al. 2015 metric) with a
one-layer vanilla (peephole) LSTM; ``--config.model.cell=nfg`` etc. ablates it."""
from lstm_research.training import base_config


def get_config():
    c = base_config("jsb", batch_size=8, eval_batch_size=100)
    c.model.cell = "vanilla"
    c.model.hidden_size = 100
    c.train.optimizer = "adam"
    c.train.lr = 3e-3
    c.train.clip_norm = 5.0
    c.train.epochs = 30
    c.train.patience = 5
    c.train.log_every = 10
    return c
