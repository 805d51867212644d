"""Trials in long-lived worker processes (``experiments/sweep.py --workers N``): the launcher.

Slot ``k`` of the sweep gets its own worker (:mod:`lstm_research.sweeps.worker`), started on its
first trial and kept for the next ones; it is replaced after ``max_trials`` trials, above
``max_rss_gb`` of resident memory, after a trial stopped by SIGTERM, or when it died. With at
most as many workers as CPUs, worker ``k`` is pinned to the k-th CPU of this process's affinity
(results do not depend on it: tests/test_determinism.py). All workers share JAX's persistent
compilation cache (``cache_dir``) and the executables stored in it
(:mod:`lstm_research.training.programs`), which also serve reruns of the sweep.

The launcher has the interface of :class:`~lstm_research.sweeps.local.LocalLauncher`, plus
``lost(handle)``: True when the trial's worker died under it (killed, out of memory) rather than
the trial finishing; the scheduler records such a trial as interrupted, so rerunning the sweep
resumes it from its checkpoint; and ``close()``, which lets idle workers exit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from lstm_research.errors import UserError
from lstm_research.sweeps.sweepdir import describe_returncode

__all__ = ["WorkerLauncher", "WorkerOptions", "available_cpus"]


def available_cpus() -> int:
    """CPUs this process may run on (the default number of workers)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclasses.dataclass
class WorkerOptions:
    workers: int
    max_trials: int = 300  # see training.loop.STEPS_KEPT
    max_rss_gb: float = 4.0
    cache_dir: str | None = None  # JAX persistent compilation cache; None: the caller's setting
    pin: bool = True

    def __post_init__(self):
        if int(self.workers) < 1:
            raise UserError(f"--workers must be >= 1 (worker processes), got {self.workers}")
        if int(self.max_trials) < 1:
            raise UserError(f"--worker_max_trials must be >= 1, got {self.max_trials}")
        if float(self.max_rss_gb) <= 0:
            raise UserError(f"--worker_max_rss_gb must be > 0 GB, got {self.max_rss_gb:g}")


@dataclasses.dataclass
class _Worker:
    proc: subprocess.Popen
    serial: int  # 1, 2, ... over the sweep run: how many workers were started
    trials: int = 0
    leaving: bool = False


@dataclasses.dataclass
class _Job:
    worker: _Worker
    result: tuple | None = None
    lost: bool = False


def _describe(rc: int | None) -> str:
    """A worker process's end (exit 0 between jobs is not a trial's missing result.json)."""
    return "exited with code 0" if rc == 0 else describe_returncode(rc)


class WorkerLauncher:
    """Trials as jobs of per-slot worker processes (see the module docstring)."""

    poll_interval = 0.05

    def __init__(self, options: WorkerOptions, entry: str, python: str, log_dir: Path | None = None):
        self.options, self.entry, self.python = options, str(entry), python
        self.log_dir = log_dir
        self.workers: dict[int, _Worker] = {}
        self.started = 0
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        self.cpus = cpus if options.pin and 0 < options.workers <= len(cpus) else []

    # ------------------------------------------------------------------ workers

    def _spawn(self, slot: int, cwd, env) -> _Worker:
        cmd = [self.python, "-m", "lstm_research.sweeps.worker", "--entry", self.entry,
               "--max_trials", str(self.options.max_trials), "--max_rss_gb", str(self.options.max_rss_gb)]
        if self.cpus:
            cmd += ["--cpu", str(self.cpus[slot % len(self.cpus)])]
        env = dict(env)
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        if self.options.cache_dir:
            env.setdefault("JAX_COMPILATION_CACHE_DIR", str(self.options.cache_dir))
            env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
            env.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
        stderr: Any = subprocess.DEVNULL
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            stderr = open(self.log_dir / "workers.log", "a")  # noqa: SIM115 - the child keeps it
        self.started += 1
        # own session: a terminal ^C reaches only the sweep, which then stops the workers with SIGTERM
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=stderr, start_new_session=True, text=True, bufsize=1)
        if stderr is not subprocess.DEVNULL:
            stderr.close()
        return _Worker(proc, self.started)

    def _retire(self, worker: _Worker) -> None:
        for slot, w in list(self.workers.items()):
            if w is worker:
                del self.workers[slot]
        with contextlib.suppress(OSError):
            worker.proc.stdin.close()

    # ------------------------------------------------------------------ launcher interface

    def start(self, cmd, cwd, env, log_file, slot):
        worker = self.workers.get(slot)
        if worker is None or worker.leaving or worker.proc.poll() is not None:
            if worker is not None:
                self._retire(worker)
            worker = self.workers[slot] = self._spawn(slot, cwd, env)
        job = _Job(worker)
        try:
            worker.proc.stdin.write(json.dumps({"argv": list(cmd[1:]), "log": log_file.name}) + "\n")
            worker.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            job.lost = True
            job.result = (worker.proc.poll(), f"worker {worker.proc.pid} took no job")
            self._retire(worker)
        worker.trials += 1
        return job, {"pid": worker.proc.pid, "host": socket.gethostname(), "worker": worker.serial,
                     "worker_trial": worker.trials, "workers_started": self.started}

    def poll(self, job: _Job):
        if job.result is not None:
            return job.result
        proc = job.worker.proc
        ready, _, _ = select.select([proc.stdout], [], [], 0)
        if not ready:
            return None
        line = proc.stdout.readline()
        if line.strip():
            reply = json.loads(line)
            job.result = (int(reply["rc"]), None)
            if reply.get("exit"):
                job.worker.leaving = True
                self._retire(job.worker)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=30)
            return job.result
        # end of file: the worker died during the trial
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        rc = proc.poll()
        job.lost = True
        job.result = (rc, f"worker process {proc.pid} {_describe(rc)}")
        self._retire(job.worker)
        return job.result

    def lost(self, job: _Job) -> bool:
        return job.lost

    def terminate(self, job: _Job):
        with contextlib.suppress(ProcessLookupError):
            job.worker.proc.send_signal(signal.SIGTERM)

    def kill(self, job: _Job):
        with contextlib.suppress(ProcessLookupError):
            job.worker.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            job.worker.proc.wait(timeout=5)

    def wait_for_exit(self) -> bool:
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Idle workers leave (end of their stdin); any still there after ``timeout`` s are killed."""
        workers = list(self.workers.values())
        for w in workers:
            self._retire(w)
        deadline = time.time() + timeout
        for w in workers:
            try:
                w.proc.wait(timeout=max(deadline - time.time(), 0.1))
            except subprocess.TimeoutExpired:
                tqdm.write(f"[sweep] worker {w.proc.pid} did not exit; killing it", file=sys.stderr)
                w.proc.kill()
                w.proc.wait()
