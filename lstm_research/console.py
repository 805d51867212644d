"""What long work prints where no progress bar is drawn (a log file, Slurm, nohup): a heartbeat
line every ``$LSTM_RESEARCH_HEARTBEAT_SECS`` seconds (default 60; 0 = off), for a run
(:mod:`lstm_research.training.reporting`) and for a sweep
(:mod:`lstm_research.sweeps.scheduler`)."""
from __future__ import annotations

import os

HEARTBEAT_ENV, HEARTBEAT_DEFAULT = "LSTM_RESEARCH_HEARTBEAT_SECS", 60.0


def heartbeat_secs() -> float:
    """Seconds between heartbeat lines: ``$LSTM_RESEARCH_HEARTBEAT_SECS`` or 60."""
    value = os.environ.get(HEARTBEAT_ENV, "")
    try:
        return float(value) if value else HEARTBEAT_DEFAULT
    except ValueError:
        return HEARTBEAT_DEFAULT


def duration(secs: float) -> str:
    """``1h05m``, ``4m09s``, ``12s``."""
    secs = int(round(secs))
    h, rest = divmod(secs, 3600)
    return f"{h}h{rest // 60:02d}m" if h else (f"{rest // 60}m{rest % 60:02d}s" if rest >= 60
                                                else f"{rest}s")
