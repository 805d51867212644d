"""Trials as submitit jobs (slurm, or submitit's local executor): the launcher and the job function.

The launcher has the interface of :class:`~lstm_research.sweeps.local.LocalLauncher`. The job
function :class:`TrialJob` runs the trial command inside the job, forwards SIGTERM to it, and on a
slurm timeout or preemption checkpoints it and requeues the same command, which resumes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shlex
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from lstm_research.sweeps.local import signal_group
from lstm_research.sweeps.sweepdir import now, repo_root
from lstm_research.sweeps.worker import EXIT_SIGTERM

__all__ = ["SubmititLauncher", "SubmititOptions", "TrialJob"]


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


class SubmititLauncher:
    """Trials as submitit jobs: ``slurm`` (SlurmExecutor) or ``submitit_local`` (LocalExecutor)."""

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

    def lost(self, job) -> bool:
        """A trial stopped from outside the sweep (``scancel``, a preemption that is not requeued):
        the trial saved its checkpoint on the SIGTERM and exited 143, so it is interrupted, not
        failed, and rerunning the sweep resumes it (as for a killed worker)."""
        if not job.done():
            return False
        with contextlib.suppress(Exception):
            return int(job.result()["returncode"]) == EXIT_SIGTERM
        return False

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
            log.write(f"===== [submitit job on {socket.gethostname()}] {now()}: {shlex.join(self.cmd)}\n")
            log.flush()
            proc = subprocess.Popen(self.cmd, cwd=self.cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
            _CURRENT_CHILD = proc
            forwarded: list[int] = []

            def forward(signum, _frame):
                forwarded.append(signum)
                signal_group(proc.pid, signal.SIGTERM)

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
            signal_group(proc.pid, signal.SIGTERM)
            deadline = time.time() + self.kill_timeout
            while proc.poll() is None and time.time() < deadline:
                time.sleep(0.2)
        return submitit.helpers.DelayedSubmission(
            TrialJob(self.cmd, self.cwd, self.log_path, self.env, self.kill_timeout))
