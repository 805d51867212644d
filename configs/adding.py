"""The default experiment: an LSTM on the adding problem at T = 100 (Le et al. 2015 form).

Predicting the mean scores MSE 1/6; the run stops once validation MSE is below 0.002 and is
solved when test MSE < 0.01. ``python run.py`` runs it.
"""
from lstm_research.training import base_config


def get_config():
    c = base_config("adding", T=100, variant="le", batch_size=50, eval_size=1000)
    c.model.cell = "lstm"
    c.model.hidden_size = 128
    c.train.optimizer = "adam"
    c.train.lr = 1e-2
    c.train.clip_norm = 1.0
    c.train.steps = 3000
    c.train.eval_every = 100
    c.train.target = 0.002
    return c
