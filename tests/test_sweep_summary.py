"""Sweep summaries on hand-made results: statistics by hand, Welch's t by formula, csv/markdown, plots."""

import json
import math

import pytest
from scipy import stats as sps

from lstm_research.sweeps.spec import spec_from_strings
from lstm_research.sweeps.results import write_results_csv
from lstm_research.sweeps.sweepdir import prepare_sweep_dir
from lstm_research.sweeps.summary import (
    describe,
    read_results_csv,
    summarize,
    verdict,
    welch_test,
)

# test nll per cell and seed; None = the trial failed.
VALUES = {
    "vanilla": [1.0, 1.2, 1.1, 1.3],
    "nig": [1.5, 1.7, 1.6, 1.9],
    "np": [0.5, 0.6, 0.55, 0.52],
    "cifg": [1.05, 1.25, 1.15, None],
}
# By hand: mean, median, sample std (sum of squared deviations / (n - 1)).
HAND = {
    "vanilla": dict(n=4, best=1.0, mean=1.15, median=1.15, std=math.sqrt(0.05 / 3)),
    "nig": dict(n=4, best=1.5, mean=1.675, median=1.65, std=math.sqrt(0.0875 / 3)),
    "np": dict(n=4, best=0.5, mean=0.5425, median=0.535, std=math.sqrt(0.005675 / 3)),
    "cifg": dict(n=3, best=1.05, mean=1.15, median=1.15, std=math.sqrt(0.02 / 2)),
}


def _welch_by_formula(g, b):
    """t = (m1 - m2) / sqrt(s1^2/n1 + s2^2/n2); Welch-Satterthwaite df; two-sided p from Student's t."""
    a1, a2 = HAND[g]["std"] ** 2 / HAND[g]["n"], HAND[b]["std"] ** 2 / HAND[b]["n"]
    t = (HAND[g]["mean"] - HAND[b]["mean"]) / math.sqrt(a1 + a2)
    df = (a1 + a2) ** 2 / (a1 ** 2 / (HAND[g]["n"] - 1) + a2 ** 2 / (HAND[b]["n"] - 1))
    return t, 2 * sps.t.sf(abs(t), df)


def _make_sweep(tmp_path, lower_is_better=True, extra_grid=()):
    spec = spec_from_strings("cfg.py", grid=["model.cell=vanilla,nig,np,cifg", "seed=0:4", *extra_grid])
    sweep = tmp_path / "sweep"
    trials = prepare_sweep_dir(spec, sweep)
    for t in trials:
        d = sweep / t.id
        d.mkdir()
        v = VALUES[t.overrides["model.cell"]][t.overrides["seed"]]
        with open(d / "metrics.jsonl", "w") as f:
            for step in range(0, 101, 10):
                end = v if v is not None else 1.4
                f.write(json.dumps({"step": step, "split": "valid", "nll": end + 2.0 / (1 + step / 10)}) + "\n")
            f.write('{"step": 110, "split": "va')  # a killed trial's torn last line must be skipped
        if v is None:
            (d / "status.json").write_text(json.dumps(
                {"status": "failed", "returncode": 1, "attempts": 1, "error": "exited with code 1: boom"}))
            continue
        (d / "result.json").write_text(json.dumps({
            "status": "done", "metric": "nll", "lower_is_better": lower_is_better,
            "valid": {"nll": v + 0.01, "acc": 0.5}, "test": {"nll": v, "acc": 0.5},
            "steps": 100, "wall_time": 1.5, "num_params": 1234, "config": {}}))
    return sweep


def test_describe_by_hand():
    d = describe([2.0, 4.0, 9.0])
    assert d == {"n": 3, "best": 2.0, "median": 4.0, "mean": 5.0, "std": pytest.approx(math.sqrt(13.0))}
    assert describe([2.0, 4.0, 9.0], lower_is_better=False)["best"] == 9.0
    one = describe([3.0])
    assert one["n"] == 1 and one["mean"] == 3.0 and math.isnan(one["std"])


def test_welch_matches_formula_and_degenerate_cases():
    a, b = VALUES["nig"], VALUES["vanilla"]
    t, p = welch_test(a, b)
    t_hand, p_hand = _welch_by_formula("nig", "vanilla")
    assert t == pytest.approx(t_hand, rel=1e-9) and p == pytest.approx(p_hand, rel=1e-7)
    assert all(math.isnan(x) for x in welch_test([1.0], b))
    assert all(math.isnan(x) for x in welch_test([1.0, 1.0], [2.0, 2.0]))


