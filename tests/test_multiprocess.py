"""Two ``run.py`` processes on this machine (2 forced CPU devices each) joined by
``jax.distributed`` over 127.0.0.1 train data-parallel over all 4 devices (cross-process
collectives: gloo): the same params as one process over 4 devices, checkpoints that move between
one and two processes, logs from process 0 only; a lost peer and bad coordinates end in one line,
never a hang (every subprocess has a timeout, so a hang fails the test)."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "multiprocess_worker.py"
CONFIG = "--config=tests/multiprocess_config.py"
TIMEOUT_S = 20  # parallel.timeout_s of these runs: joining, and a lost peer, fail within it


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A JAX compilation cache shared by the runs: each program compiles once."""
    return tmp_path_factory.mktemp("jax_cache")


def env(devices, cache=None):
    e = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    if cache is not None:
        e.update(JAX_COMPILATION_CACHE_DIR=str(cache), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    return e


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def coords(port, i, n=2, timeout=TIMEOUT_S):
    return [f"--config.parallel.coordinator_address=127.0.0.1:{port}",
            f"--config.parallel.num_processes={n}", f"--config.parallel.process_id={i}",
            f"--config.parallel.timeout_s={timeout}"]


def start(args, devices, cache=None, script=WORKER):
    return subprocess.Popen([sys.executable, str(script), *args], env=env(devices, cache), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(procs, timeout=240):
    """(returncode, stdout, stderr) of each process; a process still running after ``timeout``
    (a hang) is killed and fails the test."""
    out = []
    for p in procs:
        try:
            o, e = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail(f"a process hung (> {timeout} s): {p.args}")
        out.append((p.returncode, o, e))
    return out


def one(workdir, cache, extra=()):
    [(rc, o, e)] = finish([start([*extra, CONFIG, f"--workdir={workdir}", "--noprogress"], 4, cache)])
    assert rc == 0, e[-3000:]
    return o


def two(workdir, cache, extra=()):
    port = free_port()
    runs = finish([start([*extra, CONFIG, f"--workdir={workdir}", "--noprogress", *coords(port, i)], 2,
                         cache) for i in (0, 1)])
    for rc, _, e in runs:
        assert rc == 0, e[-3000:]
    return [o for _, o, _ in runs]


def params(workdir):
    with np.load(Path(workdir) / "params.npz") as f:
        return [f[k] for k in sorted(f.files, key=lambda s: int(s.split("_")[1]))]


def close(a, b):
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, atol=1e-5, rtol=1e-5)


def test_two_processes_equal_one_and_checkpoints_cross_process_counts(tmp_path, cache):
    ref = one(tmp_path / "one", cache)
    assert "16 steps" in ref

    # written by two processes (the job lost at step 6: latest checkpoint step 4), resumed in one
    out0, out1 = two(tmp_path / "2to1", cache, ["--crash_at=6"])
    assert "process 0: crashed as planned" in out0 and "process 1: crashed as planned" in out1
    assert "step 4:" in out0 and "step 4:" not in out1  # only process 0 logs
    one(tmp_path / "2to1", cache)
    close(params(tmp_path / "one"), params(tmp_path / "2to1"))

    # written by one process, resumed (and finished) by two
    one(tmp_path / "1to2", cache, ["--crash_at=6"])
    out0, out1 = two(tmp_path / "1to2", cache)
    close(params(tmp_path / "one"), params(tmp_path / "1to2"))
    assert "all steps done" in out0 and "step 8:" in out0
    assert "step" not in out1 and "all steps done" not in out1  # process 1 writes no log lines
    result = json.loads((tmp_path / "1to2" / "result.json").read_text())
    assert result["devices"] == 4 and result["steps"] == 16
    records = [(r["step"], r["split"]) for r in map(json.loads, (tmp_path / "1to2" / "metrics.jsonl")
                                                     .read_text().splitlines())]
    assert records == [(s, split) for s in (4, 8, 12, 16) for split in ("train", "valid")]  # one writer


def test_killing_one_process_ends_the_other_with_one_line(tmp_path, cache):
    port = free_port()
    long = ["--config.train.steps=100000", "--config.train.eval_every=40", "--config.train.log_every=10"]
    procs = [start([CONFIG, f"--workdir={tmp_path}", "--noprogress", *coords(port, i), *long], 2,
                   cache, ROOT / "run.py") for i in (0, 1)]

    def past_step_50():  # mid-training, between the saves of steps 40 and 80
        metrics = tmp_path / "metrics.jsonl"
        return metrics.exists() and '"step": 50, "split": "train"' in metrics.read_text()
    try:
        deadline = time.time() + 240
        # killed while the other process waits in a checkpoint's barrier rather than in a
        # collective, JAX's coordination service ends it after timeout_s with its own abort
        # (README: More than one device); here the kill lands mid-training
        while not past_step_50() and time.time() < deadline:
            assert procs[0].poll() is None, procs[0].communicate()[1][-3000:]
            time.sleep(0.5)
        assert time.time() < deadline, "not past step 50 within 240 s"
        procs[1].send_signal(signal.SIGKILL)
        killed = time.time()
        [(rc, _, err), _] = finish(procs, timeout=3 * TIMEOUT_S)
        took = time.time() - killed
    finally:
        for p in procs:
            p.kill()
    assert took < 2 * TIMEOUT_S
    if rc == -signal.SIGABRT and "CoordinationService" in err:
        # on a loaded machine JAX's coordination agent can notice the dead peer before the
        # collective fails, and aborts the process itself (README: More than one device); it
        # still ended promptly
        return
    assert rc == 4, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: process 0 of 2: another process of this job died"), err[-3000:]


def run_py(args, devices=2, timeout=120):
    return start([CONFIG, "--config.train.steps=1", *args], devices, script=ROOT / "run.py"), timeout


def one_line_error(proc, timeout, expected):
    [(rc, out, err)] = finish([proc], timeout)
    assert rc == 2, err[-3000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], err[-3000:]


def test_bad_coordinates_end_in_one_line_within_the_timeout(tmp_path):
    port = free_port()
    # a process whose coordinator never answers (a wrong address or port): after parallel.timeout_s
    t = time.time()
    one_line_error(*run_py([f"--workdir={tmp_path}/a", *coords(port, 1, timeout=5)]),
                   f"no coordinator answered at parallel.coordinator_address='127.0.0.1:{port}' "
                   "within parallel.timeout_s=5")
    assert time.time() - t < 5 + 60
    # process 0 given another machine's address (TEST-NET-1, never local)
    one_line_error(*run_py([f"--workdir={tmp_path}/b", "--config.parallel.coordinator_address=192.0.2.1:1234",
                            "--config.parallel.num_processes=2"]),
                   "is not an address of this machine, but parallel.process_id=0 runs the coordinator")
    # process 0 waiting for a second process that never starts (JAX alone would abort, exit 134)
    t = time.time()
    one_line_error(*run_py([f"--workdir={tmp_path}/e", *coords(free_port(), 0, timeout=5)]),
                   "error: not all parallel.num_processes=2 processes (this is process 0")
    assert time.time() - t < 5 + 60
    # (a process id out of range: test_coordinates_are_checked_before_anything_starts)
    # process counts that disagree (2 and 3): every process says so
    procs = [start([CONFIG, "--config.train.steps=1", f"--workdir={tmp_path}/d", "--noprogress",
                    *coords(port, i, n)], 2, script=ROOT / "run.py") for i, n in ((0, 2), (1, 3))]
    for p in procs:
        one_line_error(p, 120, "parallel.num_processes differs between the processes: [2, 3]")


def test_coordinates_are_checked_before_anything_starts():
    from lstm_research.training import base_config
    from lstm_research.training.validate import check_parallel

    def problems(**kw):
        par = base_config("adding").parallel
        par.update(kw)
        return check_parallel(par)

    assert problems() == [] and problems(coordinator_address="auto") == []
    assert problems(coordinator_address="127.0.0.1:1234", num_processes=2, process_id=1) == []
    assert problems(coordinator_address="host0", num_processes=2) == [
        "parallel.coordinator_address='host0' must be host:port (process 0's host and a free port) "
        "or 'auto'"]
    assert "leave parallel.num_processes and parallel.process_id unset" in problems(
        coordinator_address="auto", num_processes=2)[0]
    assert problems(timeout_s=0) == ["parallel.timeout_s=0 must be an integer >= 1"]
    assert problems(coordinator_address="127.0.0.1:1234", num_processes=2, process_id=2) == [
        "parallel.process_id=2 must be an integer in [0, 1]"]
