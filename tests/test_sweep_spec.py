"""Sweep spec: value/axis/distribution parsing, grid x zip x random expansion, trial ids, CLI strings."""

import re

import pytest

from lstm_research.cells import GREFF_VARIANTS
from lstm_research.sweeps.spec import (
    Axis,
    Distribution,
    RandomAxis,
    SweepSpec,
    SweepSpecError,
    format_value,
    parse_distribution,
    parse_value,
    parse_values,
    spec_from_strings,
)

from conftest import experiment_script


# ------------------------------------------------------------------------------------- values


@pytest.mark.parametrize("text, expected", [
    ("3", 3), ("-2", -2), ("1e-3", 0.001), ("0.5", 0.5), (".5", 0.5), ("2.", 2.0),
    ("true", True), ("False", False), ("none", None), ("vanilla", "vanilla"), ("'3'", "3"),
    ('"a,b"', "a,b"), ("(64, 64)", (64, 64)), ("[1,2]", (1, 2)), ("inf", "inf"), ("a:b", "a:b"),
])
def test_parse_value(text, expected):
    got = parse_value(text)
    assert got == expected and type(got) is type(expected)


def test_parse_values_lists_and_ranges():
    assert parse_values("0:5") == (0, 1, 2, 3, 4)
    assert parse_values("0:10:3") == (0, 3, 6, 9)
    assert parse_values("5:0:-2") == (5, 3, 1)
    assert parse_values("vanilla,nig, cifg") == ("vanilla", "nig", "cifg")
    assert parse_values("1,2.5,true,'x,y',(1,2)") == (1, 2.5, True, "x,y", (1, 2))
    assert parse_values("0:2,7") == (0, 1, 7)
    with pytest.raises(SweepSpecError, match="empty"):
        parse_values("3:3")
    with pytest.raises(SweepSpecError, match="empty value"):
        parse_values("a,,b")


def test_format_value_round_trips_through_parse_value():
    for v in (3, -1, 0.001, 1e-05, 2.5, True, False, None, "nig", (64, 32)):
        assert parse_value(format_value(v)) == v


def test_parse_distribution_and_errors():
    d = parse_distribution("loguniform(1e-4,1e-2)")
    assert (d.kind, d.args, d.log_scale) == ("loguniform", (1e-4, 1e-2), True)
    assert parse_distribution("choice(a, 2, true)").args == ("a", 2, True)
    assert parse_distribution(str(d)) == d
    with pytest.raises(SweepSpecError, match="unknown distribution 'gaussian'.*loguniform"):
        parse_distribution("gaussian(0,1)")
    with pytest.raises(SweepSpecError, match=r"bounds must be > 0"):
        parse_distribution("loguniform(0,1)")
    with pytest.raises(SweepSpecError, match="need a < b"):
        parse_distribution("uniform(2,1)")
    with pytest.raises(SweepSpecError, match="must be integers"):
        parse_distribution("int_uniform(1,2.5)")
    with pytest.raises(SweepSpecError, match="expected NAME"):
        parse_distribution("loguniform 1e-4 1e-2")


# ----------------------------------------------------------------------------------- expansion


def test_grid_is_cartesian_product_first_axis_slowest():
    spec = spec_from_strings("c.py", grid=["model.cell=vanilla,nig,cifg", "seed=0:2"])
    trials = spec.expand()
    assert len(spec) == len(trials) == 6
    assert [tuple(t.overrides.values()) for t in trials] == [
        ("vanilla", 0), ("vanilla", 1), ("nig", 0), ("nig", 1), ("cifg", 0), ("cifg", 1)]
    assert [t.index for t in trials] == list(range(6))


def test_zip_advances_together_and_crosses_the_grid():
    spec = spec_from_strings("c.py", grid=["c=x,y"], zip=["a=1,2", "b=3,4"])
    combos = [(t.overrides["c"], t.overrides["a"], t.overrides["b"]) for t in spec.expand()]
    assert combos == [("x", 1, 3), ("x", 2, 4), ("y", 1, 3), ("y", 2, 4)]
    with pytest.raises(SweepSpecError, match="same number of values.*a: 2, b: 3"):
        spec_from_strings("c.py", zip=["a=1,2", "b=3,4,5"])