def test_verdict_respects_direction():
    assert verdict(1.0, 2.0, 0.01) == "better"
    assert verdict(3.0, 2.0, 0.01) == "worse"
    assert verdict(1.0, 2.0, 0.01, lower_is_better=False) == "worse"
    assert verdict(1.0, 2.0, 0.2) == "n.s."
    assert verdict(1.0, 2.0, 0.049, alpha=0.01) == "n.s."
    assert verdict(1.0, 2.0, math.nan) == "n/a"


def test_summary_statistics_tests_csv_and_markdown(tmp_path):
    sweep = _make_sweep(tmp_path)
    out = summarize(sweep, plots=False)
    assert out["group_keys"] == ["model.cell"] and out["baseline"] == "vanilla" and out["metric"] == "nll"
    groups = {g["label"]: g for g in out["groups"]}
    assert list(groups) == ["vanilla", "nig", "np", "cifg"]
    for g, hand in HAND.items():
        for k, v in hand.items():
            assert groups[g][k] == pytest.approx(v, rel=1e-9), (g, k)
    assert groups["cifg"]["failed"] == 1 and groups["nig"]["failed"] == 0
    for g in ("nig", "np", "cifg"):
        t_hand, p_hand = _welch_by_formula(g, "vanilla")
        assert groups[g]["t"] == pytest.approx(t_hand, rel=1e-9, abs=1e-12)
        assert groups[g]["p"] == pytest.approx(p_hand, rel=1e-7)
    assert groups["nig"]["p"] < 0.05 and groups["np"]["p"] < 0.05 and groups["cifg"]["p"] > 0.5
    assert [groups[g]["verdict"] for g in groups] == ["baseline", "worse", "better", "n.s."]

    rows = read_results_csv(sweep / "results.csv")
    assert len(rows) == 16
    assert list(rows[0])[:4] == ["trial", "index", "model.cell", "seed"]
    assert {"status", "valid_nll", "test_nll", "test_acc", "steps", "wall_time", "num_params", "error"} <= set(rows[0])
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["model.cell"] == "cifg" and failed[0]["seed"] == 3
    assert "boom" in failed[0]["error"] and failed[0]["test_nll"] is None
    nig = sorted(r["test_nll"] for r in rows if r["model.cell"] == "nig")
    assert nig == sorted(VALUES["nig"])
    assert all(r["steps"] == 100 and r["num_params"] == 1234 for r in rows if r["status"] == "done")

    md = (sweep / "summary.md").read_text()
    assert "16 trials: 15 done, 1 failed." in md
    assert "| **vanilla** | 4 | 0 | 1 | 1.15 | 1.15 | 0.1291 |" in md
    assert "| nig | 4 | 0 | 1.5 | 1.65 | 1.675 | 0.1708 | +0.525 |" in md
    assert md.count("| worse |") == 2 and md.count("| better |") == 2  # test and valid tables
    assert "## Failed trials" in md and "boom" in md
    # paired on seed (every variant ran seeds 0-3): worse on k of n pairs, sign test 2 * P(X >= k)
    assert "| worse on paired draws | sign-test p |" in md
    assert "| worse | 4/4 | 0.125 |" in md  # nig: 2 / 2^4
    assert "| better | 0/4 | 0.125 |" in md  # np
    assert "| n.s. | 3/3 | 0.25 |" in md  # cifg: seed 3 failed, 2 / 2^3


def test_higher_is_better_flips_best_and_verdicts(tmp_path):
    sweep = _make_sweep(tmp_path, lower_is_better=False)
    out = summarize(sweep, plots=False)
    groups = {g["label"]: g for g in out["groups"]}
    assert groups["nig"]["verdict"] == "better" and groups["np"]["verdict"] == "worse"
    assert groups["vanilla"]["best"] == 1.3 and groups["np"]["best"] == 0.6
    assert "higher is better" in (sweep / "summary.md").read_text()


