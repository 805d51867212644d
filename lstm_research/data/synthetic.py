"""Synthetic long-time-lag benchmarks, generated from a ``numpy.random.Generator``.

Every generator is a pure function of the rng state and the sizes (no global randomness), and
returns numpy arrays (float32 inputs/targets, int32 ids/lengths). Padded positions are zero.

Tasks and their sources:

* Adding problem — Hochreiter & Schmidhuber (1997), "Long Short-Term Memory", Sec. 5.4
  (Experiment 4), and the simplified form of Le, Jaitly & Hinton (2015), "A Simple Way to
  Initialize Recurrent Networks of Rectified Linear Units", Sec. 4.1.
* Copy memory — Arjovsky, Shah & Bengio (2016), "Unitary Evolution Recurrent Neural Networks",
  Sec. 4.1.
* Temporal order — Hochreiter & Schmidhuber (1997), Sec. 5.6 (Experiments 6a and 6b).
* Embedded Reber grammar (ERG) — Hochreiter & Schmidhuber (1997), Sec. 5.1 (Experiment 1);
  continual ERG (CERG) — Gers, Schmidhuber & Cummins (2000), "Learning to Forget: Continual
  Prediction with LSTM", Sec. 4.
"""

from __future__ import annotations

import functools
import math

import jax.numpy as jnp
import numpy as np

from lstm_research.data.arrays import check_int, step_mask

__all__ = [
    "ADDING_LE_BASELINE_MSE", "adding_problem", "adding_within", "adding_solved",
    "copy_memory", "copy_memory_baseline",
    "TEMPORAL_ORDER_SYMBOLS", "temporal_order",
    "REBER_SYMBOLS", "REBER_GRAPH", "reber_string", "embedded_reber_string",
    "embedded_reber_next_sets", "encode_reber",
    "continual_reber_stream", "first_error_index",
]


def _check_rng(rng) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (e.g. np.random.default_rng(0)), "
                        f"got {type(rng).__name__}")
    return rng


# --------------------------------------------------------------------------------------------
# Adding problem
# --------------------------------------------------------------------------------------------

#: MSE of always predicting E[y] = 1 in the "le" variant: Var(U1 + U2) = 2 * 1/12 = 1/6.
ADDING_LE_BASELINE_MSE = 1.0 / 6.0

_ADDING_VARIANTS = ("le", "hochreiter")


