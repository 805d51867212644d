"""Sweep figures and the summary's multiple-comparison options: Holm's adjustment by hand, the
shared log-y rule, units and significance marks on the box plot, per-group learning curves
(median and interquartile band against epochs), the gate-statistics figure."""
import json
import math

import numpy as np
import pytest
from scipy import stats as sps

from lstm_research.sweeps import plots
from lstm_research.sweeps.spec import spec_from_strings
from lstm_research.sweeps.summary import holm, summarize
from lstm_research.sweeps.sweepdir import prepare_sweep_dir


@pytest.fixture
def figures(monkeypatch):
    """Every figure the plots module saves, by file name (written as usual)."""
    saved = {}
    real = plots.Figure.savefig

    def savefig(fig, out, *args, **kwargs):
        saved[str(out).rsplit("/", 1)[-1]] = fig
        return real(fig, out, *args, **kwargs)
    monkeypatch.setattr(plots.Figure, "savefig", savefig)
    return saved


def test_holm_by_hand():
    # sorted valid p: 0.005, 0.01, 0.03, 0.04 (m = 4) -> 4*0.005 = 0.02, 3*0.01 = 0.03,
    # 2*0.03 = 0.06, max(1*0.04, 0.06) = 0.06; NaN is no test
    got = holm([0.01, 0.04, 0.03, math.nan, 0.005])
    assert got[:3] == pytest.approx([0.03, 0.06, 0.06]) and got[4] == pytest.approx(0.02)
    assert math.isnan(got[3])
    assert holm([0.5, 0.6]) == [1.0, 1.0]  # 2*0.5 capped at 1; monotone
    assert holm([]) == [] and holm([0.2]) == [0.2]


def test_log_y_rule():
    assert plots.use_log_y([1.0, 2.0, 350_000.0])
    assert not plots.use_log_y([1.0, 2.0, 40.0])
    assert not plots.use_log_y([-1.0, 2.0, 350_000.0])
    assert not plots.use_log_y([math.nan, 1.0, 2.0])


# test nll per cell and seed
VALUES = {"vanilla": [8.0, 8.1, 8.2, 8.05], "nig": [8.9, 9.0, 9.1, 9.05],
          "np": [8.02, 8.12, 8.18, 8.07], "noaf": [8.6, 350_000.0, 8.7]}


def _sweep(tmp_path, curves=True):
    spec = spec_from_strings("cfg.py", grid=["model.cell=vanilla,nig,np,noaf", "seed=0:4"],
                             random=["train.lr=loguniform(1e-4,1e-1)"], trials=1)
    sweep = tmp_path / "sweep"
    for t in prepare_sweep_dir(spec, sweep):
        d = sweep / t.id
        d.mkdir()
        cell, seed = t.overrides["model.cell"], t.overrides["seed"]
        if seed >= len(VALUES[cell]):
            continue  # never ran: pending
        v = VALUES[cell][seed]
        (d / "config.json").write_text(json.dumps({"train": {"epochs": 5, "eval_every": 0}}))
        if curves:
            with open(d / "metrics.jsonl", "w") as f:
                for epoch in range(1, 4 + (seed % 2)):  # seeds 1, 3 run one epoch longer
                    f.write(json.dumps({"step": 7 * epoch - 2, "split": "train",
                                        "loss": 30.0 + seed + 10.0 / epoch}) + "\n")
                    f.write(json.dumps({"step": 7 * epoch, "split": "valid",
                                        "nll": v + seed + 1.0 / epoch}) + "\n")
        (d / "result.json").write_text(json.dumps({
            "status": "done", "task": "jsb", "metric": "nll", "lower_is_better": True,
            "valid": {"nll": v, "gates/L0/f_mean": 0.5 + 0.01 * seed,
                      "gates/L0/f_sat": 0.1, "gates/L0/f_timescale": 2.0},
            "test": {"nll": v}, "steps": 28, "wall_time": 1.0, "num_params": 10, "config": {}}))
    return sweep


