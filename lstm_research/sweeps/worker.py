"""A long-lived sweep worker: ``python -m lstm_research.sweeps.worker --entry run.py [...]``.

It runs trial after trial in this one process, each through the entry script's ``main(argv)``
(run.py's: config loading, overrides, validation, ``train_and_evaluate``), so a trial writes the
same files and returns the same exit status as ``python run.py ...`` would. What stays loaded
between trials: the imports, the data sets (cached per data dir by the tasks), and JAX's
compiled programs (in memory, and stored as executables in the persistent compilation cache
named by ``JAX_COMPILATION_CACHE_DIR``, shared by all workers and sweep reruns:
:mod:`lstm_research.training.programs`).

Protocol (one JSON object per line): the launcher writes jobs ``{"argv": [entry, --config=...,
..., --workdir=DIR], "log": PATH}`` to stdin; for each the worker appends the trial's stdout and
stderr to ``log`` and answers on its original stdout ``{"rc": exit status, "trials": n,
"rss_gb": x, "exit": bool}``. ``exit`` is true when the worker leaves after this answer: after
``--max_trials`` trials, above ``--max_rss_gb`` of resident memory (after handing free heap pages
back, :func:`release_free_memory`), or after a trial stopped by
SIGTERM (exit status 143). End of stdin ends the worker; so does its parent's death (SIGTERM is
delivered then, and the running trial checkpoints). A trial that raises is exit status 1 with its
traceback in the log, and the worker goes on.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib.util
import json
import os
import resource
import signal
import sys
import traceback

from lstm_research.sweeps.workers import WorkerOptions

__all__ = ["load_entry", "main", "run_job"]

PR_SET_PDEATHSIG = 1
EXIT_SIGTERM = 143


def _die_with_parent() -> None:
    """SIGTERM to this process when the sweep dies (Linux), so no worker outlives its sweep."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def load_entry(path: str):
    """The ``main(argv) -> int`` of the trial script at ``path`` (run.py)."""
    spec = importlib.util.spec_from_file_location("sweep_trial_entry", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    if not callable(getattr(module, "main", None)):
        raise SystemExit(f"error: {path} defines no main(argv); --workers needs run.py's contract")
    return module.main


@contextlib.contextmanager
def _output_to(log_path: str):
    """File descriptors 1 and 2 (and so sys.stdout/stderr, absl and C code) appended to log_path."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        yield
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for f in (fd, *saved):
            os.close(f)


def run_job(entry_main, argv: list[str], log_path: str) -> int:
    """One trial in this process: the exit status ``python run.py`` would have had."""
    with _output_to(log_path):
        try:
            rc = entry_main(list(argv))
        except SystemExit as e:  # --help, or a script calling sys.exit
            rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            if not isinstance(e.code, int) and e.code is not None:
                print(e.code, file=sys.stderr)
        except Exception:  # noqa: BLE001 - a trial's bug fails the trial, not the worker
            traceback.print_exc()
            rc = 1
    return int(rc or 0)


def rss_gb() -> float:
    """Resident memory of this process now, in GiB (peak if /proc is not readable)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def release_free_memory() -> bool:
    """Hand the heap's free pages back to the system (glibc's ``malloc_trim``; False where there
    is none). A worker's resident memory grows by 10-15 MB with each program it compiles or
    loads even when it drops older ones: their memory is freed but stays mapped (one core,
    2026-12-03: ten widths with 6 programs kept, 604 -> 803 MB; 395 MB after the trim). So the
    memory limit is checked after a trim, and a worker is not replaced for memory it does not
    hold."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return False
    trim(0)
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lstm_research.sweeps.worker")
    p.add_argument("--entry", required=True, help="trial script defining main(argv) (run.py)")
    p.add_argument("--max_trials", type=int, default=WorkerOptions.max_trials)
    p.add_argument("--max_rss_gb", type=float, default=WorkerOptions.max_rss_gb)
    p.add_argument("--cpu", type=int, default=None, help="pin this process to one CPU")
    args = p.parse_args(argv)
    _die_with_parent()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    reply = os.fdopen(os.dup(1), "w")  # answers; fd 1 itself goes to each trial's log
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # stray output between trials is dropped
    entry_main = load_entry(args.entry)
    n = 0
    for line in sys.stdin:
        if not line.strip():
            continue
        job = json.loads(line)
        rc = run_job(entry_main, job["argv"], job["log"])
        n += 1
        rss = rss_gb()
        if rss > args.max_rss_gb and release_free_memory():
            rss = rss_gb()
        leave = n >= args.max_trials or rss > args.max_rss_gb or rc == EXIT_SIGTERM
        reply.write(json.dumps({"rc": rc, "trials": n, "rss_gb": round(rss, 3), "exit": leave}) + "\n")
        reply.flush()
        if leave:
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())
