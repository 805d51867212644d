"""A sweep is checked against its trial config before anything runs; one value parser; one-way imports."""

import ast
from pathlib import Path

import pytest

from lstm_research import cells
from lstm_research.cells.base import parse_switch_value
from lstm_research.errors import UserError
from lstm_research.sweeps.check import check_spec, load_trial_config
from lstm_research.sweeps.scheduler import run_sweep
from lstm_research.sweeps.spec import SweepSpecError, parse_value, spec_from_strings
from lstm_research.sweeps.sweepdir import SweepDirError

from conftest import assert_one_error_line, experiment_script

REPO = Path(__file__).resolve().parents[1]


def _check(config="configs/adding.py", **kw):
    check_spec(spec_from_strings(config, **kw), REPO)


# ------------------------------------------------------------------------------ keys and values


def test_documented_sweeps_pass():
    _check(grid=["model.cell=vanilla,cifg", "seed=0:3"], random=["train.lr=loguniform(1e-4,1e-2)",
           "model.hidden_size=int_loguniform(32,512)"], trials=5, fixed=["train.steps=200"])
    _check("configs/jsb.py", ablation=True, grid=["seed=0,1"],
           fixed=["model.hidden_size=50", "train.epochs=3", "train.patience=0"])
    # a FieldReference (train.momentum = 1 - one_minus_momentum) and float draws for float fields
    _check("configs/papers/greff2015.py", ablation=True, trials=6, random=[
        "model.hidden_size=int_loguniform(20,200)", "one_minus_momentum=loguniform(0.01,1)"])
    _check("configs/papers/jozefowicz2015.py:copy", grid=["model.cell=lstm:forget_bias=0,lstm:forget_bias=1"])


def test_unknown_key_names_the_valid_keys_and_the_closest_one():
    # the sweeps README's old example
    with pytest.raises(SweepSpecError) as e:
        _check(random=["model.hidden=int_loguniform(32,512)"], trials=2)
    msg = str(e.value)
    assert msg.startswith("--random: unknown config key 'model.hidden' (did you mean 'model.hidden_size'?)")
    assert "valid keys of model: bidirectional, cell, dropout," in msg and "\n" not in msg
    with pytest.raises(SweepSpecError, match=r"--set: unknown config key 'lr' \(did you mean 'train.lr'\?\); "
                                             r"valid keys at the top level: model, parallel, seed, task, train"):
        _check(fixed=["lr=0.1"])
    with pytest.raises(SweepSpecError, match="--zip: unknown config key 'model.cel' .*'model.cell'"):
        _check(zip=["model.cel=vanilla,nig", "seed=0,1"])
    with pytest.raises(SweepSpecError, match="--grid seed.x: seed is a int value, not a section"):
        _check(grid=["seed.x=1,2"])


@pytest.mark.parametrize("kw, match", [
    (dict(fixed=["model.hidden_size=12.5"]), r"--set model.hidden_size=12.5: invalid literal for int\(\)"),
    (dict(grid=["train.lr=0.1,fast"]), "--grid train.lr=fast: could not convert string to float"),
    (dict(grid=["model.bidirectional=maybe"]), "--grid model.bidirectional=maybe"),
    (dict(random=["model.hidden_size=uniform(16,64)"], trials=2), "--random model.hidden_size="),
])
def test_values_are_type_checked_as_run_py_parses_them(kw, match):
    with pytest.raises(SweepSpecError, match=match):
        _check(**kw)


@pytest.mark.parametrize("kw, match", [
    (dict(fixed=["train.lr=-1"]), r"--set: 1 problem in the config: train.lr=-1.0 must be"),
    (dict(grid=["train.optimizer=adam,foo"]), r"--grid train.optimizer=foo: .*valid: sgd"),
    (dict(grid=["task.name=foo,adding"]), r"--grid task.name=foo: "),
    (dict(random=["train.lr=uniform(-1,1)"], trials=8), r"--random train.lr=-0\.\d+: .*train.lr="),
    # in combination: plateau alone is fine with --set decay_factor=2, not with the grid's 1
    (dict(grid=["train.schedule=constant,plateau", "train.decay_factor=1.0,2.0"]),
     r"--grid train.decay_factor=1.0, --grid train.schedule=plateau: .*never changes"),
])
def test_values_are_checked_as_run_py_checks_them(kw, match):
    # before: only parsed, so a sweep launched trials that each failed with exit status 2
    with pytest.raises(SweepSpecError, match=match):
        _check(**kw)
    _check(grid=["train.schedule=constant,plateau"], fixed=["train.decay_factor=2"])


@pytest.mark.parametrize("cell, match", [
    ("vanila", "unknown cell 'vanila'; valid cells: "),
    ("lstm:forget_bais=1", "unknown switch 'forget_bais' for cell 'lstm'"),
    ("lstmp", "needs proj_size"),
])
def test_bad_cells_are_refused_up_front(cell, match):
    with pytest.raises(SweepSpecError, match=f"model.cell={cell}: .*{match}"):
        _check(grid=[f"model.cell=vanilla,{cell}"])
    with pytest.raises(SweepSpecError, match="--set model.cell="):
        _check(fixed=[f"model.cell={cell}"])


@pytest.mark.parametrize("config, match", [
    ("configs/nope.py", "config file 'configs/nope.py' not found"),
    ("configs/adding.py:big", "configs/adding.py has no variants; drop ':big'"),
    ("configs/papers/jozefowicz2015.py:nope", "unknown variant 'nope'; valid: adding, copy, jsb"),
])
def test_config_file_and_variant_errors(config, match):
    with pytest.raises(SweepSpecError, match=match):
        load_trial_config(config, REPO)


