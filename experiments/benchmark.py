#!/usr/bin/env python
"""Training-step benchmark: our ``Stack`` against Flax ``nn.RNN(nn.OptimizedLSTMCell)`` and
PyTorch ``nn.LSTM`` (oneDNN on CPU, cuDNN on GPU; plus ``jax.experimental.rnn``, cuDNN from JAX,
and our opt-in Pallas kernel, ``fused="pallas"``, on GPU), all in ONE process with interleaved
repetitions.

    python experiments/benchmark.py                 # full run (CPU: under ~10 minutes)
    python experiments/benchmark.py --quick         # a short run
    python experiments/benchmark.py --suite lstm,greff --out /tmp/b.json

A training step is forward + backward of the sum of the outputs of a 2-layer LSTM, gradients with
respect to all parameters included (JAX: the whole ``value_and_grad`` jitted, results blocked on;
PyTorch: ``backward()``, synchronized on GPU). Warm-up calls are excluded. For every
implementation it reports the median and min-max step time, compile time (JAX: lower + compile;
PyTorch: first call), tokens/s, achieved GFLOP/s (matmul FLOPs of an LSTM training step: 3x the
forward's ``2*T*B*(I+H)*4H`` per layer) against a matmul roofline measured in the same process
(a 2048x2048 float32 matmul in JAX), and peak memory (RSS growth during one step on CPU, device
peak on GPU, plus XLA's own buffer sizes for JAX).

Suites (``--suite``, comma-separated; default all): ``roofline``, ``lstm`` (five shapes),
``tscale`` (T = 10..10000, B = 1 and 32), ``greff`` (every Greff variant vs vanilla), ``gru``,
``minrnn`` (minLSTM/minGRU parallel vs sequential at T=4096), ``bf16`` (bfloat16 vs float32),
``ptb`` (a whole PTB-small epoch). Only JAX and NumPy are required; Flax, PyTorch and tqdm are
used when installed.

``--retain-freed-memory`` first calls :func:`retain_freed_memory` below
(glibc keeps freed memory instead of unmapping it), for every implementation in the process
alike: XLA allocates each execution's buffers afresh, PyTorch each tensor, and by default the
large ones page-fault their memory in again on every step (it speeds up PyTorch's LSTM more
than ours). ``--hugepages`` is the milder GLIBC_TUNABLES=glibc.malloc.hugetlb=1.

Timings on shared machines move by 10-20% between runs; compare the ratios, which come from
interleaved repetitions in one process. The load average is recorded in the JSON.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from lstm_research import cells  # noqa: E402
from lstm_research.layers import Stack, fused  # noqa: E402

torch = None  # imported by main() after JAX has initialized its backend (on GPUs, importing
# PyTorch first can make JAX load PyTorch's copy of cuDNN)
try:
    import flax.linen as nn
except ImportError:  # pragma: no cover - optional peer
    nn = None
try:
    from tqdm import tqdm
except ImportError:  # pragma: no cover
    tqdm = None

SHAPES = [(20, 35, 200, 200), (20, 35, 650, 650), (64, 100, 88, 128), (1, 1000, 32, 128),
          (128, 784, 1, 128)]
SHAPE_NAMES = ["ptb-small", "ptb-medium", "jsb-like", "long-b1", "seq-mnist"]
SUITES = ("roofline", "lstm", "tscale", "greff", "gru", "minrnn", "bf16", "ptb")
PTB_STEPS = 2323  # 929589 training tokens / (batch 20 * bptt 20)
RETAINED = False  # whether retain_freed_memory() is on (main() sets it)


# --- infrastructure -----------------------------------------------------------------------------
class Progress:
    """tqdm if installed, else a line per task."""

    def __init__(self, total):
        self.bar = tqdm(total=total, unit="task", dynamic_ncols=True) if tqdm else None
        self.n, self.total = 0, total

    def step(self, what):
        self.n += 1
        if self.bar is not None:
            self.bar.set_description(what[:60])
            self.bar.update(1)
        else:
            print(f"[{self.n}/{self.total}] {what}", flush=True)

    def write(self, line):
        (self.bar.write if self.bar is not None else print)(line)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def on_gpu():
    return jax.devices()[0].platform == "gpu"


def torch_device():
    if torch is None:
        return None
    if on_gpu():
        return "cuda" if torch.cuda.is_available() else None
    return "cpu"


def torch_sync():
    if torch is not None and torch_device() == "cuda":
        torch.cuda.synchronize()


def _rss_bytes():
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return None


def _reset_peak_rss():
    """Reset VmHWM (Linux >= 4.0: write 5 to clear_refs); True if it worked."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_bytes():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_memory(fn, kind):
    """Peak memory of one call of ``fn``: device peak on GPU, else RSS growth (bytes)."""
    gc.collect()
    if kind == "torch" and torch_device() == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        return torch.cuda.max_memory_allocated() - base, "cuda max_memory_allocated delta"
    if on_gpu():
        stats = jax.devices()[0].memory_stats() or {}
        if "peak_bytes_in_use" in stats:
            # no reset API: report it only as an upper bound
            fn()
            return (jax.devices()[0].memory_stats() or {}).get("peak_bytes_in_use"), \
                "jax device peak_bytes_in_use (process-wide, upper bound)"
        return None, "n/a"
    with _default_malloc():  # freed memory handed back, so that a step's growth shows
        base = _rss_bytes()
        if base is None or not _reset_peak_rss():
            return None, "n/a"
        fn()
        peak = _peak_rss_bytes()
    return (None if peak is None else max(0, peak - base)), "RSS peak - RSS before (VmHWM)"


