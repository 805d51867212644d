"""Array helpers shared by the data pipelines and the tasks: the integer-argument check,
zero-padding of variable-length sequences, and the mask of their real steps."""
from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np


def check_int(name: str, value, minimum: int = 1, maximum: int | None = None) -> int:
    """``value`` as an int; ValueError naming ``name`` unless it is an integer (not a bool) in
    ``[minimum, maximum]``."""
    ok = not isinstance(value, bool) and isinstance(value, (int, np.integer)) and \
        value >= minimum and (maximum is None or value <= maximum)
    if not ok:
        bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be an integer {bounds}, got {value!r}")
    return int(value)


def pad_batch(seqs: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Zero-pad ``[T_i, ...]`` sequences (one trailing shape) to ``x [B, max T_i, ...]``
    float32; ``lengths [B]`` int32."""
    if len(seqs) == 0:
        raise ValueError("pad_batch needs at least one sequence")
    arrays = [np.asarray(s) for s in seqs]
    if any(a.ndim < 1 for a in arrays) or len({a.shape[1:] for a in arrays}) != 1:
        raise ValueError(f"pad_batch needs [T, ...] sequences of one trailing shape, got shapes "
                         f"{[a.shape for a in arrays]}")
    lengths = np.array([a.shape[0] for a in arrays], dtype=np.int32)
    x = np.zeros((len(arrays), int(lengths.max())) + arrays[0].shape[1:], dtype=np.float32)
    for i, a in enumerate(arrays):
        x[i, :len(a)] = a
    return x, lengths


def step_mask(lengths, T: int):
    """``[B, T]`` bool: step ``t`` of sequence ``b`` is real (``t < lengths[b]``). NumPy
    ``lengths`` give a NumPy mask (data generators), traced/JAX ones a JAX mask (losses)."""
    xp = np if isinstance(lengths, np.ndarray) else jnp
    return xp.arange(T)[None, :] < lengths[:, None]