def test_random_draws_ranges_reproducibility_and_pairing():
    def spec(seed, grid=()):
        return spec_from_strings("c.py", grid=list(grid), trials=50, sweep_seed=seed, random=[
            "train.lr=loguniform(1e-4,1e-2)", "drop=uniform(0.1,0.5)", "opt=choice(adam,sgd)",
            "layers=int_uniform(1,3)", "hidden=int_loguniform(16,512)"])

    draws = spec(0).random_draws()
    assert len(draws) == 50
    lrs = [d["train.lr"] for d in draws]
    assert all(1e-4 <= x <= 1e-2 for x in lrs) and len(set(lrs)) == 50
    # log-uniform: about half of the draws below the geometric mid-point 1e-3 (binomial(50, .5): 12..38
    # is a > 99.9% interval), whereas uniform on [1e-4, 1e-2] would put only ~9% there.
    assert 12 <= sum(x < 1e-3 for x in lrs) <= 38
    assert all(0.1 <= d["drop"] <= 0.5 for d in draws)
    assert {d["opt"] for d in draws} == {"adam", "sgd"}
    assert {d["layers"] for d in draws} == {1, 2, 3}  # inclusive bounds; P(a value missing) < 1e-8
    assert all(isinstance(d["hidden"], int) and 16 <= d["hidden"] <= 512 for d in draws)
    assert spec(0).random_draws() == draws  # same sweep seed, same draws
    assert [d["train.lr"] for d in spec(1).random_draws()] != lrs
    # random axes x grid: every grid point gets the same draws (paired design)
    trials = spec(0, grid=["model.cell=vanilla,nig"]).expand()
    assert len(trials) == 100
    by_cell = {c: [t.overrides["train.lr"] for t in trials if t.overrides["model.cell"] == c]
               for c in ("vanilla", "nig")}
    assert by_cell["vanilla"] == by_cell["nig"] == lrs
    # launch order is draw by draw: a sweep stopped after 2k trials has k draws of every cell
    order = spec(0, grid=["model.cell=vanilla,nig"]).run_order(trials)
    assert sorted(t.index for t in order) == list(range(100))
    first = order[:10]
    assert [t.overrides["model.cell"] for t in first] == ["vanilla", "nig"] * 5
    assert [t.overrides["train.lr"] for t in first[::2]] == lrs[:5] == [t.overrides["train.lr"] for t in first[1::2]]
    grid_only = spec_from_strings("c.py", grid=["model.cell=vanilla,nig", "seed=0:3"]).expand()
    assert spec_from_strings("c.py", grid=["model.cell=vanilla,nig", "seed=0:3"]).run_order(grid_only) == grid_only


def test_adding_a_random_axis_keeps_the_other_axis_draws():
    one = spec_from_strings("c.py", random=["train.lr=loguniform(1e-4,1e-2)"], trials=5)
    two = spec_from_strings("c.py", random=["drop=uniform(0,1)", "train.lr=loguniform(1e-4,1e-2)"], trials=5)
    assert [d["train.lr"] for d in one.random_draws()] == [d["train.lr"] for d in two.random_draws()]


def test_cli_example_counts():
    spec = spec_from_strings("configs/adding.py", grid=["model.cell=vanilla,nig", "seed=0:5"],
                             zip=["a=1,2", "b=3,4"], random=["train.lr=loguniform(1e-4,1e-2)"], trials=20)
    assert len(spec.expand()) == 2 * 5 * 2 * 20


def test_ablation_preset():
    spec = spec_from_strings("c.py", ablation=True, grid=["seed=0,1"])
    trials = spec.expand()
    assert GREFF_VARIANTS == ("vanilla", "nig", "nfg", "nog", "niaf", "noaf", "np", "cifg", "fgr")
    assert len(trials) == 18
    assert [t.overrides["model.cell"] for t in trials[::2]] == list(GREFF_VARIANTS)
    with pytest.raises(SweepSpecError, match="model.cell"):
        spec_from_strings("c.py", ablation=True, grid=["model.cell=vanilla"])


def test_trial_ids_stable_unique_and_filesystem_safe():
    args = dict(ablation=True, grid=["seed=0:3"], random=["train.lr=loguniform(1e-4,1e-2)"], trials=4,
                fixed=["train.steps=200"])
    a, b = spec_from_strings("c.py", **args).expand(), spec_from_strings("c.py", **args).expand()
    ids = [t.id for t in a]
    assert ids == [t.id for t in b]
    assert len(set(ids)) == len(ids) == 9 * 3 * 4
    assert all(re.fullmatch(r"\d{4}_[A-Za-z0-9.+=,_-]*_[0-9a-f]{8}", i) and len(i) <= 64 for i in ids)
    assert ids[0].startswith("0000_cell=vanilla,seed=0,lr=")
    # the hash covers the config and the fixed overrides too
    other = spec_from_strings("c.py", **{**args, "fixed": ["train.steps=300"]}).expand()
    assert all(x.hash != y.hash for x, y in zip(a, other))
    assert spec_from_strings("d.py", grid=["seed=0"]).expand()[0].hash != \
        spec_from_strings("c.py", grid=["seed=0"]).expand()[0].hash


