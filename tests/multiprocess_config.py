"""Run config for the multi-process and Slurm tests (``run.py --config=tests/multiprocess_config.py``):
the stateful stream of ``tests/parallel_worker.py`` (continual Reber, 8 streams whose recurrent
state is carried across batches; a 2-layer LSTM with dropout), 16 steps."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from parallel_worker import config  # noqa: E402


def get_config():
    return config()
