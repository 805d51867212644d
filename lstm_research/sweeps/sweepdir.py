"""The sweep directory: its layout, atomic JSON I/O, trial state, ``sweep.json`` and the lock.

Layout::

    SWEEP_DIR/sweep.json            spec + trial list (a different spec is refused unless overwrite=True)
    SWEEP_DIR/results.csv           one row per trial (rewritten every minute of a run and at its end)
    SWEEP_DIR/.sweep.lock           held by the sweep process running in the directory
    SWEEP_DIR/<trial id>/           the trial's --workdir
        log.txt                     stdout+stderr of every attempt, appended (a header line per attempt)
        status.json                 runner bookkeeping: status, attempts, returncode, command, pid/job id
        error.txt                   for a failed trial: return code, reason and the tail of log.txt
        result.json, metrics.jsonl  written by the trial itself (run.py contract)

Trial status: ``done`` (result.json with status "done" -- the only source of truth for success),
``failed`` (exited without a done result.json), ``interrupted`` (terminated by the sweep),
``running``, ``pending``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import signal
from pathlib import Path
from typing import Any, Mapping, Sequence

from lstm_research.errors import UserError
from lstm_research.sweeps.spec import SweepSpec, SweepSpecError, Trial

__all__ = [
    "ERROR_TXT",
    "LOG_TXT",
    "RESULT_JSON",
    "STATUS_JSON",
    "SWEEP_JSON",
    "SweepDirError",
    "describe_returncode",
    "load_sweep",
    "log_tail",
    "now",
    "prepare_sweep_dir",
    "read_json",
    "repo_root",
    "sweep_lock",
    "trial_state",
    "write_json",
]

SWEEP_JSON = "sweep.json"
RESULT_JSON = "result.json"
STATUS_JSON = "status.json"
LOG_TXT = "log.txt"
ERROR_TXT = "error.txt"
LOCK_FILE = ".sweep.lock"
LOG_TAIL_LINES = 40


class SweepDirError(UserError):
    """The sweep directory cannot be used as asked (different spec, locked by another sweep...)."""


def repo_root() -> Path:
    """The repository root: trials run ``python run.py ...`` from here unless told otherwise."""
    return Path(__file__).resolve().parents[2]


def now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def write_json(path: Path, obj: Any) -> None:
    """Atomic: a crash leaves either the old or the new file, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def read_json(path: Path | str) -> dict | None:
    """The JSON object in ``path``, or None when it is missing, unreadable or not an object."""
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def log_tail(path: Path, n: int = LOG_TAIL_LINES) -> str:
    """The last ``n`` lines of a (possibly large) log file; "" when it cannot be read."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


def describe_returncode(rc: int | None) -> str:
    """Why a trial process that wrote no done result.json ended, from its return code."""
    if rc is None:
        return "no return code"
    if rc < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-rc).name}"
    if rc == 0:
        return f"exited with code 0 but wrote no {RESULT_JSON} with status 'done'"
    return f"exited with code {rc}"


def trial_state(trial_dir: Path | str) -> dict:
    """The trial's status.json (runner bookkeeping) with ``status`` reconciled against result.json."""
    trial_dir = Path(trial_dir)
    st = read_json(trial_dir / STATUS_JSON) or {}
    result = read_json(trial_dir / RESULT_JSON)
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


def load_sweep(sweep_dir: Path | str) -> tuple[SweepSpec, list[Trial], dict]:
    """Reads ``sweep.json``: the spec, its expanded trials, and the raw file contents."""
    path = Path(sweep_dir) / SWEEP_JSON
    if not Path(sweep_dir).is_dir():
        raise SweepDirError(f"{sweep_dir} is not a sweep directory: it does not exist")
    meta = read_json(path)
    if meta is None:
        raise SweepDirError(f"{sweep_dir} is not a sweep directory: no readable {SWEEP_JSON} "
                            "(experiments/sweep.py writes it when a sweep starts)")
    try:
        spec = SweepSpec.from_dict(meta["spec"])
    except (KeyError, TypeError, ValueError) as e:
        detail = str(e) if isinstance(e, SweepSpecError) else f"{type(e).__name__}: {e}"
        raise SweepDirError(f"{path} does not hold a valid sweep spec ({detail})") from None
    return spec, spec.expand(), meta


