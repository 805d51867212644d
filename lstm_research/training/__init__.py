"""Training: config defaults, optimizers and schedules, the loop, checkpoints, reporting.

One-way layout, lowest first:

* :mod:`.config` (defaults), :mod:`.optim`, :mod:`.parallel` (mesh, sharding, global batch);
* run pieces shared by both trainers: :mod:`.workdir` (run directory checks),
  :mod:`.batches` (time padding), :mod:`.results` (eval sums, ``result.json``, summary line),
  :mod:`.programs` (compiled programs, stored for the next process), :mod:`.steps` (task at the
  global batch, model forward pass, train/eval steps, init state), and :mod:`.checkpoint`,
  :mod:`.reporting`;
* :mod:`.loop` (``Trainer``, ``train_and_evaluate``: one run) and :mod:`.pack`
  (``PackTrainer``: K trials in one vmapped program, ``experiments/sweep.py --pack K``).
"""
from lstm_research.training.config import base_config
from lstm_research.training.loop import Trainer, train_and_evaluate

__all__ = ["base_config", "Trainer", "train_and_evaluate"]
