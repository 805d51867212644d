"""Training: config defaults, optimizers and schedules, the loop, checkpoints, reporting."""
from lstm_research.training.config import base_config
from lstm_research.training.loop import Trainer, train_and_evaluate

__all__ = ["base_config", "Trainer", "train_and_evaluate"]
