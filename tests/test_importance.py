"""fANOVA hyperparameter importance: every tree's decomposition equals optuna's fANOVA trees,
the fractions match an analytic decomposition, and the main effects rank as optuna's public
evaluator ranks them."""
import numpy as np
import pytest

optuna = pytest.importorskip("optuna")
from optuna.importance._fanova._tree import _FanovaTree  # noqa: E402  (the oracle)

from lstm_research.sweeps.importance import Forest  # noqa: E402

A, B, C = 2.0, 1.0, 3.0


def _data(n=300, seed=0, log_x0=False):
    rng = np.random.default_rng(seed)
    x = {f"x{i}": rng.uniform(0, 1, n) for i in range(4)}
    y = A * x["x0"] + B * x["x1"] + C * x["x0"] * x["x1"]
    if log_x0:  # the same function of log10(lr), lr log-uniform in [1e-6, 1e-2]
        x["x0"] = 10 ** (-6 + 4 * x["x0"])
    return x, y


def test_each_tree_equals_optunas_fanova_tree():
    x, y = _data()
    forest = Forest(x, y, bounds={k: (0, 1) for k in x})
    for est, tree in zip(forest.forest.estimators_[:8], forest.trees):
        oracle = _FanovaTree(est.tree_, forest.space)
        assert tree.variance == pytest.approx(oracle.variance, rel=1e-9)
        for features in ([0], [1], [3], [0, 1], [1, 2]):
            assert tree.marginal_variance(features) == pytest.approx(
                oracle.get_marginal_variance(np.array(features)), rel=1e-9, abs=1e-12)
        for v in (0.0, 0.13, 0.5, 0.77, 1.0):
            sample = np.full(4, np.nan)
            sample[0] = v
            assert tree.marginal(0, v) == pytest.approx(
                oracle._get_marginalized_statistics(sample)[0], rel=1e-9)


def test_fractions_match_the_analytic_decomposition():
    """y = a x0 + b x1 + c x0 x1 on the unit square: with u = x - 1/2,
    y = const + (a + c/2) u0 + (b + c/2) u1 + c u0 u1, so V0 = (a + c/2)^2 / 12,
    V1 = (b + c/2)^2 / 12 and V01 = c^2 / 144; x2 and x3 explain nothing."""
    v0, v1, v01 = (A + C / 2) ** 2 / 12, (B + C / 2) ** 2 / 12, C ** 2 / 144
    total = v0 + v1 + v01
    x, y = _data(n=1000)  # the forest's estimate approaches the truth as n grows
    imp = Forest(x, y, bounds={k: (0, 1) for k in x}).importance()
    assert imp.main["x0"][0] == pytest.approx(v0 / total, abs=0.02)
    assert imp.main["x1"][0] == pytest.approx(v1 / total, abs=0.02)
    assert imp.pairs[("x0", "x1")][0] == pytest.approx(v01 / total, abs=0.02)
    for noise in ("x2", "x3"):
        assert imp.main[noise][0] < 0.01
    assert imp.ranked()[0][0] == "x0"


def test_log_scaled_parameter_is_analysed_as_sampled():
    """The same function of log10(x0) with x0 log-uniform gives the same fractions when x0 is
    declared log; on the raw axis (nearly all its volume at large x0) it would not."""
    x, y = _data(n=400, log_x0=True)
    bounds = {"x0": (1e-6, 1e-2), "x1": (0, 1), "x2": (0, 1), "x3": (0, 1)}
    imp = Forest(x, y, log=["x0"], bounds=bounds).importance()
    v0, v1, v01 = (A + C / 2) ** 2 / 12, (B + C / 2) ** 2 / 12, C ** 2 / 144
    assert imp.main["x0"][0] == pytest.approx(v0 / (v0 + v1 + v01), abs=0.04)
    raw = Forest(x, y, bounds=bounds).importance()
    assert raw.main["x0"][0] < 0.5 * imp.main["x0"][0]


def test_marginal_curve_follows_the_function():
    x, y = _data(n=400)
    forest = Forest(x, y, bounds={k: (0, 1) for k in x})
    grid = np.array([0.1, 0.3, 0.5, 0.7, 0.9])
    mean, std = forest.marginal("x0", grid)
    expected = A * grid + B * 0.5 + C * grid * 0.5  # x1 averaged out
    np.testing.assert_allclose(mean, expected, atol=0.15)
    assert (std >= 0).all()


