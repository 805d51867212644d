"""Sweeps and ablations: spec expansion (spec), execution (runner), tables (summary), figures (plots).

Command line: ``python experiments/sweep.py --help``.
"""

from lstm_research.sweeps.spec import (  # noqa: F401
    ABLATION_BASELINE,
    ABLATION_CELLS,
    ABLATION_KEY,
    Axis,
    Distribution,
    RandomAxis,
    SweepSpec,
    SweepSpecError,
    Trial,
    spec_from_strings,
)
