"""Same config, same environment -> the same run, bit for bit, in separate processes (as sweep
trials run). What is *not* covered by that guarantee (visible CPU count, CPU ISA, jax version)
is recorded in result.json["numerics"]; see lstm_research/numerics.py."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lstm_research import numerics

ROOT = Path(__file__).resolve().parents[1]

# the fused LSTM path and a variable-length task (temporal order: masked sums over time x batch,
# where XLA's CPU reductions split by thread count), cut to a few steps
ARGS = ["--config=configs/papers/hochreiter1997.py:temporal6a", "--config.seed=3",
        "--config.model.hidden_size=16", "--config.task.eval_size=64",
        "--config.train.steps=12", "--config.train.eval_every=6", "--config.train.log_every=2",
        "--config.train.target=-1.0", "--progress=false"]

_DUMP = """
import sys, json, numpy as np, orbax.checkpoint as ocp
from pathlib import Path
root = Path(sys.argv[1]) / "checkpoints" / "latest"
step = max(int(p.name) for p in root.iterdir() if p.name.isdigit())
tree = ocp.PyTreeCheckpointer().restore(str(root / str(step) / "arrays"))
import jax
np.savez(sys.argv[2], **{jax.tree_util.keystr(k): np.asarray(v)
                         for k, v in jax.tree_util.tree_leaves_with_path(tree["params"])})
"""


def _run(workdir, env=None, cpus=None):
    # a compilation cache of its own: a run that loaded another's executables (the suite's shared
    # cache, or the program store inside it) would compare them with themselves
    env = {**os.environ, "PYTHONPATH": str(ROOT),
           "JAX_COMPILATION_CACHE_DIR": str(Path(workdir).parent / f"{Path(workdir).name}_cache"),
           **(env or {})}
    cmd = [sys.executable, "run.py", *ARGS, f"--workdir={workdir}"]
    if cpus:  # pin in a fresh interpreter that then becomes run.py (no fork of this JAX process)
        cmd = [sys.executable, "-c", f"import os, sys; os.sched_setaffinity(0, {set(cpus)!r}); "
               "os.execv(sys.argv[1], sys.argv[1:])", *cmd]
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)
    subprocess.run([sys.executable, "-c", _DUMP, str(workdir), str(workdir / "params.npz")],
                   cwd=ROOT, env=env, check=True, capture_output=True, timeout=120)
    result = json.loads((workdir / "result.json").read_text())
    result.pop("wall_time")
    return ((workdir / "metrics.jsonl").read_text(), result,
            dict(np.load(workdir / "params.npz")))


def test_two_processes_same_config_give_identical_metrics_and_params(tmp_path):
    m1, r1, p1 = _run(tmp_path / "a")
    # a different hash seed: nothing may depend on set/dict-of-str iteration order
    m2, r2, p2 = _run(tmp_path / "b", {"PYTHONHASHSEED": "12345"})
    assert m1.count("\n") >= 6 + 2
    assert m1 == m2
    assert r1 == r2
    assert p1.keys() == p2.keys() and p1
    for k in p1:
        np.testing.assert_array_equal(p1[k], p2[k], err_msg=k)
    assert r1["numerics"] == numerics.fingerprint()


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to compare with one")
def test_one_cpu_and_all_cpus_give_identical_results(tmp_path):
    """XLA splits a large reduction into one partial sum per thread; the fused LSTM's bias
    gradient (a sum over time x batch) is computed as a matmul, which does not depend on the
    thread count here, so a trial pinned to one CPU (as sweeps may run them) equals one that sees
    them all. This failed before (the runs parted from step 8 on)."""
    m_all, r_all, p_all = _run(tmp_path / "all")
    m_one, r_one, p_one = _run(tmp_path / "one", cpus={min(os.sched_getaffinity(0))})
    assert m_all == m_one
    for k in p_all:
        np.testing.assert_array_equal(p_all[k], p_one[k], err_msg=k)
    assert r_one["numerics"]["visible_cpus"] == 1 < r_all["numerics"]["visible_cpus"]
    stored = lambda run: sorted(p.name for p in (tmp_path / f"{run}_cache").rglob("*.exe"))
    assert stored("one") and stored("all")  # each compiled its own


def test_fingerprint_names_what_changes_cpu_results():
    fp = numerics.fingerprint()
    assert set(fp) == {"visible_cpus", "cpu", "jax", "jaxlib", "backend", "xla_flags"}
    assert fp["visible_cpus"] >= 1 and fp["jax"]
