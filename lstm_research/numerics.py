"""What, besides the config and the seed, decides a run's floating-point results on a CPU.

A run is a pure function of its config (seed included): data batches, initialization and
dropout keys are all derived from ``config.seed`` and the step number, a resumed run equals an
uninterrupted one, and two runs of the same config in the same environment agree bit for bit
(``tests/test_determinism.py``). XLA's CPU code is *not* invariant to the environment, though:

* the number of CPUs the process may run on (``os.sched_getaffinity``, e.g. under ``taskset``)
  *used to* matter: XLA sizes its intra-op thread pool from it and splits a large reduction into
  one partial sum per thread. The one such sum on the training path, the fused LSTM's bias
  gradient over time x batch, is now a matmul, and runs pinned to one CPU equal runs on two
  (``tests/test_determinism.py``: temporal order at batch 32; also checked by hand on adding
  with peepholes and Greff's JSB protocol). A new large reduction could bring it back;
* the CPU's instruction set (XLA compiles for the host: AVX-512 vs AVX2 vectorizes sums
  differently), i.e. another host or VM type;
* the jax/jaxlib version and ``XLA_FLAGS``.

A last-bit difference in one gradient grows in a chaotic training run; on the Hochreiter 1997
temporal-order task it moves the step at which the stopping criterion first holds (REPRODUCTIONS.md).
:func:`fingerprint` records these facts in each run's ``result.json`` so that two results can be
checked for comparability.
"""
from __future__ import annotations

import os
import platform


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        return platform.processor() or platform.machine()
    fields = {}
    for line in info.splitlines():
        k, _, v = line.partition(":")
        fields.setdefault(k.strip(), v.strip())
    isa = [f for f in ("avx512f", "avx2", "fma", "avx") if f in fields.get("flags", "").split()]
    return " ".join(x for x in (fields.get("model name", platform.machine()),
                                f"family {fields['cpu family']}" if "cpu family" in fields else "",
                                f"model {fields['model']}" if "model" in fields else "",
                                "/".join(isa)) if x)


def fingerprint() -> dict:
    """The environment facts that change XLA CPU results: visible CPU count, CPU model and
    vector ISA, jax/jaxlib versions, backend, XLA_FLAGS."""
    import jax
    import jaxlib
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count()
    return {"visible_cpus": cpus, "cpu": _cpu_model(), "jax": jax.__version__,
            "jaxlib": getattr(jaxlib, "__version__", None), "backend": jax.default_backend(),
            "xla_flags": os.environ.get("XLA_FLAGS", "")}
