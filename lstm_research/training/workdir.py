"""The run directory: refuse one that holds a run of a different config, recognize a run whose
training budget is being raised (an extension), write ``config.json`` (and every other small
file) atomically."""
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
                            # updates per call: the same bits (tests/test_training.py)
                            "train.steps_per_call",
                            # where the processes run, not what they compute: a run of two
                            # processes resumes in one and the other way round
                            "parallel.coordinator_address", "parallel.num_processes",
                            "parallel.process_id", "parallel.timeout_s"})

#: the training budget: raising it (and nothing else) extends a run rather than making another
BUDGET = frozenset({"train.epochs", "train.steps"})

#: keys removed from the config, with the value that meant "off": a saved run of an older version
#: holding that value is the same config (it resumes after an upgrade); any other value is not
RETIRED = {"train.vmap_trials": 0, "train.vmap_lrs": ""}  # replaced by sweep.py --pack
_NONE = object()  # no retired value


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


def config_record(config) -> dict:
    """``config`` as the dict that ``config.json`` holds."""
    return json.loads(config.to_json_best_effort())


def write_config(workdir: Path, config) -> None:
    write_atomic(Path(workdir) / "config.json",
                 json.dumps(config_record(config), indent=2, sort_keys=True))


def extension_of(config, workdir: Path) -> dict | None:
    """The saved ``config.json`` of ``workdir`` when ``config`` differs from it only by a larger
    training budget: ``train.epochs`` raised (or, for both without epochs, ``train.steps``
    raised), besides :data:`RESULT_NEUTRAL` keys. None otherwise (no saved run, the same config,
    or any other difference, a smaller budget included). Reads only."""
    saved = Path(workdir) / "config.json"
    if not saved.exists():
        return None
    old, current = json.loads(saved.read_text()), config_record(config)
    diff = set(_diff(old, current, _defaults(current))) - RESULT_NEUTRAL
    if not diff or not diff <= BUDGET:
        return None
    o, n = old.get("train", {}), current["train"]
    if o.get("epochs", 0) and n["epochs"]:
        larger = n["epochs"] > o["epochs"] and "train.steps" not in diff
    elif not o.get("epochs", 0) and not n["epochs"]:
        larger = n["steps"] > o.get("steps", n["steps"])
    else:
        larger = False  # epochs <-> steps: another config
    return old if larger else None


def prepare_workdir(config, workdir: Path, overwrite: bool, extending: bool = False) -> None:
    """Refuse a workdir that holds a run of a different config, unless ``overwrite``.

    ``extending``: the caller found :func:`extension_of` ``config`` and checked that the run can
    be extended; the saved ``config.json`` is left for it to replace (:func:`write_config`) once
    it has resumed."""
    if extending:
        return
    saved = workdir / "config.json"
    current = config_record(config)
    if saved.exists():
        old = json.loads(saved.read_text())
        diff = sorted(set(_diff(old, current, _defaults(current))) - RESULT_NEUTRAL)
        if diff:
            if not overwrite:
                raise WorkdirMismatch(
                    f"workdir {workdir} holds a run of a different config (differs in: "
                    f"{', '.join(diff[:10])}"
                    + ("; a run can be extended to a larger budget, not shortened"
                       if set(diff) <= BUDGET else "")
                    + "); use another --workdir, or --overwrite to discard that run")
            shutil.rmtree(workdir)
    elif overwrite and workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if not saved.exists():
        write_config(workdir, config)


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
        elif k not in new and RETIRED.get(f"{prefix}{k}", _NONE) == old[k]:
            continue  # removed since that run, where it was off
        elif old.get(k) != new.get(k):
            yield f"{prefix}{k}"