def retain_freed_memory(trim_threshold: int = 2**31 - 1) -> bool:
    """Make glibc's ``malloc`` keep freed memory for reuse instead of handing it back to the OS:
    ``mallopt`` with ``M_MMAP_MAX = 0``, a large ``M_TRIM_THRESHOLD`` and ``M_ARENA_MAX = 1``
    (the same as ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647 MALLOC_ARENA_MAX=1`` in
    the environment). Returns whether it applied (Linux with glibc only). Process-wide and
    opt-in: call it once at the start of the program, before the first JAX computation (threads
    that already have their own malloc arena keep it).

    XLA on CPU allocates each execution's buffers afresh; blocks over 32 MB (or 64 MB from a
    thread's own arena) come from ``mmap`` and go back with ``munmap``, so every training step
    page-faults and zero-fills its whole working set again. For a 2-layer LSTM step at B=64,
    T=100, I=88, H=128: 19000 page faults and ~36 ms of kernel time per step, 77 ms -> 49 ms
    with this call. It helps every framework in the process (PyTorch's LSTM there: 53 -> 35 ms);
    the cost is that the process's RSS stays at its peak.
    """
    import ctypes
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
    return (bool(mallopt(M_ARENA_MAX, 1)) and bool(mallopt(M_MMAP_MAX, 0))
            and bool(mallopt(M_TRIM_THRESHOLD, int(trim_threshold))))


class _default_malloc:
    """Within: glibc's default mmap/trim settings, freed memory trimmed first; on exit, the
    settings of ``retain_freed_memory`` again if they were on."""

    def __enter__(self):
        import ctypes
        import ctypes.util
        self.on = RETAINED
        if self.on:
            self.libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            self.libc.mallopt(-4, 65536)        # M_MMAP_MAX default
            self.libc.mallopt(-1, 128 * 1024)   # M_TRIM_THRESHOLD default
            self.libc.malloc_trim(0)

    def __exit__(self, *exc):
        if self.on:
            retain_freed_memory()


def interleaved(fns: dict, reps: int, warmup: int = 1, budget_s: float | None = None,
                cooldown_s: float = 0.01):
    """Time every callable ``reps`` times, interleaved (a, b, c, b, c, a, c, a, b, ...: the
    order rotates so that each one follows each other equally often), after ``warmup`` untimed
    calls each, with an untimed pause of ``cooldown_s`` after every call: thread pools (OpenMP
    in PyTorch, XLA's) keep spinning for a while after a call and otherwise slow down whatever
    runs next. Stops early (after >= 3 reps) past ``budget_s``."""
    for f in fns.values():
        for _ in range(warmup):
            f()
    names = list(fns)
    times = {k: [] for k in fns}
    start = time.perf_counter()
    for r in range(reps):
        for k in names[r % len(names):] + names[:r % len(names)]:
            time.sleep(cooldown_s)
            t = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t)
        if budget_s is not None and r >= 2 and time.perf_counter() - start > budget_s:
            break
    return times


def summarize(ts):
    return {"median_ms": 1e3 * statistics.median(ts), "min_ms": 1e3 * min(ts),
            "max_ms": 1e3 * max(ts), "reps": len(ts)}


def lstm_train_flops(B, T, I, H, layers=2):
    """Matmul FLOPs of a training step: 3 x forward (2*T*B*(I+H)*4H per layer)."""
    total, size = 0, I
    for _ in range(layers):
        total += 3 * 2 * T * B * (size + H) * 4 * H
        size = H
    return total


# --- implementations of one training step --------------------------------------------------------
class JaxStep:
    """A jitted ``value_and_grad`` step, compiled ahead of time so that compile time is known."""

    def __init__(self, loss, params, *args):
        t = time.perf_counter()
        self.compiled = jax.jit(jax.value_and_grad(loss)).lower(params, *args).compile()
        self.compile_s = time.perf_counter() - t
        self.args = (params, *args)
        try:
            m = self.compiled.memory_analysis()
            self.xla_bytes = int(m.temp_size_in_bytes + m.output_size_in_bytes)
        except Exception:  # noqa: BLE001 - not every backend reports it
            self.xla_bytes = None

    def __call__(self):
        return jax.block_until_ready(self.compiled(*self.args))