def _spec_diff(old: Mapping, new: Mapping) -> str:
    keys = sorted(set(old) | set(new))
    return "; ".join(f"{k}: {json.dumps(old.get(k), default=str)} -> {json.dumps(new.get(k), default=str)}"
                     for k in keys if json.dumps(old.get(k), sort_keys=True, default=str)
                     != json.dumps(new.get(k), sort_keys=True, default=str))


def prepare_sweep_dir(spec: SweepSpec, sweep_dir: Path | str, *, overwrite: bool = False,
                      trial_config: Mapping | None = None) -> list[Trial]:
    """Creates/validates ``sweep.json``; returns the expanded trials.

    A sweep dir holding a different spec is refused unless ``overwrite``; then the old sweep.json is
    kept as ``sweep.json.<time>.bak``, nothing else is deleted, and trial dirs whose hash (config +
    overrides) reappears under a new index are renamed so their results/checkpoints are reused.

    ``trial_config`` (the trials' common config, ``check.check_spec``'s result) is kept in
    ``sweep.json``. A rerun whose config file or library defaults now give other values is
    refused unless ``overwrite``, naming the keys: its done trials ran the old values. (A key
    that is new in the config is not a change; a sweep.json without it records it.)
    """
    sweep_dir = Path(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    trials = spec.expand()
    path = sweep_dir / SWEEP_JSON
    old = read_json(path)
    new_spec = json.loads(spec.canonical_json())
    if old is not None:
        old_spec = json.loads(json.dumps(old.get("spec"), sort_keys=True, default=str))
        if old_spec == new_spec:
            changes = _config_changes(old.get("trial_config"), trial_config)
            if changes and not overwrite:
                raise SweepDirError(
                    f"{sweep_dir}'s trials ran another config than {spec.config} gives now: "
                    f"{changes} (the config file or the library's defaults changed). Restore it, "
                    "use another --sweep_dir, or --overwrite to keep the done trials and run the "
                    "rest with the new values")
            if trial_config is not None and (changes or "trial_config" not in old):
                write_json(path, {**old, "trial_config": trial_config})
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
    meta = {"version": 1, "created": now(), "spec": new_spec, "trials": [t.to_dict() for t in trials]}
    if trial_config is not None:
        meta["trial_config"] = trial_config
    write_json(path, meta)
    return trials


def _config_changes(old: Mapping | None, new: Mapping | None, prefix: str = "") -> str:
    """``"key: old -> new; ..."`` for the keys of ``old`` whose value ``new`` changed or lost."""
    if old is None or new is None:
        return ""
    out = []
    for k in sorted(old):
        name, a, b = f"{prefix}{k}", old[k], new.get(k, "(gone)")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out.append(_config_changes(a, b, f"{name}."))
        elif json.dumps(a, sort_keys=True) != json.dumps(b, sort_keys=True):
            out.append(f"{name}: {json.dumps(a)} -> {json.dumps(b)}")
    return "; ".join(c for c in out if c)


def _adopt_trial_dirs(sweep_dir: Path, trials: Sequence[Trial]) -> None:
    wanted = {t.id for t in trials}
    existing = {p.name.rsplit("_", 1)[-1]: p for p in sweep_dir.iterdir()
                if p.is_dir() and p.name not in wanted and "_" in p.name}
    for t in trials:
        src = existing.get(t.hash)
        if src is not None and not (sweep_dir / t.id).exists():
            os.replace(src, sweep_dir / t.id)


@contextlib.contextmanager
def sweep_lock(sweep_dir: Path):
    """Holds ``.sweep.lock`` (flock, with our pid in it); another sweep process there is an error."""
    import fcntl

    fd = os.open(Path(sweep_dir) / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
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