def test_group_by_and_baseline_choices(tmp_path):
    sweep = _make_sweep(tmp_path)
    out = summarize(sweep, group_by="seed", baseline="0", plots=False)
    groups = {g["label"]: g for g in out["groups"]}
    assert list(groups) == ["0", "1", "2", "3"] and groups["0"]["verdict"] == "baseline"
    assert groups["3"]["n"] == 3  # cifg seed 3 failed
    assert groups["1"]["mean"] == pytest.approx((1.2 + 1.7 + 0.6 + 1.25) / 4)
    with pytest.raises(ValueError, match=r"--baseline 'lstm' is not a group.*'vanilla', 'nig'"):
        summarize(sweep, baseline="lstm", plots=False)
    with pytest.raises(ValueError, match=r"not swept.*\['model.cell', 'seed'\]"):
        summarize(sweep, group_by="train.lr", plots=False)
    with pytest.raises(ValueError, match=r"--metric 'bleu'.*available: \['acc', 'nll'\]"):
        summarize(sweep, metric="bleu", plots=False)
    acc = summarize(sweep, metric="acc", plots=False)
    assert acc["metric"] == "acc" and "assumed" in (sweep / "summary.md").read_text()


def _png_ok(path, min_bytes=15_000):
    import matplotlib.image as mpimg

    assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > min_bytes
    img = mpimg.imread(path)
    assert img.shape[0] >= 400 and img.shape[1] >= 600
    assert img[..., :3].std() > 0.05  # not a blank canvas


def test_plots(tmp_path):
    sweep = _make_sweep(tmp_path)
    out = summarize(sweep)
    names = sorted(p.name for p in out["plots"])
    assert names == ["box_nll.png", "curves.png", "curves_groups.png"]
    for p in out["plots"]:
        _png_ok(p)
    assert "![box_nll](box_nll.png)" in (sweep / "summary.md").read_text()

    # a random search over a log-uniform learning rate gets a metric-vs-lr scatter
    spec = spec_from_strings("cfg.py", grid=["model.cell=vanilla,nig"], trials=6,
                             random=["train.lr=loguniform(1e-4,1e-1)", "model.hidden=int_uniform(8,64)"])
    sweep2 = tmp_path / "random"
    for t in prepare_sweep_dir(spec, sweep2):
        (sweep2 / t.id).mkdir()
        lr = t.overrides["train.lr"]
        v = 1.0 + 0.1 * (math.log10(lr) + 2.5) ** 2 + (0.2 if t.overrides["model.cell"] == "nig" else 0.0)
        (sweep2 / t.id / "result.json").write_text(json.dumps(
            {"status": "done", "metric": "mse", "lower_is_better": True, "valid": {"mse": v},
             "test": {"mse": v}, "steps": 10, "wall_time": 1.0, "num_params": 10, "config": {}}))
    out2 = summarize(sweep2)
    assert out2["info"]["log_scale_keys"] == ["train.lr"]
    assert sorted(p.name for p in out2["plots"]) == ["box_mse.png", "vs_model.hidden.png", "vs_train.lr.png"]
    _png_ok(sweep2 / "vs_train.lr.png", min_bytes=10_000)


def test_solve_rates_counts_and_sequences_by_hand():
    from experiments.solve_rates import solve_rates

    rows = [dict(status="done", **{"model.cell": c}, test_err=e, steps=s)
            for c, e, s in [("a", 0.01, 100), ("a", 0.05, 400), ("a", 0.0, 300),
                            ("b", 0.2, 50)]]
    rows.append(dict(status="failed", **{"model.cell": "b"}, test_err=None, steps=None))
    table = {t["group"]: t for t in solve_rates(rows, "test_err<0.04", "model.cell", batch=32)}
    assert (table["a"]["solved"], table["a"]["n"]) == (2, 3)
    assert table["a"]["median_sequences"] == 200 * 32  # median of 100*32 and 300*32
    assert (table["a"]["min_sequences"], table["a"]["max_sequences"]) == (3200, 9600)
    assert (table["b"]["solved"], table["b"]["n"], table["b"]["median_sequences"]) == (0, 1, None)
    with pytest.raises(ValueError, match="COLUMN OP NUMBER"):
        solve_rates(rows, "test_err ~ 1", None, 1)
    with pytest.raises(ValueError, match="COLUMN OP NUMBER"):
        solve_rates(rows, "test_err<0..5", None, 1)
    with pytest.raises(ValueError, match="not in results.csv"):
        solve_rates(rows, "nope<1", None, 1)


def test_a_diverged_trials_nan_reads_back_as_a_number_and_solves_nothing(tmp_path):
    from experiments.solve_rates import solve_rates

    rows = [{"trial": "t0", "status": "done", "valid_err": 0.01, "test_err": 0.01, "steps": 10},
            {"trial": "t1", "status": "done", "valid_err": math.nan, "test_err": math.inf,
             "steps": 10}]
    path = write_results_csv(tmp_path, rows, {"swept_keys": []})
    back = read_results_csv(path)
    assert math.isnan(back[1]["valid_err"]) and back[1]["test_err"] == math.inf
    (table,) = solve_rates(back, "test_err<0.04", None, batch=1)
    assert (table["solved"], table["n"]) == (1, 2)


