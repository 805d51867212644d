"""Packed trials (``experiments/sweep.py --pack K``): which trials share a program, and the packs.

A pack is K trials trained in one vmapped program by ``run.py --pack=PACK_JSON``
(:mod:`lstm_research.training.pack`). :func:`plan_packs` groups the trials to run by their
program (:func:`lstm_research.training.pack.program_key`: the swept keys that may differ inside
a pack are the seed, optimizer hyperparameters, input noise, initial gate biases and, for
LSTM-family cells, the width), keeping the sweep's run order, and cuts each group into packs of
at most K: within each window of :data:`SORT_WINDOW` x K trials (in run order) the trials are
sorted by width first, since a pack computes every member at its widest member's width. Packs of an earlier run whose trials are all still unfinished are kept as they were,
so a rerun resumes them from their stacked checkpoints.

Layout: ``SWEEP_DIR/_packs/<pack id>/`` holds ``pack.json`` (the members' ids and ``run.py``
arguments), the pack's ``log.txt`` and its ``checkpoints/``; each member's own directory gets the
files of a single run.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Sequence

from lstm_research.errors import UserError
from lstm_research.sweeps.check import apply_overrides, load_trial_config
from lstm_research.sweeps.local import stop_stale_trial
from lstm_research.sweeps.spec import SweepSpec, Trial
from lstm_research.sweeps.sweepdir import LOG_TXT, STATUS_JSON, now, read_json, write_json
from lstm_research.sweeps.values import format_value

__all__ = ["PACKS_DIR", "Pack", "mark_running", "pack_log", "plan_packs", "prepare_pack",
           "write_pack"]

PACKS_DIR = "_packs"
PACK_JSON = "pack.json"
SORT_WINDOW = 4  # packs formed by width out of this many packs' worth of trials


@dataclasses.dataclass(frozen=True)
class Pack:
    """Trials run as one program; ``id`` names its directory under ``_packs``."""

    id: str
    trials: tuple[Trial, ...]


def _pack_id(trials: Sequence[Trial]) -> str:
    h = hashlib.sha1(",".join(t.id for t in trials).encode()).hexdigest()[:8]
    return f"pack_{trials[0].index:04d}_k{len(trials)}_{h}"


def _trial_config(spec: SweepSpec, base, trial: Trial):
    overrides = [f"--config.{k}={format_value(v)}" for k, v in {**spec.fixed, **trial.overrides}.items()]
    return apply_overrides(base, overrides, "--pack", spec.config)


def _previous_packs(sweep_dir: Path, ids: set[str], by_id: dict) -> list[Pack]:
    """Packs of earlier runs whose members all still need to run (they resume as they were)."""
    out = []
    for path in sorted((sweep_dir / PACKS_DIR).glob(f"*/{PACK_JSON}")):
        members = (read_json(path) or {}).get("members") or []
        if members and all(m in ids for m in members):
            out.append(Pack(path.parent.name, tuple(by_id[m] for m in members)))
            ids -= set(members)
    return out


def plan_packs(spec: SweepSpec, sweep_dir: Path, trials: Sequence[Trial], k: int, cwd: Path) -> list[Pack]:
    """The packs (of at most ``k`` trials) that run ``trials`` (in run order), see the module
    docstring. A user error, naming the key that forces separate programs, when ``k > 1`` and no
    two trials can share a program."""
    from lstm_research.models.width import unpaddable
    from lstm_research.training.pack import pack_conflict, program_key

    if k < 1:
        raise UserError(f"--pack must be >= 1 (trials per program), got {k}")
    by_id = {t.id: t for t in trials}
    remaining = set(by_id)
    packs = _previous_packs(Path(sweep_dir), remaining, by_id)
    base = load_trial_config(spec.config, cwd)
    groups: dict[str, list] = {}
    configs = {}
    for t in trials:
        if t.id not in remaining:
            continue
        c = configs[t.id] = _trial_config(spec, base, t)
        key = repr(sorted(program_key(c, with_width=unpaddable(c.model) is not None).items()))
        groups.setdefault(key, []).append(t)
    if k > 1 and len(trials) > 1 and remaining and all(len(g) == 1 for g in groups.values()):
        first = [t for t in trials if t.id in remaining][:2]
        why = pack_conflict([configs[t.id] for t in first]) if len(first) == 2 else None
        raise UserError(f"--pack {k}: no two trials of this sweep can share a program"
                        + (f": {why}" if why else ""))
    for group in groups.values():
        # a pack computes every member at its widest member's width: within each window of
        # SORT_WINDOW packs (in launch order) the trials are packed by width
        for w in range(0, len(group), SORT_WINDOW * k):
            window = sorted(group[w:w + SORT_WINDOW * k], key=lambda t: configs[t.id].model.hidden_size)
            for i in range(0, len(window), k):
                chunk = window[i:i + k]
                packs.append(Pack(_pack_id(chunk), tuple(chunk)))
    order = {t.id: i for i, t in enumerate(trials)}
    return sorted(packs, key=lambda p: min(order[t.id] for t in p.trials))


def prepare_pack(pack: Pack, spec: SweepSpec, sweep_dir: Path, python: str, entry: str,
                 kill_timeout: float) -> tuple[list[str], list[dict]]:
    """Before a pack starts: its members' dirs (a member left running by a killed sweep is
    stopped) and ``pack.json``. Returns the pack's command, ``python run.py --pack=PACK_JSON``,
    and the members' status records."""
    commands, states = [], []
    for t in pack.trials:
        tdir = Path(sweep_dir) / t.id
        tdir.mkdir(parents=True, exist_ok=True)
        st = read_json(tdir / STATUS_JSON) or {}
        if st.get("status") == "running":
            stop_stale_trial(st, tdir, kill_timeout)
        commands.append(spec.command(t, str(tdir), python=python, entry=entry)[1:])
        states.append(st)
    path = write_pack(pack, sweep_dir, commands)
    return [python, entry, f"--pack={path}"], states


def pack_log(pack: Pack, sweep_dir: Path) -> Path:
    """The pack process's own log.txt (beside its pack.json)."""
    return Path(sweep_dir) / PACKS_DIR / pack.id / LOG_TXT


def mark_running(pack: Pack, sweep_dir: Path, states: list[dict], cmd: list[str], info: dict) -> None:
    """Each member's status.json: running in ``pack`` (with the launcher's ``info``), one more
    attempt; its log.txt: a line naming the pack's log."""
    log = pack_log(pack, sweep_dir)
    for t, st in zip(pack.trials, states):
        attempt = int(st.get("attempts", 0)) + 1
        with open(Path(sweep_dir) / t.id / LOG_TXT, "a") as f:
            f.write(f"===== [sweep] attempt {attempt} started {now()} in {pack.id} (its output: {log})\n")
        for stale in ("pid", "job_id", "returncode", "ended", "error"):
            st.pop(stale, None)
        write_json(Path(sweep_dir) / t.id / STATUS_JSON, {**st, "status": "running", "attempts": attempt,
                                                          "command": cmd, "pack": pack.id, "started": now(),
                                                          **info})


def write_pack(pack: Pack, sweep_dir: Path, commands: list[list[str]]) -> Path:
    """``_packs/<id>/pack.json`` with each member's ``run.py`` arguments; returns its path."""
    folder = Path(sweep_dir) / PACKS_DIR / pack.id
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / PACK_JSON
    write_json(path, {"members": [t.id for t in pack.trials], "argv": commands})
    return path
