"""run.py's usability: ``--print_config``, ``--help`` listing the configs and their variants, the
default workdir per variant, and extending a finished run to a larger budget (bit-identical to a
run given that budget from the start; refused with one line where it could not be).

Everything goes through ``run.main(argv)`` in-process, as tests/test_cli_errors.py does."""
import importlib.util
import inspect
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import run  # noqa: E402
from lstm_research.console import HEARTBEAT_ENV  # noqa: E402


def _module(path):
    spec = importlib.util.spec_from_file_location(f"_cfg_{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _main(*argv):
    return run.main(["run.py", *argv])


# --- --print_config ---------------------------------------------------------------------------
def test_print_config_is_the_resolved_config_and_writes_nothing(tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    path = ROOT / "configs" / "papers" / "hochreiter1997.py"
    rc = _main(f"--config={path}:temporal6a", "--config.train.lr=0.5",
               "--config.model.cell=vanilla:peepholes=false", "--print_config")
    out, err = capfd.readouterr()
    assert rc == 0, err
    expected = _module(path).get_config("temporal6a")
    expected.train.lr = 0.5
    expected.model.cell = "vanilla:peepholes=false"
    assert json.loads(out) == json.loads(expected.to_json_best_effort())
    assert json.loads(out)["task"]["variant"] == "6a"
    assert list(tmp_path.iterdir()) == []  # no runs/ folder, nothing


def test_config_may_come_after_its_overrides_and_run_py_from_another_folder(tmp_path,
                                                                             monkeypatch, capfd):
    monkeypatch.chdir(ROOT)
    for argv in (["--config.train.steps=7", "--config=configs/jsb.py"],
                 ["--config.train.steps=7", "--config", "configs/jsb.py"]):
        assert _main(*argv, "--print_config") == 0, capfd.readouterr().err
        got = json.loads(capfd.readouterr().out)
        assert (got["task"]["name"], got["train"]["steps"]) == ("jsb", 7)
    monkeypatch.chdir(tmp_path)  # the default config is found next to run.py
    assert _main("--config.train.steps=9", "--print_config") == 0, capfd.readouterr().err
    assert json.loads(capfd.readouterr().out)["task"]["name"] == "adding"
    with pytest.raises(SystemExit) as e:
        _main("--help")
    assert e.value.code == 0 and "Configs (--config=PATH[:variant])" in capfd.readouterr().out


def test_print_config_of_a_bad_config_is_an_error(tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(ROOT)
    assert _main("--config.train.steps=0", "--print_config") == 2
    assert capfd.readouterr().err.startswith("error: 1 problem in the config: train.steps=0")


# --- --help -------------------------------------------------------------------------------------
def test_help_lists_every_config_and_its_variants(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as e:
        _main("--help")
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--print_config" in out and "--workdir" in out
    lines = out.splitlines()
    paths = sorted((ROOT / "configs").glob("*.py")) + \
        sorted((ROOT / "configs" / "papers").glob("*.py"))
    assert len(paths) >= 9
    for path in paths:
        rel = str(path.relative_to(ROOT))
        line = next((x for x in lines if x.strip().startswith(rel + " ")), None)
        assert line is not None, rel
        variants = getattr(_module(path), "VARIANTS", None)
        for v in variants or ():
            assert v in line.split("[", 1)[1], (rel, v)
        takes_variant = bool(inspect.signature(_module(path).get_config).parameters)
        assert line.endswith("[no variants]") == (not takes_variant), line
    z = next(x for x in lines if "zaremba2014.py" in x)
    assert "variants: small (default), medium, large" in z
    assert "default 'small'" in next(x for x in lines if x.strip().startswith("configs/ptb.py"))


# --- the default workdir ------------------------------------------------------------------------
@pytest.mark.parametrize("spec,workdir", [
    ("configs/papers/hochreiter1997.py:temporal6a", "runs/hochreiter1997_temporal6a"),
    ("configs/papers/hochreiter1997.py:adding500", "runs/hochreiter1997_adding500"),
    ("configs/papers/hochreiter1997.py", "runs/hochreiter1997_adding100"),  # the default variant
    ("configs/adding.py", "runs/adding"),                                   # no variants
])
def test_default_workdir_names_the_variant(spec, workdir, monkeypatch):
    from lstm_research.training import loop
    monkeypatch.chdir(ROOT)
    seen = {}

    def fake(config, wd, **kw):
        seen["workdir"] = wd
        return {"status": "done"}
    monkeypatch.setattr(loop, "train_and_evaluate", fake)
    assert _main(f"--config={spec}") == 0
    assert seen["workdir"] == workdir
    assert not (ROOT / workdir).exists()


# --- extending a finished run -------------------------------------------------------------------
# a tiny adding run: evaluations every 10 steps, training records every 3 (so the last step of a
# 20-step run, 20, is logged only because it is the last)
TINY = ["--config=configs/adding.py", "--config.task.T=10", "--config.task.batch_size=8",
        "--config.task.eval_size=40", "--config.model.hidden_size=8",
        "--config.train.eval_every=10", "--config.train.log_every=3",
        "--config.train.target=1e-9", "--noprogress"]


def _run(workdir, *extra):
    return _main(*TINY, f"--workdir={workdir}", *extra)


def _comparable(workdir):
    r = json.loads((workdir / "result.json").read_text())
    del r["wall_time"]
    return r, (workdir / "metrics.jsonl").read_bytes()


# an epoch-based task with the state carried across batches: 5 steps per epoch, evaluated at
# each epoch's end (the default cadence), training records every 3 steps
REBER_CONFIG = """
from lstm_research.training import base_config


def get_config():
    c = base_config("continual_reber", batch_size=4, bptt=10, steps_per_epoch=5, eval_size=2,
                    eval_length=100)
    c.model.hidden_size = 8
    c.train.log_every = 3
    c.train.epochs = 2
    return c
"""


def test_extending_a_finished_run_equals_the_longer_run(tmp_path, monkeypatch, capfd):
    """2 epochs, then extended to 4, against 4 from the start: the same result.json (but its
    wall time) and the same metrics.jsonl bytes; the 2-epoch run's training record at its last
    step (10, not a multiple of log_every) is not part of the longer run."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv(HEARTBEAT_ENV, "1e-9")  # a heartbeat at every logged step
    short, long_ = tmp_path / "short", tmp_path / "long"
    (tmp_path / "reber.py").write_text(REBER_CONFIG)

    def reber(workdir, epochs):
        return _main(f"--config={tmp_path / 'reber.py'}", f"--config.train.epochs={epochs}",
                     f"--workdir={workdir}", "--noprogress")
    assert reber(short, 2) == 0
    first = json.loads((short / "result.json").read_text())
    assert first["steps"] == 10 and first["stopped"] == "all steps done"
    capfd.readouterr()
    assert reber(short, 4) == 0  # no --overwrite
    out, err = capfd.readouterr()
    assert f"{short}: extending the run from step 10 to 20 (train.epochs=4)" in out
    assert "\r" not in out + err  # no progress frames when not a terminal
    beats = [x for x in out.splitlines() if x.startswith("step ") and "ETA" in x]
    # one at every logged step (every 3 steps and the last)
    assert [x.split()[1] for x in beats] == ["12/20", "15/20", "18/20", "20/20"], beats
    assert all("steps/s" in x for x in beats) and "valid symbols_to_error" in beats[-1]
    assert json.loads((short / "config.json").read_text())["train"]["epochs"] == 4

    assert reber(long_, 4) == 0
    assert _comparable(short) == _comparable(long_)
    records = [json.loads(x) for x in (long_ / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "valid"] == [5, 10, 15, 20]
    assert 10 not in [r["step"] for r in records if r["split"] == "train"]

    capfd.readouterr()  # the same command again: finished
    assert reber(short, 4) == 0
    assert "already finished" in capfd.readouterr().out
    # a smaller budget is another config
    assert reber(short, 3) == 2
    err = capfd.readouterr().err.splitlines()
    assert len(err) == 1 and "differs in: train.epochs" in err[0] and "not shortened" in err[0]


def _saved_run(workdir, *extra):
    """A workdir holding only the config.json of a run of ``TINY + extra`` (what the static
    refusals look at; nothing is trained)."""
    import run as r
    fv, config = r.parse_command_line(["run.py", *TINY, *extra])
    workdir.mkdir()
    (workdir / "config.json").write_text(config.to_json_best_effort())
    return (workdir / "config.json").read_text()


@pytest.mark.parametrize("before,after,why", [
    (["--config.train.schedule=cosine", "--config.train.steps=20"], ["--config.train.steps=40"],
     "train.schedule='cosine'"),
    (["--config.train.eval_every=0", "--config.train.steps=20"],
     ["--config.train.eval_every=0", "--config.train.steps=40"], "every tenth of its budget"),
    (["--config.train.steps=25"], ["--config.train.steps=40"],
     "ended at step 25, between evaluations (every 10 steps)"),
])
def test_extension_refused_where_the_result_would_differ(before, after, why, tmp_path,
                                                         monkeypatch, capfd):
    monkeypatch.chdir(ROOT)
    wd = tmp_path / "run"
    saved = _saved_run(wd, *before)
    capfd.readouterr()
    assert _run(wd, *[a for a in before if "steps" not in a], *after) == 2
    err = capfd.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: workdir {wd} cannot be extended"), err
    assert why in err[0] and "--overwrite" in err[0]
    assert (wd / "config.json").read_text() == saved
    assert sorted(wd.iterdir()) == [wd / "config.json"]


def test_extension_refused_after_an_early_stop(tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(ROOT)
    wd = tmp_path / "run"
    # MSE below 10 at the first evaluation: stops at step 10 of 30
    assert _run(wd, "--config.train.steps=30", "--config.train.target=10") == 0
    result = (wd / "result.json").read_text()
    assert json.loads(result)["steps"] == 10
    capfd.readouterr()
    assert _run(wd, "--config.train.steps=60", "--config.train.target=10") == 2
    err = capfd.readouterr().err.splitlines()
    assert len(err) == 1 and "stopped early at step 10 (target reached" in err[0], err
    assert "nothing to extend" in err[0] and "would differ" not in err[0]
    assert (wd / "result.json").read_text() == result
    assert json.loads((wd / "config.json").read_text())["train"]["steps"] == 30


def _budget_case(tmp_path, old_train, new_train, other=None):
    from lstm_research.training import base_config
    from lstm_research.training.workdir import extension_of
    old = base_config("continual_reber")  # a task with epochs
    old.train.update(old_train)
    (tmp_path / "config.json").write_text(old.to_json_best_effort())
    new = base_config("continual_reber")
    new.train.update(new_train)
    for k, v in (other or {}).items():
        new[k.split(".")[0]][k.split(".")[1]] = v
    return extension_of(new, tmp_path)


@pytest.mark.parametrize("old,new,other,extends", [
    ({"epochs": 3}, {"epochs": 5}, None, True),
    ({"epochs": 3}, {"epochs": 5}, {"train.checkpoint_every": 7}, True),  # result-neutral
    ({"epochs": 3}, {"epochs": 3}, None, False),                          # the same run
    ({"epochs": 5}, {"epochs": 3}, None, False),                          # shorter
    ({"epochs": 3}, {"epochs": 5}, {"train.lr": 0.5}, False),             # and something else
    ({"epochs": 3}, {"epochs": 3, "steps": 99}, None, False),             # steps unused here
    ({"epochs": 3}, {"epochs": 0, "steps": 5000}, None, False),           # epochs -> steps
    ({"epochs": 0, "steps": 20}, {"epochs": 0, "steps": 40}, None, True),
    ({"epochs": 0, "steps": 40}, {"epochs": 0, "steps": 20}, None, False),
])
def test_which_config_changes_extend_a_run(old, new, other, extends, tmp_path):
    assert (_budget_case(tmp_path, old, new, other) is not None) == extends
