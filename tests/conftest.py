"""Shared test helpers: fast XLA compilation for small numeric checks, and small run configs.

Test modules import the helpers (``from conftest import FAST_COMPILE, small_config``); pytest
puts this folder on ``sys.path``, and so does running ``tests/parallel_worker.py`` as a script.
"""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from lstm_research.training import base_config

# The tests read the real data from ../shared/data (or a $LSTM_RESEARCH_DATA set by the caller),
# never from the user cache, and a run never downloads into a data dir set this way; tests that
# need the files skip without them.
REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()
os.environ.setdefault("LSTM_RESEARCH_DATA", str(SHARED_DATA))

#: compile options for tests of small numeric programs: compile time dominates, not run time
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def fast_jit(f, **kwargs):
    """``jax.jit`` with :data:`FAST_COMPILE`."""
    return jax.jit(f, compiler_options=FAST_COMPILE, **kwargs)


#: the modules whose tests run many subprocesses (minutes each on 2 cores), in the order of their
#: measured cost: collected first, so that ``pytest -n 2`` does not end on one of them with the
#: other worker idle
HEAVY_FIRST = ("test_kill_storm", "test_parallel", "test_sweep_workers", "test_pack", "test_slurm",
               "test_multiprocess", "test_sweep_packs", "test_determinism", "test_training",
               "test_reliability")


def pytest_collection_modifyitems(items):
    def rank(item):
        name = item.module.__name__ if item.module else ""
        return HEAVY_FIRST.index(name) if name in HEAVY_FIRST else len(HEAVY_FIRST)
    items.sort(key=rank)  # stable: a module's tests keep their order


@pytest.fixture(scope="session", autouse=True)
def shared_compilation_cache(tmp_path_factory):
    """One persistent compilation cache for the programs that the tests compile, in the test
    processes and in their subprocesses (runs, sweep workers, resumed lives), shared by the
    xdist workers of a test session: most runs compile the same few small programs, and cached
    executables are the same programs. A test or a caller that sets
    ``JAX_COMPILATION_CACHE_DIR`` keeps its own."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(root / "jax_cache"))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs",
                      float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))


@functools.cache
def experiment_script(name: str):
    """``experiments/<name>.py`` loaded as a module, once per test process (its ``main(argv)``
    runs a command line in-process: no process start, no imports again)."""
    path = Path(__file__).resolve().parents[1] / "experiments" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_one_error_line(returncode, out: str, err: str, expected: str = "") -> None:
    """A refused command line, as the entry points end one: exit status 2, exactly one stderr
    line, ``error: ...`` containing ``expected``, and no traceback."""
    lines = err.splitlines()
    assert returncode == 2, (returncode, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err + out
    assert expected in lines[0], lines[0]


# sweeps through experiments/sweep.py (test_sweep_workers.py, test_sweep_packs.py)
SWEEP_CLI = REPO / "experiments" / "sweep.py"
#: a sweep's fixed overrides: trials of a few seconds on the adding task
SWEEP_TINY = ["task.T=12", "task.batch_size=16", "task.eval_size=64", "model.hidden_size=8",
              "train.steps=30", "train.eval_every=10", "train.checkpoint_every=10", "train.log_every=5"]


def sweep_env():
    """The environment of a sweep subprocess: this checkout importable, the CPU backend."""
    return {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}


def sweep_argv(sweep_dir, *args, fixed=SWEEP_TINY) -> list:
    """sweep.py's arguments for a sweep of configs/adding.py, ``fixed`` as ``--set`` overrides."""
    return ["--config=configs/adding.py", f"--sweep_dir={sweep_dir}", "--no_progress",
            "--no_plots", *args, *[a for f in fixed for a in ("--set", f)]]


def run_sweep(sweep_dir, *args, fixed=SWEEP_TINY, check=None, env=None, **kw):
    """``experiments/sweep.py`` (:func:`sweep_argv`) in a subprocess; with ``check``, its exit
    status must be that."""
    cmd = [sys.executable, str(SWEEP_CLI), *sweep_argv(sweep_dir, *args, fixed=fixed)]
    out = subprocess.run(cmd, cwd=REPO, env=env or sweep_env(), capture_output=True, text=True,
                         timeout=600, **kw)
    if check is not None:
        assert out.returncode == check, out.stdout[-2000:] + out.stderr[-3000:]
    return out


def assert_sweep_refused(sweep_dir, args, needle, capfd):
    """``run_sweep(sweep_dir, *args)`` through sweep.py's ``main`` in this process (no process
    start: its bad command lines as processes are in test_sweep_cli.py) ends in one line
    ``error: ...`` that contains ``needle``, and exit status 2."""
    capfd.readouterr()
    with contextlib.chdir(REPO):
        rc = experiment_script("sweep").main(sweep_argv(sweep_dir, *args))
    assert_one_error_line(rc, *capfd.readouterr(), needle)


def trial_dirs(sweep_dir):
    """A sweep's trial folders, in name order."""
    return sorted(p for p in Path(sweep_dir).iterdir() if p.is_dir() and p.name[0].isdigit())


def trial_status(tdir):
    """A trial's ``status.json``."""
    return json.loads((tdir / "status.json").read_text())


def small_config(task: str, *, steps: int, eval_every: int, log_every: int = 5,
                 hidden_size: int = 8, num_layers: int = 1, dropout: float = 0.0,
                 lr: float | None = None, **task_kw):
    """``base_config(task, **task_kw)`` shrunk for tests: a tiny model and a short run."""
    c = base_config(task, **task_kw)
    c.model.hidden_size = hidden_size
    c.model.num_layers = num_layers
    c.model.dropout = dropout
    c.train.steps = steps
    c.train.eval_every = eval_every
    c.train.log_every = log_every
    if lr is not None:
        c.train.lr = lr
    return c


def tensorboard_events(folder) -> list:
    """Every ``Event`` proto in the TensorBoard event files under ``folder``, file by file in
    name order: the TFRecord framing (length, its crc, the record, its crc) read directly, so
    no TensorBoard install is needed."""
    import struct
    from pathlib import Path

    from tensorboardX.proto.event_pb2 import Event
    events = []
    for path in sorted(Path(folder).rglob("events.out.tfevents.*")):
        data = path.read_bytes()
        i = 0
        while i + 12 <= len(data):
            (n,) = struct.unpack("<Q", data[i:i + 8])
            events.append(Event.FromString(data[i + 12:i + 12 + n]))
            i += 12 + n + 4
    return events


def tensorboard_scalars(folder) -> dict:
    """``{tag: [(step, value), ...]}`` of the scalars under ``folder``."""
    out: dict = {}
    for e in tensorboard_events(folder):
        for v in e.summary.value:
            if v.HasField("simple_value"):
                out.setdefault(v.tag, []).append((e.step, v.simple_value))
    return out