def test_select_by_valid_picks_each_groups_best_setting_by_hand():
    """Per group, the setting with the best mean valid metric, and its trials' test numbers with
    their mean and std, worked out by hand; failed trials are left out."""
    from experiments.select_by_valid import select

    rows = [dict(status="done", **{"model.cell": c, "train.lr": lr}, valid_nll=v, test_nll=t)
            for c, lr, v, t in [("lstm", 1e-3, 8.0, 8.1), ("lstm", 1e-3, 8.2, 8.3),
                                ("lstm", 1e-2, 7.9, 7.8), ("lstm", 1e-2, 8.5, 8.6),
                                ("gru", 1e-3, 9.0, 9.1), ("gru", 1e-3, 9.2, 9.0),
                                ("gru", 1e-2, 8.0, 8.05), ("gru", 1e-2, 8.1, 8.15)]]
    rows.append(dict(status="failed", **{"model.cell": "gru", "train.lr": 1e-2},
                     valid_nll=None, test_nll=None))
    out = {g["group"]: g for g in select(rows, group_by="model.cell", search="train.lr",
                                         metric="nll")}
    assert out["lstm"]["chosen"] == 1e-3  # mean valid 8.1 against 8.2
    assert out["lstm"]["test"] == [8.1, 8.3] and out["gru"]["test"] == [8.05, 8.15]
    assert out["gru"]["mean"] == pytest.approx(8.1) and out["gru"]["std"] == pytest.approx(
        math.sqrt(0.005))
    assert select(rows, group_by="model.cell", search="train.lr", metric="nll",
                  lower_is_better=False)[0]["chosen"] == 1e-2
    with pytest.raises(ValueError, match="not in results.csv"):
        select(rows, group_by="model.cell", search="lr", metric="nll")
    # a diverged trial (NaN valid, read back from results.csv as the string 'nan') makes its
    # setting's mean NaN: it ranks last instead of winning by coming first
    nan_first = [dict(status="done", **{"model.cell": "lstm", "train.lr": 0.1},
                      valid_nll="nan", test_nll="nan")] + rows
    assert select(nan_first, group_by="model.cell", search="train.lr", metric="nll")[0][
        "chosen"] == 1e-3


def test_select_by_valid_script_follows_the_results_direction(tmp_path, capsys):
    import csv

    from conftest import experiment_script
    with open(tmp_path / "results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["trial", "model.cell", "train.lr", "status", "metric", "lower_is_better",
                    "valid_solved_frac", "test_solved_frac"])
        for i, (lr, v) in enumerate([(0.1, 0.9), (0.1, 0.8), (0.01, 0.2), (0.01, 0.3)]):
            w.writerow([f"t{i}", "lstm", lr, "done", "solved_frac", False, v, v])
    assert experiment_script("select_by_valid").main([str(tmp_path), "--metric",
                                                      "solved_frac"]) == 0
    assert "| lstm | 0.01: 0.25, 0.1: 0.85 | 0.1 | 2 |" in capsys.readouterr().out


