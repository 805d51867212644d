"""Work over the steps of a padded batch up to its longest sequence only.

Variable-length batches (those with ``lengths``) are padded far beyond their longest sequence: the
trainer pads every batch of a split to the split's longest, so that one compiled program serves
them all (a Greff JSB training sequence, 59 steps on average, is padded to 128). The fused LSTM
layer's loops stop at the batch's longest sequence (a traced trip count); the work around them,
over the time axis, can follow: :func:`at_visited_length` runs a function at the static
length of the chunks of steps up to the longest sequence, one ``lax.switch`` over the chunk
counts, each branch compiled into the program (chunks of :data:`CHUNK` steps for the input
noise, of ``layers.fused.ROW_CHUNK`` for the fused layer's work outside its loops). The steps
after it are padding that no output depends on.

Under ``jax.vmap`` (packed trials, :mod:`lstm_research.training.pack`) each member's longest would
be a batched value, the switch a select that runs every branch, and the fused loops loops with a
batched condition; inside :func:`shared_trip_count` every member follows the longest of them all.
"""
from __future__ import annotations

import contextlib
import functools

import jax
import jax.numpy as jnp

#: steps per chunk (each chunk count is a branch compiled into the program)
CHUNK = 32
_TRIP_AXES: list[str] = []  # see shared_trip_count


@contextlib.contextmanager
def shared_trip_count(axis_name: str):
    """While tracing under ``jax.vmap(..., axis_name=axis_name)`` (packed trials): the fused
    layer's loops, and the work of :func:`at_visited_length`, of every member run to the longest
    sequence among all members (padding steps are masked: same values). Otherwise each member's
    trip count is its own and vmap turns the loops into loops with a batched condition, which
    select every carried buffer at every step (7x slower at width 63 on a CPU)."""
    _TRIP_AXES.append(axis_name)
    try:
        yield
    finally:
        _TRIP_AXES.pop()


def longest(n):
    """``n``, a batch's longest sequence (traced), as the loops see it: inside
    :func:`shared_trip_count`, the longest among all members of the pack."""
    return jax.lax.pmax(n, _TRIP_AXES[-1]) if _TRIP_AXES else n


def at_visited_length(n, T: int, fn, *operands, chunk: int = CHUNK):
    """``fn(L, *operands)`` with the static ``L``: ``n``, the batch's longest sequence (traced;
    see :func:`longest`), rounded up to a multiple of ``chunk``, at most ``T``; ``fn`` must
    give outputs of one shape for every ``L``. With ``n`` None, or when ``T`` is not a multiple
    of ``chunk`` above it: ``fn(T, *operands)``."""
    if n is None or T <= chunk or T % chunk:
        return fn(T, *operands)
    index = jnp.clip((n + chunk - 1) // chunk - 1, 0, T // chunk - 1)
    return jax.lax.switch(index, [functools.partial(fn, (k + 1) * chunk)
                                  for k in range(T // chunk)], *operands)


def longest_of(lengths):
    """:func:`longest` of ``lengths`` [B] (None without lengths)."""
    return None if lengths is None else longest(jnp.max(lengths))
