"""Data parallelism: training on 4 (forced CPU) devices equals training on 1 with the same
global batch, including the carried recurrent state of the streams, and checkpoints move
between device counts in both directions."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "parallel_worker.py"


def run(devices, *jobs):
    """``parallel_worker.py`` on ``devices`` forced CPU devices: its report line per job
    (``workdir`` or ``(workdir, crash_at, model_axis)``), the jobs run one after the other."""
    env = dict(os.environ)
    flags = env.get("XLA_FLAGS", "")
    env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices}".strip()
    env["JAX_PLATFORMS"] = "cpu"
    specs = [":".join(map(str, j if isinstance(j, tuple) else (j,))) for j in jobs]
    proc = subprocess.run([sys.executable, str(WORKER), *specs], env=env,
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("JOB ")]
    assert len(lines) == len(jobs), proc.stdout
    return lines


def params(workdir):
    with np.load(Path(workdir) / "params.npz") as f:
        return [f[k] for k in sorted(f.files, key=lambda s: int(s.split("_")[1]))]


def close(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, atol=1e-5, rtol=1e-5)


def test_four_devices_equal_one_and_checkpoints_cross_device_counts(tmp_path):
    # a crash at step 6 leaves step 4 as the latest checkpoint; every resume is a new process
    # on the other device count
    # (and evaluation streams that 4 devices do not divide: 6, run replicated; they crashed)
    one, crash_1to4, odd_1 = run(1, tmp_path / "one", (tmp_path / "1to4", 6),
                                 (tmp_path / "odd1", 0, 1, 6))
    four, crash_4to1, resumed_1to4, mesh_2x2, odd_4 = run(
        4, tmp_path / "four", (tmp_path / "4to1", 6), tmp_path / "1to4", (tmp_path / "2x2", 0, 2),
        (tmp_path / "odd4", 0, 1, 6))
    (resumed_4to1,) = run(1, tmp_path / "4to1")
    assert "devices 1 step 16" in one and "devices 4 step 16" in four
    close(params(tmp_path / "one"), params(tmp_path / "four"))
    assert "devices 4 step 16" in odd_4
    test_nll = [json.loads((tmp_path / d / "result.json").read_text())["test"]["nll"]
                for d in ("odd1", "odd4")]
    np.testing.assert_allclose(test_nll[1], test_nll[0], rtol=1e-5)

    # written on 4 devices, resumed on 1
    assert "crashed" in crash_4to1 and "devices 1 step 16" in resumed_4to1
    close(params(tmp_path / "one"), params(tmp_path / "4to1"))

    # written on 1 device, resumed on 4
    assert "crashed" in crash_1to4 and "devices 4 step 16" in resumed_1to4
    close(params(tmp_path / "one"), params(tmp_path / "1to4"))

    # params split along a 2-wide 'model' axis (mesh 2 x 2): the same training
    assert "devices 4 step 16" in mesh_2x2 and "model-sharded params 0 " not in mesh_2x2
    close(params(tmp_path / "one"), params(tmp_path / "2x2"))


def test_global_batch_not_divisible_is_refused(tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "run.py", "--config.task.batch_size=50",
                           "--config.train.steps=1", f"--workdir={tmp_path}"], env=env,
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 2
    assert "global batch size 50 is not divisible by the 4 devices" in proc.stderr


def test_a_ragged_last_batch_runs_replicated_and_equals_one_device(tmp_path):
    """JSB's 229 training sequences in batches of 4 end each epoch with a batch of 1, which does
    not split over 2 devices: it runs replicated, and the epoch equals the one on 1 device."""
    data = Path(os.environ["LSTM_RESEARCH_DATA"]) / "jsb_chorales"
    if not data.is_dir():
        pytest.skip(f"real JSB data not found at {data}")
    results = []
    for devices in (1, 2):
        env = dict(os.environ, JAX_PLATFORMS="cpu",
                   XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
        proc = subprocess.run([sys.executable, "run.py", "--config=configs/jsb.py",
                               "--config.task.batch_size=4", "--config.train.epochs=1",
                               "--config.model.hidden_size=8", "--noprogress",
                               f"--workdir={tmp_path / str(devices)}"], env=env,
                              capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr[-3000:]
        results.append(json.loads((tmp_path / str(devices) / "result.json").read_text()))
    assert results[0]["steps"] == results[1]["steps"] == 58  # 57 batches of 4, one of 1
    for split in ("valid", "test"):
        np.testing.assert_allclose(results[1][split]["nll"], results[0][split]["nll"], rtol=1e-5)


def test_a_run_with_batch_per_device_resumes_on_its_own_device_count_only(tmp_path):
    # its global batch follows the device count, which config.json does not hold: extended on
    # 2 devices, a 1-device run went on with twice the batch
    def run_py(devices, steps):
        env = dict(os.environ, JAX_PLATFORMS="cpu",
                   XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
        return subprocess.run([sys.executable, "run.py", "--config.parallel.batch_per_device=8",
                               "--config.task.T=12", "--config.task.eval_size=32",
                               "--config.model.hidden_size=8", f"--config.train.steps={steps}",
                               "--config.train.eval_every=10", "--noprogress",
                               f"--workdir={tmp_path}"], env=env, capture_output=True,
                              text=True, timeout=300, cwd=ROOT)
    assert run_py(1, 10).returncode == 0
    refused = run_py(2, 20)
    assert refused.returncode == 2
    assert ("was trained with a global batch of 8 (parallel.batch_per_device=8 on 1 "
            "data-parallel devices); here it would be 16") in refused.stderr
    assert run_py(1, 20).returncode == 0
    assert json.loads((tmp_path / "result.json").read_text())["steps"] == 20