def test_top_fraction_analysis_ranks_by_validation(tmp_path):
    """--top 0.5: each group's best half by valid nll (here valid = test + 0.01); a group of 3
    finished trials keeps ceil(1.5) = 2. Statistics and Welch tests on those rows only."""
    from lstm_research.sweeps.summary import top_rows

    sweep = _make_sweep(tmp_path)
    out = summarize(sweep, plots=True, top=0.5)
    rows = read_results_csv(sweep / "results.csv")
    best = top_rows(rows, metric="nll", keys=["model.cell"], fraction=0.5)
    by_cell = {}
    for r in best:
        by_cell.setdefault(r["model.cell"], []).append(r["test_nll"])
    assert by_cell == {"vanilla": [1.0, 1.1], "nig": [1.5, 1.6], "np": [0.5, 0.52],
                       "cifg": [1.05, 1.15]}
    md = (sweep / "summary.md").read_text()
    assert "## test `nll` of the top 50% of each group (ranked by valid `nll`)" in md
    t, p = sps.ttest_ind([0.5, 0.52], [1.0, 1.1], equal_var=False)
    top_table = md.split("## test `nll` of the top 50%")[1].split("##")[0]
    assert f"| np ⚠ | 2 | 0 | 0.5 | 0.51 | 0.51 | {math.sqrt(0.0002):.4g} | -0.54 | {t:.3f} | {p:.3g} |" in top_table
    assert (sweep / "box_nll_top.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="fraction in"):
        top_rows(rows, metric="nll", keys=["model.cell"], fraction=0)


def test_top_rows_rank_on_validation_and_count_diverged_trials():
    """Valid and test orders disagree here, so ranking on test (or in the wrong direction) gives
    other rows. A diverged trial (exit 3, or diverged in its pack) counts in its group's size as
    its worst; a trial that failed otherwise (exit 1) or is unfinished does not."""
    from lstm_research.sweeps.summary import top_rows

    def row(cell, valid, test, status="done", rc=0, error=None):
        return {"model.cell": cell, "status": status, "valid_nll": valid, "test_nll": test,
                "returncode": rc, "error": error}

    rows = [row("a", v, 10 - v) for v in range(10)]                 # 10 done
    rows += [row("b", v, 10 - v) for v in range(4)]                 # 4 done ...
    rows += [row("b", None, None, "failed", 3, "exited with code 3: non-finite loss")] * 4
    rows += [row("b", None, None, "failed", None, "diverged in its pack: nan")] * 2  # ... 6 diverged
    rows += [row("c", v, 10 - v) for v in range(4)]                 # 4 done ...
    rows += [row("c", None, None, "failed", 1, "exited with code 1: boom")] * 6
    rows += [row("c", None, None, "pending")] * 3                   # ... none diverged
    pick = {}
    for r in top_rows(rows, metric="nll", keys=["model.cell"], fraction=0.3):
        pick.setdefault(r["model.cell"], []).append(r["valid_nll"])
    # a: ceil(0.3 * 10) = 3 lowest valid; b: ceil(0.3 * 10) = 3 of its 4 finished; c: max(2, 2)
    assert pick == {"a": [0, 1, 2], "b": [0, 1, 2], "c": [0, 1]}
    higher = top_rows(rows, metric="nll", keys=["model.cell"], fraction=0.3, lower_is_better=False)
    assert [r["valid_nll"] for r in higher if r["model.cell"] == "a"] == [9, 8, 7]
    every = top_rows(rows, metric="nll", keys=["model.cell"], fraction=0.9)
    assert sum(r["model.cell"] == "b" for r in every) == 4  # ceil(9) > 4 finished: all of them


def test_sign_test_on_paired_draws_closed_form():
    """11 draws shared by two variants: one tie, the other worse on 9 of the remaining 10. Two-sided
    sign test by hand: P(X >= 9 | n=10, 1/2) = 11/1024, doubled."""
    from lstm_research.sweeps.summary import sign_test

    base = [{"status": "done", "train.lr": i, "test_nll": 10.0} for i in range(11)]
    other = [{"status": "done", "train.lr": i, "test_nll": 10.0 + (1 if i < 9 else -1 if i == 9 else 0)}
             for i in range(11)]
    other.append({"status": "failed", "train.lr": 99, "test_nll": None})  # unpaired: left out
    worse, pairs, p = sign_test(other, base, col="test_nll", pair_keys=["train.lr"])
    assert (worse, pairs) == (9, 10)
    assert p == pytest.approx(22 / 1024)
    # higher is better flips what counts as worse
    worse, pairs, _ = sign_test(other, base, col="test_nll", pair_keys=["train.lr"],
                                lower_is_better=False)
    assert (worse, pairs) == (1, 10)


def test_fisher_exact_against_the_hypergeometric_closed_form():
    """Two-sided Fisher p: the sum of the hypergeometric probabilities of every table with the
    same margins that is no more likely than the observed one (here 6/10 against 2/10)."""
    from math import comb

    from lstm_research.sweeps.stats import fisher_exact

    def closed_form(a, n_a, b, n_b):
        k, n = a + b, n_a + n_b
        prob = [comb(n_a, x) * comb(n_b, k - x) / comb(n, k) for x in range(0, min(k, n_a) + 1)
                if k - x <= n_b]
        return sum(q for q in prob if q <= comb(n_a, a) * comb(n_b, b) / comb(n, k) * (1 + 1e-7))

    for case in [(6, 10, 2, 10), (20, 30, 9, 30), (0, 5, 5, 5), (3, 8, 3, 8)]:
        assert abs(fisher_exact(*case) - closed_form(*case)) < 1e-12, case
    assert abs(fisher_exact(6, 10, 2, 10) - 0.1698) < 1e-4
