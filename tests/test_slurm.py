"""Sweeps and a two-process training job through a real Slurm: the one-node Slurm that
``tests/slurm/start_local_slurm.sh`` starts on this machine (``.ci/run`` starts it). Skipped
where no Slurm answers (``scontrol ping``), so a machine without one still passes.

* a 4-trial sweep with ``--executor=slurm`` (submitit's SlurmExecutor, one job per trial);
* a trial cancelled with ``scancel`` saves its checkpoint, is recorded as interrupted, and
  rerunning the same sweep command resumes it to the end;
* ``srun -n 2 run.py ... --config.parallel.coordinator_address=auto``: the two tasks find each
  other through ``jax.distributed``'s Slurm detection and train over their 2 x 2 CPU devices.
"""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SWEEP = [sys.executable, str(ROOT / "experiments" / "sweep.py")]


def slurm_up() -> bool:
    if not shutil.which("scontrol") or not shutil.which("sbatch"):
        return False
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return ping.returncode == 0 and "UP" in ping.stdout


pytestmark = pytest.mark.skipif(not slurm_up(), reason="no Slurm running (scontrol ping); start one "
                                "with tests/slurm/start_local_slurm.sh (root, Debian) to run these")

TINY = ["--set", "task.T=10", "--set", "task.eval_size=50", "--set", "model.hidden_size=8",
        "--set", "train.target=0.0"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The sweeps' environment (sbatch passes it on to the jobs): a JAX compilation cache shared
    by the trials, so the tiny program compiles about once."""
    return dict(os.environ, JAX_PLATFORMS="cpu",
                JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp("jax_cache")),
                JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")


def sweep_cmd(sweep_dir, *args):
    return [*SWEEP, "--config=configs/adding.py", f"--sweep_dir={sweep_dir}", "--executor=slurm",
            "--slurm_time=10", "--slurm_cpus=1", "--no_progress", "--kill_timeout=20", *TINY, *args]


def sweep(env, sweep_dir, *args, timeout=300):
    return subprocess.run(sweep_cmd(sweep_dir, *args), cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def states(sweep_dir):
    return {p.parent.name: json.loads(p.read_text()) for p in Path(sweep_dir).glob("*/status.json")}


def test_four_trial_sweep_through_slurm(tmp_path, env):
    proc = sweep(env, tmp_path / "s", "--grid", "seed=0,1,2,3", "--parallel", "4",
                 "--set", "train.steps=20", "--set", "train.eval_every=10")
    assert proc.returncode == 0, proc.stderr[-3000:]
    st = states(tmp_path / "s")
    assert len(st) == 4 and {s["status"] for s in st.values()} == {"done"}
    assert {s["executor"] for s in st.values()} == {"slurm"}
    assert len({s["job_id"] for s in st.values()}) == 4
    for tid in st:
        result = json.loads((tmp_path / "s" / tid / "result.json").read_text())
        assert result["status"] == "done" and result["steps"] == 20
        assert "[submitit job on " in (tmp_path / "s" / tid / "log.txt").read_text()


def test_scancel_then_rerunning_the_sweep_resumes_the_trial(tmp_path, env):
    # a checkpoint every step keeps the trial running long enough to be cancelled mid-way on
    # any machine (each save takes a while)
    args = ["--grid", "seed=0", "--set", "train.steps=200", "--set", "train.eval_every=100",
            "--set", "train.checkpoint_every=1"]
    first = subprocess.Popen(sweep_cmd(tmp_path / "s", *args), cwd=ROOT, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not list(tmp_path.glob("s/*/checkpoints/latest/[0-9]*")):
            assert first.poll() is None, first.communicate()[1][-3000:]
            time.sleep(0.5)
        [(tid, st)] = states(tmp_path / "s").items()
        assert st["status"] == "running", st
        subprocess.run(["scancel", st["job_id"]], check=True, timeout=30)
        _, err = first.communicate(timeout=120)
    finally:
        first.kill()
    st = states(tmp_path / "s")[tid]
    assert st["status"] == "interrupted" and st["returncode"] == 143, (st, err[-3000:])
    log = (tmp_path / "s" / tid / "log.txt").read_text()
    assert "SIGTERM: saved step" in log
    saved = int(log.split("SIGTERM: saved step")[1].split()[0])
    assert 0 < saved < 200

    again = sweep(env, tmp_path / "s", *args)  # the same command
    assert again.returncode == 0, again.stderr[-3000:]
    st = states(tmp_path / "s")[tid]
    assert st["status"] == "done" and st["attempts"] == 2
    assert (tmp_path / "s" / tid / "log.txt").read_text().count("[submitit job on ") == 2
    assert json.loads((tmp_path / "s" / tid / "result.json").read_text())["steps"] == 200


def test_srun_two_tasks_join_through_slurm_detection(tmp_path, env):
    env = dict(env, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    proc = subprocess.run(
        ["srun", "-n", "2", "--cpus-per-task=1", "--time=10", "--kill-on-bad-exit=1",
         sys.executable, "run.py", "--config=tests/multiprocess_config.py", f"--workdir={tmp_path}",
         "--noprogress", "--config.parallel.coordinator_address=auto",
         "--config.parallel.timeout_s=60"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["devices"] == 4 and result["steps"] == 16  # 2 tasks x 2 devices
    assert proc.stdout.count("all steps done") == 1  # only task 0 logs
