"""Trials as local processes: the local launcher, and stopping a trial left by a dead sweep.

Each trial runs in its own session (a terminal ^C reaches only the sweep, which then stops the
trials with SIGTERM so they can checkpoint). A sweep killed with SIGKILL leaves its trials
running; the next sweep in the same directory finds them through ``status.json`` (pid, host) and
``/proc/<pid>/cmdline`` and stops them before relaunching (:func:`stop_stale_trial`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Mapping, Sequence

from tqdm.auto import tqdm

__all__ = ["LocalLauncher", "pid_runs_trial", "signal_group", "stop_stale_trial"]


def signal_group(pid: int, sig: int) -> None:
    """Signals the trial's process group (trials run in their own session), else the process."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


class LocalLauncher:
    """Trials as subprocesses of this process, each in its own session.

    A launcher starts a trial (``start`` -> handle, status fields), polls it (None while running,
    else ``(returncode, error)``), and stops it (``terminate``: SIGTERM; ``kill``: SIGKILL).
    """

    poll_interval = 0.1

    def __init__(self, gpus: Sequence[str] | None = None):
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
        signal_group(proc.pid, signal.SIGTERM)

    def kill(self, proc):
        signal_group(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)

    def wait_for_exit(self) -> bool:
        return True


def pid_runs_trial(pid: int, trial_dir: Path) -> bool:
    """True if process ``pid`` (on this host) is a trial command with ``--workdir=trial_dir``."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return f"--workdir={trial_dir}".encode() in cmdline


def stop_stale_trial(status: Mapping, trial_dir: Path, kill_timeout: float) -> None:
    """Stops a trial process recorded in ``status`` (status.json) if it still runs on this host:
    SIGTERM (it checkpoints), SIGKILL after ``kill_timeout`` seconds."""
    pid = status.get("pid")
    if not pid or status.get("host") != socket.gethostname() or not pid_runs_trial(pid, trial_dir):
        return
    tqdm.write(f"[sweep] {trial_dir.name}: stopping its still-running process {pid} from an earlier sweep",
               file=sys.stderr)
    signal_group(pid, signal.SIGTERM)
    deadline = time.time() + kill_timeout
    while pid_runs_trial(pid, trial_dir) and time.time() < deadline:
        time.sleep(0.2)
    if pid_runs_trial(pid, trial_dir):
        signal_group(pid, signal.SIGKILL)
        time.sleep(0.5)