def ours_step(B, T, I, H, cell="lstm", layers=2, dtype=None, fused="auto", parallel=False,
              wavefront=False, unroll=1, seed=0):
    """Our ``Stack`` training step; ``fused=False`` traces the generic scan (and, for the
    parallel form, the associative scan), ``True`` requires the fused layer; ``wavefront``
    runs both layers in one loop (``Stack.wavefront``); ``unroll`` steps per loop body."""
    stack = Stack(cells.get(cell, H), num_layers=layers, parallel=parallel, fused=fused,
                  wavefront=wavefront, unroll=unroll)
    params = stack.init(jax.random.key(seed), I)
    xs = jax.random.normal(jax.random.key(seed + 1), (B, T, I))

    def loss(params, xs):
        ys, _ = stack.apply(params, xs, dtype=dtype)
        return jnp.sum(ys.astype(jnp.float32))
    return JaxStep(loss, params, xs)


def flax_step(B, T, I, H, kind="lstm", layers=2, seed=0):
    if nn is None:
        return None

    class Net(nn.Module):
        @nn.compact
        def __call__(self, xs):
            for _ in range(layers):
                cell = nn.OptimizedLSTMCell(H) if kind == "lstm" else nn.GRUCell(H)
                xs = nn.RNN(cell)(xs)
            return xs

    net = Net()
    xs = jax.random.normal(jax.random.key(seed + 1), (B, T, I))
    params = net.init(jax.random.key(seed), xs)

    def loss(params, xs):
        return jnp.sum(net.apply(params, xs))
    return JaxStep(loss, params, xs)


def cudnn_jax_step(B, T, I, H, layers=2, seed=0):
    """cuDNN's LSTM through ``jax.experimental.rnn`` (GPU only)."""
    from jax.experimental import rnn
    weights = rnn.init_lstm_weight(jax.random.key(seed), I, H, layers, False)
    xs = jax.random.normal(jax.random.key(seed + 1), (B, T, I))
    h0 = jnp.zeros((layers, B, H))
    lengths = jnp.full((B,), T, jnp.int32)

    def loss(weights, xs):
        ys, _, _ = rnn.lstm(xs, h0, h0, weights, lengths, I, H, layers, 0.0, False)
        return jnp.sum(ys)
    return JaxStep(loss, weights, xs)


class TorchStep:
    def __init__(self, B, T, I, H, kind="lstm", layers=2, dtype=None, seed=0):
        dev = torch_device()
        torch.manual_seed(seed)
        cls = torch.nn.LSTM if kind == "lstm" else torch.nn.GRU
        self.mod = cls(I, H, num_layers=layers, batch_first=True).to(dev)
        self.x = torch.randn(B, T, I, device=dev)
        t = time.perf_counter()
        self()
        self.compile_s = time.perf_counter() - t  # first call (no compilation in eager mode)
        self.xla_bytes = None

    def __call__(self):
        self.mod.zero_grad(set_to_none=True)
        y, _ = self.mod(self.x)
        y.sum().backward()
        torch_sync()


# --- suites -------------------------------------------------------------------------------------
def peers(B, T, I, H, *, include=("ours", "ours_scan", "ours_pallas", "ours_wavefront",
                                   "ours_unroll8", "flax", "torch", "cudnn_jax"), kind="lstm",
          skip_slow=False):
    """Build the implementations to compare at one shape (None entries are skipped)."""
    impls = {}
    if "ours" in include:
        impls["ours"] = ours_step(B, T, I, H, cell=kind)
    if "ours_scan" in include and kind == "lstm":
        impls["ours_scan"] = ours_step(B, T, I, H, fused=False)
    if "flax" in include and nn is not None and not skip_slow:
        impls["flax"] = flax_step(B, T, I, H, kind=kind)
    if "torch" in include and torch_device() is not None and not skip_slow:
        impls["torch"] = TorchStep(B, T, I, H, kind=kind)
    if "ours_pallas" in include and on_gpu() and kind == "lstm":
        # the opt-in Pallas kernel (layers/pallas_lstm.py; where it refuses a shape, e.g. over
        # its on-chip budget, the step falls back and logs why: the row then times the fallback)
        impls["ours_pallas"] = ours_step(B, T, I, H, fused="pallas")
    if "ours_wavefront" in include and on_gpu() and kind == "lstm":
        # both layers' recurrences in one loop: half the launches per step (issue #13, item 1)
        impls["ours_wavefront"] = ours_step(B, T, I, H, wavefront=True)
    if "ours_unroll8" in include and on_gpu() and kind == "lstm":
        # the fused layer's loops with 8 steps per body: fewer loop iterations (item 1)
        impls["ours_unroll8"] = ours_step(B, T, I, H, unroll=8)
    if "cudnn_jax" in include and on_gpu() and kind == "lstm" and not skip_slow:
        try:
            impls["cudnn_jax"] = cudnn_jax_step(B, T, I, H)
            impls["cudnn_jax"]()
        except Exception as e:  # noqa: BLE001 - an optional peer
            impls.pop("cudnn_jax", None)
            print(f"jax.experimental.rnn (cuDNN) unavailable: {type(e).__name__}: {e}"[:300])
    return impls


