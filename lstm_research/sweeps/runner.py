"""Runs a sweep's trials: local subprocesses (N in parallel) or submitit jobs (slurm / submitit local).

Layout of a sweep directory::

    SWEEP_DIR/sweep.json            spec + trial list (a different spec is refused unless overwrite=True)
    SWEEP_DIR/results.csv           one row per trial (rewritten at the end of every run; see summary.py)
    SWEEP_DIR/<trial id>/           the trial's --workdir
        log.txt                     stdout+stderr of every attempt, appended (a header line per attempt)
        status.json                 runner bookkeeping: status, attempts, returncode, command, pid/job id
        error.txt                   for a failed trial: return code, reason and the tail of log.txt
        result.json, metrics.jsonl  written by the trial itself (run.py contract)

Trial status: ``done`` (result.json with status "done" -- the only source of truth for success),
``failed`` (exited without a done result.json; retried only with ``retry_failed``), ``interrupted``
(terminated by the sweep), ``running``, ``pending``. Re-running the same sweep skips done trials and
relaunches the others (the trial resumes from its own checkpoint). SIGINT/SIGTERM to the sweep sends
SIGTERM to every running trial (so it can save a checkpoint), waits up to ``kill_timeout`` seconds, then
SIGKILLs what is left; a second signal skips the wait.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Mapping, Sequence

from tqdm.auto import tqdm

from lstm_research.sweeps.spec import SweepSpec, Trial

__all__ = [
    "EXECUTORS",
    "SubmititOptions",
    "SweepDirError",
    "SweepReport",
    "TrialJob",
    "load_sweep",
    "prepare_sweep_dir",
    "repo_root",
    "run_sweep",
    "trial_state",
]

EXECUTORS = ("local", "submitit_local", "slurm")
SWEEP_JSON = "sweep.json"
RESULT_JSON = "result.json"
STATUS_JSON = "status.json"
LOG_TXT = "log.txt"
ERROR_TXT = "error.txt"
LOCK_FILE = ".sweep.lock"
LOG_TAIL_LINES = 40


class SweepDirError(RuntimeError):
    """The sweep directory cannot be used as asked (different spec, locked by another sweep...)."""


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def _write_json(path: Path, obj: Any) -> None:
    """Atomic: a crash leaves either the old or the new file, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def _read_json(path: Path) -> dict | None:
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def _log_tail(path: Path, n: int = LOG_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


def _describe_returncode(rc: int | None) -> str:
    if rc is None:
        return "no return code"
    if rc < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-rc).name}"
    if rc == 0:
        return f"exited with code 0 but wrote no {RESULT_JSON} with status 'done'"
    return f"exited with code {rc}"


# ------------------------------------------------------------------------------------ trial state


def trial_state(trial_dir: Path | str) -> dict:
    """The trial's status.json (runner bookkeeping) with ``status`` reconciled against result.json."""
    trial_dir = Path(trial_dir)
    st = _read_json(trial_dir / STATUS_JSON) or {}
    result = _read_json(trial_dir / RESULT_JSON)
    if result is not None and result.get("status") == "done":
        st["status"] = "done"
    elif result is not None:
        st["status"] = "failed"
        st.setdefault("error", f"{RESULT_JSON} has status {result.get('status')!r}, not 'done'")
    else:
        st.setdefault("status", "pending")
        if st["status"] == "done":  # result.json vanished
            st["status"] = "pending"
    return st


# ----------------------------------------------------------------------------------- sweep dir


def load_sweep(sweep_dir: Path | str) -> tuple[SweepSpec, list[Trial], dict]:
    """Reads ``sweep.json``: the spec, its expanded trials, and the raw file contents."""
    path = Path(sweep_dir) / SWEEP_JSON
    meta = _read_json(path)
    if meta is None:
        raise SweepDirError(f"{sweep_dir} is not a sweep directory: no readable {SWEEP_JSON}")
    spec = SweepSpec.from_dict(meta["spec"])
    return spec, spec.expand(), meta


def _spec_diff(old: Mapping, new: Mapping) -> str:
    keys = sorted(set(old) | set(new))
    return "; ".join(f"{k}: {json.dumps(old.get(k), default=str)} -> {json.dumps(new.get(k), default=str)}"
                     for k in keys if json.dumps(old.get(k), sort_keys=True, default=str)
                     != json.dumps(new.get(k), sort_keys=True, default=str))


