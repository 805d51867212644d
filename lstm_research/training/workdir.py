"""The run directory: refuse one that holds a run of a different config, write ``config.json``
(and every other small file) atomically."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from lstm_research.errors import UserError
from lstm_research.training.config import base_config


class WorkdirMismatch(UserError):
    pass


#: keys that say when checkpoints are written, not what a run computes: changing them between a
#: run and its resumption is not a different config
RESULT_NEUTRAL = frozenset({"train.checkpoint_every", "train.checkpoint_secs",
                            # where the processes run, not what they compute: a run of two
                            # processes resumes in one and the other way round
                            "parallel.coordinator_address", "parallel.num_processes",
                            "parallel.process_id", "parallel.timeout_s"})


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a kill at any instant leaves the old or the new
    content, never a mix: write a sibling temporary file, fsync it, rename it over ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def prepare_workdir(config, workdir: Path, overwrite: bool) -> None:
    """Refuse a workdir that holds a run of a different config, unless ``overwrite``."""
    saved = workdir / "config.json"
    current = json.loads(config.to_json_best_effort())
    if saved.exists():
        old = json.loads(saved.read_text())
        diff = sorted(set(_diff(old, current, _defaults(current))) - RESULT_NEUTRAL)
        if diff:
            if not overwrite:
                raise WorkdirMismatch(
                    f"workdir {workdir} holds a run of a different config (differs in: "
                    f"{', '.join(diff[:10])}); use another --workdir, or --overwrite to "
                    "discard that run")
            shutil.rmtree(workdir)
    elif overwrite and workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if not saved.exists():
        write_atomic(saved, json.dumps(current, indent=2, sort_keys=True))


def _defaults(current: dict) -> dict:
    """Today's default config for the task of ``current``: a key that a newer version added
    (absent from an older run's config.json) does not count as a difference at its default."""
    return json.loads(base_config(current["task"]["name"]).to_json_best_effort())


def _diff(old, new, defaults, prefix=""):
    """Dotted keys whose values differ between two config dicts."""
    for k in set(old) | set(new):
        if isinstance(old.get(k), dict) and isinstance(new.get(k), dict):
            yield from _diff(old[k], new[k], defaults.get(k) or {}, f"{prefix}{k}.")
        elif k not in old and k in defaults and new.get(k) == defaults[k]:
            continue  # added since that run, at its default
        elif old.get(k) != new.get(k):
            yield f"{prefix}{k}"
