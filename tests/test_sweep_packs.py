"""Sweeps of packed trials (``experiments/sweep.py --pack K``): the trials' files as run.py's,
a diverged member failed alone, unfinished packs kept across reruns, bad values refused."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lstm_research.sweeps.packs import PACKS_DIR, plan_packs, write_pack
from lstm_research.sweeps.spec import spec_from_strings

from conftest import (REPO, SWEEP_TINY, assert_sweep_refused, run_sweep, sweep_env, trial_dirs,
                      trial_status)

NARROW = [o for o in SWEEP_TINY if not o.startswith("model.hidden_size")]  # the width is swept


def test_packed_sweep_gives_each_trial_its_run_py_result(tmp_path):
    sw = tmp_path / "sw"
    out = run_sweep(sw, "--grid", "train.lr=0.01,1e30,0.02", "--grid", "model.hidden_size=6,8",
                    "--pack", "3", "--workers", "1", fixed=NARROW, check=1)
    assert "6 to run in 2 packs of up to 3" in out.stderr
    states = {t.name: trial_status(t) for t in trial_dirs(sw)}
    assert len({s["pack"] for s in states.values()}) == 2
    failed = {n: s for n, s in states.items() if s["status"] == "failed"}
    assert sorted(failed) == sorted(n for n in states if "lr=1e+30" in n), states
    assert all("diverged in its pack" in s["error"] and "loss is" in s["error"] for s in failed.values())
    assert sum(s["status"] == "done" for s in states.values()) == 4
    # the narrower trial of a pack (width 6 next to 8) against run.py alone
    tdir = next(t for t in trial_dirs(sw) if "lr=0.02,hidden_size=6" in t.name)
    alone = tmp_path / "alone"
    overrides = [*NARROW, "train.lr=0.02", "model.hidden_size=6"]
    run = subprocess.run([sys.executable, "run.py", "--config=configs/adding.py",
                          *[f"--config.{o}" for o in overrides], f"--workdir={alone}"],
                         cwd=REPO, env=sweep_env(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    packed, single = (json.loads((d / "result.json").read_text()) for d in (tdir, alone))
    assert packed["config"] == single["config"] and packed["steps"] == single["steps"]
    assert packed["num_params"] == single["num_params"] and packed["pack"]["size"] == 3
    for split in ("valid", "test"):
        for k, v in single[split].items():
            np.testing.assert_allclose(packed[split][k], v, rtol=1e-5, err_msg=f"{split} {k}")
    # the summary reads packed trials as any others
    rows = (sw / "results.csv").read_text().splitlines()
    assert len(rows) == 7 and sum(",done," in r for r in rows) == 4
    # a rerun has nothing left to do but the failed trials (not rerun without --retry_failed)
    again = run_sweep(sw, "--grid", "train.lr=0.01,1e30,0.02", "--grid", "model.hidden_size=6,8",
                      "--pack", "3", "--workers", "1", fixed=NARROW, check=1)
    assert "0 to run" in again.stderr


def test_unfinished_packs_are_kept_on_rerun(tmp_path):
    spec = spec_from_strings("configs/adding.py", grid=["seed=0,1,2,3"], zip=[], random=[], trials=None,
                             sweep_seed=0, ablation=False, fixed=SWEEP_TINY)
    trials = spec.expand()
    first = plan_packs(spec, tmp_path, trials, 2, REPO)
    assert [len(p.trials) for p in first] == [2, 2]
    # an earlier run packed trials 1 and 3 together and was killed: that pack resumes as it was
    old = type(first[0])("pack_old", (trials[1], trials[3]))
    write_pack(old, tmp_path, [["run.py"], ["run.py"]])
    again = plan_packs(spec, tmp_path, trials, 2, REPO)
    assert [[t.index for t in p.trials] for p in again] == [[0, 2], [1, 3]]
    assert again[1].id == "pack_old"
    # once one of its members is done (not among the trials to run), it is not reused
    rest = plan_packs(spec, tmp_path, [trials[0], trials[1], trials[2]], 2, REPO)
    assert "pack_old" not in [p.id for p in rest]
    assert (tmp_path / PACKS_DIR / "pack_old").is_dir()


@pytest.mark.parametrize("args,needle", [
    (["--pack", "0"], "--pack must be >= 1"),
    (["--grid", "model.num_layers=1,2", "--pack", "2"], "model.num_layers differs"),
    (["--grid", "model.cell=vanilla,nfg", "--pack", "2"], "model.cell differs"),
])
def test_bad_pack_values_are_one_line_errors(tmp_path, args, needle, capfd):
    assert_sweep_refused(tmp_path / "sw", args, needle, capfd)
    assert not any(Path(tmp_path / "sw").glob("0*"))