def adding_problem(rng: np.random.Generator, batch_size: int, T: int, variant: str = "le"):
    """A batch of the adding problem.

    Returns ``dict(x=[B, L, 2] float32, y=[B] float32, lengths=[B] int32)``; channel 0 holds
    the values, channel 1 the markers.

    ``variant="le"`` (Le, Jaitly & Hinton 2015, Sec. 4.1): ``L = T``; values ~ U[0, 1]; the
    marker channel is 0 except for exactly two 1s, one at a uniform position in the first half
    ``[0, T//2)`` and one in the second half ``[T//2, T)``; ``y`` = sum of the two marked
    values. All lengths are ``T``. Predicting the mean gives MSE 1/6
    (:data:`ADDING_LE_BASELINE_MSE`).

    ``variant="hochreiter"`` (Hochreiter & Schmidhuber 1997, Sec. 5.4): values ~ U[-1, 1];
    each sequence has a uniform random length in ``[T, T + T//10]``. One of the first ten pairs
    is marked (value X1), then one of the first ``T//2 - 1`` still-unmarked pairs (value X2).
    Markers are 1 at the two marked pairs, -1 at the first and last pair unless marked, 0
    elsewhere. "In the rare case where the first pair of the sequence gets marked, we set X1 to
    zero": whenever pair 0 is marked its value is set to 0 (in the input and hence in the
    target). ``y = 0.5 + (X1 + X2) / 4``. Sequences are zero-padded to the batch's longest and
    ``L = max(lengths)``. A sequence counts as processed correctly if ``|error| < 0.04``
    (:func:`adding_solved`).
    """
    rng = _check_rng(rng)
    B = check_int("batch_size", batch_size)
    if variant == "le":
        T = check_int("T", T, 2)
        half = T // 2
        values = rng.uniform(0.0, 1.0, size=(B, T))
        i1 = rng.integers(0, half, size=B)
        i2 = rng.integers(half, T, size=B)
        rows = np.arange(B)
        markers = np.zeros((B, T))
        markers[rows, i1] = 1.0
        markers[rows, i2] = 1.0
        y = values[rows, i1] + values[rows, i2]
        lengths = np.full(B, T, dtype=np.int32)
    elif variant == "hochreiter":
        # T >= 11 keeps the last pair (index >= T-1 >= 10) apart from the first ten.
        T = check_int("T", T, 11)
        lengths = rng.integers(T, T + T // 10 + 1, size=B).astype(np.int32)
        L = int(lengths.max())
        rows = np.arange(B)
        pad = ~step_mask(lengths, L)
        values = rng.uniform(-1.0, 1.0, size=(B, L))
        i1 = rng.integers(0, 10, size=B)
        # k-th (0-based) of the first T//2 - 1 pairs that are still unmarked (skip i1).
        k = rng.integers(0, T // 2 - 1, size=B)
        i2 = np.where(k < i1, k, k + 1)
        markers = np.zeros((B, L))
        markers[:, 0] = -1.0
        markers[rows, lengths - 1] = -1.0
        markers[rows, i1] = 1.0
        markers[rows, i2] = 1.0
        values[(i1 == 0) | (i2 == 0), 0] = 0.0
        values[pad] = 0.0
        y = 0.5 + (values[rows, i1] + values[rows, i2]) / 4.0
    else:
        raise ValueError(f"unknown adding-problem variant {variant!r}; valid: {_ADDING_VARIANTS}")
    x = np.stack([values, markers], axis=-1).astype(np.float32)
    return dict(x=x, y=y.astype(np.float32), lengths=lengths)


def adding_within(pred, y, tol: float = 0.04):
    """Per sequence: ``|pred - y| < tol`` (the Hochreiter & Schmidhuber 1997 tolerance).
    NumPy or JAX arrays (the adding task computes it inside its jitted loss)."""
    if pred.shape != y.shape:
        raise ValueError(f"pred shape {pred.shape} does not match y shape {y.shape}")
    return jnp.abs(pred - y) < tol


def adding_solved(pred, y, tol: float = 0.04) -> bool:
    """Hochreiter & Schmidhuber (1997) criterion: every sequence has ``|pred - y| < tol``."""
    return bool(jnp.all(adding_within(np.asarray(pred), np.asarray(y), tol)))


# --------------------------------------------------------------------------------------------
# Copy memory
# --------------------------------------------------------------------------------------------

def copy_memory(rng: np.random.Generator, batch_size: int, T: int, n_symbols: int = 8,
                copy_len: int = 10):
    """A batch of the copy-memory task of Arjovsky, Shah & Bengio (2016), Sec. 4.1.

    Token ids: 0 = blank, ``1..n_symbols`` = data symbols, ``n_symbols + 1`` = delimiter (the
    paper's a_8 / a_0..a_7 / a_9). Inputs have length ``L = T + 2*copy_len``: ``copy_len``
    symbols drawn uniformly with replacement, ``T - 1`` blanks, the delimiter, ``copy_len``
    blanks. Targets: ``T + copy_len`` blanks, then the ``copy_len`` symbols in order.
    Returns ``dict(x=int32 [B, L], y=int32 [B, L])``.
    """
    rng = _check_rng(rng)
    B = check_int("batch_size", batch_size)
    T = check_int("T", T)
    n_symbols = check_int("n_symbols", n_symbols)
    copy_len = check_int("copy_len", copy_len)
    L = T + 2 * copy_len
    seq = rng.integers(1, n_symbols + 1, size=(B, copy_len))
    x = np.zeros((B, L), dtype=np.int32)
    y = np.zeros((B, L), dtype=np.int32)
    x[:, :copy_len] = seq
    x[:, copy_len + T - 1] = n_symbols + 1
    y[:, T + copy_len:] = seq
    return dict(x=x, y=y)


def copy_memory_baseline(T: int, n_symbols: int = 8, copy_len: int = 10) -> float:
    """Cross-entropy (nats/step) of the memoryless strategy of Arjovsky et al. (2016):
    blanks predicted perfectly, each of the ``copy_len`` symbols at chance:
    ``copy_len * ln(n_symbols) / (T + 2*copy_len)``."""
    T = check_int("T", T)
    n_symbols = check_int("n_symbols", n_symbols)
    copy_len = check_int("copy_len", copy_len)
    return copy_len * math.log(n_symbols) / (T + 2 * copy_len)


# --------------------------------------------------------------------------------------------
# Temporal order
# --------------------------------------------------------------------------------------------

#: One-hot index order of the 8 input symbols of the temporal-order tasks.
TEMPORAL_ORDER_SYMBOLS = "abcdXYBE"
_TO_RANGES = {"6a": ((10, 20), (50, 60)), "6b": ((10, 20), (33, 43), (66, 76))}


def temporal_order(rng: np.random.Generator, batch_size: int, variant: str = "6a"):
    """A batch of the temporal-order task, Hochreiter & Schmidhuber (1997), Sec. 5.6.

    As in the paper: the sequence starts with E, ends with B (the "trigger symbol"), and is
    otherwise uniform over {a, b, c, d}, except at the relevant positions, which hold X or Y
    (each with probability 1/2). Length uniform in [100, 110]. Relevant positions (inclusive
    ranges, used directly as 0-based indices, so index 0 is always the E):
    6a: t1 in [10, 20], t2 in [50, 60]; 6b: t1 in [10, 20], t2 in [33, 43], t3 in [66, 76].
    Class = the X/Y pattern read as a binary number with X=0, Y=1, first position most
    significant: 6a XX->0 (Q), XY->1 (R), YX->2 (S), YY->3 (U); 6b XXX->0 (Q) ... YYY->7 (C).

    Returns ``dict(x=[B, Lmax, 8] float32 one-hot over TEMPORAL_ORDER_SYMBOLS (zero rows for
    padding), y=[B] int32 class, lengths=[B] int32, positions=[B, 2 or 3] int32)``.
    """
    rng = _check_rng(rng)
    B = check_int("batch_size", batch_size)
    if variant not in _TO_RANGES:
        raise ValueError(f"unknown temporal-order variant {variant!r}; "
                         f"valid: {tuple(_TO_RANGES)}")
    ranges = _TO_RANGES[variant]
    sym = {s: i for i, s in enumerate(TEMPORAL_ORDER_SYMBOLS)}
    lengths = rng.integers(100, 111, size=B).astype(np.int32)
    L = int(lengths.max())
    rows = np.arange(B)
    ids = rng.integers(0, 4, size=(B, L))
    ids[:, 0] = sym["E"]
    ids[rows, lengths - 1] = sym["B"]
    positions = np.stack([rng.integers(lo, hi + 1, size=B) for lo, hi in ranges], axis=1)
    bits = rng.integers(0, 2, size=(B, len(ranges)))
    for j in range(len(ranges)):
        ids[rows, positions[:, j]] = sym["X"] + bits[:, j]
    y = (bits * (1 << np.arange(len(ranges))[::-1])).sum(axis=1)
    x = np.eye(len(TEMPORAL_ORDER_SYMBOLS), dtype=np.float32)[ids]
    x[~step_mask(lengths, L)] = 0.0
    return dict(x=x, y=y.astype(np.int32), lengths=lengths, positions=positions.astype(np.int32))


# --------------------------------------------------------------------------------------------
# (Embedded / continual) Reber grammar
# --------------------------------------------------------------------------------------------

#: Symbol order of the one-hot / multi-hot encodings.
REBER_SYMBOLS = "BTSXPVE"

#: The Reber graph after the initial B (Reber 1967; Fig. 5 of Hochreiter & Schmidhuber 1997):
#: state -> ((symbol, next state), ...). State 5 emits the final E.
REBER_GRAPH = {
    0: (("T", 1), ("P", 2)),
    1: (("S", 1), ("X", 3)),
    2: (("T", 2), ("V", 4)),
    3: (("X", 2), ("S", 5)),
    4: (("P", 3), ("V", 5)),
    5: (("E", None),),
}


def _check_string(string: str) -> str:
    if not isinstance(string, str):
        raise TypeError(f"expected a string over {REBER_SYMBOLS!r}, got {type(string).__name__}")
    bad = sorted(set(string) - set(REBER_SYMBOLS))
    if bad:
        raise ValueError(f"string {string!r} has symbols {bad} outside {REBER_SYMBOLS!r}")
    return string


def reber_string(rng: np.random.Generator) -> str:
    """A random Reber string "B...E": at each state both outgoing edges have probability 1/2."""
    rng = _check_rng(rng)
    out, state = ["B"], 0
    while state is not None:
        edges = REBER_GRAPH[state]
        sym, state = edges[int(rng.integers(len(edges)))] if len(edges) > 1 else edges[0]
        out.append(sym)
    return "".join(out)


def embedded_reber_string(rng: np.random.Generator) -> str:
    """A random embedded Reber string ``B c <Reber string> c E`` with ``c`` in {T, P} (p=1/2)."""
    rng = _check_rng(rng)
    c = "TP"[int(rng.integers(2))]
    return "B" + c + reber_string(rng) + c + "E"


def _erg_next_symbol_sets(string: str, continual: bool) -> list[str]:
    """For each prefix ``string[:i+1]`` the symbols the ERG allows next; ValueError if illegal."""
    _check_string(string)
    out: list[str] = []

    def step(i: int, allowed: str, what: str) -> str:
        if i >= len(string):
            raise ValueError(f"string {string!r} ends early: after position {i - 1} the grammar "
                             f"expects one of {allowed!r} ({what})")
        if string[i] not in allowed:
            raise ValueError(f"string {string!r}: symbol {string[i]!r} at position {i} is not "
                             f"allowed; valid there: {allowed!r} ({what})")
        return string[i]

    step(0, "B", "outer start")
    out.append("TP")
    c = step(1, "TP", "outer branch")
    out.append("B")
    step(2, "B", "inner start")
    i, state = 3, 0
    out.append("".join(s for s, _ in REBER_GRAPH[state]))
    while state is not None:
        allowed = "".join(s for s, _ in REBER_GRAPH[state])
        sym = step(i, allowed, f"inner Reber state {state}")
        state = dict(REBER_GRAPH[state])[sym]
        out.append(c if state is None else "".join(s for s, _ in REBER_GRAPH[state]))
        i += 1
    step(i, c, "outer branch symbol repeated")
    out.append("E")
    step(i + 1, "E", "outer end")
    out.append("B" if continual else "")
    if i + 2 != len(string):
        raise ValueError(f"string {string!r} continues after the final E at position {i + 1}")
    return out


def embedded_reber_next_sets(string: str, continual: bool = False) -> np.ndarray:
    """Allowed-next-symbol sets of one embedded Reber string, as a ``[L, 7]`` float32 0/1 array.

    Row ``i`` marks (in :data:`REBER_SYMBOLS` order) the symbols the ERG allows after
    ``string[:i+1]``; these are the multi-hot targets of Hochreiter & Schmidhuber (1997), Exp. 1.
    The row after the final E is empty, or ``{B}`` with ``continual=True`` (the CERG of Gers et
    al. 2000, where the next string follows at once). Raises ValueError naming the first
    illegal symbol and the valid ones if ``string`` is not in the grammar.
    """
    return _next_sets(string, continual).copy()


@functools.lru_cache(maxsize=1 << 16)
def _next_sets(string: str, continual: bool) -> np.ndarray:
    """:func:`embedded_reber_next_sets`, kept per string (read-only): a continual stream of 10^5
    symbols concatenates about 8,300 strings, most of them seen before (1,499 distinct among
    25,000), and parsing each again took 60% of the stream's generation time."""
    sets = _erg_next_symbol_sets(string, continual)
    out = np.zeros((len(string), len(REBER_SYMBOLS)), dtype=np.float32)
    for i, allowed in enumerate(sets):
        for s in allowed:
            out[i, REBER_SYMBOLS.index(s)] = 1.0
    out.flags.writeable = False
    return out


def encode_reber(string: str) -> np.ndarray:
    """One-hot ``[L, 7]`` float32 encoding of a string over :data:`REBER_SYMBOLS`."""
    _check_string(string)
    idx = np.array([REBER_SYMBOLS.index(s) for s in string], dtype=np.int64)
    return np.eye(len(REBER_SYMBOLS), dtype=np.float32)[idx]


def continual_reber_stream(rng: np.random.Generator, n_symbols: int):
    """A continual embedded Reber stream (Gers, Schmidhuber & Cummins 2000, Sec. 4).

    Embedded Reber strings are concatenated with no separator or reset and cut to
    ``n_symbols``. ``y[i]`` is the multi-hot set of symbols allowed after ``x[:i+1]``; after
    each final E it is ``{B}`` (the next string starts). Returns
    ``dict(x=[n, 7] float32 one-hot, y=[n, 7] float32 multi-hot, string=str)``.
    """
    rng = _check_rng(rng)
    n = check_int("n_symbols", n_symbols)
    parts, total = [], 0
    while total < n:
        parts.append(embedded_reber_string(rng))
        total += len(parts[-1])
    string = "".join(parts)[:n]
    y = np.concatenate([_next_sets(p, True) for p in parts])[:n]
    return dict(x=encode_reber(string), y=y, string=string)


def first_error_index(pred_probs, targets, threshold: float = 0.5):
    """Index of the first time step whose thresholded outputs disagree with the targets.

    CERG evaluation of Gers et al. (2000): a stream "ends at the first error", an error being any
    output unit on the wrong side of ``threshold`` (unit on iff ``pred > threshold``; target on
    iff ``target > 0.5``). Time is the second-to-last axis (``[..., n, 7]``). Returns ``n``
    where there is no error, as an int array of the leading shape. NumPy or JAX arrays: the
    Reber tasks call it in their jitted losses on logits with ``threshold=0``.
    """
    if pred_probs.shape != targets.shape or pred_probs.ndim < 2:
        raise ValueError(f"pred_probs {pred_probs.shape} and targets {targets.shape} must have "
                         f"the same shape [..., n, units]")
    wrong = jnp.any((pred_probs > threshold) != (targets > 0.5), axis=-1)
    n = wrong.shape[-1]
    return jnp.where(wrong.any(axis=-1), jnp.argmax(wrong, axis=-1), n)
