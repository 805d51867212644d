"""Bad command lines of run.py and experiments/evaluate_checkpoint.py: each one exits with
status 2 and one stderr line ``error: ...``, no traceback, and writes nothing to the workdir.

The table runs the entry points' ``main(argv)`` in-process (fast: validation comes before
anything heavy is built); a few cases also run as real processes."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import run  # noqa: E402

from conftest import assert_one_error_line, experiment_script  # noqa: E402

evaluate_checkpoint = experiment_script("evaluate_checkpoint")

# (id, argv after the script, what the message must contain); {wd} is the workdir (not created),
# {tmp} the test's tmp folder, which holds a file ``a_file``, a config ``syntax.py`` with a
# syntax error, and ``no_get_config.py``.
RUN_CASES = [
    ("unknown_key", ["--config.model.hiden_size=3"], "did you mean 'model.hidden_size'"),
    ("unknown_train_key", ["--config.train.stepz=3"], "valid keys under train"),
    ("unknown_top_key", ["--config.foo=1"], "valid keys: model, parallel, seed, task, train"),
    ("key_below_a_leaf", ["--config.model.cell.x=1"], "unknown config key 'model.cell.x'"),
    ("missing_config", ["--config=configs/nope.py"], "config file configs/nope.py not found"),
    ("config_is_folder", ["--config=configs"], "(it is a folder)"),
    ("config_syntax_error", ["--config={tmp}/syntax.py"], "syntax error at line 2"),
    ("config_no_get_config", ["--config={tmp}/no_get_config.py"], "no get_config()"),
    ("variant_on_config_without", ["--config=configs/adding.py:foo"], "has no variants"),
    ("wrong_variant", ["--config=configs/papers/zaremba2014.py:huge"],
     "valid: small, medium, large"),
    ("config_needs_value", ["--config"], "--config needs a value"),
    ("float_for_int", ["--config.train.steps=1.5"], "--config.train.steps=1.5"),
    ("text_for_int", ["--config.train.steps=abc"], "--config.train.steps=abc"),
    ("text_for_float", ["--config.train.lr=fast"], "--config.train.lr=fast"),
    ("steps_zero", ["--config.train.steps=0"], "train.steps=0 must be an integer >= 1"),
    ("steps_negative", ["--config.train.steps=-3"], "train.steps=-3"),
    ("lr_negative", ["--config.train.lr=-1"], "train.lr=-1.0 must be a number > 0"),
    ("lr_zero", ["--config.train.lr=0"], "train.lr=0.0"),
    ("clip_norm_negative", ["--config.train.clip_norm=-1"], "train.clip_norm=-1.0"),
    ("patience_negative", ["--config.train.patience=-1"], "train.patience=-1"),
    ("eval_every_negative", ["--config.train.eval_every=-5"], "train.eval_every=-5"),
    ("log_every_zero", ["--config.train.log_every=0"], "train.log_every=0"),
    ("optimizer", ["--config.train.optimizer=adamw2"], "did you mean 'adam'"),
    ("schedule", ["--config.train.schedule=linear"], "train.schedule='linear'"),
    # refused by the Stack when it is built: checked with the config, before the workdir is
    # written (a run wrote config.json first, and the corrected rerun was refused)
    ("parallel_form_missing", ["--config.model.parallel=true"], "cell 'lstm' has no parallel form"),
    ("fused_unsupported", ["--config.model.fused=true", "--config.model.cell=gru"],
     "fused=True, but the fused path does not support this"),
    ("recurrent_dropout_without_weights", ["--config.model.cell=minlstm",
                                           "--config.model.recurrent_dropout=0.1"],
     "has no recurrent weights"),
    ("schedule_without_decay", ["--config.train.schedule=plateau"],
     "train.schedule='plateau' with train.decay_factor=1 never changes the learning rate"),
    ("tied_sizes", ["--config=configs/ptb.py", "--config.model.tie_embeddings=True",
                    "--config.model.embedding_size=100"],
     "model.tie_embeddings=True needs the embedding size (100: "),
    ("tied_projection", ["--config=configs/ptb.py", "--config.model.tie_embeddings=True",
                         "--config.model.cell=lstmp:proj_size=32"],
     "to equal the top layer's output size (32)"),
    ("input_noise_on_tokens", ["--config=configs/ptb.py", "--config.train.input_noise=0.1"],
     "train.input_noise=0.1 has no effect on task 'ptb'"),
    ("momentum_one", ["--config.train.momentum=1.0"], "train.momentum=1.0"),
    ("epochs_on_step_task", ["--config.train.epochs=3"], "has no epochs"),
    ("target_nan", ["--config.train.target=nan"], "train.target=nan"),
    ("unknown_cell", ["--config.model.cell=lstmm"], "unknown cell 'lstmm'"),
    ("unknown_cell_switch", ["--config.model.cell=lstm:forgot_bias=1"], "forgot_bias"),
    ("hidden_zero", ["--config.model.hidden_size=0"], "model.hidden_size=0"),
    ("dropout_above_one", ["--config.model.dropout=1.5"], "model.dropout=1.5"),
    ("dtype", ["--config.model.dtype=float16"], "model.dtype='float16'"),
    ("batch_zero", ["--config.task.batch_size=0"], "task.batch_size=0"),
    ("sequence_length_zero", ["--config.task.T=0"], "task.T=0"),
    ("task_variant", ["--config.task.variant=lee"], "did you mean 'le'"),
    ("task_fields_of_other_task", ["--config.task.name=copy"], "unknown field(s) variant"),
    ("model_axis_zero", ["--config.parallel.model_axis=0"], "parallel.model_axis=0"),
    ("seed_negative", ["--config.seed=-1"], "seed=-1"),
    ("several_at_once", ["--config.train.steps=0", "--config.train.lr=-1"], "2 problems"),
    ("ptb_batch_larger_than_data", ["--config=configs/ptb.py", "--config.task.batch_size=100000"],
     "gives no batch"),
    ("ptb_data_missing", ["--config=configs/ptb.py", "--config.task.data_dir={tmp}/no_data"],
     "LSTM_RESEARCH_DATA"),
    ("workdir_is_a_file", ["--workdir={tmp}/a_file"], "is a file"),
    ("workdir_below_a_file", ["--workdir={tmp}/a_file/run"], "is a file"),
    ("positional_argument", ["extra"], "unexpected arguments: extra"),
    ("unknown_flag", ["--nosuchflag"], "Unknown command line flag 'nosuchflag'"),
]

EVAL_CASES = [
    ("no_workdir", [], "required: --workdir"),
    ("missing_workdir", ["--workdir={wd}"], "no such folder"),
    ("workdir_is_a_file", ["--workdir={tmp}/a_file"], "no such folder"),
    ("workdir_without_run", ["--workdir={tmp}/empty_run"], "does not hold a run"),
    ("damaged_config_json", ["--workdir={tmp}/bad_json_run"], "not valid JSON"),
    ("no_checkpoint_yet", ["--workdir={tmp}/config_only_run"], "no latest checkpoint"),
    ("no_best_checkpoint", ["--workdir={tmp}/config_only_run", "--which=best"],
     "no best checkpoint"),
    ("bad_which", ["--workdir={tmp}/config_only_run", "--which=worst"], "invalid choice: 'worst'"),
    ("bad_split", ["--workdir={tmp}/config_only_run", "--split=train"], "invalid choice: 'train'"),
    ("positional_argument", ["--workdir={tmp}/config_only_run", "extra"],
     "unrecognized arguments: extra"),
    ("unknown_option", ["--workdir={tmp}/config_only_run", "--step=3"], "unrecognized arguments"),
]


@pytest.fixture
def tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "syntax.py").write_text("def get_config():\n    return {\n")
    (tmp_path / "no_get_config.py").write_text("CONFIG = 1\n")
    (tmp_path / "empty_run").mkdir()
    (tmp_path / "bad_json_run").mkdir()
    (tmp_path / "bad_json_run" / "config.json").write_text("{not json")
    (tmp_path / "config_only_run").mkdir()
    from lstm_research.training import base_config
    (tmp_path / "config_only_run" / "config.json").write_text(
        base_config("adding").to_json_best_effort())
    return tmp_path


def _snapshot(folder: Path):
    return sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*"))


def _check(main, argv, expect, tmp, capfd):
    wd = tmp / "wd"
    argv = [a.format(wd=wd, tmp=tmp) for a in argv]
    before = _snapshot(tmp)
    capfd.readouterr()
    rc = main(argv)
    out, err = capfd.readouterr()
    assert_one_error_line(rc, out, err, expect)
    assert _snapshot(tmp) == before, "something was written"
    assert not wd.exists()


@pytest.mark.parametrize("argv,expect", [c[1:] for c in RUN_CASES], ids=[c[0] for c in RUN_CASES])
def test_run_py_bad_command_line(argv, expect, tmp, capfd, monkeypatch):
    if any("no_data" in a for a in argv):  # no TFDS cache either: the raw files are needed
        monkeypatch.setenv("HOME", str(tmp / "a_file" / "home"))
        monkeypatch.delenv("TFDS_DATA_DIR", raising=False)
    elif any("ptb" in a for a in argv):
        from lstm_research.data.files import default_tfds_dir
        if not (default_tfds_dir() / "lstm_research_ptb").is_dir():
            pytest.skip("needs the prepared PTB (building it prints progress bars)")
    if "--workdir" not in " ".join(argv):
        argv = argv + ["--workdir={wd}"]
    _check(lambda a: run.main(["run.py", *a]), argv, expect, tmp, capfd)


@pytest.mark.parametrize("argv,expect", [c[1:] for c in EVAL_CASES],
                         ids=[c[0] for c in EVAL_CASES])
def test_evaluate_checkpoint_bad_command_line(argv, expect, tmp, capfd):
    _check(evaluate_checkpoint.main, argv, expect, tmp, capfd)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_run_py_unwritable_workdir(tmp, capfd):
    (tmp / "ro").mkdir(mode=0o500)
    _check(lambda a: run.main(["run.py", *a]), ["--workdir={tmp}/ro/run"], "not writable", tmp,
           capfd)


#: a few of the cases above as processes too, one per stage that refuses (flags, the config
#: file, its values) and evaluate_checkpoint.py
@pytest.mark.parametrize("script,argv", [
    ("run.py", ["--config.model.hiden_size=3"]),
    ("run.py", ["--config=configs/nope.py"]),
    ("run.py", ["--config.train.steps=0"]),      # was: a "done" result of the initial weights
    ("experiments/evaluate_checkpoint.py", ["--workdir=does/not/exist"]),
])
def test_as_a_process_one_line_and_exit_2(script, argv, tmp_path):
    proc = subprocess.run([sys.executable, script, *argv, f"--workdir={tmp_path / 'wd'}"]
                          if script == "run.py" else [sys.executable, script, *argv],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith("error: "), proc.stderr
    assert not (tmp_path / "wd").exists()


def test_a_bug_keeps_its_traceback_and_nan_exits_3(tmp, monkeypatch, capfd):
    from lstm_research.training import loop

    def bug(*a, **k):
        raise ValueError("a bug deep inside the run")
    monkeypatch.setattr(loop, "train_and_evaluate", bug)
    with pytest.raises(ValueError, match="a bug deep inside"):  # not swallowed as exit 2
        run.main(["run.py", f"--workdir={tmp / 'wd'}"])

    def nan(*a, **k):
        raise loop.NonFiniteLoss("loss is nan at step 5; stopping; no checkpoint was saved yet")
    monkeypatch.setattr(loop, "train_and_evaluate", nan)
    capfd.readouterr()
    assert run.main(["run.py", f"--workdir={tmp / 'wd'}"]) == 3
    err = capfd.readouterr().err.splitlines()
    assert err == ["error: loss is nan at step 5; stopping; no checkpoint was saved yet"]


def test_workdir_of_another_config_is_one_line(tmp, capfd):
    wd = tmp / "other"
    wd.mkdir()
    (wd / "config.json").write_text(json.dumps({"seed": 1}))
    capfd.readouterr()
    # WorkdirMismatch is raised by the Trainer, after validation: still one line, exit 2
    assert run.main(["run.py", f"--workdir={wd}", "--config.train.steps=1"]) == 2
    err = capfd.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: workdir") and "--overwrite" in err[0]


def test_run_py_unwritable_workdir_as_seen_by_os_access(tmp, capfd, monkeypatch):
    """The same check where the tests run as root (who can write anywhere)."""
    from lstm_research.training import validate
    real = os.access
    monkeypatch.setattr(validate.os, "access",
                        lambda p, mode: False if str(p) == str(tmp / "ro") else real(p, mode))
    (tmp / "ro").mkdir()
    _check(lambda a: run.main(["run.py", *a]), ["--workdir={tmp}/ro/run"], "not writable", tmp,
           capfd)
