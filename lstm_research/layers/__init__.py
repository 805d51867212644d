"""Recurrent layers over the cells of :mod:`lstm_research.cells`.

* :mod:`~lstm_research.layers.scan`: one cell over time, and the choice of path (generic
  ``lax.scan``, fused LSTM layer, or the parallel form over a linear recurrence);
* :mod:`~lstm_research.layers.fused`: the fused LSTM-family layer (hand-written backward);
* :mod:`~lstm_research.layers.pallas_lstm`: the opt-in persistent Pallas LSTM kernel
  (``fused="pallas"``; verified in interpret mode on CPU, not measured on a GPU);
* :mod:`~lstm_research.layers.stack`: :class:`Stack`, layers of a cell with dropout, zoneout,
  masking and the path switches (``parallel``, ``remat``, ``unroll``, ``fused``) as fields.

The linear recurrence of the parallel form lives in :mod:`lstm_research.cells.linear_recurrence`
(the cells call it, and cells import nothing from layers).
"""
from lstm_research.layers.scan import FUSED_VALUES, reverse_sequences, scan, valid_mask
from lstm_research.layers.stack import Stack, dropout

__all__ = ["Stack", "scan", "reverse_sequences", "valid_mask", "dropout", "FUSED_VALUES"]