def test_trial_config_is_loaded_as_run_py_loads_it():
    c = load_trial_config("configs/papers/jozefowicz2015.py:copy", REPO)
    assert c.task.name == "copy" and c.model.cell == "lstm:forget_bias=0"
    with pytest.raises(AttributeError):  # locked, as run.py's config_flags lock it
        c.model.new_key = 1


def test_run_sweep_refuses_a_bad_spec_before_writing_anything(tmp_path):
    spec = spec_from_strings("configs/adding.py", grid=["model.hidden=32,64"])
    with pytest.raises(SweepSpecError, match="model.hidden_size"):
        run_sweep(spec, tmp_path / "sweep", progress=False)
    assert not (tmp_path / "sweep").exists()
    with pytest.raises(UserError, match="--parallel must be >= 1"):
        run_sweep(spec, tmp_path / "sweep", parallel=0, progress=False)


def test_sweep_errors_are_user_errors():
    assert issubclass(SweepSpecError, UserError) and issubclass(SweepDirError, UserError)


# ------------------------------------------------------------------------------ the CLI in-process


@pytest.mark.parametrize("argv, match", [
    (["--grid", "seed=0:0"], "range '0:0' is empty"),
    (["--random", "train.lr=loguniform(1e-4,1e-2)"], "need a trial budget --trials N >= 1"),
    (["--ablation", "--grid", "model.cell=vanilla"], "['model.cell'] appear in more than one"),
    (["--grid", "seed=0,1", "--config.lr=0.1"], "--set: unknown config key 'lr' (did you mean 'train.lr'?)"),
    (["--random", "train.momentun=uniform(0,1)", "--trials", "2"], "valid keys of train: "),
])
def test_cli_spec_errors_are_one_line(tmp_path, capsys, argv, match):
    rc = experiment_script("sweep").main(["--config=configs/adding.py", f"--sweep_dir={tmp_path / 's'}",
                                          "--dry_run", *argv])
    captured = capsys.readouterr()
    assert_one_error_line(rc, captured.out, captured.err, match)
    assert not (tmp_path / "s").exists()


def test_cli_bug_keeps_its_traceback(monkeypatch):
    """Only user errors become one line: anything else is a bug and propagates."""
    cli = experiment_script("sweep")

    def boom(*a, **k):
        raise KeyError("a bug")

    monkeypatch.setattr(cli, "_check_args", boom)
    with pytest.raises(KeyError):
        cli.main(["--config=configs/adding.py", "--sweep_dir=/tmp/unused", "--dry_run"])


# ------------------------------------------------------------------------------ one value parser


@pytest.mark.parametrize("text, expected", [
    ("1", 1), ("0.5", 0.5), ("1e-3", 0.001), ("true", True), ("None", None), ("tanh", "tanh"),
    ("inf", "inf"), ("1_000", "1_000"), ("'3'", "3"), ("(1, 2)", (1, 2)), (" 2 ", 2),
])
def test_cell_strings_and_sweep_values_parse_alike(text, expected):
    for got in (parse_switch_value(text), parse_value(text)):
        assert got == expected and type(got) is type(expected)
    if "," not in text:  # a cell string splits its switches on commas
        assert cells.parse(f"lstm:x={text}")[1]["x"] == expected


def test_a_bad_literal_is_a_cell_error_in_cells_and_a_spec_error_in_sweeps():
    with pytest.raises(cells.CellConfigError, match="tuple/list literal"):
        parse_switch_value("(1,,2)")
    with pytest.raises(SweepSpecError, match="tuple/list literal"):
        parse_value("(1,,2)")


# ------------------------------------------------------------------------------ module graph


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, imported names) of every ``from lstm_research... import`` in a file, lazy ones too."""
    tree = ast.parse(path.read_text())
    return [(n.module, [a.name for a in n.names]) for n in ast.walk(tree)
            if isinstance(n, ast.ImportFrom) and n.module and n.module.startswith("lstm_research")]


def test_sweeps_modules_import_one_way_and_no_private_names():
    files = sorted((REPO / "lstm_research" / "sweeps").glob("*.py"))
    graph = {f.stem: set() for f in files if f.stem != "__init__"}
    users = [*files, REPO / "experiments" / "sweep.py", REPO / "experiments" / "solve_rates.py"]
    for f in users:
        for module, names in _imports(f):
            assert not [n for n in names if n.startswith("_")], f"{f.name} imports private {names} from {module}"
            parts = module.split(".")
            if f in files and f.stem != "__init__" and parts[:2] == ["lstm_research", "sweeps"]:
                assert len(parts) == 3, f"{f.name} imports the sweeps package itself"
                graph[f.stem].add(parts[2])
    order, state = [], {}

    def visit(m, path):
        if state.get(m) == "done":
            return
        assert state.get(m) != "open", f"import cycle: {' -> '.join([*path, m])}"
        state[m] = "open"
        for d in sorted(graph[m]):
            visit(d, [*path, m])
        state[m] = "done"
        order.append(m)

    for m in graph:
        visit(m, [])
    assert graph["summary"] >= {"results"} and "summary" not in graph["plots"]
    assert all(len((REPO / "lstm_research" / "sweeps" / f"{m}.py").read_text().splitlines()) < 400 for m in graph)
