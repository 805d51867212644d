"""Compiled programs stored on disk (lstm_research/training/programs.py): a run loads what an
earlier one compiled instead of tracing and compiling it, with the same results bit for bit; a
changed fingerprint compiles anew; an unreadable store file is compiled again and replaced; the
fingerprint is the same in every process, so that processes share the store."""
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from lstm_research.training import loop, programs
from lstm_research.training.checkpoint import Checkpoints
from lstm_research.training.loop import Trainer

from conftest import small_config

REPO = Path(__file__).resolve().parents[1]


def config():
    # variable-length sequences, several updates per call, input noise, padded units: the
    # train-steps, evaluation and init programs of a Greff trial
    c = small_config("reber", steps=24, eval_every=8, hidden_size=5)
    c.model.width_multiple = 8
    c.train.optimizer, c.train.lr, c.train.input_noise = "nesterov", 0.05, 0.2
    c.train.steps_per_call = 4
    return c


def run(workdir):
    """A fresh run in ``workdir``, as a new process would start it (no program in memory):
    its ``(metrics.jsonl, result without timings, final params)`` and the programs it compiled
    and loaded."""
    loop.forget_programs()
    before = dict(programs.COUNTS)
    c = config()
    result = Trainer(c, workdir, progress=False).run()
    counts = {k: programs.COUNTS[k] - before[k] for k in before}
    like = Trainer(c, workdir / "_like", progress=False).init_state()[0]
    params, _ = Checkpoints(workdir).restore_latest(like)
    result.pop("wall_time", None)
    return ((workdir / "metrics.jsonl").read_text(), json.dumps(result, sort_keys=True),
            [np.asarray(p) for p in jax.tree.leaves(params)]), counts


def assert_same(a, b):
    assert a[0] == b[0] and a[1] == b[1]
    for x, y in zip(a[2], b[2], strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.fixture
def store(tmp_path, monkeypatch):
    where = tmp_path / "store"
    monkeypatch.setattr(programs, "store_dir", lambda: where)
    yield where
    loop.forget_programs()


def test_a_run_loads_what_an_earlier_run_stored_with_the_same_bits(tmp_path, store, monkeypatch):
    with monkeypatch.context() as m:  # no store: compiled as jax.jit compiles
        m.setattr(programs, "store_dir", lambda: None)
        plain, counts = run(tmp_path / "plain")
    assert counts["loaded"] == 0 and counts["compiled"] >= 3  # init, train steps, evaluation
    first, counts = run(tmp_path / "first")
    stored = sorted(store.glob("*/*" + programs.SUFFIX))
    assert counts == {"compiled": len(stored), "loaded": 0} and len(stored) >= 3
    second, counts = run(tmp_path / "second")
    assert counts == {"compiled": 0, "loaded": len(stored)}
    assert_same(first, plain)
    assert_same(second, plain)
    # another fingerprint (changed source, JAX, CPU): nothing of the store is taken
    monkeypatch.setattr(programs, "fingerprint", lambda: "another")
    other, counts = run(tmp_path / "other")
    assert counts == {"compiled": len(stored), "loaded": 0}
    assert len(list(store.glob("*/*" + programs.SUFFIX))) == 2 * len(stored)
    assert_same(other, plain)


def test_an_unreadable_store_file_is_compiled_again_and_replaced(tmp_path, store):
    first, _ = run(tmp_path / "first")
    stored = sorted(store.glob("*/*" + programs.SUFFIX))
    for path in stored:  # e.g. a disk that filled up while it was written
        path.write_bytes(path.read_bytes()[:100])
    again, counts = run(tmp_path / "again")
    assert counts == {"compiled": len(stored), "loaded": 0}
    assert_same(again, first)
    third, counts = run(tmp_path / "third")
    assert counts == {"compiled": 0, "loaded": len(stored)}
    assert_same(third, first)


def test_the_store_is_in_the_persistent_compilation_cache(tmp_path):
    old = jax.config.jax_compilation_cache_dir
    try:
        jax.config.update("jax_compilation_cache_dir", str(tmp_path))
        assert programs.store_dir() == tmp_path / "executables"
        jax.config.update("jax_compilation_cache_dir", None)
        assert programs.store_dir() is None
    finally:
        jax.config.update("jax_compilation_cache_dir", old)


def test_every_process_computes_the_same_fingerprint():
    code = "from lstm_research.training import programs; print(programs.fingerprint())"
    prints = {subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                             text=True, check=True, timeout=120).stdout.strip()
              for _ in range(2)}
    assert len(prints) == 1 and len(prints.pop()) == 64


