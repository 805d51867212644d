"""Running cells over time (:mod:`scan`) and stacking them into layers (:mod:`stack`)."""
from lstm_research.layers.scan import reverse_sequences, scan, valid_mask
from lstm_research.layers.stack import Stack, dropout

__all__ = ["Stack", "scan", "reverse_sequences", "valid_mask", "dropout"]
