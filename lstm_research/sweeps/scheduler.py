"""Runs a sweep's trials: N at a time, on a launcher (local processes or submitit jobs).

:func:`run_sweep` checks the spec against its trial config, takes the sweep dir's lock, writes
``sweep.json``, then launches trials in :meth:`SweepSpec.run_order` as slots free up, polls them,
records each outcome in its ``status.json`` (and ``error.txt`` for a failure), and writes
``results.csv`` at the end. Re-running the same sweep skips done trials and relaunches the others
(the trial resumes from its own checkpoint); failed ones only with ``retry_failed``.
SIGINT/SIGTERM to the sweep sends SIGTERM to every running trial (so it can save a checkpoint),
waits up to ``kill_timeout`` seconds, then SIGKILLs what is left; a second signal skips the wait.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shlex
import signal
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Mapping, Sequence

from tqdm.auto import tqdm

from lstm_research.errors import UserError
from lstm_research.sweeps.check import EXECUTORS, check_run_options, check_spec
from lstm_research.sweeps.cluster import SubmititLauncher, SubmititOptions
from lstm_research.sweeps.local import LocalLauncher, stop_stale_trial
from lstm_research.sweeps.packs import Pack, mark_running, pack_log, plan_packs, prepare_pack
from lstm_research.sweeps.progress import SweepProgress
from lstm_research.sweeps.results import restorable_rows, restore_results, write_results_csv
from lstm_research.sweeps.spec import SweepSpec, Trial
from lstm_research.sweeps.workers import WorkerLauncher, WorkerOptions
from lstm_research.sweeps.sweepdir import (
    ERROR_TXT,
    LOG_TAIL_LINES,
    LOG_TXT,
    STATUS_JSON,
    describe_returncode,
    log_tail,
    now,
    prepare_sweep_dir,
    read_json,
    repo_root,
    sweep_lock,
    trial_state,
    write_json,
)

__all__ = ["EXECUTORS", "SubmititOptions", "SweepReport", "WorkerOptions", "run_sweep"]

RESULTS_EVERY_S = 60.0  # seconds between rewrites of results.csv while a sweep runs


@dataclasses.dataclass
class SweepReport:
    sweep_dir: Path
    counts: dict
    states: dict  # trial id -> status
    interrupted: int | None = None  # the signal number that stopped the sweep, if any

    @property
    def ok(self) -> bool:
        return self.interrupted is None and self.counts.get("done", 0) == len(self.states)


@dataclasses.dataclass
class _Running:
    """A launched trial, or a launched pack of trials (``pack``: its members share the process)."""
    trial: Trial
    handle: Any
    slot: int
    log_file: Any
    started: float
    terminated: bool = False
    pack: Pack | None = None

    id = property(lambda self: self.pack.id if self.pack else self.trial.id)
    members = property(lambda self: self.pack.trials if self.pack else (self.trial,))


class _Sweep:
    """One run of a sweep: the queue, the slots, the signal handling."""

    def __init__(self, spec, sweep_dir, trials, *, parallel, launcher, entry, python, cwd, retry_failed,
                 kill_timeout, env, progress, pack=None, results_every=None):
        self.spec, self.sweep_dir, self.trials, self.pack = spec, sweep_dir, trials, pack
        self.results_every = results_every  # seconds between results.csv rewrites; None: never
        self.parallel, self.launcher = parallel, launcher
        self.entry, self.python, self.cwd = entry, python, cwd
        self.retry_failed, self.kill_timeout, self.env = retry_failed, kill_timeout, env
        self.progress = progress
        self.stop_signal: int | None = None
        self.force = False

    # -------------------------------------------------------------- signals

    def _on_signal(self, signum, _frame):
        if self.stop_signal is not None:
            self.force = True
        self.stop_signal = signum

    @contextlib.contextmanager
    def _signals(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    # -------------------------------------------------------------- bookkeeping

    def _dir(self, trial: Trial) -> Path:
        return self.sweep_dir / trial.id

    def _write_status(self, trial: Trial, **fields) -> dict:
        path = self._dir(trial) / STATUS_JSON
        st = read_json(path) or {}
        st.update(fields)
        write_json(path, st)
        return st

    def _launch_pack(self, pack: Pack, slot: int) -> _Running:
        """One ``run.py --pack=...`` process for the pack's members; each member's status.json
        and log.txt say which pack runs it (the pack's output goes to its own log.txt)."""
        cmd, states = prepare_pack(pack, self.spec, self.sweep_dir, self.python, self.entry, self.kill_timeout)
        log_file = open(pack_log(pack, self.sweep_dir), "a")  # noqa: SIM115 - closed in _finish
        print(f"===== [sweep] started {now()}: {shlex.join(cmd)}", file=log_file, flush=True)
        handle, info = self.launcher.start(cmd, self.cwd, self.env, log_file, slot)
        mark_running(pack, self.sweep_dir, states, cmd, info)
        return _Running(pack.trials[0], handle, slot, log_file, time.time(), pack=pack)

    def _launch(self, trial: Trial | Pack, slot: int) -> _Running:
        if isinstance(trial, Pack):
            return self._launch_pack(trial, slot)
        tdir = self._dir(trial)
        tdir.mkdir(parents=True, exist_ok=True)
        st = read_json(tdir / STATUS_JSON) or {}
        if st.get("status") == "running":
            stop_stale_trial(st, tdir, self.kill_timeout)
        cmd = self.spec.command(trial, str(tdir), python=self.python, entry=self.entry)
        attempt = int(st.get("attempts", 0)) + 1
        log_file = open(tdir / LOG_TXT, "a")  # noqa: SIM115 - closed in _finish
        log_file.write(f"===== [sweep] attempt {attempt} started {now()}: {shlex.join(cmd)}\n")
        log_file.flush()
        handle, info = self.launcher.start(cmd, self.cwd, self.env, log_file, slot)
        for stale in ("pid", "job_id", "returncode", "ended", "error"):
            st.pop(stale, None)
        write_json(tdir / STATUS_JSON, {**st, "status": "running", "attempts": attempt, "command": cmd,
                                         "started": now(), **info})
        return _Running(trial, handle, slot, log_file, time.time())

    def _finish(self, run: _Running, rc: int | None, err: str | None) -> dict[str, str]:
        """Record the outcome of each trial the run held: {trial id: status}."""
        run.log_file.close()
        fields: dict[str, Any] = {"returncode": rc, "ended": now(),
                                  "duration_s": round(time.time() - run.started, 3)}
        lost = getattr(self.launcher, "lost", lambda _h: False)(run.handle)
        if lost and not run.terminated:
            # its worker died under it (killed, out of memory): rerunning the sweep resumes it
            tqdm.write(f"[sweep] {run.id}: {err}; rerun the sweep to resume it from its checkpoint",
                       file=sys.stderr)
        log = Path(run.log_file.name)
        return {t.id: self._finish_trial(t, run, rc, err, fields, lost, log) for t in run.members}

    def _finish_trial(self, trial: Trial, run: _Running, rc, err, fields, lost, log: Path) -> str:
        tdir = self._dir(trial)
        if trial_state(tdir)["status"] == "done":
            with contextlib.suppress(FileNotFoundError):
                os.remove(tdir / ERROR_TXT)
            self._write_status(trial, status="done", error=None, **fields)
            return "done"
        failure = read_json(tdir / "pack_failure.json") if run.pack else None
        if run.terminated and failure is None:
            self._write_status(trial, status="interrupted", **fields)
            return "interrupted"
        if lost and failure is None:
            self._write_status(trial, status="interrupted", error=err, **fields)
            return "interrupted"
        tail = log_tail(log)
        if failure is not None:  # diverged inside its pack; the others went on
            reason, last = "diverged in its pack", str(failure.get("error", ""))
        else:
            reason = err or describe_returncode(rc)
            last = next((ln.strip() for ln in reversed(tail.splitlines())
                         if ln.strip() and not ln.startswith("=====")), "")
        st = self._write_status(trial, status="failed", error=f"{reason}: {last}" if last else reason,
                                **fields)
        (tdir / ERROR_TXT).write_text(
            f"trial: {trial.id}\nreturncode: {rc}\nreason: {reason}\nattempt: {st.get('attempts')}\n"
            f"command: {shlex.join(st.get('command', []))}\n"
            f"--- last {LOG_TAIL_LINES} lines of {log} ---\n{tail}\n")
        return "failed"

    # -------------------------------------------------------------- main loop

    def run(self) -> SweepReport:
        states = {t.id: trial_state(self._dir(t))["status"] for t in self.trials}
        todo = [t for t in self.spec.run_order(self.trials)
                if states[t.id] != "done" and (states[t.id] != "failed" or self.retry_failed)]
        units = plan_packs(self.spec, self.sweep_dir, todo, self.pack, self.cwd) if self.pack else todo
        queue = deque(units)
        done = sum(s == "done" for s in states.values())
        failed = sum(s == "failed" for s in states.values())
        skipped_failed = 0 if self.retry_failed else failed
        failed = skipped_failed
        msg = (f"[sweep] {self.sweep_dir}: {len(self.trials)} trials, {done} done, {len(todo)} to run"
               + (f" in {len(units)} packs of up to {self.pack}" if self.pack else "")
               + (f", {skipped_failed} failed (not rerun; pass --retry_failed)" if skipped_failed else ""))
        tqdm.write(msg, file=sys.stderr)
        running: dict[str, _Running] = {}
        free_slots = list(range(self.parallel))
        bar = SweepProgress(len(self.trials), done + skipped_failed, self.sweep_dir.name, self.progress)

        def postfix():
            bar.show(done, failed, len(running))

        def finish(run: _Running, rc, err):
            nonlocal done, failed
            statuses = self._finish(run, rc, err)
            del running[run.id]
            free_slots.append(run.slot)
            free_slots.sort()
            for trial in run.members:
                status = states[trial.id] = statuses[trial.id]
                if status in ("done", "failed"):
                    done += status == "done"
                    failed += status == "failed"
                    bar.show(done, failed, len(running), ended_now=1)
                if status == "failed":
                    tqdm.write(f"[sweep] {trial.id} failed ({read_json(self._dir(trial) / STATUS_JSON)['error']});"
                               f" see {self._dir(trial) / ERROR_TXT}", file=sys.stderr)
            postfix()

        postfix()
        last_poll, last_results = 0.0, time.time()
        with self._signals():
            try:
                while (queue or running) and self.stop_signal is None:
                    while queue and free_slots and self.stop_signal is None:
                        run = self._launch(queue.popleft(), free_slots.pop(0))
                        running[run.id] = run
                        for trial in run.members:
                            states[trial.id] = "running"
                        postfix()
                    if time.time() - last_poll >= self.launcher.poll_interval:
                        last_poll = time.time()
                        for run in list(running.values()):
                            res = self.launcher.poll(run.handle)
                            if res is not None:
                                finish(run, *res)
                    if self.results_every is not None and time.time() - last_results >= self.results_every:
                        last_results = time.time()
                        self._write_results()
                    bar.tick()
                    time.sleep(0.05)
            except KeyboardInterrupt:  # signal handlers could not be installed (not the main thread)
                self.stop_signal = signal.SIGINT
            finally:
                if running:
                    self._stop_all(running, finish)
                if hasattr(self.launcher, "close"):
                    self.launcher.close()
                bar.close()
        counts = {s: sum(v == s for v in states.values())
                  for s in ("done", "failed", "interrupted", "running", "pending")}
        return SweepReport(self.sweep_dir, counts, states, self.stop_signal)

    def _write_results(self) -> None:
        """results.csv as it stands, while the sweep runs (for ``--restore_results`` after a SIGKILL)."""
        try:
            write_results_csv(self.sweep_dir)
        except Exception as e:  # noqa: BLE001 - bookkeeping never stops the sweep
            tqdm.write(f"[sweep] could not write results.csv: {e}", file=sys.stderr)

    def _stop_all(self, running: dict, finish) -> None:
        name = signal.Signals(self.stop_signal).name if self.stop_signal else "an error"
        tqdm.write(f"[sweep] stopping on {name}: sending SIGTERM to {len(running)} running trial(s); "
                   f"waiting up to {self.kill_timeout:g}s for them to save a checkpoint "
                   "(signal again to kill now)", file=sys.stderr)
        for run in running.values():
            run.terminated = True
            self.launcher.terminate(run.handle)
        deadline = time.time() + self.kill_timeout
        while running and self.launcher.wait_for_exit() and time.time() < deadline and not self.force:
            for run in list(running.values()):
                res = self.launcher.poll(run.handle)
                if res is not None:
                    finish(run, *res)
            time.sleep(0.1)
        for run in list(running.values()):
            if self.launcher.wait_for_exit():
                self.launcher.kill(run.handle)
            res = self.launcher.poll(run.handle) if self.launcher.wait_for_exit() else None
            finish(run, *(res or (None, None)))


def run_sweep(
    spec: SweepSpec,
    sweep_dir: Path | str,
    *,
    parallel: int = 1,
    executor: str = "local",
    entry: str = "run.py",
    python: str | None = None,
    cwd: Path | str | None = None,
    retry_failed: bool = False,
    overwrite: bool = False,
    kill_timeout: float = 60.0,
    gpus: Sequence[str] | None = None,
    submitit_options: SubmititOptions | None = None,
    env: Mapping[str, str] | None = None,
    workers: WorkerOptions | None = None,
    pack: int | None = None,
    progress: bool = True,
    write_results: bool = True,
    restore_from: Path | str | None = None,
) -> SweepReport:
    """Runs (or resumes) a sweep; returns when every trial finished or a signal stopped it.

    Args:
      parallel: trials running at once (local processes, or submitted submitit jobs).
      executor: ``local`` (subprocesses), ``submitit_local`` (submitit's LocalExecutor) or ``slurm``.
      entry, python, cwd: each trial runs ``python entry --config=... --config.k=v ... --workdir=DIR``
        in ``cwd`` (default: the repo root).
      gpus: local executor only: device ids handed out round-robin per slot via CUDA_VISIBLE_DEVICES.
      pack: train up to this many trials that share a compiled program in one process, as one
        vmapped program (``run.py --pack``; see :mod:`lstm_research.sweeps.packs`).
      restore_from: a results.csv of this sweep whose done trials are recorded as done first (see
        :func:`~lstm_research.sweeps.results.restore_results`).
      env: extra environment variables for the trials. With ``parallel > 1`` the local executor also sets
        ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` (unless set) so JAX trials can share a GPU.
    """
    check_run_options(executor, parallel, workers is not None, pack, kill_timeout)
    if workers is not None:
        parallel = int(workers.workers)
    sweep_dir = Path(sweep_dir).resolve()
    cwd = Path(cwd).resolve() if cwd is not None else repo_root()
    entry_path = Path(entry) if Path(entry).is_absolute() else cwd / entry
    if not entry_path.is_file():
        raise UserError(
            f"trial entry point {entry!r} not found (looked for {entry_path}); trials run "
            "'python run.py --config=... --workdir=...' from the repo root -- pass --entry/--cwd otherwise")
    if sweep_dir.exists() and not sweep_dir.is_dir():
        raise UserError(f"--sweep_dir {sweep_dir} is a file; pass a directory")
    trial_config = check_spec(spec, cwd)  # every key and value, before anything is written
    if pack:  # trials that cannot share a program are refused before anything is written too
        plan_packs(spec, sweep_dir, spec.run_order(spec.expand()), int(pack), cwd)
    restored = restorable_rows(restore_from, spec.expand()) if restore_from is not None else []
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    if executor == "local" and int(parallel) > 1:
        full_env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    if executor == "local" and workers is None:
        # trials in processes of their own share the sweep's compilation cache and the programs
        # stored in it (training.programs), as workers do: a trial whose programs an earlier one
        # compiled loads them instead of compiling. Not on a cluster, whose nodes' CPUs may differ.
        full_env.setdefault("JAX_COMPILATION_CACHE_DIR", str(sweep_dir / ".jax_cache"))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with sweep_lock(sweep_dir):
        trials = prepare_sweep_dir(spec, sweep_dir, overwrite=overwrite, trial_config=trial_config)
        if restore_from is not None:
            n = restore_results(sweep_dir, restored, str(restore_from))
            tqdm.write(f"[sweep] restored {n} done trials from {restore_from}", file=sys.stderr)
        if workers is not None:
            if workers.cache_dir is None:
                workers = dataclasses.replace(workers, cache_dir=str(sweep_dir / ".jax_cache"))
            launcher: Any = WorkerLauncher(workers, entry_path, python or sys.executable, sweep_dir / "_workers")
        elif executor == "local":
            launcher = LocalLauncher(gpus)
        else:
            launcher = SubmititLauncher(executor, sweep_dir / "_submitit",
                                        submitit_options or SubmititOptions(), kill_timeout)
        sweep = _Sweep(spec, sweep_dir, trials, parallel=int(parallel), launcher=launcher, entry=str(entry),
                       python=python or sys.executable, cwd=cwd, retry_failed=retry_failed,
                       kill_timeout=float(kill_timeout), env=full_env, progress=progress,
                       pack=int(pack) if pack else None,
                       results_every=RESULTS_EVERY_S if write_results else None)
        try:
            report = sweep.run()
        finally:
            if write_results:  # also when interrupted: results.csv then lists the unfinished trials
                try:
                    write_results_csv(sweep_dir)
                except Exception as e:  # noqa: BLE001 - never mask the sweep's own outcome
                    tqdm.write(f"[sweep] could not write results.csv: {e}", file=sys.stderr)
    return report