def measure(impls, reps, flops=None, tokens=None, roofline=None, memory=True, budget_s=None):
    times = interleaved(impls, reps, budget_s=budget_s)
    out = {}
    for name, impl in impls.items():
        r = summarize(times[name])
        r["compile_s"] = impl.compile_s
        sec = r["median_ms"] / 1e3
        if tokens:
            r["tokens_per_s"] = tokens / sec
        if flops:
            r["gflops"] = flops / sec / 1e9
            if roofline:
                r["roofline_frac"] = r["gflops"] / roofline
        if memory:
            r["peak_mem_bytes"], r["peak_mem_method"] = peak_memory(
                impl, "torch" if isinstance(impl, TorchStep) else "jax")
        if impl.xla_bytes is not None:
            r["xla_temp_plus_output_bytes"] = impl.xla_bytes
        out[name] = r
    return out


def add_ratios(res, base="ours"):
    """speedup of ``base`` over every peer (peer time / base time; > 1 means base is faster)."""
    if base not in res:
        return {}
    return {f"{base}_vs_{k}": v["median_ms"] / res[base]["median_ms"] for k, v in res.items()
            if k != base}


def suite_roofline(args, prog):
    n = 2048
    a = jax.random.normal(jax.random.key(0), (n, n))
    b = jax.random.normal(jax.random.key(1), (n, n))
    f = jax.jit(lambda a, b: a @ b)
    call = lambda: jax.block_until_ready(f(a, b))  # noqa: E731
    times = interleaved({"mm": call}, 5 if args.quick else 10)["mm"]
    prog.step("roofline 2048x2048 matmul")
    med = statistics.median(times)
    return {"n": n, "median_ms": med * 1e3, "gflops": 2 * n ** 3 / med / 1e9,
            "best_gflops": 2 * n ** 3 / min(times) / 1e9}


def suite_lstm(args, prog, roofline):
    rows = []
    for name, (B, T, I, H) in zip(SHAPE_NAMES, SHAPES):
        big = B * T >= 50_000
        reps = (3 if big else 7) if args.quick else (5 if big else 21)
        impls = peers(B, T, I, H)
        res = measure(impls, reps, lstm_train_flops(B, T, I, H), B * T, roofline)
        rows.append({"shape": name, "B": B, "T": T, "I": I, "H": H, "results": res,
                     "ratios": add_ratios(res)})
        prog.step(f"lstm {name} {(B, T, I, H)}")
    return rows


def suite_tscale(args, prog, roofline):
    rows = []
    for B in (1, 32):
        for T in (10, 100, 1000, 10000):
            I = H = 128
            slow = args.quick and T == 10000
            reps = 3 if T == 10000 else (5 if args.quick else 11)
            impls = peers(B, T, I, H, include=("ours", "flax", "torch", "cudnn_jax"),
                          skip_slow=slow)
            res = measure(impls, reps, lstm_train_flops(B, T, I, H), B * T, roofline,
                          memory=T >= 1000)
            rows.append({"B": B, "T": T, "I": I, "H": H, "results": res,
                         "ratios": add_ratios(res),
                         "note": "peers skipped in --quick" if slow else ""})
            prog.step(f"tscale B={B} T={T}")
    return rows


GREFF_SHAPE = (32, 100, 128, 128)