def test_box_plot_units_marks_and_holm(tmp_path, figures):
    sweep = _sweep(tmp_path)
    out = summarize(sweep, holm_adjust=True)
    stats = {s.label: s for s in out["groups"]}
    raw = {g: sps.ttest_ind(VALUES[g], VALUES["vanilla"], equal_var=False).pvalue
           for g in ("nig", "np", "noaf")}
    want = dict(zip(raw, holm(list(raw.values()))))
    for g in raw:
        assert stats[g].p == pytest.approx(raw[g]) and stats[g].p_holm == pytest.approx(want[g])
    assert want["nig"] < 0.05 and raw["np"] > 0.05  # nig marked, np not
    assert stats["nig"].verdict == "worse"

    ax = figures["box_nll.png"].axes[0]
    assert ax.get_ylabel() == "test NLL (nats per frame) (lower is better, log scale)"
    marks = {t.get_text() for t in ax.texts if t.get_text() in ("*", "†", "*†")}
    # Welch: nig only; the sign test (every group ran the same draws) has 4 or 3 pairs, too
    # few for p < 0.05 (two-sided p >= 2 / 2^4)
    assert marks == {"*"}
    assert "Holm-adjusted" in ax.get_xlabel()

    md = (sweep / "summary.md").read_text()
    assert "p (Holm)" in md and f"{want['nig']:.3g}" in md
    assert "| noaf ⚠ | 3 |" not in md and "| noaf | 3 |" in md  # 3 trials: no warning

    # the vs-plot obeys the same log-y rule (a diverged trial at 350,000)
    plots.plot_vs(out["rows"], "seed", tmp_path / "vs_seed.png", metric="nll",
                  keys=["model.cell"], baseline="vanilla", log_x=False, label="NLL (nats per frame)")
    vs = figures["vs_seed.png"].axes[0]
    assert vs.get_yscale() == "log" and vs.get_xscale() == "linear"
    assert vs.get_ylabel().startswith("test NLL (nats per frame)")


def test_few_trials_are_flagged(tmp_path):
    sweep = _sweep(tmp_path, curves=False)
    for d in sweep.glob("*cell=noaf*"):
        if (d / "result.json").exists() and "seed=0" not in d.name:
            (d / "result.json").unlink()
            break
    md = summarize(sweep, plots=False)["summary_md"].read_text()
    assert "| noaf ⚠ | 2 |" in md and "fewer than 3 finished trials (noaf)" in md


def test_group_curves_median_and_quartiles_against_epochs(tmp_path, figures):
    sweep = _sweep(tmp_path)
    summarize(sweep)
    valid, train = figures["curves_groups.png"].axes
    assert valid.get_xlabel() == "epoch" and train.get_xlabel() == "epoch"
    line = next(ln for ln in valid.lines if ln.get_label().startswith("nig"))
    # epochs 1..3: all 4 trials; epoch 4: seeds 1 and 3 only
    xs, ys = line.get_data()
    assert list(xs) == [1.0, 2.0, 3.0, 4.0]
    nig = VALUES["nig"]
    for epoch, y in zip(xs, ys):
        vals = [nig[s] + s + 1.0 / epoch for s in range(4) if epoch < 4 or s % 2]
        assert y == pytest.approx(np.median(vals))
    band = valid.collections[[ln.get_label() for ln in valid.lines].index(line.get_label())]
    top = band.get_paths()[0].vertices[:, 1]
    vals1 = [nig[s] + s + 1.0 for s in range(4)]
    assert max(top) >= np.percentile(vals1, 75) - 1e-9
    assert any(v == pytest.approx(np.percentile(vals1, 25)) for v in top)
    tline = next(ln for ln in train.lines if ln.get_label().startswith("nig"))
    # training loss logged 2 steps before each epoch's end (7 steps per epoch)
    assert list(tline.get_data()[0])[:2] == pytest.approx([5 / 7, 12 / 7])


def test_gates_figure_from_gate_columns(tmp_path, figures):
    sweep = _sweep(tmp_path, curves=False)
    out = summarize(sweep)
    assert sweep / "gates.png" in out["plots"]
    mean_ax, sat_ax, tau_ax = figures["gates.png"].axes
    assert tau_ax.get_yscale() == "log"
    assert len(mean_ax.patches) == 4  # one f box per group
    lo, hi = mean_ax.get_ylim()
    assert lo <= 0.5 and hi >= 0.53
