"""Sweep runner with a fake trial script honouring the run.py contract: failures, kill + resume, orphans,
spec changes, the CLI, and submitit's local executor."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lstm_research.console import HEARTBEAT_ENV
from lstm_research.errors import UserError
from lstm_research.sweeps.scheduler import run_sweep
from lstm_research.sweeps.sweepdir import SweepDirError, sweep_lock, trial_state
from lstm_research.sweeps.spec import spec_from_strings
from lstm_research.sweeps.summary import read_results_csv

REPO = Path(__file__).resolve().parents[1]
CLI = REPO / "experiments" / "sweep.py"

# The run.py contract, faked: --config=FILE --config.k=v ... --workdir=DIR; appends its workdir name to
# fake.counter on every start; a resumable 10-step loop (checkpoint on SIGTERM, exit 143); sleeps
# fake.sleep seconds in total on a fresh start only (a resumed run is fast); raises at step 2 when
# model.cell == fake.fail_cell; ignores SIGTERM with fake.ignore_term=True.
FAKE_TRIAL = r'''
import json, os, signal, sys, time
cfg, workdir = {}, None
for a in sys.argv[1:]:
    if a.startswith("--workdir="):
        workdir = a.split("=", 1)[1]
    elif a.startswith("--config."):
        k, v = a[len("--config."):].split("=", 1)
        cfg[k] = v
    elif not a.startswith("--config="):
        sys.exit(f"fake trial: unknown argument {a}")
os.makedirs(workdir, exist_ok=True)
if "fake.counter" in cfg:
    with open(cfg["fake.counter"], "a") as f:
        f.write(os.path.basename(workdir) + "\n")
res = os.path.join(workdir, "result.json")
if os.path.exists(res):
    sys.exit(0)
stop = []
if cfg.get("fake.ignore_term") == "True":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
ckpt = os.path.join(workdir, "ckpt.json")
start = json.load(open(ckpt))["step"] if os.path.exists(ckpt) else 0
with open(os.path.join(workdir, "started"), "a") as f:
    f.write(f"{os.getpid()}\n")
steps, sleep = 10, (float(cfg.get("fake.sleep", 0)) if start == 0 else 0.0)
cell, seed = cfg.get("model.cell", "vanilla"), int(cfg.get("seed", 0))
final = {"vanilla": 1.0, "nig": 1.5}.get(cell, 1.1) + 0.01 * seed
for step in range(start, steps):
    if stop:
        json.dump({"step": step}, open(ckpt, "w"))
        open(os.path.join(workdir, "sigterm"), "w").close()
        print(f"fake: SIGTERM, checkpoint at step {step}", flush=True)
        sys.exit(143)
    t_end = time.time() + sleep / steps
    while time.time() < t_end and not stop:
        time.sleep(0.02)
    with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
        f.write(json.dumps({"step": step + 1, "split": "valid", "nll": final + 1.0 / (step + 1)}) + "\n")
    if cfg.get("fake.fail_cell") == cell and step == 2:
        raise RuntimeError(f"boom: fake failure for {cell}")
print("fake: done", flush=True)
json.dump({"status": "done", "metric": "nll", "lower_is_better": True, "valid": {"nll": final + 0.01},
           "test": {"nll": final}, "steps": steps, "wall_time": 0.1, "num_params": 42,
           "resumed_from": start, "config": cfg}, open(res, "w"))
'''

# The fake trial's config file: the keys a sweep may set (it is checked against them before launch).
FAKE_CONFIG = '''
import ml_collections


def get_config():
    return ml_collections.ConfigDict(dict(
        seed=0,
        model=dict(cell="vanilla", hidden_size=8),
        fake=dict(counter="", sleep=0.0, fail_cell="", ignore_term=False),
    ))
'''


@pytest.fixture
def env(tmp_path):
    (tmp_path / "fake_trial.py").write_text(FAKE_TRIAL)
    (tmp_path / "cfg.py").write_text(FAKE_CONFIG)
    return tmp_path


def _spec(env, grid, *fixed):
    return spec_from_strings(str(env / "cfg.py"), grid=grid,
                             fixed=[f"fake.counter={env / 'counter.txt'}", *fixed])


def _run(env, spec, sweep="sweep", **kw):
    kw.setdefault("progress", False)
    return run_sweep(spec, env / sweep, entry=str(env / "fake_trial.py"), **kw)


def _starts(env):
    path = env / "counter.txt"
    return path.read_text().split() if path.exists() else []


def _wait_for(predicate, timeout=30.0, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _cli_args(env, sweep, *extra):
    return [sys.executable, str(CLI), f"--config={env / 'cfg.py'}", f"--sweep_dir={env / sweep}",
            f"--entry={env / 'fake_trial.py'}", f"--set=fake.counter={env / 'counter.txt'}", "--no_progress",
            *extra]


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped) is not running
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def test_failed_trial_is_recorded_and_the_others_finish(env):
    spec = _spec(env, ["model.cell=vanilla,nig,cifg"], "fake.fail_cell=nig")
    report = _run(env, spec, parallel=2)
    ids = {t.overrides["model.cell"]: t.id for t in spec.expand()}
    assert report.states == {ids["vanilla"]: "done", ids["nig"]: "failed", ids["cifg"]: "done"}
    assert report.counts["done"] == 2 and report.counts["failed"] == 1 and not report.ok
    nig = env / "sweep" / ids["nig"]
    error = (nig / "error.txt").read_text()
    assert "returncode: 1" in error and "RuntimeError: boom: fake failure for nig" in error
    st = json.loads((nig / "status.json").read_text())
    assert st["status"] == "failed" and st["returncode"] == 1 and "boom" in st["error"]
    assert "Traceback" in (nig / "log.txt").read_text()
    rows = {r["model.cell"]: r for r in read_results_csv(env / "sweep" / "results.csv")}
    assert rows["nig"]["status"] == "failed" and "boom" in rows["nig"]["error"]
    assert rows["vanilla"]["test_nll"] == 1.0 and rows["cifg"]["status"] == "done"
    assert sorted(_starts(env)) == sorted(ids.values())

    again = _run(env, spec, parallel=2)  # done skipped, failed not retried: nothing starts
    assert again.states == report.states and len(_starts(env)) == 3
    retried = _run(env, spec, parallel=2, retry_failed=True)
    assert _starts(env)[3:] == [ids["nig"]] and retried.states[ids["nig"]] == "failed"
    assert json.loads((nig / "status.json").read_text())["attempts"] == 2
    assert (nig / "log.txt").read_text().count("===== [sweep] attempt") == 2


def test_killing_the_sweep_stops_trials_cleanly_and_a_rerun_completes_it(env):
    spec = _spec(env, ["seed=0:4"], "fake.sleep=1.0")
    ids = [t.id for t in spec.expand()]
    sweep = env / "sweep"
    proc = subprocess.Popen(_cli_args(env, "sweep", "--grid", "seed=0:4", "--set", "fake.sleep=1.0"),
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(lambda: (sweep / ids[1] / "result.json").exists() and (sweep / ids[2] / "started").exists(),
                  what="two finished trials and a third one started")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert "interrupted; rerun the same command" in out
    assert _starts(env) == ids[:3]
    assert [trial_state(sweep / i)["status"] for i in ids] == ["done", "done", "interrupted", "pending"]
    assert (sweep / ids[2] / "sigterm").exists()  # the trial got SIGTERM and saved its checkpoint
    assert not (sweep / ids[3]).exists()

    report = _run(env, spec)
    assert report.ok and _starts(env) == ids[:3] + ids[2:]  # only the missing trials ran
    results = [json.loads((sweep / i / "result.json").read_text()) for i in ids]
    assert [r["resumed_from"] > 0 for r in results] == [False, False, True, False]


def test_trial_ignoring_sigterm_is_killed_after_kill_timeout(env):
    sweep = env / "sweep"
    spec = _spec(env, ["seed=0"], "fake.sleep=60", "fake.ignore_term=True")
    (tid,) = [t.id for t in spec.expand()]
    proc = subprocess.Popen(_cli_args(env, "sweep", "--grid", "seed=0", "--set", "fake.sleep=60", "--set",
                                      "fake.ignore_term=True", "--kill_timeout=1"),
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(lambda: (sweep / tid / "started").exists(), what="the trial to start")
        pid = int((sweep / tid / "started").read_text().split()[0])
        t0 = time.time()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGINT, out
    assert time.time() - t0 < 10
    st = json.loads((sweep / tid / "status.json").read_text())
    assert st["status"] == "interrupted" and st["returncode"] == -signal.SIGKILL
    assert not _alive(pid)


def test_rerun_after_sigkilled_sweep_stops_the_orphaned_trial_first(env):
    sweep = env / "sweep"
    spec = _spec(env, ["seed=0"], "fake.sleep=60")
    (tid,) = [t.id for t in spec.expand()]
    proc = subprocess.Popen(_cli_args(env, "sweep", "--grid", "seed=0", "--set", "fake.sleep=60"), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    orphan = None
    try:
        _wait_for(lambda: (sweep / tid / "started").exists(), what="the trial to start")
        orphan = int((sweep / tid / "started").read_text().split()[0])
        proc.kill()  # SIGKILL: no chance to clean up; the trial keeps running
        proc.wait(timeout=10)
        assert _alive(orphan)
        report = _run(env, spec, kill_timeout=10)
    finally:
        if orphan is not None and _alive(orphan):
            os.kill(orphan, signal.SIGKILL)
    assert report.ok and not _alive(orphan)
    assert (sweep / tid / "sigterm").exists()  # stopped with SIGTERM (checkpoint), then resumed
    assert json.loads((sweep / tid / "result.json").read_text())["resumed_from"] > 0
    assert _starts(env) == [tid, tid]


def test_different_spec_is_refused_unless_overwrite_which_reuses_matching_trials(env):
    first = _spec(env, ["model.cell=vanilla,nig"])
    assert _run(env, first).ok
    old_ids = {t.overrides["model.cell"]: t.id for t in first.expand()}
    second = _spec(env, ["model.cell=cifg,vanilla,nig"])
    with pytest.raises(SweepDirError, match=r"different sweep.*grid.*--overwrite"):
        _run(env, second)
    report = _run(env, second, overwrite=True)
    new_ids = {t.overrides["model.cell"]: t.id for t in second.expand()}
    assert report.ok and new_ids["vanilla"] != old_ids["vanilla"]  # index shifted
    assert _starts(env) == [old_ids["vanilla"], old_ids["nig"], new_ids["cifg"]]  # only cifg ran again
    assert (env / "sweep" / new_ids["vanilla"] / "result.json").exists()
    assert not (env / "sweep" / old_ids["vanilla"]).exists()
    assert len(list((env / "sweep").glob("sweep.json.*.bak"))) == 1


def test_rerun_after_the_config_file_changed_is_refused_naming_the_keys(env):
    spec = _spec(env, ["model.cell=vanilla,nig"])
    assert _run(env, spec).ok
    assert _run(env, spec).ok and len(_starts(env)) == 2  # unchanged: nothing runs again
    # a comment or a new key is no change; another value of an existing key is
    (env / "cfg.py").write_text(FAKE_CONFIG.replace("seed=0,", "seed=0,  # edited\n        extra=1,"))
    assert _run(env, spec).ok and len(_starts(env)) == 2
    (env / "cfg.py").write_text(FAKE_CONFIG.replace("hidden_size=8", "hidden_size=16"))
    with pytest.raises(SweepDirError, match=r"ran another config.*model\.hidden_size: 8 -> 16.*--overwrite"):
        _run(env, spec)
    # a sweep.json written before trial configs were kept records it on the next run
    meta = json.loads((env / "sweep" / "sweep.json").read_text())
    assert meta["trial_config"]["model"]["hidden_size"] == 8
    assert _run(env, spec, overwrite=True).ok and len(_starts(env)) == 2  # done trials kept
    meta = json.loads((env / "sweep" / "sweep.json").read_text())
    assert meta["trial_config"]["model"]["hidden_size"] == 16
    del meta["trial_config"]
    (env / "sweep" / "sweep.json").write_text(json.dumps(meta))
    (env / "cfg.py").write_text(FAKE_CONFIG.replace("hidden_size=8", "hidden_size=32"))
    assert _run(env, spec).ok
    meta = json.loads((env / "sweep" / "sweep.json").read_text())
    assert meta["trial_config"]["model"]["hidden_size"] == 32


def test_restore_results_resumes_a_sweep_whose_directory_is_gone(env):
    spec = _spec(env, ["model.cell=vanilla,nig,cifg"], "fake.fail_cell=nig")
    first = _run(env, spec)
    ids = {t.overrides["model.cell"]: t.id for t in spec.expand()}
    assert first.states[ids["nig"]] == "failed"
    kept = env / "kept_results.csv"  # what a committed results.csv holds after the machine is wiped
    kept.write_text((env / "sweep" / "results.csv").read_text())
    before = {r["trial"]: r for r in read_results_csv(kept)}

    # a sweep of other trials is refused before anything is written
    other = _spec(env, ["model.cell=np"])
    with pytest.raises(UserError, match=r"2 of its 2 done trials are not trials of this sweep"):
        _run(env, other, sweep="other", restore_from=kept)
    assert not (env / "other").exists()
    with pytest.raises(UserError, match="no such file"):
        _run(env, spec, sweep="fresh", restore_from=env / "missing.csv")

    report = _run(env, spec, sweep="fresh", restore_from=kept, retry_failed=True)
    # the two done trials are not run again; the failed one is (retry_failed), and fails again
    assert _starts(env)[3:] == [ids["nig"]]
    assert report.states == first.states
    after = {r["trial"]: r for r in read_results_csv(env / "fresh" / "results.csv")}
    for cell in ("vanilla", "cifg"):
        a, b = after[ids[cell]], before[ids[cell]]
        assert {k: a[k] for k in ("status", "valid_nll", "test_nll", "steps", "num_params", "attempts")} == \
            {k: b[k] for k in ("status", "valid_nll", "test_nll", "steps", "num_params", "attempts")}
        res = json.loads((env / "fresh" / ids[cell] / "result.json").read_text())
        assert res["restored_from"] == str(kept) and not (env / "fresh" / ids[cell] / "metrics.jsonl").exists()
    # restoring again changes nothing (the trials already hold results)
    again = _run(env, spec, sweep="fresh", restore_from=kept)
    assert again.states == first.states and len(_starts(env)) == 4
    # a grown sweep numbers its trials anew; rows are matched by their hash
    grown = _spec(env, ["model.cell=np,vanilla,nig,cifg"], "fake.fail_cell=nig")
    new_ids = {t.overrides["model.cell"]: t.id for t in grown.expand()}
    assert new_ids["vanilla"] != ids["vanilla"]
    _run(env, grown, sweep="grown", restore_from=kept)
    assert sorted(_starts(env)[4:]) == sorted([new_ids["np"], new_ids["nig"]])
    res = json.loads((env / "grown" / new_ids["cifg"] / "result.json").read_text())
    assert res["restored_from"] == str(kept) and res["test"]["nll"] == before[ids["cifg"]]["test_nll"]


def test_summarizing_a_results_folder_keeps_its_results(env):
    """A results folder (sweep.json and results.csv, no trial folders: committed or copied) summarizes
    as its sweep did; its results.csv used to be rewritten with every trial pending."""
    import shutil

    from lstm_research.sweeps.summary import summarize

    spec = _spec(env, ["model.cell=vanilla,nig,cifg", "seed=0,1"], "fake.fail_cell=nig")
    _run(env, spec)
    ref = summarize(env / "sweep", plots=False)
    folder = env / "results_folder"
    folder.mkdir()
    for name in ("sweep.json", "results.csv"):
        shutil.copy(env / "sweep" / name, folder / name)
    out = summarize(folder, plots=False)
    assert (folder / "results.csv").read_text() == (env / "sweep" / "results.csv").read_text()
    assert [r["status"] for r in out["rows"]].count("done") == 4  # nig's two trials failed
    stats = ("label", "n", "failed", "unfinished", "mean", "p")
    assert [{k: g[k] for k in stats} for g in out["groups"]] == [{k: g[k] for k in stats} for g in ref["groups"]]
    assert [g["failed"] for g in out["groups"]] == [0, 2, 0]


def test_results_csv_is_rewritten_while_the_sweep_runs(env, monkeypatch):
    """A sweep killed without writing results.csv at its end leaves a recent one behind."""
    from lstm_research.sweeps import scheduler

    snapshots, original = [], scheduler.write_results_csv

    def write(sweep_dir, *a, **k):
        path = original(sweep_dir, *a, **k)
        snapshots.append([r["status"] for r in read_results_csv(path)])
        return path
    monkeypatch.setattr(scheduler, "write_results_csv", write)
    monkeypatch.setattr(scheduler, "RESULTS_EVERY_S", 0.3)
    spec = _spec(env, ["seed=0,1,2"], "fake.sleep=1.0")
    assert _run(env, spec).ok
    during = snapshots[:-1]  # the last one is the end-of-run write
    assert during and any(s.count("done") in (1, 2) for s in during), snapshots
    assert snapshots[-1] == ["done"] * 3


def test_heartbeat_lines_without_a_terminal(env, monkeypatch, capfd):
    """No progress bar where stderr is not a terminal (asked for or not): heartbeat lines with
    the counts, the rate of this invocation and an ETA, no carriage-return frames."""
    monkeypatch.setenv(HEARTBEAT_ENV, "0.2")
    spec = _spec(env, ["seed=0,1,2"], "fake.sleep=1.0")
    assert _run(env, spec, parallel=1, progress=True).ok
    err = capfd.readouterr().err
    beats = [line for line in err.splitlines() if line.startswith("[sweep] ") and "ETA" in line]
    assert len(beats) >= 3 and "\r" not in err, err
    assert beats[0].startswith("[sweep] 0/3 trials (0%): 0 done, 0 failed, 1 running | 0.0 trials/h"
                               " | ETA ?"), beats[0]
    ended = [int(b.split()[1].split("/")[0]) for b in beats]
    assert ended == sorted(ended) and ended[-1] >= 2, beats
    last = beats[-1]
    rate = float(last.split(" | ")[1].split()[0])
    assert 0 < rate < 3 * 3600 and "ETA ?" not in last, last  # at most 3 trials in a second


def test_locked_sweep_dir_and_missing_entry_are_clear_errors(env):
    spec = _spec(env, ["seed=0"])
    (env / "sweep").mkdir()
    with sweep_lock(env / "sweep"):
        with pytest.raises(SweepDirError, match="another sweep process"):
            _run(env, spec)
    with pytest.raises(UserError, match="trial entry point 'run.py' not found"):
        run_sweep(spec, env / "sweep", cwd=env, progress=False)
    with pytest.raises(ValueError, match="unknown executor 'pbs'; valid: local, submitit_local, slurm"):
        _run(env, spec, executor="pbs")


def test_cli_runs_and_summarizes(env):
    res = subprocess.run(_cli_args(env, "abl", "--ablation", "--grid", "seed=0,1", "--parallel", "2",
                                   "--set", "fake.fail_cell=nig"),
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert res.returncode == 1, res.stderr  # some trials failed
    assert "sweep " in res.stdout and "16 done, 2 failed" in res.stdout
    md = (env / "abl" / "summary.md").read_text()
    assert "| **vanilla** ⚠ | 2 | 0 |" in md and "| nig ⚠ | 0 | 2 |" in md
    assert (env / "abl" / "box_nll.png").stat().st_size > 10_000
    (env / "abl" / "summary.md").unlink()
    res = subprocess.run([sys.executable, str(CLI), "--summarize", str(env / "abl"), "--no_plots"],
                         cwd=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert (env / "abl" / "summary.md").exists()


def test_submitit_local_executor_runs_a_trial(env):
    spec = _spec(env, ["seed=0"])
    report = _run(env, spec, executor="submitit_local")
    (tid,) = [t.id for t in spec.expand()]
    tdir = env / "sweep" / tid
    assert report.ok, (tdir / "log.txt").read_text()
    st = json.loads((tdir / "status.json").read_text())
    assert st["executor"] == "submitit_local" and st["job_id"] and st["returncode"] == 0
    assert "fake: done" in (tdir / "log.txt").read_text()
    assert json.loads((tdir / "result.json").read_text())["test"]["nll"] == 1.0