def test_command_line_of_a_trial():
    spec = spec_from_strings("configs/adding.py:small", grid=["model.cell=nig", "train.lr=1e-3"],
                             fixed=["train.steps=200", "model.bias=true"])
    (t,) = spec.expand()
    assert spec.command(t, "/w/x", python="py", entry="run.py") == [
        "py", "run.py", "--config=configs/adding.py:small", "--config.train.steps=200",
        "--config.model.bias=True", "--config.model.cell=nig", "--config.train.lr=0.001", "--workdir=/w/x"]


def test_choice_values_read_back_the_same_from_sweep_json():
    # sweep.json stores a random axis as its text; a comma inside a cell string, or a quoted
    # number, must not come back as other values (it did: the trials of a rerun differed)
    values = ("lstm:forget_bias=1,peepholes=true", "vanilla", "3", "true", "none", "(1", 3, 0.5,
              None, True, (1, 2), 'say "hi"', "it's")
    d = Distribution("choice", values)
    back = parse_distribution(str(d))
    assert back == d and [type(a) for a in back.args] == [type(a) for a in values]
    assert str(parse_distribution("choice(vanilla,nig,3,1e-3)")) == "choice(vanilla,nig,3,0.001)"
    spec = spec_from_strings("c.py", random=["model.cell=choice('lstm:forget_bias=1,peepholes=true',"
                                             "vanilla)", "train.lr=loguniform(1e-4,1e-2)"], trials=6)
    again = SweepSpec.from_dict(spec.to_dict())
    assert [dict(t.overrides) for t in again.expand()] == [dict(t.overrides) for t in spec.expand()]
    assert {t.overrides["model.cell"] for t in spec.expand()} == {
        "lstm:forget_bias=1,peepholes=true", "vanilla"}
    with pytest.raises(SweepSpecError, match="both quote characters"):
        str(Distribution("choice", ("a'b\"c",)))


def test_spec_dict_round_trip():
    spec = spec_from_strings("c.py", grid=["model.cell=vanilla,nig", "h=(1,2),(3,4)"], zip=["a=1,2", "b=x,y"],
                             random=["train.lr=loguniform(1e-4,1e-2)"], trials=3, sweep_seed=7,
                             fixed=["train.steps=10"])
    again = SweepSpec.from_dict(spec.to_dict())
    assert again.canonical_json() == spec.canonical_json()
    assert [(t.id, dict(t.overrides)) for t in again.expand()] == [(t.id, dict(t.overrides)) for t in spec.expand()]


@pytest.mark.parametrize("kwargs, match", [
    (dict(grid=["model..cell=1"]), "invalid config key 'model..cell'"),
    (dict(grid=["seed"]), "expected KEY=VALUES"),
    (dict(random=["lr=uniform(0,1)"]), "need a trial budget --trials"),
    (dict(grid=["seed=0"], trials=3), "no --random axis"),
    (dict(grid=["seed=0,1"], fixed=["seed=3"]), r"\['seed'\] appear in more than one"),
    (dict(grid=["seed=1,1"]), "repeats a value"),
])
def test_spec_errors_name_the_bad_value(kwargs, match):
    with pytest.raises(SweepSpecError, match=match):
        spec_from_strings("c.py", **kwargs)


def test_api_objects():
    spec = SweepSpec("c.py", grid=[Axis("seed", (0, 1))],
                     random=[RandomAxis("lr", Distribution("uniform", (0.0, 1.0)))], trials=2)
    assert len(spec.expand()) == 4 and spec.log_scale_keys == []
    assert len({t.overrides["lr"] for t in spec.expand()}) == 2


def test_cli_parses_flags_into_the_spec(capsys):
    cli = experiment_script("sweep")
    rc = cli.main(["--config=configs/adding.py", "--sweep_dir=/tmp/unused", "--grid", "model.cell=vanilla,nig",
                   "--grid", "seed=0:5", "--zip", "model.num_layers=1,2", "--zip", "model.dropout=0,0.5",
                   "--random", "train.lr=loguniform(1e-4,1e-2)", "--trials", "20", "--set", "train.steps=200",
                   "--config.model.hidden_size=32", "--dry_run"])
    out = capsys.readouterr().out
    assert rc == 0
    assert out.strip().endswith("400 trials")
    first = out.splitlines()[1]
    assert "--config.train.steps=200 --config.model.hidden_size=32 --config.model.cell=vanilla --config.seed=0 " \
           "--config.model.num_layers=1 --config.model.dropout=0 --config.train.lr=" in first
    assert cli.main(["--config=c.py", "--sweep_dir=/tmp/x", "--random", "lr=normal(0,1)", "--trials", "2",
                     "--dry_run"]) == 2
    assert "unknown distribution 'normal'" in capsys.readouterr().err
    assert cli.main(["--config=c.py", "--sweep_dir=/tmp/x", "--bogus=1"]) == 2
    assert capsys.readouterr().err.startswith("error: unrecognized argument '--bogus=1'")