def suite_greff(args, prog):
    B, T, I, H = GREFF_SHAPE
    impls = {}
    for v in cells.GREFF_VARIANTS:
        impls[v] = ours_step(B, T, I, H, cell=v)
    res = measure(impls, 5 if args.quick else 15, memory=False)
    prog.step("greff variants")
    out = {"B": B, "T": T, "I": I, "H": H, "results": res}
    def matmul_flops(v):  # per step and row: every weight matrix is used once forward
        shapes = jax.eval_shape(lambda: Stack(cells.get(v, H), num_layers=2).init(
            jax.random.key(0), I))
        return sum(2 * a.shape[0] * a.shape[1] for a in jax.tree.leaves(shapes) if a.ndim == 2)
    for v in cells.GREFF_VARIANTS:
        res[v]["vs_vanilla"] = res[v]["median_ms"] / res["vanilla"]["median_ms"]
        res[v]["matmul_flops_vs_vanilla"] = matmul_flops(v) / matmul_flops("vanilla")
        why = fused.unsupported(cells.get(v, H))
        res[v]["path"] = "fused" if why is None else f"generic scan ({why})"
    # FGR at batch 1 (the Greff JSB protocol's online SGD; one layer, 64 steps): the fused
    # layer against the generic scan (without lengths: every step runs)
    out["fgr_batch1"] = {}
    for h in (20, 40, 63, 128, 200):
        impls = {name: ours_step(1, 64, 88, h, cell="fgr", layers=1, fused=flag)
                 for name, flag in (("fused", True), ("generic", False))}
        r = measure(impls, 5 if args.quick else 15, memory=False)
        out["fgr_batch1"][h] = {"fused_ms": r["fused"]["median_ms"],
                                "generic_ms": r["generic"]["median_ms"],
                                "fused_speedup": r["generic"]["median_ms"] / r["fused"]["median_ms"]}
    prog.step("fgr fused vs generic at batch 1")
    return out


def suite_gru(args, prog, roofline):
    B, T, I, H = GREFF_SHAPE
    impls = peers(B, T, I, H, include=("ours", "flax", "torch"), kind="gru")
    # GRU FLOPs: 3 gate blocks instead of 4
    flops = lstm_train_flops(B, T, I, H) * 3 // 4
    res = measure(impls, 5 if args.quick else 15, flops, B * T, roofline, memory=False)
    prog.step("gru")
    return {"B": B, "T": T, "I": I, "H": H, "results": res, "ratios": add_ratios(res)}


MINRNN_SHAPES = ((8, 4096, 128, 128), (1, 4096, 64, 64))


def minrnn_floor_step(B, T, I, H, cell, layers=2):
    """The same 2-layer training step without the recurrence (h_t = b_t): what any parallel
    form must still compute (input projections, gate math, their gradients)."""
    c = cells.get(cell, H)
    ks = jax.random.split(jax.random.key(0), layers)
    params = [c.init(k, I if l == 0 else H) for l, k in enumerate(ks)]
    xs = jax.random.normal(jax.random.key(1), (T, B, I))

    def loss(params, xs):
        for p in params:
            a, b = c.coefficients(c.project(p, xs))
            xs = a * b
        return jnp.sum(xs)
    return JaxStep(loss, params, xs)


def suite_minrnn(args, prog):
    rows = []
    for (B, T, I, H) in MINRNN_SHAPES:
        row = {"B": B, "T": T, "I": I, "H": H, "layers": 2, "results": {}}
        for cell in ("minlstm", "mingru"):
            impls = {"parallel": ours_step(B, T, I, H, cell=cell, parallel=True),
                     "parallel_assoc": ours_step(B, T, I, H, cell=cell, parallel=True,
                                                 fused=False),
                     "sequential": ours_step(B, T, I, H, cell=cell, parallel=False),
                     "no_recurrence_floor": minrnn_floor_step(B, T, I, H, cell)}
            res = measure(impls, 3 if args.quick else 7, tokens=B * T, memory=False)
            seq = res["sequential"]["median_ms"]
            row["results"][cell] = res
            row[f"{cell}_parallel_speedup"] = seq / res["parallel"]["median_ms"]
            row[f"{cell}_assoc_speedup"] = seq / res["parallel_assoc"]["median_ms"]
            row[f"{cell}_max_speedup"] = seq / res["no_recurrence_floor"]["median_ms"]
            prog.step(f"minrnn {cell} {(B, T, I, H)}")
        rows.append(row)
    return rows


def suite_bf16(args, prog):
    rows = []
    for (B, T, I, H) in (GREFF_SHAPE, SHAPES[1]):
        impls = {"float32": ours_step(B, T, I, H),
                 "bfloat16": ours_step(B, T, I, H, dtype=jnp.bfloat16)}
        res = measure(impls, 5 if args.quick else 11, memory=False)
        rows.append({"B": B, "T": T, "I": I, "H": H, "results": res,
                     "bf16_speedup": res["float32"]["median_ms"] / res["bfloat16"]["median_ms"]})
        prog.step(f"bf16 {(B, T, I, H)}")
    return rows


