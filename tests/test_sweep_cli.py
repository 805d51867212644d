"""Bad command lines of experiments/sweep.py and experiments/solve_rates.py.

Each must end with exit status 2, exactly one line on stderr starting with ``error:`` that says
what is wrong, no traceback, and nothing written to the sweep directory. The table runs the
scripts' ``main(argv)`` in-process (a process of its own costs 3-6 s of imports on 2 cores, and
validation comes before anything is launched); the cases of :data:`AS_PROCESSES` also run as
real processes, as a user would.
"""

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import assert_one_error_line, experiment_script

REPO = Path(__file__).resolve().parents[1]
SWEEP = [sys.executable, str(REPO / "experiments" / "sweep.py")]
SOLVE = [sys.executable, str(REPO / "experiments" / "solve_rates.py")]

ADDING = "--config=configs/adding.py"

# (id, command (with {S} the sweep dir, {T} the tmp dir), what the error line must contain)
CASES = [
    ("parallel_0", SWEEP + [ADDING, "--sweep_dir={S}", "--parallel", "0"], "--parallel must be >= 1"),
    ("kill_timeout_negative", SWEEP + [ADDING, "--sweep_dir={S}", "--kill_timeout=-1"], "--kill_timeout"),
    ("top_above_1", SWEEP + ["--summarize", "{S}", "--top", "1.5"], "--top must be a fraction"),
    ("top_not_a_number", SWEEP + ["--summarize", "{S}", "--top", "abc"], "--top: invalid float value"),
    ("alpha_2", SWEEP + ["--summarize", "{S}", "--alpha", "2"], "--alpha"),
    ("summarize_missing_dir", SWEEP + ["--summarize", "{S}"], "not a sweep directory, it does not exist"),
    ("summarize_empty_dir", SWEEP + ["--summarize", "{T}/empty"], "has no sweep.json"),
    ("no_sweep_dir", SWEEP + [ADDING], "--config and --sweep_dir are required"),
    ("unknown_flag", SWEEP + [ADDING, "--sweep_dir={S}", "--bogus=1"], "unrecognized argument '--bogus=1'"),
    ("grid_without_values", SWEEP + [ADDING, "--sweep_dir={S}", "--grid", "seed"], "expected KEY=VALUES"),
    ("unknown_distribution", SWEEP + [ADDING, "--sweep_dir={S}", "--random", "train.lr=normal(0,1)",
                                      "--trials", "2"], "unknown distribution 'normal'"),
    ("unknown_grid_key", SWEEP + [ADDING, "--sweep_dir={S}", "--grid", "model.hidden=32,64"],
     "unknown config key 'model.hidden' (did you mean 'model.hidden_size'?)"),
    ("unknown_set_key", SWEEP + [ADDING, "--sweep_dir={S}", "--set", "train.lrr=0.1"],
     "--set: unknown config key 'train.lrr' (did you mean 'train.lr'?)"),
    ("unknown_zip_key", SWEEP + [ADDING, "--sweep_dir={S}", "--zip", "a=1,2", "--zip", "seed=3,4"],
     "--zip: unknown config key 'a'"),
    ("float_for_int", SWEEP + [ADDING, "--sweep_dir={S}", "--config.model.hidden_size=12.5"],
     "model.hidden_size=12.5: invalid literal for int()"),
    ("random_float_for_int", SWEEP + [ADDING, "--sweep_dir={S}", "--random",
                                      "model.hidden_size=loguniform(20,200)", "--trials", "3"],
     "--random model.hidden_size="),
    ("bad_cell", SWEEP + [ADDING, "--sweep_dir={S}", "--grid", "model.cell=vanilla,vanila"],
     "--grid model.cell=vanila: unknown cell 'vanila'"),
    ("bad_cell_switch", SWEEP + [ADDING, "--sweep_dir={S}", "--grid", "model.cell=lstm:forget_bais=1"],
     "unknown switch 'forget_bais'"),
    ("missing_config_file", SWEEP + ["--config=configs/nope.py", "--sweep_dir={S}", "--grid", "seed=0,1"],
     "config file 'configs/nope.py' not found"),
    ("variant_on_plain_config", SWEEP + ["--config=configs/adding.py:big", "--sweep_dir={S}"],
     "has no variants"),
    ("unknown_variant", SWEEP + ["--config=configs/papers/jozefowicz2015.py:nope", "--sweep_dir={S}"],
     "unknown variant 'nope'"),
    ("sweep_dir_is_a_file", SWEEP + [ADDING, "--sweep_dir={T}/afile", "--grid", "seed=0,1"], "is a file"),
    ("dry_run_checks_too", SWEEP + [ADDING, "--sweep_dir={S}", "--grid", "model.hidden=32", "--dry_run"],
     "unknown config key 'model.hidden'"),
    ("solve_missing_csv", SOLVE + ["{S}/results.csv", "--solved", "test_mse<0.01"], "cannot read"),
    ("solve_bad_criterion", SOLVE + ["{T}/results.csv", "--solved", "test_mse ~ 1"], "COLUMN OP NUMBER"),
    ("solve_unknown_column", SOLVE + ["{T}/results.csv", "--solved", "test_nll<1"],
     "column 'test_nll' not in results.csv"),
    ("solve_batch_0", SOLVE + ["{T}/results.csv", "--solved", "test_mse<1", "--batch", "0"], "--batch"),
    ("solve_no_finished_trial", SOLVE + ["{T}/unfinished.csv", "--solved", "test_mse<1"],
     "no finished trial"),
    ("solve_missing_solved", SOLVE + ["{T}/results.csv"], "--solved"),
]

