"""Sweeps through long-lived workers (``experiments/sweep.py --workers N``): same files as run.py,
failures isolated, a killed worker's trial resumed by a rerun, recycling, bad values refused."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from lstm_research.training.checkpoint import Checkpoints
from lstm_research.training.loop import Trainer

from conftest import (REPO, SWEEP_CLI, SWEEP_TINY, assert_sweep_refused, run_sweep, sweep_argv,
                      sweep_env, trial_dirs, trial_status)

TIMING = ("wall_time",)


def _result(tdir):
    r = json.loads((tdir / "result.json").read_text())
    for k in TIMING:
        r.pop(k)
    r["numerics"].pop("visible_cpus")  # a worker is pinned to one CPU (same numbers: test_determinism)
    return r


def _params(tdir, overrides):
    import run  # the repo root is on sys.path (conftest)

    _, config = run.parse_command_line(["run.py", "--config=configs/adding.py",
                                        *[f"--config.{o}" for o in overrides]])
    like = Trainer(config, str(tdir / "_like"), progress=False).init_state()[0]
    arrays, _ = Checkpoints(tdir).restore_latest(like)
    return jax.tree.leaves(arrays)


def _assert_same_trial(a, b, overrides):
    assert _result(a) == _result(b)
    assert (a / "metrics.jsonl").read_text() == (b / "metrics.jsonl").read_text()
    assert json.loads((a / "config.json").read_text()) == json.loads((b / "config.json").read_text())
    for x, y in zip(_params(a, overrides), _params(b, overrides), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_worker_trials_are_bit_identical_to_run_py(tmp_path):
    # two trials through ONE worker: the second reuses the process (data, the jitted steps:
    # they differ only in what the steps take as inputs, the seed and the padded width); the
    # sweep's own compilation cache, its default, not the tests' shared one (see conftest)
    own_cache = {k: v for k, v in sweep_env().items() if k != "JAX_COMPILATION_CACHE_DIR"}
    # widths 5 and 7 padded to 8 (model.width_multiple) run one program too
    fixed = [*(f for f in SWEEP_TINY if not f.startswith("model.hidden_size")),
             "train.optimizer=nesterov", "model.width_multiple=8"]
    zipped = {"seed": (0, 1), "train.lr": (0.01, 0.03), "train.momentum": (0.9, 0.5),
              "train.input_noise": (0.1, 0.4), "model.hidden_size": (5, 7)}
    zips = [a for k, v in zipped.items() for a in ("--zip", f"{k}={v[0]},{v[1]}")]
    run_sweep(tmp_path / "sw", *zips, "--workers", "1", fixed=fixed, check=0, env=own_cache)
    trials = trial_dirs(tmp_path / "sw")
    assert [trial_status(t)["worker"] for t in trials] == [1, 1]
    for j, tdir in enumerate(trials):
        overrides = [*fixed, *(f"{k}={v[j]}" for k, v in zipped.items())]
        alone = tmp_path / f"alone{j}"
        out = subprocess.run([sys.executable, "run.py", "--config=configs/adding.py",
                              *[f"--config.{o}" for o in overrides], f"--workdir={alone}"],
                             cwd=REPO, env=sweep_env(), capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        _assert_same_trial(tdir, alone, overrides)
    # the worker stored its programs in the sweep's cache (training.programs): the train step,
    # the evaluation step, and the init program of widths 5 and 7 (one per bucket, the width
    # an input: models.width.with_init_width)
    assert len(list((tmp_path / "sw" / ".jax_cache" / "executables").glob("*/*.exe"))) == 3


def test_failing_trial_is_recorded_and_the_worker_goes_on(tmp_path):
    sw = tmp_path / "sw"
    out = run_sweep(sw, "--grid", "train.lr=0.01,1e30,0.02,0.005", "--workers", "2", check=1)
    states = {t.name: trial_status(t) for t in trial_dirs(sw)}
    failed = [n for n, s in states.items() if s["status"] == "failed"]
    assert len(failed) == 1 and "lr=1e+30" in failed[0], states
    st = states[failed[0]]
    assert st["returncode"] == 3 and "loss is nan" in st["error"], st
    assert sum(s["status"] == "done" for s in states.values()) == 3
    assert len({s["pid"] for s in states.values()}) == 2  # two workers did the four trials
    assert (sw / "summary.md").is_file() and "wrote" in out.stdout


def test_workers_are_recycled_after_max_trials(tmp_path):
    run_sweep(tmp_path / "sw", "--grid", "seed=0,1,2", "--workers", "1", "--worker_max_trials", "1", check=0)
    states = [trial_status(t) for t in trial_dirs(tmp_path / "sw")]
    assert [s["worker"] for s in states] == [1, 2, 3]
    assert len({s["pid"] for s in states}) == 3


def test_killed_worker_trial_resumes_on_rerun(tmp_path):
    long = [o for o in SWEEP_TINY
            if not o.startswith(("train.steps", "train.checkpoint_every", "train.eval_every"))]
    long += ["train.steps=4000", "train.checkpoint_every=50", "train.eval_every=1000"]
    grid = ("--grid", "seed=0,1")
    run_sweep(tmp_path / "ref", *grid, "--workers", "1", fixed=long, check=0)

    sw = tmp_path / "sw"
    cmd = [sys.executable, str(SWEEP_CLI), *sweep_argv(sw, *grid, "--workers", "1", fixed=long)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=sweep_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 300
    first = None
    while time.time() < deadline:
        trials = trial_dirs(sw) if sw.is_dir() else []
        if trials and (trials[0] / "status.json").is_file():
            first = trials[0]
            latest = first / "checkpoints" / "latest"
            if latest.is_dir() and any(p.name.isdigit() for p in latest.iterdir()):
                break
        time.sleep(0.05)
    assert first is not None and trial_status(first)["status"] == "running"
    os.kill(trial_status(first)["pid"], signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err[-3000:]
    st = trial_status(first)
    assert st["status"] == "interrupted" and "SIGKILL" in st["error"], st
    assert trial_status(trial_dirs(sw)[1])["status"] == "done"  # the sweep went on with a new worker

    run_sweep(sw, *grid, "--workers", "1", fixed=long, check=0)
    assert trial_status(first)["attempts"] == 2
    for a, b in zip(trial_dirs(tmp_path / "ref"), trial_dirs(sw), strict=True):
        _assert_same_trial(a, b, [*long, f"seed={_result(a)['config']['seed']}"])


@pytest.mark.parametrize("args", [["--workers", "0"], ["--workers", "-3"],
                                  ["--workers", "2", "--executor", "slurm"],
                                  ["--workers", "2", "--worker_max_trials", "0"]])
def test_bad_workers_values_are_one_line_errors(tmp_path, args, capfd):
    assert_sweep_refused(tmp_path / "sw", args, "", capfd)
    assert not (tmp_path / "sw").exists()


def test_release_free_memory_gives_freed_heap_back():
    """What a worker frees but glibc keeps mapped (heap pages below a block still in use) counts
    in its resident memory until ``release_free_memory`` trims the heap: 200 MB of freed 64 KB
    blocks under a live one leave the resident size up; after the trim it is down by most of it.
    Run in a fresh interpreter, so that nothing else in the heap moves the numbers."""
    import ctypes.util
    if not ctypes.util.find_library("c") or not hasattr(ctypes.CDLL(None), "malloc_trim"):
        pytest.skip("no glibc malloc_trim here")
    code = """
import ctypes, json
from lstm_research.sweeps.worker import release_free_memory, rss_gb
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD: 64 KB blocks come from the heap
n, size = 3200, 64 * 1024
blocks = [libc.malloc(size) for _ in range(n)]
for b in blocks:
    ctypes.memset(b, 1, size)
keep = libc.malloc(size)  # a live block above the freed ones: free() cannot shrink the heap
ctypes.memset(keep, 1, size)
before = rss_gb()
for b in blocks:
    libc.free(b)
freed = rss_gb()
ok = release_free_memory()
print(json.dumps({"before": before, "freed": freed, "trimmed": rss_gb(), "ok": ok}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    r = json.loads(out.stdout.strip().splitlines()[-1])
    held = 3200 * 64 * 1024 / 2**30
    assert r["ok"]
    assert r["freed"] > r["before"] - 0.2 * held  # free() alone gave little of it back
    assert r["trimmed"] < r["freed"] - 0.8 * held  # the trim gave back most of the 200 MB