def suite_ptb(args, prog):
    """PTB-small (Zaremba et al. 2014): embedding 10000x200, 2-layer LSTM H=200, softmax over
    10000 words, batch 20, bptt 20, SGD with gradient clipping; carries passed between steps.
    Synthetic token ids (the timing does not depend on the text)."""
    V, H, B, L = 10000, 200, 20, 20
    steps = 100 if args.quick else PTB_STEPS
    stack = Stack(cells.get("lstm", H), num_layers=2)
    k = jax.random.split(jax.random.key(0), 3)
    params = {"embed": jax.random.uniform(k[0], (V, H), minval=-0.1, maxval=0.1),
              "rnn": stack.init(k[1], H),
              "w_out": jax.random.uniform(k[2], (H, V), minval=-0.1, maxval=0.1),
              "b_out": jnp.zeros(V)}
    rng = np.random.default_rng(0)
    data = jnp.asarray(rng.integers(0, V, size=(steps, B, L + 1)), jnp.int32)

    def loss(params, carries, tokens):
        xs = params["embed"][tokens[:, :-1]]
        ys, carries = stack.apply(params["rnn"], xs, carries)
        logits = ys @ params["w_out"] + params["b_out"]
        ll = jax.nn.log_softmax(logits)
        nll = -jnp.mean(jnp.take_along_axis(ll, tokens[:, 1:, None], axis=-1))
        return nll, carries

    @jax.jit
    def train_step(params, carries, tokens):
        (value, carries), grads = jax.value_and_grad(loss, has_aux=True)(params, carries, tokens)
        norm = jnp.sqrt(sum(jnp.sum(g * g) for g in jax.tree.leaves(grads)))
        scale = jnp.minimum(1.0, 5.0 / (norm + 1e-6))
        params = jax.tree.map(lambda p, g: p - 1.0 * scale * g, params, grads)
        return params, carries, value

    carries = stack.initial_carry(B)
    t = time.perf_counter()
    compiled = train_step.lower(params, carries, data[0]).compile()
    compile_s = time.perf_counter() - t
    p, c, _ = compiled(params, carries, data[0])  # warm-up
    jax.block_until_ready(p)
    t = time.perf_counter()
    p, c = params, carries
    for s in range(steps):
        p, c, v = compiled(p, c, data[s])
    jax.block_until_ready(v)
    ours_s = time.perf_counter() - t
    out = {"vocab": V, "H": H, "batch": B, "bptt": L, "steps_timed": steps,
           "epoch_steps": PTB_STEPS, "compile_s": compile_s,
           "ms_per_step": ours_s / steps * 1e3,
           "epoch_s": ours_s / steps * PTB_STEPS,
           "extrapolated": steps != PTB_STEPS}
    prog.step(f"ptb epoch ({steps} steps)")
    if torch_device() is not None:
        out["torch"] = _ptb_torch(V, H, B, L, 50 if args.quick else 200)
        out["torch"]["epoch_s"] = out["torch"]["ms_per_step"] / 1e3 * PTB_STEPS
        out["ours_vs_torch"] = out["torch"]["ms_per_step"] / out["ms_per_step"]
        prog.step("ptb torch reference")
    return out