def test_main_effects_agree_with_optunas_public_evaluator():
    """Same data, same forest seed: optuna's FanovaImportanceEvaluator gives the same main
    effects (fractions of variance; optuna 5 does not normalize them)."""
    x, y = _data(n=200)
    dists = {k: optuna.distributions.FloatDistribution(0.0, 1.0) for k in x}
    study = optuna.create_study()
    study.add_trials([optuna.trial.create_trial(params={k: float(x[k][i]) for k in x},
                                                distributions=dists, value=float(y[i]))
                      for i in range(len(y))])
    theirs = optuna.importance.FanovaImportanceEvaluator(seed=3).evaluate(study)
    # optuna orders the columns by parameter name, as does _data
    main = Forest(x, y, bounds={k: (0, 1) for k in x}, seed=3).importance().main
    for k in x:
        assert main[k][0] == pytest.approx(theirs[k], rel=1e-9)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="finite"):
        Forest({"a": [1.0, 2.0, 3.0]}, [1.0, float("nan"), 2.0])
    with pytest.raises(ValueError, match="does not vary"):
        Forest({"a": [1.0, 2.0, 3.0]}, [1.0, 1.0, 1.0])


def test_fanova_script_on_a_sweep_folder(tmp_path):
    """experiments/fanova.py reads the random axes from sweep.json and the metric from
    results.csv, and ranks the hyperparameter the metric depends on first."""
    import csv
    import json
    import subprocess
    import sys
    from pathlib import Path

    rng = np.random.default_rng(0)
    (tmp_path / "sweep.json").write_text(json.dumps({"version": 1, "spec": {
        "random": [["train.lr", "loguniform(1e-6,1e-2)"], ["train.input_noise", "uniform(0,1)"]]}}))
    with open(tmp_path / "results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["trial", "model.cell", "train.lr", "train.input_noise", "status", "metric",
                    "test_nll"])
        for i in range(120):
            lr, noise = 10 ** rng.uniform(-6, -2), rng.uniform(0, 1)
            nll = 10 + (np.log10(lr) + 4) ** 2 + 0.1 * noise
            w.writerow([f"t{i}", "vanilla" if i % 2 else "nfg", lr, noise, "done", "nll", nll])
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(root / "experiments" / "fanova.py"), str(tmp_path),
                          "--group_by", "model.cell"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for name in ("fanova.md", "fanova.png", "marginal.png"):
        assert (tmp_path / name).stat().st_size > 0
    row = next(line for line in (tmp_path / "fanova.md").read_text().splitlines()
               if line.startswith("| all |"))
    lr_share, noise_share = (float(c.split("±")[0]) for c in row.split("|")[3:5])
    assert lr_share > 0.8 and noise_share < 0.05
    # a choice() axis of strings: one error line naming the axis, no traceback
    spec = json.loads((tmp_path / "sweep.json").read_text())
    spec["spec"]["random"].append(["train.optimizer", "choice(sgd,adam)"])
    (tmp_path / "sweep.json").write_text(json.dumps(spec))
    out = subprocess.run([sys.executable, str(root / "experiments" / "fanova.py"), str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.startswith("error: random axis train.optimizer=")
    assert "--group_by train.optimizer" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("dist, values, variance", [
    # int_uniform(0, 2): each of 0, 1, 2 drawn with probability 1/3; y = (k == 2): variance 2/9
    ("int_uniform(0,2)", [0, 1, 2], 2 / 9),
    # int_loguniform(1, 3): P(k) = log((k+1)/k) / log 4, so P(1) = 1/2; y = (k == 1): 1/4
    ("int_loguniform(1,3)", [1, 2, 3], 1 / 4),
])
def test_an_integer_axis_weighs_each_value_as_it_was_sampled(dist, values, variance):
    # on the bounds [a, b] the end values weighed half their sampling probability (0.1875 and
    # 0.216 here)
    from conftest import experiment_script
    from lstm_research.sweeps.values import parse_distribution

    fanova = experiment_script("fanova")
    rng = np.random.default_rng(0)
    target = values[-1] if dist.startswith("int_uniform") else values[0]
    rows = [{"k": values[i % 3], "u": rng.uniform(), "y": float(values[i % 3] == target)}
            for i in range(300)]
    space = {"k": parse_distribution(dist), "u": parse_distribution("uniform(0,1)")}
    f = fanova.forest(rows, space, "y", 0)
    assert np.mean([t.variance for t in f.trees]) == pytest.approx(variance, abs=0.003)
