#!/usr/bin/env python
"""Where the time of a batch-1 update goes, on the Greff et al. 2015 JSB protocol: one training
epoch (229 updates, ``train.steps_per_call`` per compiled call, as a run makes them) profiled with
``jax.profiler`` after a warm-up epoch, in this process pinned to one CPU (as a sweep worker
runs), and each compiled operation's time added to the part of the update its HLO names::

    python experiments/profile_update.py --widths 20,63,200 [--set model.cell=fgr] [--out F.json]

Parts: the fused layer's forward and backward loops; its work outside them (the forward's
input projection; the backward's per-step factors and weight gradients); the output head
(forward and backward); the loss and the input noise; the optimizer's update; the rest. The
profiler adds a few microseconds to each operation it times (on the 2-core CPU the profiled
epoch ran up to 1.5x its unprofiled time at width 20, no slower at width 200), so small parts read
high; the table says where the time goes, the epoch times of ``sweep_throughput.py`` how much.
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sweep_throughput  # noqa: E402  (puts the repository on sys.path)

#: (part, what its HLO op names contain), the first match wins
PARTS = (
    ("backward loop", ("transpose(jvp(", "rnn/while")),
    ("forward loop", ("rnn/while",)),
    ("backward outside the loop: factors, weight gradients", ("transpose(jvp(", "rnn/")),
    ("forward outside the loop: input projection", ("rnn/",)),
    ("head", ("/head/",)),
    ("loss, input noise", ("jvp()",)),
    ("optimizer", ("body/add",)),
)


def part_of(op_name: str) -> str:
    for part, needles in PARTS:
        if all(n in op_name for n in needles):
            return part
    return "other"


def op_names(hlo_text: str) -> dict:
    """Each instruction of an optimized HLO module's text -> its ``op_name`` (JAX's name stack)."""
    out = {}
    for m in re.finditer(r'^\s+%(\S+) = .*?op_name="([^"]*)"', hlo_text, re.M):
        out.setdefault(m.group(1), m.group(2))
    return out


def profile_epoch(width: int, sets=()) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from lstm_research.training import steps
    t, arrays, batches, key, hyper = sweep_throughput.greff_epoch_inputs(width, sets=sets)
    k = t.steps_per_call
    calls = [steps.stack_chunk(batches[i:i + k], k) for i in range(0, len(batches), k)]
    lrs = np.full(k, 1e-3, np.float32)

    def epoch():
        p, o = jax.tree.map(jnp.copy, (arrays["params"], arrays["opt_state"]))
        t0 = time.perf_counter()
        for j, chunk in enumerate(calls):
            p, o, _ = t.train_steps(p, o, chunk, np.int32(min(k, len(batches) - j * k)), key,
                                    np.int32(j * k), lrs, hyper)
        jax.block_until_ready(p)
        return time.perf_counter() - t0
    unprofiled = min(epoch() for _ in range(3))  # (the first compiles)
    with tempfile.TemporaryDirectory() as d:
        with jax.profiler.trace(d, create_perfetto_trace=True):
            profiled = epoch()
        (trace,) = glob.glob(f"{d}/**/perfetto_trace.json.gz", recursive=True)
        events = json.load(gzip.open(trace))["traceEvents"]
    names = {}
    for executable in t.train_steps.executables.values():
        names.update(op_names(executable.as_text()))
    ms = collections.Counter()
    for e in events:
        op = e.get("args", {}).get("hlo_op")
        # (a program stored for other processes is compiled under a name of its own:
        # jit_train_steps_<store key>, lstm_research.training.programs)
        module = e.get("args", {}).get("hlo_module", "")
        if e.get("ph") != "X" or op is None or not module.startswith("jit_train_steps"):
            continue
        name = names.get(op, "")
        if "/branch_" in name or (name.endswith("/while") and "rnn" not in name):
            continue  # inside a switch branch (the switch is timed), or the loop over updates
        ms[part_of(name)] += e["dur"] / 1e3
    n = len(batches)
    return {"updates": n, "epoch_ms_unprofiled": round(unprofiled * 1e3, 1),
            "epoch_ms_profiled": round(profiled * 1e3, 1),
            "parts_us_per_update": {p: round(v * 1e3 / n, 1) for p, v in ms.most_common()}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--widths", default="20,63,200")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override of the Greff paper config (e.g. model.cell=fgr)")
    p.add_argument("--out", help="write the table as JSON here too")
    args = p.parse_args(argv)
    sweep_throughput.pin_to_one_cpu()
    report = {"config": sweep_throughput.CONFIG, "sets": args.set, "per_width": {}}
    for w in (int(x) for x in args.widths.split(",")):
        r = report["per_width"][str(w)] = profile_epoch(w, args.set)
        per = r["epoch_ms_unprofiled"] / r["updates"] * 1e3
        print(f"width {w}: epoch {r['epoch_ms_unprofiled']:.1f} ms ({per:.0f} us per update), "
              f"profiled {r['epoch_ms_profiled']:.1f} ms; per update:")
        timed = sum(r["parts_us_per_update"].values())
        for part, us in r["parts_us_per_update"].items():
            print(f"  {us:7.1f} us  {us / timed:6.1%}  {part}")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