def _ptb_torch(V, H, B, L, steps):
    dev = torch_device()
    torch.manual_seed(0)
    emb = torch.nn.Embedding(V, H).to(dev)
    rnn = torch.nn.LSTM(H, H, num_layers=2, batch_first=True).to(dev)
    out = torch.nn.Linear(H, V).to(dev)
    ps = list(emb.parameters()) + list(rnn.parameters()) + list(out.parameters())
    opt = torch.optim.SGD(ps, lr=1.0)
    data = torch.randint(0, V, (steps + 1, B, L + 1), device=dev)
    state = None

    def step(tokens, state):
        opt.zero_grad(set_to_none=True)
        ys, state = rnn(emb(tokens[:, :-1]), state)
        loss = torch.nn.functional.cross_entropy(out(ys).reshape(-1, V), tokens[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ps, 5.0)
        opt.step()
        return tuple(s.detach() for s in state)
    state = step(data[0], state)
    torch_sync()
    t = time.perf_counter()
    for s in range(steps):
        state = step(data[s + 1], state)
    torch_sync()
    sec = time.perf_counter() - t
    return {"steps_timed": steps, "ms_per_step": sec / steps * 1e3, "extrapolated": True}


# --- report -------------------------------------------------------------------------------------
def fmt_ms(r):
    return f"{r['median_ms']:8.2f} [{r['min_ms']:.1f}-{r['max_ms']:.1f}]"


def print_report(results, w=print):
    meta = results["meta"]
    w(f"\n== {meta['device']} | jax {meta['jax']} | torch {meta.get('torch')} | "
      f"flax {meta.get('flax')} | load avg {meta.get('loadavg_before')} -> "
      f"{meta.get('loadavg_after')} | retain_freed_memory={meta.get('retain_freed_memory')} | "
      f"GLIBC_TUNABLES={meta.get('glibc_tunables')}")
    if "roofline" in results:
        r = results["roofline"]
        w(f"roofline: 2048x2048 f32 matmul in jax: {r['gflops']:.0f} GFLOP/s (best "
          f"{r['best_gflops']:.0f})")
    if "lstm" in results:
        w("\n2-layer LSTM training step (fwd+bwd), median [min-max] ms; ratio = peer time / ours "
          "(> 1: ours faster); mem = RSS growth during one step (CPU) or device peak (GPU); "
          "xla = XLA's temp + output buffers")
        w(f"{'shape (B,T,I,H)':28s} {'impl':10s} {'median [min-max] ms':>24s} {'compile s':>9s} "
          f"{'tok/s':>9s} {'GFLOP/s':>8s} {'%roof':>6s} {'mem MB':>7s} {'xla MB':>7s} "
          f"{'ratio':>6s}")
        for row in results["lstm"]:
            shape = f"{row['shape']} {(row['B'], row['T'], row['I'], row['H'])}"
            for name, r in row["results"].items():
                ratio = row["ratios"].get(f"ours_vs_{name}", 1.0 if name == "ours" else None)
                mem = r.get("peak_mem_bytes")
                xla = r.get("xla_temp_plus_output_bytes")
                w(f"{shape:28s} {name:10s} {fmt_ms(r):>24s} {r['compile_s']:9.2f} "
                  f"{r.get('tokens_per_s', 0):9.0f} {r.get('gflops', 0):8.1f} "
                  f"{100 * r.get('roofline_frac', 0):6.1f} "
                  f"{'' if mem is None else f'{mem / 2**20:7.1f}':>7s} "
                  f"{'' if xla is None else f'{xla / 2**20:7.1f}':>7s} "
                  f"{'' if ratio is None else f'{ratio:6.2f}':>6s}")
                shape = ""
    if "tscale" in results:
        w("\nT scaling (I=H=128, 2 layers): median ms and ratio peer/ours")
        for row in results["tscale"]:
            parts = [f"{k}: {v['median_ms']:.2f}" for k, v in row["results"].items()]
            rat = [f"{k.replace('ours_vs_', 'x')}={v:.2f}" for k, v in row["ratios"].items()]
            w(f"  B={row['B']:3d} T={row['T']:6d}  " + "  ".join(parts) + "  |  " + " ".join(rat)
              + (f"  ({row['note']})" if row.get("note") else ""))
    if "greff" in results:
        g = results["greff"]
        w(f"\nGreff variants, 2-layer stack at (B,T,I,H)={(g['B'], g['T'], g['I'], g['H'])}: "
          "median ms, time / vanilla")
        for v, r in g["results"].items():
            w(f"  {v:8s} {r['median_ms']:8.2f}  x{r['vs_vanilla']:.2f}  (matmul FLOPs "
              f"x{r['matmul_flops_vs_vanilla']:.2f})  {r['path']}")
        w("FGR at batch 1 (1 layer, T=64, I=88), median ms: fused layer, generic scan")
        for h, r in g.get("fgr_batch1", {}).items():
            w(f"  H={h:>3}  {r['fused_ms']:7.3f}  {r['generic_ms']:7.3f}  fused "
              f"x{r['fused_speedup']:.2f} faster")
    if "gru" in results:
        g = results["gru"]
        w(f"\nGRU (2 layers) at {(g['B'], g['T'], g['I'], g['H'])}: " + "  ".join(
            f"{k}: {v['median_ms']:.2f} ms" for k, v in g["results"].items()) + "  |  " + " ".join(
            f"{k}={v:.2f}" for k, v in g["ratios"].items()))
    if "minrnn" in results:
        w("\nminLSTM/minGRU 2-layer training step, median ms: parallel (chunked on CPU), parallel "
          "(associative scan), sequential, and the same step without any recurrence (a floor)")
        for row in results["minrnn"]:
            for cell, res in row["results"].items():
                w(f"  {cell:8s} {(row['B'], row['T'], row['I'], row['H'])}: " + "  ".join(
                    f"{k}: {v['median_ms']:.1f}" for k, v in res.items())
                  + f"  | parallel speedup x{row[cell + '_parallel_speedup']:.2f} (assoc "
                    f"x{row[cell + '_assoc_speedup']:.2f}; bound seq/floor "
                    f"x{row[cell + '_max_speedup']:.2f})")
    if "bf16" in results:
        w("\nbfloat16 vs float32 (ours, 2-layer LSTM):")
        for row in results["bf16"]:
            w(f"  {(row['B'], row['T'], row['I'], row['H'])}: f32 "
              f"{row['results']['float32']['median_ms']:.2f} ms, bf16 "
              f"{row['results']['bfloat16']['median_ms']:.2f} ms, bf16 speedup "
              f"x{row['bf16_speedup']:.2f}")
    if "ptb" in results:
        p = results["ptb"]
        how = (f"extrapolated from {p['steps_timed']} steps" if p["extrapolated"]
               else "measured")
        line = (f"\nPTB-small epoch ({p['epoch_steps']} steps, batch {p['batch']}, bptt "
                f"{p['bptt']}, H={p['H']}, vocab {p['vocab']}): {p['epoch_s']:.1f} s ({how}; "
                f"{p['ms_per_step']:.2f} ms/step; compile {p['compile_s']:.2f} s)")
        if "torch" in p:
            line += (f"; torch: {p['torch']['epoch_s']:.1f} s (extrapolated from "
                     f"{p['torch']['steps_timed']} steps), ours x{p['ours_vs_torch']:.2f}")
        w(line)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions, shorter series")
    ap.add_argument("--out", default=None,
                    help="JSON path (default experiments/results/benchmark_<platform>.json)")
    ap.add_argument("--suite", default=",".join(SUITES),
                    help=f"comma-separated subset of {','.join(SUITES)}")
    ap.add_argument("--torch-threads", type=int, default=2,
                    help="torch.set_num_threads on CPU (default 2)")
    ap.add_argument("--hugepages", action="store_true",
                    help="re-run this process with GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (glibc "
                         "then asks for transparent huge pages: far fewer page faults on the "
                         "large buffers every step allocates; helps all implementations)")
    ap.add_argument("--retain-freed-memory", action="store_true",
                    help="call retain_freed_memory() first: glibc "
                         "then keeps freed memory for reuse instead of unmapping it (no page "
                         "faults on every step's buffers), for every implementation alike")
    args = ap.parse_args(argv)
    if args.hugepages and "hugetlb" not in os.environ.get("GLIBC_TUNABLES", ""):
        env = dict(os.environ)
        env["GLIBC_TUNABLES"] = ":".join(filter(None, [env.get("GLIBC_TUNABLES"),
                                                       "glibc.malloc.hugetlb=1"]))
        os.execve(sys.executable, [sys.executable] + sys.argv, env)
    suites = [s.strip() for s in args.suite.split(",") if s.strip()]
    unknown = set(suites) - set(SUITES)
    if unknown:
        ap.error(f"unknown suite(s) {sorted(unknown)}; choose from {SUITES}")
    global RETAINED, torch
    RETAINED = retained = args.retain_freed_memory and retain_freed_memory()
    plat = jax.devices()[0].platform
    try:
        import torch
    except ImportError:  # pragma: no cover - optional peer
        torch = None
    out = args.out or os.path.join(REPO, "experiments", "results", f"benchmark_{plat}.json")
    if torch is not None and torch_device() == "cpu":
        torch.set_num_threads(args.torch_threads)

    try:
        import flax
        flax_version = flax.__version__
    except ImportError:
        flax_version = None
    results = {"meta": {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "platform": plat, "device": str(jax.devices()[0].device_kind),
        "host": platform.node(), "cpu_count": os.cpu_count(), "quick": args.quick,
        "jax": jax.__version__, "flax": flax_version,
        "torch": None if torch is None else torch.__version__,
        "torch_device": torch_device(),
        "torch_threads": torch.get_num_threads() if torch is not None else None,
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES"),
        # (importing lstm_research sets an XLA:CPU option for every JAX program in the process,
        # Flax's included: record what the runs compiled with)
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "jax_default_matmul_precision": str(jax.config.jax_default_matmul_precision),
        "torch_allow_tf32": None if torch is None else {
            "matmul": torch.backends.cuda.matmul.allow_tf32,
            "cudnn": torch.backends.cudnn.allow_tf32},
        "retain_freed_memory": retained,
        "suites": suites,
    }}
    need_roofline = bool({"roofline", "lstm", "tscale", "gru"} & set(suites))
    n_tasks = {"lstm": len(SHAPES), "tscale": 8, "greff": 2, "gru": 1,
               "minrnn": 2 * len(MINRNN_SHAPES), "bf16": 2, "ptb": 1 + (torch_device() is not None)}
    prog = Progress(need_roofline + sum(n_tasks.get(s, 0) for s in suites))
    t0 = time.perf_counter()
    roofline = None
    if need_roofline:  # the GFLOP/s of the other suites are read against it
        results["roofline"] = suite_roofline(args, prog)
        roofline = results["roofline"]["gflops"]
    if "lstm" in suites:
        results["lstm"] = suite_lstm(args, prog, roofline)
    if "tscale" in suites:
        results["tscale"] = suite_tscale(args, prog, roofline)
    if "greff" in suites:
        results["greff"] = suite_greff(args, prog)
    if "gru" in suites:
        results["gru"] = suite_gru(args, prog, roofline)
    if "minrnn" in suites:
        results["minrnn"] = suite_minrnn(args, prog)
    if "bf16" in suites:
        results["bf16"] = suite_bf16(args, prog)
    if "ptb" in suites:
        results["ptb"] = suite_ptb(args, prog)
    prog.close()
    results["meta"]["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    results["meta"]["wall_s"] = time.perf_counter() - t0
    print_report(results)
    print(f"\ntotal {results['meta']['wall_s']:.0f} s; writing {out}")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(results, f, indent=1, default=float)


if __name__ == "__main__":
    main()