def prepare_sweep_dir(spec: SweepSpec, sweep_dir: Path | str, *, overwrite: bool = False) -> list[Trial]:
    """Creates/validates ``sweep.json``; returns the expanded trials.

    A sweep dir holding a different spec is refused unless ``overwrite``; then the old sweep.json is
    kept as ``sweep.json.<time>.bak``, nothing else is deleted, and trial dirs whose hash (config +
    overrides) reappears under a new index are renamed so their results/checkpoints are reused.
    """
    sweep_dir = Path(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    trials = spec.expand()
    path = sweep_dir / SWEEP_JSON
    old = _read_json(path)
    new_spec = json.loads(spec.canonical_json())
    if old is not None:
        old_spec = json.loads(json.dumps(old.get("spec"), sort_keys=True, default=str))
        if old_spec == new_spec:
            return trials
        if not overwrite:
            raise SweepDirError(
                f"{sweep_dir} holds a different sweep ({_spec_diff(old_spec or {}, new_spec)}). "
                "Use another --sweep_dir, or --overwrite to replace its spec (trial dirs are kept; "
                "trials with identical overrides are reused).")
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        os.replace(path, sweep_dir / f"{SWEEP_JSON}.{stamp}.bak")
        _adopt_trial_dirs(sweep_dir, trials)
    elif any(p.is_dir() and not p.name.startswith(("_", ".")) for p in sweep_dir.iterdir()):
        if not overwrite:
            raise SweepDirError(
                f"{sweep_dir} is not empty and has no {SWEEP_JSON}; refusing to run a sweep in it "
                "(use --overwrite to do it anyway)")
    _write_json(path, {"version": 1, "created": _now(), "spec": new_spec,
                       "trials": [t.to_dict() for t in trials]})
    return trials


def _adopt_trial_dirs(sweep_dir: Path, trials: Sequence[Trial]) -> None:
    wanted = {t.id for t in trials}
    existing = {p.name.rsplit("_", 1)[-1]: p for p in sweep_dir.iterdir()
                if p.is_dir() and p.name not in wanted and "_" in p.name}
    for t in trials:
        src = existing.get(t.hash)
        if src is not None and not (sweep_dir / t.id).exists():
            os.replace(src, sweep_dir / t.id)


@contextlib.contextmanager
def _sweep_lock(sweep_dir: Path):
    import fcntl

    fd = os.open(sweep_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(fd, 64, 0).decode(errors="replace").strip()
            raise SweepDirError(
                f"another sweep process (pid {other or '?'}) is running in {sweep_dir}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------ launchers


def _signal_group(pid: int, sig: int) -> None:
    """Signals the trial's process group (trials run in their own session), else the process."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


class _LocalLauncher:
    """Trials as subprocesses of this process, each in its own session (terminal ^C reaches only us)."""

    poll_interval = 0.1

    def __init__(self, gpus: Sequence[str] | None):
        self.gpus = list(gpus or [])

    def start(self, cmd, cwd, env, log_file, slot):
        env = dict(env)
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(self.gpus[slot % len(self.gpus)])
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        return proc, {"pid": proc.pid, "host": socket.gethostname(),
                      "cuda_visible_devices": env.get("CUDA_VISIBLE_DEVICES")}

    def poll(self, proc):
        rc = proc.poll()
        return None if rc is None else (rc, None)

    def terminate(self, proc):
        _signal_group(proc.pid, signal.SIGTERM)

    def kill(self, proc):
        _signal_group(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)

    def wait_for_exit(self) -> bool:
        return True


@dataclasses.dataclass
class SubmititOptions:
    """Job options for the submitit executors (``time_min`` is also submitit_local's job timeout)."""

    partition: str | None = None
    time_min: int = 240
    cpus_per_task: int | None = None
    gpus_per_node: int | None = None
    mem_gb: float | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    job_name: str = "sweep"
    additional: Mapping[str, Any] | None = None


class _SubmititLauncher:
    def __init__(self, kind: str, folder: Path, options: SubmititOptions, kill_timeout: float):
        import submitit

        self.kind, self.kill_timeout = kind, kill_timeout
        setup = [f"export PYTHONPATH={shlex.quote(str(repo_root()))}${{PYTHONPATH:+:$PYTHONPATH}}"]
        if kind == "slurm":
            self.poll_interval = 15.0
            ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=10)
            params: dict[str, Any] = dict(time=int(options.time_min), job_name=options.job_name, setup=setup,
                                          signal_delay_s=int(kill_timeout) + 30)
            for name, value in (("partition", options.partition), ("cpus_per_task", options.cpus_per_task),
                                ("gpus_per_node", options.gpus_per_node), ("account", options.account),
                                ("qos", options.qos), ("constraint", options.constraint),
                                ("additional_parameters", dict(options.additional or {}) or None)):
                if value is not None:
                    params[name] = value
            if options.mem_gb is not None:
                params["mem"] = f"{int(options.mem_gb)}GB"
            ex.update_parameters(**params)
        else:
            # No `setup` here: it would put a shell between us and submitit's controller, and the shell
            # does not forward SIGTERM. The controller inherits our environment instead (see start()).
            self.poll_interval = 0.25
            ex = submitit.LocalExecutor(folder=folder)
            ex.update_parameters(timeout_min=int(options.time_min), gpus_per_node=options.gpus_per_node or 0,
                                 signal_delay_s=int(kill_timeout) + 5)
        self.executor = ex

    def start(self, cmd, cwd, env, log_file, slot):
        updates = {k: v for k, v in env.items() if os.environ.get(k) != v}
        job_fn = TrialJob(list(cmd), str(cwd), log_file.name, updates, self.kill_timeout)
        if self.kind == "slurm":
            job = self.executor.submit(job_fn)
        else:
            with _environ(PYTHONPATH=os.pathsep.join(
                    p for p in (str(repo_root()), os.environ.get("PYTHONPATH")) if p)):
                job = self.executor.submit(job_fn)
        return job, {"job_id": str(job.job_id), "executor": self.kind}

    def poll(self, job):
        if not job.done():
            return None
        try:
            out = job.result()
        except Exception as e:  # noqa: BLE001 - any job failure is a trial failure, recorded
            lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
            return None, f"submitit job {job.job_id} failed: {type(e).__name__}: " + " | ".join(lines[-3:])
        return int(out["returncode"]), None

    def terminate(self, job):
        process = getattr(job, "_process", None)  # LocalJob: its controller forwards SIGTERM to the task
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        else:  # slurm: scancel sends SIGTERM to the job's processes, SIGKILL after KillWait
            job.cancel(check=False)

    def kill(self, job):
        with contextlib.suppress(Exception):
            job.cancel(check=False)

    def wait_for_exit(self) -> bool:
        return self.kind != "slurm"


@contextlib.contextmanager
def _environ(**updates):
    old = {k: os.environ.get(k) for k in updates}
    os.environ.update(updates)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


_CURRENT_CHILD: subprocess.Popen | None = None


class TrialJob:
    """The submitit job function: runs one trial command, appending to its log.txt.

    SIGTERM/SIGINT (scancel, local cancel) are forwarded to the trial. On slurm timeout/preemption
    submitit calls :meth:`checkpoint`: the trial gets SIGTERM (it saves a checkpoint), and the job is
    requeued with the same command, which resumes from that checkpoint.
    """

    def __init__(self, cmd: Sequence[str], cwd: str, log_path: str, env: Mapping[str, str],
                 kill_timeout: float = 60.0):
        self.cmd, self.cwd, self.log_path = list(cmd), cwd, log_path
        self.env, self.kill_timeout = dict(env), kill_timeout

    def __call__(self) -> dict:
        global _CURRENT_CHILD
        env = {**os.environ, **self.env}
        with open(self.log_path, "a") as log:
            log.write(f"===== [submitit job on {socket.gethostname()}] {_now()}: {shlex.join(self.cmd)}\n")
            log.flush()
            proc = subprocess.Popen(self.cmd, cwd=self.cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
            _CURRENT_CHILD = proc
            forwarded: list[int] = []

            def forward(signum, _frame):
                forwarded.append(signum)
                _signal_group(proc.pid, signal.SIGTERM)

            old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
            try:
                while proc.poll() is None:  # poll, not wait(): checkpoint() may poll from a signal handler
                    time.sleep(0.2)
            finally:
                for s, h in old.items():
                    signal.signal(s, h)
                _CURRENT_CHILD = None
        return {"returncode": proc.returncode, "forwarded_signals": forwarded}

    def checkpoint(self, *args, **kwargs):
        import submitit

        proc = _CURRENT_CHILD
        if proc is not None and proc.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)
            deadline = time.time() + self.kill_timeout
            while proc.poll() is None and time.time() < deadline:
                time.sleep(0.2)
        return submitit.helpers.DelayedSubmission(
            TrialJob(self.cmd, self.cwd, self.log_path, self.env, self.kill_timeout))


# ---------------------------------------------------------------------------------------- runner


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
    trial: Trial
    handle: Any
    slot: int
    log_file: Any
    started: float
    terminated: bool = False


def _pid_runs_trial(pid: int, trial_dir: Path) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return f"--workdir={trial_dir}".encode() in cmdline


class _Sweep:
    def __init__(self, spec, sweep_dir, trials, *, parallel, launcher, entry, python, cwd, retry_failed,
                 kill_timeout, env, progress):
        self.spec, self.sweep_dir, self.trials = spec, sweep_dir, trials
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
        st = _read_json(path) or {}
        st.update(fields)
        _write_json(path, st)
        return st

    def _terminate_stale(self, trial: Trial, st: Mapping) -> None:
        """A trial left running by a sweep process that died without cleaning up (e.g. SIGKILL)."""
        pid = st.get("pid")
        if not pid or st.get("host") != socket.gethostname() or not _pid_runs_trial(pid, self._dir(trial)):
            return
        tqdm.write(f"[sweep] {trial.id}: stopping its still-running process {pid} from an earlier sweep",
                   file=sys.stderr)
        _signal_group(pid, signal.SIGTERM)
        deadline = time.time() + self.kill_timeout
        while _pid_runs_trial(pid, self._dir(trial)) and time.time() < deadline:
            time.sleep(0.2)
        if _pid_runs_trial(pid, self._dir(trial)):
            _signal_group(pid, signal.SIGKILL)
            time.sleep(0.5)

    def _launch(self, trial: Trial, slot: int) -> _Running:
        tdir = self._dir(trial)
        tdir.mkdir(parents=True, exist_ok=True)
        st = _read_json(tdir / STATUS_JSON) or {}
        if st.get("status") == "running":
            self._terminate_stale(trial, st)
        cmd = self.spec.command(trial, str(tdir), python=self.python, entry=self.entry)
        attempt = int(st.get("attempts", 0)) + 1
        log_file = open(tdir / LOG_TXT, "a")  # noqa: SIM115 - closed in _finish
        log_file.write(f"===== [sweep] attempt {attempt} started {_now()}: {shlex.join(cmd)}\n")
        log_file.flush()
        handle, info = self.launcher.start(cmd, self.cwd, self.env, log_file, slot)
        for stale in ("pid", "job_id", "returncode", "ended", "error"):
            st.pop(stale, None)
        _write_json(tdir / STATUS_JSON, {**st, "status": "running", "attempts": attempt, "command": cmd,
                                         "started": _now(), **info})
        return _Running(trial, handle, slot, log_file, time.time())

    def _finish(self, run: _Running, rc: int | None, err: str | None) -> str:
        run.log_file.close()
        tdir = self._dir(run.trial)
        fields: dict[str, Any] = {"returncode": rc, "ended": _now(),
                                  "duration_s": round(time.time() - run.started, 3)}
        if trial_state(tdir)["status"] == "done":
            with contextlib.suppress(FileNotFoundError):
                os.remove(tdir / ERROR_TXT)
            self._write_status(run.trial, status="done", error=None, **fields)
            return "done"
        if run.terminated:
            self._write_status(run.trial, status="interrupted", **fields)
            return "interrupted"
        reason = err or _describe_returncode(rc)
        tail = _log_tail(tdir / LOG_TXT)
        last = next((ln.strip() for ln in reversed(tail.splitlines())
                     if ln.strip() and not ln.startswith("=====")), "")
        st = self._write_status(run.trial, status="failed", error=f"{reason}: {last}" if last else reason,
                                **fields)
        (tdir / ERROR_TXT).write_text(
            f"trial: {run.trial.id}\nreturncode: {rc}\nreason: {reason}\nattempt: {st.get('attempts')}\n"
            f"command: {shlex.join(st.get('command', []))}\n"
            f"--- last {LOG_TAIL_LINES} lines of {LOG_TXT} ---\n{tail}\n")
        return "failed"

    # -------------------------------------------------------------- main loop

    def run(self) -> SweepReport:
        states = {t.id: trial_state(self._dir(t))["status"] for t in self.trials}
        queue = deque(t for t in self.spec.run_order(self.trials)
                      if states[t.id] != "done" and (states[t.id] != "failed" or self.retry_failed))
        done = sum(s == "done" for s in states.values())
        failed = sum(s == "failed" for s in states.values())
        skipped_failed = 0 if self.retry_failed else failed
        failed = skipped_failed
        msg = (f"[sweep] {self.sweep_dir}: {len(self.trials)} trials, {done} done, {len(queue)} to run"
               + (f", {skipped_failed} failed (not rerun; pass --retry_failed)" if skipped_failed else ""))
        tqdm.write(msg, file=sys.stderr)
        running: dict[str, _Running] = {}
        free_slots = list(range(self.parallel))
        bar = tqdm(total=len(self.trials), initial=done + skipped_failed, unit="trial", file=sys.stderr,
                   desc=self.sweep_dir.name, disable=not self.progress, dynamic_ncols=True)

        def postfix():
            bar.set_postfix_str(f"done={done} failed={failed} running={len(running)}", refresh=True)

        def finish(run: _Running, rc, err):
            nonlocal done, failed
            status = self._finish(run, rc, err)
            states[run.trial.id] = status
            del running[run.trial.id]
            free_slots.append(run.slot)
            free_slots.sort()
            if status in ("done", "failed"):
                done += status == "done"
                failed += status == "failed"
                bar.set_postfix_str(f"done={done} failed={failed} running={len(running)}", refresh=False)
                bar.update(1)
            if status == "failed":
                tqdm.write(f"[sweep] {run.trial.id} failed ({_read_json(self._dir(run.trial) / STATUS_JSON)['error']});"
                           f" see {self._dir(run.trial) / ERROR_TXT}", file=sys.stderr)
            postfix()

        postfix()
        last_poll = 0.0
        with self._signals():
            try:
                while (queue or running) and self.stop_signal is None:
                    while queue and free_slots and self.stop_signal is None:
                        trial = queue.popleft()
                        running[trial.id] = self._launch(trial, free_slots.pop(0))
                        states[trial.id] = "running"
                        postfix()
                    if time.time() - last_poll >= self.launcher.poll_interval:
                        last_poll = time.time()
                        for run in list(running.values()):
                            res = self.launcher.poll(run.handle)
                            if res is not None:
                                finish(run, *res)
                    time.sleep(0.05)
            except KeyboardInterrupt:  # signal handlers could not be installed (not the main thread)
                self.stop_signal = signal.SIGINT
            finally:
                if running:
                    self._stop_all(running, finish)
                bar.close()
        counts = {s: sum(v == s for v in states.values())
                  for s in ("done", "failed", "interrupted", "running", "pending")}
        return SweepReport(self.sweep_dir, counts, states, self.stop_signal)

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
    progress: bool = True,
    write_results: bool = True,
) -> SweepReport:
    """Runs (or resumes) a sweep; returns when every trial finished or a signal stopped it.

    Args:
      parallel: trials running at once (local processes, or submitted submitit jobs).
      executor: ``local`` (subprocesses), ``submitit_local`` (submitit's LocalExecutor) or ``slurm``.
      entry, python, cwd: each trial runs ``python entry --config=... --config.k=v ... --workdir=DIR``
        in ``cwd`` (default: the repo root).
      gpus: local executor only: device ids handed out round-robin per slot via CUDA_VISIBLE_DEVICES.
      env: extra environment variables for the trials. With ``parallel > 1`` the local executor also sets
        ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` (unless set) so JAX trials can share a GPU.
    """
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; valid: {', '.join(EXECUTORS)}")
    if int(parallel) < 1:
        raise ValueError(f"parallel must be >= 1, got {parallel}")
    sweep_dir = Path(sweep_dir).resolve()
    cwd = Path(cwd).resolve() if cwd is not None else repo_root()
    entry_path = Path(entry) if Path(entry).is_absolute() else cwd / entry
    if not entry_path.is_file():
        raise FileNotFoundError(
            f"trial entry point {entry!r} not found (looked for {entry_path}); trials run "
            "'python run.py --config=... --workdir=...' from the repo root -- pass --entry/--cwd otherwise")
    config_file = spec.config.split(":", 1)[0]
    if not (Path(config_file) if Path(config_file).is_absolute() else cwd / config_file).is_file():
        raise FileNotFoundError(f"config file {config_file!r} not found (relative to {cwd})")
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    if executor == "local" and int(parallel) > 1:
        full_env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with _sweep_lock(sweep_dir):
        trials = prepare_sweep_dir(spec, sweep_dir, overwrite=overwrite)
        if executor == "local":
            launcher: Any = _LocalLauncher(gpus)
        else:
            launcher = _SubmititLauncher(executor, sweep_dir / "_submitit",
                                         submitit_options or SubmititOptions(), kill_timeout)
        sweep = _Sweep(spec, sweep_dir, trials, parallel=int(parallel), launcher=launcher, entry=str(entry),
                       python=python or sys.executable, cwd=cwd, retry_failed=retry_failed,
                       kill_timeout=float(kill_timeout), env=full_env, progress=progress)
        try:
            report = sweep.run()
        finally:
            if write_results:  # also when interrupted: results.csv then lists the unfinished trials
                from lstm_research.sweeps.summary import write_results_csv

                try:
                    write_results_csv(sweep_dir)
                except Exception as e:  # noqa: BLE001 - never mask the sweep's own outcome
                    tqdm.write(f"[sweep] could not write results.csv: {e}", file=sys.stderr)
    return report
