"""The run directory: refuse one that holds a run of a different config, write ``config.json``."""
from __future__ import annotations

import json
import shutil
from pathlib import Path


class WorkdirMismatch(RuntimeError):
    pass


def prepare_workdir(config, workdir: Path, overwrite: bool) -> None:
    """Refuse a workdir that holds a run of a different config, unless ``overwrite``."""
    saved = workdir / "config.json"
    current = json.loads(config.to_json_best_effort())
    if saved.exists():
        old = json.loads(saved.read_text())
        if old != current:
            if not overwrite:
                diff = sorted(_diff(old, current))
                raise WorkdirMismatch(
                    f"workdir {workdir} holds a run of a different config (differs in: "
                    f"{', '.join(diff[:10])}); use another --workdir, or --overwrite to "
                    "discard that run")
            shutil.rmtree(workdir)
    elif overwrite and workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(current, indent=2, sort_keys=True))


def _diff(a, b, prefix=""):
    keys = set(a) | set(b) if isinstance(a, dict) and isinstance(b, dict) else set()
    for k in keys:
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            yield from _diff(a[k], b[k], f"{prefix}{k}.")
        elif a.get(k) != b.get(k):
            yield f"{prefix}{k}"