RESULTS_CSV = "trial,index,seed,status,metric,lower_is_better,test_mse,steps\n" \
              "0000_seed=0_aaaaaaaa,0,0,done,mse,True,0.005,100\n"
UNFINISHED_CSV = "trial,index,seed,status,metric,lower_is_better,test_mse,steps\n" \
                 "0000_seed=0_aaaaaaaa,0,0,pending,,,,\n"


#: the cases also run as processes: an argparse error, a config error, and solve_rates.py
AS_PROCESSES = ("unknown_flag", "unknown_grid_key", "solve_bad_criterion")


def _prepare(tmp_path, argv):
    """The test's folder (an empty folder, a file, two results tables, a trial entry that fails
    were it launched) and ``argv`` with its placeholders filled in."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "afile").write_text("not a directory\n")
    (tmp_path / "results.csv").write_text(RESULTS_CSV)
    (tmp_path / "unfinished.csv").write_text(UNFINISHED_CSV)
    (tmp_path / "noop.py").write_text("raise SystemExit('a trial was launched')\n")
    cmd = [a.format(S=tmp_path / "sweep", T=tmp_path) for a in argv]
    if cmd[:2] == SWEEP and "--summarize" not in cmd:  # were a trial launched, it would write
        cmd += [f"--entry={tmp_path / 'noop.py'}", "--no_progress", "--no_summary"]
    return cmd


def _files(folder):
    return sorted(p.relative_to(folder) for p in folder.rglob("*"))


@pytest.mark.parametrize("argv, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_command_line_is_one_error_line_and_exit_2(tmp_path, argv, expected, capfd,
                                                       monkeypatch):
    cmd = _prepare(tmp_path, argv)
    before = _files(tmp_path)
    monkeypatch.chdir(REPO)  # the scripts' relative paths (configs/...), as in a process below
    main = experiment_script("sweep" if cmd[:2] == SWEEP else "solve_rates").main
    capfd.readouterr()
    returncode = main(cmd[2:])
    out, err = capfd.readouterr()
    assert_one_error_line(returncode, out, err, expected)
    assert _files(tmp_path) == before  # nothing written


@pytest.mark.parametrize("case", AS_PROCESSES)
def test_bad_command_line_as_a_process(tmp_path, case):
    (argv, expected), = [c[1:] for c in CASES if c[0] == case]
    cmd = _prepare(tmp_path, argv)
    before = _files(tmp_path)
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert_one_error_line(res.returncode, res.stdout, res.stderr, expected)
    assert _files(tmp_path) == before  # nothing written
