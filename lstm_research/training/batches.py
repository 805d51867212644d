"""Host-side batch shaping shared by the trainers: padding variable-length batches along time.

Variable-length batches (those with ``lengths``) are zero-padded to a multiple of
:data:`TIME_BUCKET` steps, so that a run compiles a few shapes rather than one per length.
"""
from __future__ import annotations

import numpy as np

TIME_BUCKET = 32  # variable-length batches are padded to a multiple of this (fewer recompiles)


def time_keys(batch: dict) -> tuple:
    """The keys padded along time: ``x`` and a per-step ``y`` of a variable-length batch (one
    with ``lengths``); none otherwise."""
    if "lengths" not in batch:
        return ()
    t = batch["x"].shape[1]
    return tuple(k for k in ("x", "y") if k in batch and np.ndim(batch[k]) >= 2
                 and np.shape(batch[k])[1] == t)


def pad_time_to(batch: dict, T: int) -> dict:
    """Zero-pad the time axis of a variable-length batch's ``x`` and per-step ``y`` to ``T``."""
    if batch["x"].shape[1] == T:
        return batch
    out = dict(batch)
    for k in time_keys(batch):
        a = batch[k]
        # zeros and a slice assignment: np.pad cost 10x more (a batch-1 update is ~0.5 ms)
        out[k] = np.zeros((a.shape[0], T, *a.shape[2:]), a.dtype)
        out[k][:, :a.shape[1]] = a
    return out


def pad_time(batch: dict) -> dict:
    """Pad a variable-length batch along time to a multiple of :data:`TIME_BUCKET`."""
    T = batch["x"].shape[1]
    return pad_time_to(batch, T + (-T % TIME_BUCKET))


def padded_length(batch: dict, T: int | None) -> int:
    """The time length :func:`pad_time_at_least` gives ``batch`` (its own without ``lengths``)."""
    t = batch["x"].shape[1]
    if "lengths" not in batch:
        return t
    t = t if T is None else max(T, t)
    return t + (-t % TIME_BUCKET)


def pad_time_at_least(batch: dict, T: int | None) -> dict:
    """:func:`pad_time`, but to at least ``T`` steps (rounded up likewise) when ``T`` is given."""
    return pad_time_to(batch, padded_length(batch, T))


def pad_to_longest(batches: list[dict]) -> list[dict]:
    """Pad each batch of a list to the longest time dimension among them."""
    T = max(b["x"].shape[1] for b in batches)
    return [pad_time_to(b, T) for b in batches]


def length_groups(batch: dict, rows: int) -> list[dict]:
    """``batch`` (one with ``lengths``) split into equal groups of its sequences, longest first:
    for models whose loops stop at each batch's longest sequence, a group of short sequences
    stops early. The group size is the largest divisor of the batch's rows up to ``rows``, so no
    row is added (tasks count rows, e.g. strings); when that is below ``rows // 2`` (or the batch
    has at most ``rows`` rows) the batch is returned as it is."""
    n = batch["x"].shape[0]
    size = max(d for d in range(1, min(n, rows) + 1) if n % d == 0)
    if n <= rows or size < rows // 2:
        return [batch]
    order = np.argsort(-np.asarray(batch["lengths"]), kind="stable")
    per_row = [k for k, a in batch.items() if np.ndim(a) and np.shape(a)[0] == n]
    return [{**batch, **{k: np.asarray(batch[k])[order[i:i + size]] for k in per_row}}
            for i in range(0, n, size)]
