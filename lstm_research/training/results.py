"""What a finished run reports: evaluation sums merged over batches, the ``result.json`` record,
and its one-line summary."""
from __future__ import annotations

import json

import jax
import numpy as np

from lstm_research import numerics


def merge_eval_sums(sums: dict | None, new: dict) -> dict:
    """Add one batch's metric sums to the running ones (keys starting with ``max`` take the
    maximum); works elementwise for the [K] sums of vmapped trials."""
    if sums is None:
        return new
    return {k: (np.maximum(sums[k], new[k]) if k.startswith("max") else sums[k] + new[k])
            for k in new}


def target_reached(value, target, lower_is_better: bool) -> bool:
    """``train.target``: a finite validation ``value`` at or past ``target`` (a NaN is not)."""
    if target is None or not np.isfinite(value):
        return False
    return value <= target if lower_is_better else value >= target


def run_result(config, task, *, valid, test, best_step, steps, stopped, wall_time, num_params,
               **extra) -> dict:
    """The ``result.json`` record of one run (``extra`` keys go before the device fields)."""
    return {"status": "done", "task": task.name, "metric": task.metric,
            "lower_is_better": task.lower_is_better,
            "valid": valid, "test": test, "best_step": best_step,
            "steps": steps, "stopped": stopped,
            "wall_time": wall_time, "num_params": num_params, **extra,
            "devices": jax.device_count(), "platform": jax.devices()[0].platform,
            "numerics": numerics.fingerprint(),  # what else decides the float results
            "config": json.loads(config.to_json_best_effort())}


def summary_line(r: dict) -> str:
    m = r["metric"]
    valid = r["valid"][m] if r.get("valid") else float("nan")
    return (f"{r['task']}: test {m} {r['test'][m]:.4g} | valid {m} {valid:.4g} "
            f"(best at step {r['best_step']}) | {r['steps']} steps, {r['wall_time']:.0f} s, "
            f"{r['num_params']:,} params | {r['stopped']}")
