"""Sweeps and ablations. Modules, each importing only the ones above it:

* ``values``    -- command-line values, ranges, dotted keys, random distributions
* ``spec``      -- :class:`SweepSpec`: grid x zip x random expansion, trial ids and hashes
* ``check``     -- a spec checked against its trial config (keys, value types, cells) before launch
* ``sweepdir``  -- the sweep directory: layout, JSON I/O, trial state, ``sweep.json``, the lock
* ``local``     -- local launcher (trial subprocesses) and stopping trials left by a dead sweep
* ``cluster``   -- submitit launcher (slurm / submitit_local) and its job function
* ``scheduler`` -- :func:`run_sweep`: the loop that launches, polls, finishes and stops trials
* ``results``   -- ``results.csv``: one typed row per trial; grouping rows
* ``summary``   -- statistics, Welch tests, ``summary.md``
* ``plots``     -- the figures

Command line: ``python experiments/sweep.py --help``.
"""

from lstm_research.sweeps.spec import (  # noqa: F401
    ABLATION_BASELINE,
    ABLATION_KEY,
    Axis,
    Distribution,
    RandomAxis,
    SweepSpec,
    SweepSpecError,
    Trial,
    spec_from_strings,
)
