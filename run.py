"""Run one experiment: ``python run.py --config=configs/<experiment>.py[:variant]
[--config.<key>=<value> ...] [--workdir=DIR]``.

Without arguments it trains an LSTM on the adding problem (T = 100), which needs no download.
Running the same command again resumes from the workdir's latest checkpoint.
"""
from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from lstm_research.training.loop import NonFiniteLoss, WorkdirMismatch, train_and_evaluate

config_flags.DEFINE_config_file("config", "configs/adding.py", "Experiment config file.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and results go "
                    "(default: runs/<config name>).")
flags.DEFINE_bool("overwrite", False, "Discard a run of a different config in --workdir.")
flags.DEFINE_bool("progress", sys.stderr.isatty(), "Show a progress bar (default: when "
                  "stderr is a terminal; otherwise validation results are printed as lines).")
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    config = FLAGS.config
    workdir = FLAGS.workdir or _default_workdir()
    try:
        result = train_and_evaluate(config, workdir, overwrite=FLAGS.overwrite,
                                    progress=FLAGS.progress)
    except (WorkdirMismatch, NonFiniteLoss, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if result.get("status") == "interrupted":
        sys.exit(143)


def _default_workdir():
    import os
    path = flags.FLAGS["config"].config_filename if hasattr(flags.FLAGS["config"], "config_filename") else None
    name = os.path.splitext(os.path.basename(path or "configs/adding.py"))[0]
    return os.path.join("runs", name)


if __name__ == "__main__":
    app.run(main)