def test_a_new_process_runs_the_programs_an_earlier_process_stored(tmp_path):
    # through run.py, as a sweep's workers and reruns do; the LSTM's orthogonal init runs a
    # LAPACK QR, which crashed a process that loaded it before lowering one itself
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "cache"),
           "JAX_PLATFORMS": "cpu"}
    code = ("import json, sys, run; from lstm_research.training import programs; "
            "rc = run.main(sys.argv[1:]); print(json.dumps({'rc': rc, **programs.COUNTS}))")
    outs = []
    for name in ("first", "second"):
        argv = ["run.py", "--config=configs/adding.py", "--config.task.T=12",
                "--config.task.batch_size=16", "--config.task.eval_size=64",
                "--config.model.hidden_size=8", "--config.train.steps=20",
                "--config.train.eval_every=10", f"--workdir={tmp_path / name}", "--noprogress"]
        out = subprocess.run([sys.executable, "-c", code, *argv], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        outs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    stored = len(list((tmp_path / "cache" / "executables").glob("*/*" + programs.SUFFIX)))
    assert stored >= 3  # init, train step, evaluation step
    assert outs == [{"rc": 0, "compiled": stored, "loaded": 0},
                    {"rc": 0, "compiled": 0, "loaded": stored}]
    a, b = (json.loads((tmp_path / n / "result.json").read_text()) for n in ("first", "second"))
    assert {**a, "wall_time": 0} == {**b, "wall_time": 0}
    assert ((tmp_path / "first" / "metrics.jsonl").read_text()
            == (tmp_path / "second" / "metrics.jsonl").read_text())


def test_a_sweeps_trials_in_processes_of_their_own_share_its_stored_programs(tmp_path):
    # experiments/sweep.py without --workers: one process per trial; the second trial (another
    # seed: the same programs) loads what the first stored, so it rewrites no store file
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    sweep = tmp_path / "sw"
    cmd = [sys.executable, str(REPO / "experiments" / "sweep.py"), "--config=configs/adding.py",
           f"--sweep_dir={sweep}", "--no_progress", "--no_plots", "--grid", "seed=0,1"]
    for f in ("task.T=12", "task.batch_size=16", "task.eval_size=64", "model.hidden_size=8",
              "train.steps=20", "train.eval_every=10"):
        cmd += ["--set", f]
    out = subprocess.run(cmd, cwd=REPO, env={**env, "JAX_PLATFORMS": "cpu"},
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    stored = list((sweep / ".jax_cache" / "executables").glob("*/*" + programs.SUFFIX))
    assert len(stored) == 3  # init, train step, evaluation step
    first, second = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name[0].isdigit())
    started = (second / "config.json").stat().st_mtime_ns  # written before it compiles anything
    assert max(p.stat().st_mtime_ns for p in stored) < started
    a, b = (json.loads((d / "result.json").read_text()) for d in (first, second))
    assert a["status"] == b["status"] == "done" and a["test"] != b["test"]  # two seeds


def test_a_changed_jax_flag_changes_the_fingerprint():
    before = programs.fingerprint()
    old = jax.config.jax_default_matmul_precision
    try:
        jax.config.update("jax_default_matmul_precision", "highest")
        assert programs.fingerprint() != before
    finally:
        jax.config.update("jax_default_matmul_precision", old)
    assert programs.fingerprint() == before


def test_another_version_of_a_traced_library_changes_the_fingerprint(monkeypatch):
    # an upgraded optax (or Flax, NumPy) traces other programs: its executables must not load
    before = programs.fingerprint()
    versions = dict(programs._traced_libraries())
    assert versions["optax"] and versions["flax"] and versions["numpy"]
    monkeypatch.setattr(programs, "_traced_libraries",
                        lambda: tuple({**versions, "optax": "0.0.1"}.items()))
    assert programs.fingerprint() != before


def test_the_store_keeps_the_last_versions_and_deletes_older_ones_with_their_jax_entries(
        tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    root = cache / "executables"
    monkeypatch.setattr(programs, "store_dir", lambda: root)
    programs._use_version.cache_clear()
    # the layout before versions had folders, with its program's entry in JAX's cache; and files
    # that are not the store's
    root.mkdir(parents=True)
    flat = root / ("0" * 64 + programs.SUFFIX)
    flat.write_bytes(b"old")
    (cache / f"jit_f_{'0' * 16}-9f-cache").write_bytes(b"old")
    (root / "notes").mkdir()
    (cache / "jit_other-9f-cache").write_bytes(b"keep")

    def use(version, x):
        monkeypatch.setattr(programs, "fingerprint", lambda: version * 64)
        before = dict(programs.COUNTS)
        out = programs.compiled("f", "x + 1", lambda a: a + 1, (np.float32(x),))
        assert float(out(np.float32(x))) == x + 1
        return {k: programs.COUNTS[k] - before[k] for k in before}

    stored = {}
    for i, v in enumerate("abcd"):
        assert use(v, i) == {"compiled": 1, "loaded": 0}
        [stored[v]] = (root / (v * 16)).glob("*" + programs.SUFFIX)
        # its entries in JAX's cache: under its own name, and compiled once more under a fresh one
        for entry in (f"jit_f_{stored[v].stem[:16]}-9f-cache",
                      f"jit_f_{stored[v].stem[:16]}_123_456-9f-cache"):
            (cache / entry).write_bytes(b"x")
        os.utime(root / (v * 16), (1000 + i, 1000 + i))  # used in the order a, b, c, d
        assert not flat.exists() and not (cache / f"jit_f_{'0' * 16}-9f-cache").exists()
    # d's first use deleted a (the least recently used of the three others): its folder and its
    # two entries in JAX's cache; b, c and d are whole
    assert sorted(p.name for p in root.iterdir()) == sorted(["notes"] + [v * 16 for v in "bcd"])
    for v in "abcd":
        assert len(list(cache.glob(f"jit_f_{stored[v].stem[:16]}*"))) == (0 if v == "a" else 2)
    assert (cache / "jit_other-9f-cache").read_bytes() == b"keep"
    assert use("c", 0) == {"compiled": 0, "loaded": 1}
    assert use("a", 0) == {"compiled": 1, "loaded": 0}  # deleted: compiled and stored again
    assert stored["a"].exists()
    programs._use_version.cache_clear()
