"""Issue 11, items 1-5 and 7: resuming after a kill between the best and the latest save, NaN
at the first evaluation, damaged checkpoints (checksums, fallback), a half-written
metrics.jsonl line, nonsense config values, and nothing written by a failed start."""
import glob
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_research.errors import UserError
from lstm_research.training import base_config, validate
from lstm_research.training.checkpoint import Checkpoints, check_files
from lstm_research.training.loop import NonFiniteLoss, Trainer


ROOT = Path(__file__).resolve().parents[1]


def small():
    c = base_config("adding", T=12, batch_size=16, eval_size=64)
    c.model.hidden_size = 8
    c.train.steps = 30
    c.train.eval_every = 10
    c.train.checkpoint_every = 5
    c.train.log_every = 5
    c.train.lr = 1e-2
    return c


class Crash(Exception):
    pass


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    wd = tmp_path_factory.mktemp("ref")
    t = Trainer(small(), wd, progress=False)
    result = t.run()
    like = t.init_state()[0]
    arrays, _ = Checkpoints(wd).restore_latest(like)
    return {"result": result, "arrays": arrays, "like": like,
            "metrics": (wd / "metrics.jsonl").read_text()}


def _crash_after_steps(trainer, n):
    real, count = trainer.train_step, [0]

    def step(*a):
        count[0] += 1
        if count[0] > n:
            raise Crash()
        return real(*a)
    trainer.train_step = step


