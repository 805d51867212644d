"""Sweep results as a table: ``results.csv``, one typed row per trial, and grouping of rows.

Columns: ``trial``, ``index``, the swept keys, ``status``, ``metric``, ``lower_is_better``, every
``valid_<metric>`` and ``test_<metric>`` of the trials' result.json, then ``steps``, ``wall_time``,
``num_params``, ``attempts``, ``returncode``, ``error``. Reading it back parses the values with
the sweeps' value parser (numbers, bools; empty -> None).
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

from lstm_research.errors import UserError
from lstm_research.sweeps.spec import Trial
from lstm_research.sweeps.sweepdir import (RESULT_JSON, STATUS_JSON, load_sweep, now, read_json,
                                           trial_state, write_json)
from lstm_research.sweeps.values import format_value, is_seed_key, parse_value

__all__ = [
    "RESULTS_CSV",
    "collect_results",
    "group_label",
    "is_num",
    "ordered_groups",
    "read_results_csv",
    "restorable_rows",
    "restore_results",
    "write_results_csv",
]

RESULTS_CSV = "results.csv"
BASE_COLUMNS = ("trial", "index")
TAIL_COLUMNS = ("steps", "wall_time", "num_params", "attempts", "returncode", "error")


def collect_results(sweep_dir: Path | str) -> tuple[list[dict], dict]:
    """One dict per trial (columns as in results.csv, values typed) and sweep info.

    A trial is read from its folder; one without a folder that the directory's results.csv records
    as done or failed keeps that row (:func:`_rows_without_dirs`).

    The info dict holds ``swept_keys``, ``seed_keys``, ``random_keys``, ``log_scale_keys``, ``metric``
    (the most common primary metric of the done trials, or None), ``lower_is_better``, ``n_trials``
    and ``config`` (the trials' config file).
    """
    sweep_dir = Path(sweep_dir)
    spec, trials, _ = load_sweep(sweep_dir)
    kept = _rows_without_dirs(sweep_dir)
    rows = []
    for t in trials:
        tdir = sweep_dir / t.id
        if not tdir.exists() and t.id in kept:
            rows.append({"trial": t.id, "index": t.index, **t.overrides, **kept[t.id]})
            continue
        st = trial_state(tdir)
        result = read_json(tdir / RESULT_JSON) or {}
        row: dict[str, Any] = {"trial": t.id, "index": t.index, **t.overrides, "status": st["status"]}
        row["metric"] = result.get("metric")
        row["lower_is_better"] = result.get("lower_is_better")
        for split in ("valid", "test"):
            for name, value in (result.get(split) or {}).items():
                row[f"{split}_{name}"] = value
        for col in ("steps", "wall_time", "num_params"):
            row[col] = result.get(col)
        row["attempts"] = st.get("attempts")
        row["returncode"] = st.get("returncode")
        row["error"] = st.get("error") if st["status"] == "failed" else None
        rows.append(row)
    metrics = Counter(r["metric"] for r in rows if r["status"] == "done" and r["metric"])
    metric = metrics.most_common(1)[0][0] if metrics else None
    lib = [r["lower_is_better"] for r in rows if r["metric"] == metric and r["lower_is_better"] is not None]
    info = {
        "swept_keys": spec.swept_keys,
        "seed_keys": [k for k in spec.swept_keys if is_seed_key(k)],
        "random_keys": [a.key for a in spec.random],
        "log_scale_keys": spec.log_scale_keys,
        "metric": metric,
        "metrics": sorted(metrics),
        "lower_is_better": bool(Counter(lib).most_common(1)[0][0]) if lib else None,
        "n_trials": len(trials),
        "config": spec.config,
    }
    return rows, info


def _rows_without_dirs(sweep_dir: Path) -> dict[str, dict]:
    """The done and failed rows of the directory's own results.csv, by trial id: what is known of a
    trial whose folder is not there (a results folder of results.csv and sweep.json, committed or
    copied), so that summarizing it keeps its results instead of rewriting them as pending."""
    path = sweep_dir / RESULTS_CSV
    if not path.is_file():
        return {}
    try:
        rows = read_results_csv(path)
    except (OSError, csv.Error, UnicodeDecodeError):
        return {}  # unreadable: the trial folders alone decide, as before
    keep = ("status", "metric", "lower_is_better", *TAIL_COLUMNS)
    return {r["trial"]: {k: v for k, v in r.items() if k in keep or k.startswith(("valid_", "test_"))}
            for r in rows if r.get("status") in ("done", "failed") and r.get("trial")}


def _columns(rows: Sequence[Mapping], swept_keys: Sequence[str]) -> list[str]:
    metric_cols: list[str] = []
    for r in rows:
        for k in r:
            if (k.startswith("valid_") or k.startswith("test_")) and k not in metric_cols:
                metric_cols.append(k)
    metric_cols.sort(key=lambda c: (not c.startswith("valid_"), c))
    return [*BASE_COLUMNS, *swept_keys, "status", "metric", "lower_is_better", *metric_cols, *TAIL_COLUMNS]


def write_results_csv(sweep_dir: Path | str, rows: Sequence[Mapping] | None = None,
                      info: Mapping | None = None) -> Path:
    """Writes ``results.csv`` (rewritten atomically) and returns its path."""
    sweep_dir = Path(sweep_dir)
    if rows is None or info is None:
        rows, info = collect_results(sweep_dir)
    cols = _columns(rows, info["swept_keys"])
    path = sweep_dir / RESULTS_CSV
    tmp = path.with_name(f".{RESULTS_CSV}.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: "" if r.get(k) is None else
                        (format_value(r[k]) if isinstance(r[k], (bool, tuple, list)) else r[k]) for k in cols})
    tmp.replace(path)
    return path


def read_results_csv(path: Path | str) -> list[dict]:
    """Reads a results.csv back, with values parsed (numbers, bools; empty -> None; a metric's
    ``nan`` / ``inf`` -> float, as written: a diverged trial's value is a number, not a string)."""
    def value(k, v):
        if v == "":
            return None
        if k in ("trial", "error", "status"):
            return v
        if k.startswith(("valid_", "test_")) and v.lower() in ("nan", "inf", "-inf"):
            return float(v)
        return parse_value(v)
    with open(path, newline="") as f:
        return [{k: value(k, v) for k, v in r.items()} for r in csv.DictReader(f)]


def group_label(row: Mapping, keys: Sequence[str]) -> str:
    """A row's group name: the value of the one key, ``k=v, ...`` for several, ``all`` for none."""
    if not keys:
        return "all"
    if len(keys) == 1:
        return format_value(row.get(keys[0]))
    return ", ".join(f"{k}={format_value(row.get(k))}" for k in keys)


def ordered_groups(rows: Sequence[Mapping], keys: Sequence[str]) -> dict[str, list[Mapping]]:
    """Rows by :func:`group_label`, groups in order of first appearance."""
    groups: dict[str, list[Mapping]] = {}
    for r in rows:
        groups.setdefault(group_label(r, keys), []).append(r)
    return groups


def is_num(v: Any) -> bool:
    """A real number (not a bool, not NaN): a usable metric value."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(float(v))


def restorable_rows(csv_path: Path | str, trials: Sequence[Trial]) -> list[dict]:
    """The done rows of ``csv_path`` (a results.csv of this sweep, e.g. one committed from another
    machine whose sweep directory is gone), checked to be trials of ``trials``.

    A row is matched to a trial by the hash at the end of its id (the trial's config and
    overrides), so a row of any other sweep is refused (:class:`UserError`), before anything is
    written; the rows returned carry this sweep's trial ids (a sweep rerun with more ``--trials``
    numbers its trials anew).
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise UserError(f"--restore_results {csv_path}: no such file (pass a sweep's results.csv)")
    try:
        rows = read_results_csv(csv_path)
    except (OSError, csv.Error, UnicodeDecodeError) as e:
        raise UserError(f"--restore_results {csv_path}: not a readable results.csv ({e})") from None
    if rows and not {"trial", "status"} <= set(rows[0]):
        raise UserError(f"--restore_results {csv_path}: not a results.csv (no 'trial' and 'status' columns)")
    by_hash = {t.hash: t.id for t in trials}
    done = [(r, by_hash.get(str(r["trial"]).rsplit("_", 1)[-1])) for r in rows
            if r["status"] == "done"]
    foreign = [r["trial"] for r, ours in done if ours is None]
    if foreign:
        raise UserError(f"--restore_results {csv_path}: {len(foreign)} of its {len(done)} done trials are "
                        f"not trials of this sweep (e.g. {foreign[0]!r}); it holds another sweep's results")
    return [{**r, "trial": ours} for r, ours in done]


def restore_results(sweep_dir: Path | str, rows: Sequence[Mapping], source: str) -> int:
    """Records :func:`restorable_rows` as done trials; returns how many were restored.

    A trial whose directory already holds a result is left alone. The rebuilt result.json holds what
    the row holds (metric, valid/test values, steps, wall time, parameter count) and
    ``restored_from``; the trial's curves (metrics.jsonl) and checkpoints are not restored.
    """
    restored = 0
    for r in rows:
        tdir = Path(sweep_dir) / r["trial"]
        if (tdir / RESULT_JSON).exists():
            continue
        tdir.mkdir(parents=True, exist_ok=True)
        result = {"status": "done", "metric": r.get("metric"), "lower_is_better": r.get("lower_is_better"),
                  **{split: {k[len(split) + 1:]: v for k, v in r.items()
                             if k.startswith(split + "_") and v is not None}
                     for split in ("valid", "test")},
                  **{k: r.get(k) for k in ("steps", "wall_time", "num_params")},
                  "restored_from": source, "restored_at": now()}
        write_json(tdir / RESULT_JSON, result)
        write_json(tdir / STATUS_JSON, {"status": "done", "attempts": r.get("attempts"),
                                        "returncode": r.get("returncode"), "restored_from": source})
        restored += 1
    return restored