def _assert_same_as_reference(wd, reference):
    arrays, _ = Checkpoints(wd).restore_latest(reference["like"])
    for a, b in zip(jax.tree.leaves(reference["arrays"]), jax.tree.leaves(arrays)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    result = json.loads((wd / "result.json").read_text())
    for k in ("valid", "test", "best_step", "steps"):
        assert result[k] == reference["result"][k], k
    assert (wd / "metrics.jsonl").read_text() == reference["metrics"]


# --- item 1: best ahead of latest -----------------------------------------------------------
def test_kill_between_best_and_latest_save_resumes_identically(tmp_path, reference,
                                                              monkeypatch):
    real_best = Checkpoints.save_best

    def save_best_then_die(self, step, *a, **k):
        real_best(self, step, *a, **k)
        if step == 20:
            raise Crash()  # as a kill right after best/20, before latest/20
    monkeypatch.setattr(Checkpoints, "save_best", save_best_then_die)
    with pytest.raises(Crash):
        Trainer(small(), tmp_path, progress=False).run()
    monkeypatch.undo()
    ck = Checkpoints(tmp_path)
    assert ck.best.latest_step() == 20 and ck.latest.latest_step() == 15  # best ahead
    ck.close()
    for _ in range(2):  # idempotent: a rerun of a finished run is fine too
        Trainer(small(), tmp_path, progress=False).run()
    _assert_same_as_reference(tmp_path, reference)


def test_resume_after_the_latest_step_folder_is_deleted(tmp_path, reference):
    t = Trainer(small(), tmp_path, progress=False)
    _crash_after_steps(t, 12)
    with pytest.raises(Crash):
        t.run()
    shutil.rmtree(tmp_path / "checkpoints" / "latest" / "10")  # best/10 stays, latest is 5
    Trainer(small(), tmp_path, progress=False).run()
    _assert_same_as_reference(tmp_path, reference)


# --- item 2: NaN at the first evaluation ----------------------------------------------------
def test_nan_at_first_evaluation_is_not_saved_as_best(tmp_path):
    config = small()
    config.train.checkpoint_every = 0
    t = Trainer(config, tmp_path, progress=False)
    real = t.train_step

    def poisoned(params, *a):
        out = real(params, *a)
        return (jax.tree.map(lambda p: p * jnp.nan, out[0]),) + out[1:]  # params after step
    t.train_step = poisoned
    with pytest.raises(NonFiniteLoss) as e:
        t.run()
    assert "None" not in str(e.value) and "no checkpoint was saved yet" in str(e.value)
    ck = Checkpoints(tmp_path)
    assert ck.best.all_steps() == [] and ck.latest.all_steps() == []
    ck.close()
    result = Trainer(config, tmp_path, progress=False).run()  # the rerun is not wedged
    assert result["status"] == "done" and np.isfinite(result["valid"]["mse"])


def test_a_nan_validation_score_does_not_reach_the_target(tmp_path):
    # finite params, a NaN metric (an overflow in the forward pass): the run stopped as if it
    # had succeeded ("target reached: valid mse nan")
    config = small()
    config.train.target = 0.5
    t = Trainer(config, tmp_path, progress=False)
    real = t.evaluate
    t.evaluate = lambda params, split: {**real(params, split), "mse": float("nan")}
    result = t.run()
    assert "target" not in result["stopped"] and result["steps"] == config.train.steps
    assert result["best_step"] == -1


# --- item 3: damaged checkpoints --------------------------------------------------------------
def _crashed_run(tmp_path):
    t = Trainer(small(), tmp_path, progress=False)
    _crash_after_steps(t, 17)
    with pytest.raises(Crash):
        t.run()
    assert Checkpoints(tmp_path).latest.all_steps() == [10, 15]  # two kept
    return tmp_path / "checkpoints" / "latest"


def _flip_bits(path):
    """Flip one bit in every 16 bytes: an ocdbt data file also holds bytes that a restore never
    reads, so a few flips may miss the arrays (and the damage would rightly go unnoticed)."""
    b = bytearray(path.read_bytes())
    for i in range(0, len(b), 16):
        b[i] ^= 1 << (i // 16 % 8)
    path.write_bytes(bytes(b))


def _resume_in_fresh_process(wd):
    """Resume as a user would, in a new process: within the process that wrote a checkpoint,
    tensorstore may serve reads from its cache and never see the damage on disk."""
    code = ("import sys; sys.path.insert(0, 'tests'); from test_reliability import small; "
            "from lstm_research.training.loop import Trainer; "
            "Trainer(small(), sys.argv[1], progress=False).run()")
    return subprocess.run([sys.executable, "-c", code, str(wd)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("damage", ["flip_bits", "truncate", "delete_data", "delete_meta"])
def test_damaged_latest_step_falls_back_to_the_previous_one(tmp_path, reference, damage):
    latest = _crashed_run(tmp_path)
    # every data file of the step: a restore need not read all of one file, nor every file
    files = [Path(g) for g in glob.glob(str(latest / "15" / "arrays" / "**" / "d" / "*"),
                                        recursive=True)]
    assert files
    for f in files:
        if damage == "flip_bits":
            _flip_bits(f)
        elif damage == "truncate":
            f.write_bytes(f.read_bytes()[:16])
        elif damage == "delete_data":
            f.unlink()
    if damage == "delete_meta":
        (latest / "15" / "meta" / "metadata").unlink()
    out = _resume_in_fresh_process(tmp_path)
    assert out.returncode == 0, out.stderr
    err = [line for line in out.stderr.splitlines() if line.startswith("warning:")]
    assert len(err) == 1 and "checkpoint step 15 is damaged" in err[0], out.stderr
    assert "Traceback" not in out.stderr, out.stderr  # one line, not tensorstore's noise
    assert (tmp_path / "checkpoints" / "corrupt" / "latest_15_0").is_dir()
    _assert_same_as_reference(tmp_path, reference)


@pytest.mark.parametrize("gone", ["best_step", "every_best"])
def test_a_lost_best_checkpoint_reports_one_steps_valid_and_test(tmp_path, gone, capfd):
    # the test metrics were those of another step's parameters than best_step and valid said
    config = small()
    first = Trainer(config, tmp_path, progress=False).run()
    best = sorted(int(p.name) for p in (tmp_path / "checkpoints" / "best").iterdir()
                  if p.name.isdigit())
    assert first["best_step"] == best[-1] and len(best) == 2
    valid_at = {r["step"]: {k: v for k, v in r.items() if k not in ("step", "split")}
                for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())
                if r["split"] == "valid"}
    (tmp_path / "result.json").unlink()
    for step in (best if gone == "every_best" else best[-1:]):
        shutil.rmtree(tmp_path / "checkpoints" / "best" / str(step))
    capfd.readouterr()
    again = Trainer(config, tmp_path, progress=False).run()
    step = best[0] if gone == "best_step" else config.train.steps
    assert again["best_step"] == step and again["valid"] == valid_at[step]
    assert f"best checkpoint of step {best[-1]} is damaged or gone" in again["best_fallback"]
    assert "warning: the best checkpoint" in capfd.readouterr().err


def test_no_intact_checkpoint_left_is_a_clear_error(tmp_path):
    latest = _crashed_run(tmp_path)
    for step in ("10", "15"):  # every data file of both steps
        for f in glob.glob(str(latest / step / "arrays" / "**" / "d" / "*"), recursive=True):
            _flip_bits(Path(f))
    out = _resume_in_fresh_process(tmp_path)
    assert out.returncode != 0
    assert re.search(r"CheckpointError: no intact checkpoint left in .*step 15: .*latest/15/arrays"
                     r"\S*:? (checksum mismatch|unreadable).*step 10: .*latest/10/arrays",
                     out.stderr), out.stderr


def test_checkpoint_records_checksums_and_refuses_non_finite(tmp_path):
    ck = Checkpoints(tmp_path)
    arrays = {"params": {"w": jnp.arange(6.0).reshape(2, 3)}, "carries": jnp.ones(2)}
    ck.save_latest(1, arrays, {"step": 1})
    meta = json.loads((tmp_path / "checkpoints/latest/1/meta/metadata").read_text())
    assert set(meta["checksums"]) == {"['params']['w']", "['carries']"}
    ck.save_latest(1, arrays, {"step": 1})  # idempotent
    assert not (tmp_path / "checkpoints/corrupt").exists()
    data = next(p for p in (tmp_path / "checkpoints/latest/1").rglob("d/*"))
    _flip_bits(data)  # same meta, damaged file: the save is redone, the damaged one kept aside
    ck.save_latest(1, arrays, {"step": 1})
    assert (tmp_path / "checkpoints/corrupt/latest_1_0").is_dir()
    check_files(tmp_path / "checkpoints/latest/1")
    with pytest.raises(Exception, match="non-finite"):
        ck.save_best(2, {"params": {"w": jnp.array([jnp.nan])}}, {"step": 2})
    assert ck.best.all_steps() == []


# --- item 4: half-written metrics line ------------------------------------------------------
def test_partial_last_metrics_line_is_dropped_on_resume(tmp_path, reference):
    t = Trainer(small(), tmp_path, progress=False)
    _crash_after_steps(t, 22)
    with pytest.raises(Crash):
        t.run()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 25, "split": "tra')
    Trainer(small(), tmp_path, progress=False).run()
    _assert_same_as_reference(tmp_path, reference)


# --- item 5: nonsense numbers -----------------------------------------------------------------
def test_all_config_problems_are_reported_at_once():
    c = small()
    c.train.steps, c.train.lr, c.train.clip_norm, c.train.patience = 0, -1.0, -1.0, -1
    c.train.eval_every, c.train.log_every, c.model.dropout = -5, 0, 1.5
    c.task.batch_size, c.parallel.model_axis = 0, 0
    with pytest.raises(UserError) as e:
        validate.validate_config(c)
    msg = str(e.value)
    assert msg.startswith("9 problems in the config")
    for key in ("train.steps=0", "train.lr=-1.0", "train.clip_norm=-1.0", "train.patience=-1",
                "train.eval_every=-5", "train.log_every=0", "model.dropout=1.5",
                "task.batch_size=0", "parallel.model_axis=0"):
        assert key in msg, key
    assert "\n" not in msg
    validate.validate_config(small())  # a good config passes


# --- item 7: nothing written by a failed start ----------------------------------------------
def test_failed_start_writes_nothing(tmp_path):
    c = small()
    c.model.cell = "lstmm"
    with pytest.raises(ValueError, match="unknown cell"):
        Trainer(c, tmp_path / "wd", progress=False)
    assert not (tmp_path / "wd").exists()


# --- issue 16 item 3: fewer checkpoint writes, same guarantees ---------------------------------
def _sparse(secs):
    c = small()
    c.train.checkpoint_every = 0
    c.train.checkpoint_secs = secs
    return c


def test_checkpoint_secs_writes_less_and_ends_identically(tmp_path, reference):
    Trainer(_sparse(1e6), tmp_path, progress=False).run()
    _assert_same_as_reference(tmp_path, reference)
    ck = Checkpoints(tmp_path)
    assert ck.latest.all_steps() == [30]  # only at the end: the interval never passed
    assert ck.best.latest_step() == reference["result"]["best_step"]
    ck.close()
    # when checkpoints are written is not part of what a run computes: not a config mismatch
    assert Trainer(small(), tmp_path, progress=False).run()["test"] == reference["result"]["test"]


def test_kill_before_the_first_sparse_checkpoint_restarts_and_ends_identically(tmp_path,
                                                                              reference):
    t = Trainer(_sparse(1e6), tmp_path, progress=False)
    _crash_after_steps(t, 25)
    with pytest.raises(Crash):
        t.run()
    ck = Checkpoints(tmp_path)
    # best of steps 10 and 20 was found but waits for the next latest save: nothing on disk
    assert ck.latest.all_steps() == [] and ck.best.all_steps() == []
    ck.close()
    Trainer(_sparse(1e6), tmp_path, progress=False).run()
    _assert_same_as_reference(tmp_path, reference)


def test_checkpoint_secs_is_validated():
    c = _sparse(-1.0)
    with pytest.raises(UserError, match=r"train.checkpoint_secs=-1.0 must be a number >= 0"):
        validate.validate_config(c)


_TWO_SIGTERMS = """
import os, signal, sys
sys.path.insert(0, 'tests')
from test_reliability import small
from lstm_research.training import checkpoint, loop
validate, close = loop.Trainer._validate, checkpoint.Checkpoints.close

def first_sigterm(self, *a):  # at the first evaluation: the run stops after saving
    validate(self, *a)
    os.kill(os.getpid(), signal.SIGTERM)

def second_sigterm(self):  # as the stopped run shuts down (a cluster's cancel, then the launcher)
    os.kill(os.getpid(), signal.SIGTERM)
    close(self)

loop.Trainer._validate, checkpoint.Checkpoints.close = first_sigterm, second_sigterm
result = loop.Trainer(small(), sys.argv[1], progress=False).run()
sys.exit(143 if result["status"] == "interrupted" else 1)
"""


def test_a_second_sigterm_while_a_stopped_run_shuts_down_is_ignored(tmp_path, reference):
    """scancel signals every process of a Slurm job and the trial's launcher forwards its own
    SIGTERM: a second one after the run stopped (saved) must not kill the process with the
    default action (status -15 instead of 143, the trial then counted as failed, not
    interrupted). The run resumes to the reference's result."""
    out = subprocess.run([sys.executable, "-c", _TWO_SIGTERMS, str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 143, (out.returncode, out.stderr[-2000:])
    assert Checkpoints(tmp_path).latest.latest_step() == 10
    Trainer(small(), tmp_path, progress=False).run()
    _assert_same_as_reference(tmp_path, reference)
