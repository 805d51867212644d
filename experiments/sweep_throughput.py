#!/usr/bin/env python
"""Sweep throughput on the Greff et al. 2015 JSB protocol: one process per trial, workers, packs.

Runs the same random draws (``configs/papers/greff2015.py:paper``; hidden size
int_loguniform(20,200), lr loguniform(1e-6,1e-2), one_minus_momentum loguniform(0.01,1),
input noise uniform(0,1)) with a fixed budget of E epochs per trial (``train.patience=0``), as
``experiments/sweep.py --parallel P`` (one process per trial, mode ``processes``), as
``--workers P`` (``workers``) and as ``--workers P --pack K`` (``packed``: K trials of a variant in
one vmapped program), each in a fresh temporary sweep dir, and reports:

* trial-epochs per hour (validation included) of each mode, their ratio, and the projected time
  of the full study (1800 trials x 60 epochs);
* per width, with ``packed``: a pack of K trials of that width in this process (its epoch time
  against K epochs of one trial: whether packing pays, without the padding to the widest);
  ``--pack_sizes K1,K2,..`` does the same for each K without the sweep modes (on a GPU:
  ``--modes none --pack_sizes 64,256,1024``), with the full study projected in packs of each K;
* per width (20, 63, 200), in this process after a warm-up and pinned to one CPU (as in a worker:
  imports, data and compiled programs already there): the time of an epoch (training +
  validation), the update time per training sequence (epoch time / training sequences, validation
  included), and the fixed cost of a trial (a 1-epoch trial minus one epoch; epoch time from a
  1-epoch and a (1+D)-epoch trial, ``--timing_epochs D``).

Timings are only meaningful on an otherwise idle machine. Smoke run::

  python experiments/sweep_throughput.py --draws 2 --cells vanilla,cifg --epochs 1 --parallel 2 \\
      --out /tmp/sweep_throughput.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

CONFIG = "configs/papers/greff2015.py:paper"
AXES = ("model.hidden_size=int_loguniform(20,200)", "lr=loguniform(1e-6,1e-2)",
        "one_minus_momentum=loguniform(0.01,1)", "train.input_noise=uniform(0,1)")
# epochs per trial of the full study: the estimate, and the mean of the 1800 trials of the
# recorded paper-protocol sweep (experiments/results/greff2015_paper: steps / 229, 125.8; runs
# before 2026-12-04 used 122, the mean of its first 141 trials)
STUDY_EPOCHS = (60, 126)
# the first timing trial (imports, data) runs at a width outside the timed ones, and outside their
# buckets of model.width_multiple=8 (17-24, 57-64, 193-200)
WARM_WIDTH = 11


def sweep_command(sweep_dir: Path, args, mode: str) -> list[str]:
    cmd = [sys.executable, str(REPO_ROOT / "experiments" / "sweep.py"), f"--config={CONFIG}",
           f"--sweep_dir={sweep_dir}", "--grid", f"model.cell={args.cells}", "--trials", str(args.draws),
           "--sweep_seed", str(args.sweep_seed),
           *[a for kv in args.set for a in ("--set", kv)], "--set", f"train.epochs={args.epochs}",
           "--set", "train.patience=0", "--no_summary", "--no_progress"]
    for axis in AXES:
        cmd += ["--random", axis]
    cmd += ["--parallel", str(args.parallel)] if mode == "processes" else ["--workers", str(args.parallel)]
    if mode == "packed":
        cmd += ["--pack", str(args.pack)]
    return cmd


def run_mode(mode: str, args, root: Path) -> dict:
    sweep_dir = root / mode
    t0 = time.perf_counter()
    out = subprocess.run(sweep_command(sweep_dir, args, mode), cwd=REPO_ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    states, durations = {}, []
    for tdir in sorted(p for p in sweep_dir.iterdir() if p.is_dir() and p.name[0].isdigit()):
        st = json.loads((tdir / "status.json").read_text())
        states[st["status"]] = states.get(st["status"], 0) + 1
        durations.append(st.get("duration_s"))
    if out.returncode not in (0, 1):  # 1: some trials failed (diverged draws are part of the protocol)
        raise SystemExit(f"{mode} sweep failed ({out.returncode}):\n{out.stderr[-3000:]}")
    trials = sum(states.values())
    # every trial runs exactly E epochs (patience 0); a diverged one stops sooner but is counted
    # at E too (an upper bound of the rate; the recorded runs have none)
    trial_epochs = trials * args.epochs
    rate = trial_epochs / wall * 3600
    known = [d for d in durations if d]
    return {"mode": mode, "wall_s": round(wall, 2), "trials": trials, "states": states,
            "trial_epochs": trial_epochs, "trial_epochs_per_hour": round(rate, 1),
            "mean_trial_duration_s": round(sum(known) / max(len(known), 1), 3)}


def time_trial(entry_main, workdir: Path, width: int, epochs: int, draw: int = 0,
               sets=()) -> float:
    # each draw has its own learning rate, momentum and input noise (as a sweep's draws do):
    # they are inputs of the compiled programs, so a width seen before compiles nothing
    lr, one_minus, noise = ((1e-3, 0.1, 0.1), (3e-3, 0.3, 0.5), (5e-4, 0.05, 0.2))[draw % 3]
    argv = ["run.py", f"--config={CONFIG}", f"--config.model.hidden_size={width}",
            f"--config.train.epochs={epochs}", "--config.train.patience=0", f"--config.lr={lr}",
            f"--config.one_minus_momentum={one_minus}", f"--config.train.input_noise={noise}",
            f"--workdir={workdir}", "--noprogress"] + [f"--config.{kv}" for kv in sets]
    t0 = time.perf_counter()
    rc = entry_main(argv)
    if rc != 0:
        raise SystemExit(f"timing trial at width {width} exited with {rc}")
    return time.perf_counter() - t0


def per_epoch(t1: float, t2: float, extra: int, what: str) -> float:
    """The epoch time ``(t2 - t1) / extra`` of a (1 + extra)-epoch run timed at ``t2`` against a
    1-epoch run at ``t1``; where this machine's noise made it 0 or less, a warning on stderr (the
    fixed costs and projections built on it are then meaningless)."""
    epoch = (t2 - t1) / extra
    if epoch <= 0:
        print(f"warning: {what}: a {1 + extra}-epoch run took {t2:.3f}s, no longer than a 1-epoch "
              f"run ({t1:.3f}s); the epoch time and what is built on it are noise; rerun with a "
              f"larger --timing_epochs (now {extra})", file=sys.stderr, flush=True)
    return epoch


def pin_to_one_cpu() -> None:
    """Run the rest of this process on one CPU, as a sweep worker runs (``sweeps.workers`` pins
    each to one): XLA then compiles on one core too (on 2 cores a new width's programs compiled
    in 2.4-2.6 s, pinned in 3.4-3.7 s; 2026-12-02), so the fixed costs are those of a worker."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def compile_seconds(event, seconds, **kwargs) -> None:
    """A ``jax.monitoring`` listener: adds tracing-and-lowering and XLA-compile seconds (by
    program) to :data:`COMPILES` while it is a dict."""
    if COMPILES is None:
        return
    if event.endswith(("/jaxpr_trace_duration", "/jaxpr_to_mlir_module_duration")):
        name = "tracing and lowering"
    elif event.endswith("/backend_compile_duration"):
        name = kwargs.get("fun_name", "?").removeprefix("jit(").removesuffix(")")
    else:
        return
    COMPILES[name] = COMPILES.get(name, 0.0) + seconds


COMPILES: dict | None = None


def time_widths(widths, root: Path, extra: int, sets=()) -> dict:
    """Per width, in this process pinned to one CPU (like a worker): epoch time, update time,
    fixed cost per trial (``sets``: config overrides ``key=value`` of these timing trials, e.g.
    ``model.cell=fgr``); a new width's compile seconds by program (:func:`compile_seconds`)."""
    global COMPILES
    # as in a worker: JAX's persistent compilation cache and the program store in it (a trial of
    # a width seen before reuses the jitted steps in memory, training.loop._steps_key). Its own,
    # not the workers mode's sweep's: where that sweep had compiled a timed width's bucket, the
    # "new width" loaded it from the store (width 63 in a 180-trial sweep: 0.51 s, 2026-12-03)
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(root / "timing" / ".jax_cache"))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    pin_to_one_cpu()
    import jax
    import run
    from lstm_research.training import loop
    jax.monitoring.register_event_duration_secs_listener(compile_seconds)

    out = {}
    time_trial(run.main, root / "warm", WARM_WIDTH, 1, sets=sets)  # imports, the data, per-process programs
    for w in widths:
        COMPILES = {}
        t0 = time_trial(run.main, root / f"warm{w}", w, 1, sets=sets)  # a new width: compiles
        compiles, COMPILES = COMPILES, None
        t1 = time_trial(run.main, root / f"e1_{w}", w, 1, draw=1, sets=sets)
        t2 = time_trial(run.main, root / f"e2_{w}", w, 1 + extra, draw=2, sets=sets)
        # the width below, after these (a new width between them made t1 slower, most likely
        # through per-width caches, and the unpadded epoch estimates at width 20 0.02-0.04 s):
        # another new width, or with model.width_multiple one whose padded programs the width
        # above compiled (since 2026-12-03 its init program too, models.width.shared_init)
        tb = time_trial(run.main, root / f"bucket{w}", w - 1, 1, sets=sets)
        # the width again once this process has dropped its programs (as a worker does for
        # programs it has not used lately): loaded from the program store (training.programs;
        # before 2026-12-03 traced again and loaded from JAX's persistent cache)
        loop.forget_programs()
        tc = time_trial(run.main, root / f"cached{w}", w, 1, draw=1, sets=sets)
        # batch 1: the steps of one epoch are its training sequences
        n_train = json.loads((root / f"e1_{w}" / "result.json").read_text())["steps"]
        epoch = per_epoch(t1, t2, extra, f"width {w}")
        out[str(w)] = {"epoch_s": round(epoch, 4), "update_ms_per_sequence": round(epoch / n_train * 1e3, 3),
                       "fixed_cost_per_trial_s": round(t1 - epoch, 3), "trial_1_epoch_s": round(t1, 3),
                       "fixed_cost_new_width_s": round(t0 - epoch, 3),
                       "fixed_cost_width_below_s": round(tb - epoch, 3),
                       "fixed_cost_cached_programs_s": round(tc - epoch, 3),
                       "new_width_compile_s": {k: round(v, 3) for k, v in sorted(
                           compiles.items(), key=lambda kv: -kv[1])},
                       f"trial_{1 + extra}_epochs_s": round(t2, 3)}
    return out


def greff_epoch_inputs(width: int, k: int | None = None, sets=()):
    """``(trainer, initial arrays, training batches, key, hyper)`` of a Greff JSB trial at
    ``width`` (input noise 0.3 unless ``sets``, config overrides ``key=value``, say otherwise;
    ``train.steps_per_call=k`` unless None), built in this process: the inputs to run its
    training epoch through ``trainer.train_step`` or ``trainer.train_steps`` (batches padded as
    the loop pads them, without ``reset``)."""
    import jax

    from lstm_research.sweeps.check import apply_overrides
    from lstm_research.training import optim
    from lstm_research.training.batches import pad_time_at_least
    from lstm_research.training.loop import Trainer
    from lstm_research.training.validate import load_config_file
    c = load_config_file(str(REPO_ROOT / CONFIG))
    c.train.input_noise = 0.3
    c = apply_overrides(c, [f"--config.{kv}" for kv in sets], "--set", CONFIG)
    c.model.hidden_size = width
    if k is not None:
        c.train.steps_per_call = k
    with tempfile.TemporaryDirectory() as wd:
        t = Trainer(c, wd, progress=False)
    arrays = t.init_state()[0]
    it = t.task.train_batches(0)
    batches = [pad_time_at_least(next(it), t.time_bound.get("train"))
               for _ in range(t.task.steps_per_epoch)]
    for b in batches:
        b.pop("reset", None)
    return t, arrays, batches, jax.random.key(1), optim.runtime_hyperparams(c.train, 1e-3)


def time_calls(widths, k: int, reps: int = 5) -> dict:
    """Per width, in this process: a training epoch (the JSB training sequences, one update
    each) with one compiled call per update against ``train.steps_per_call=k``, interleaved
    ``reps`` times (medians): what the host round trip of each update costs."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from lstm_research.training import steps
    out = {}
    for w in widths:
        t, arrays, batches, key, hyper = greff_epoch_inputs(w, k)
        lr = np.float32(1e-3)

        def epoch(per_call):
            p, o = jax.tree.map(jnp.copy, (arrays["params"], arrays["opt_state"]))
            t0 = time.perf_counter()
            for i in range(0, len(batches), per_call):
                chunk = batches[i:i + per_call]
                if per_call == 1:
                    p, o, _, _ = t.train_step(p, o, chunk[0], None, key, np.int32(i),
                                              dict(hyper, lr=lr))
                else:
                    p, o, _ = t.train_steps(p, o, steps.stack_chunk(chunk, k),
                                            np.int32(len(chunk)), key, np.int32(i),
                                            np.full(k, lr, np.float32), hyper)
            jax.block_until_ready(p)
            return time.perf_counter() - t0
        epoch(1), epoch(k)  # compile
        times = {1: [], k: []}
        for _ in range(reps):
            for n in times:
                times[n].append(epoch(n))
        one, many = (float(np.median(times[n])) for n in (1, k))
        out[str(w)] = {"train_epoch_s_one_per_call": round(one, 4),
                       f"train_epoch_s_{k}_per_call": round(many, 4),
                       "speedup": round(one / many, 3)}
    return out


def time_packs(widths, k: int, root: Path, extra: int, per_width: dict) -> dict:
    """Per width, in this process: K trials of that width (their own seed, learning rate, momentum
    and input noise) as one pack: the pack's epoch time, its fixed cost, and the speedup over K
    epochs of one trial at that width (``per_width``); above 1, packing pays."""
    import run
    from lstm_research.training.pack import PackTrainer

    def pack_time(w, epochs, name):
        configs, dirs = [], []
        for j in range(k):
            lr, one_minus, noise = 10 ** (-3 - j % 3 * 0.5), 0.05 + 0.1 * (j % 4), 0.1 * (j % 5)
            _, c = run.parse_command_line([
                "run.py", f"--config={CONFIG}", f"--config.model.hidden_size={w}", f"--config.seed={j}",
                f"--config.train.epochs={epochs}", "--config.train.patience=0", f"--config.lr={lr}",
                f"--config.one_minus_momentum={one_minus}", f"--config.train.input_noise={noise}"])
            configs.append(c)
            dirs.append(root / f"{name}_{w}" / f"t{j}")
        t0 = time.perf_counter()
        PackTrainer(configs, dirs, root / f"{name}_{w}" / "pack", progress=False).run()
        return time.perf_counter() - t0

    out = {}
    for w in widths:
        pack_time(w, 1, "pwarm")
        t1, t2 = pack_time(w, 1, "p1"), pack_time(w, 1 + extra, "p2")
        epoch = per_epoch(t1, t2, extra, f"pack of {k} at width {w}")
        single = per_width[str(w)]["epoch_s"]
        out[str(w)] = {"pack_epoch_s": round(epoch, 4), "per_trial_epoch_s": round(epoch / k, 4),
                       "fixed_cost_per_pack_s": round(t1 - epoch, 3),
                       "speedup_vs_one_trial_at_a_time": round(k * single / epoch, 3)}
    return out


def print_packs(per_width: dict, k: int) -> None:
    """One line per width of :func:`time_packs`'s result for packs of ``k``."""
    for w, v in per_width.items():
        print(f"width {w:>3}, pack of {k}: epoch {v['pack_epoch_s']:.3f}s "
              f"({v['per_trial_epoch_s']:.4f}s per trial), fixed cost per pack "
              f"{v['fixed_cost_per_pack_s']:.2f}s, {v['speedup_vs_one_trial_at_a_time']:.2f}x "
              "one trial at a time", flush=True)


def time_pack_sizes(widths, sizes, root: Path, args, per_width: dict) -> dict:
    """:func:`time_packs` for each K of ``sizes`` (``--pack_sizes``), with the full study
    projected in packs of K (:func:`packed_study_s`, ``--parallel`` packs at a time), printed as
    each K finishes."""
    out = {}
    for k in sizes:
        r = time_packs(widths, k, root / f"k{k}", args.timing_epochs, per_width)
        proj = {str(e): round(packed_study_s(per_width, r, k, e, args.sweep_seed)
                              / args.parallel / 3600, 2) for e in STUDY_EPOCHS}
        out[str(k)] = {"per_width": r, "projection_h": proj}
        print_packs(r, k)
        print(f"projected full study in packs of {k}: "
              + ", ".join(f"{h:.2f} h at {e} epochs" for e, h in proj.items()), flush=True)
    return out


def mean_epoch_s(per_width: dict, draws: int, seed: int) -> float:
    """Mean epoch time over widths drawn log-uniform in [20, 200], interpolating the measured
    widths log-log."""
    import numpy as np
    ws = np.array(sorted(int(w) for w in per_width), float)
    ts = np.array([per_width[str(int(w))]["epoch_s"] for w in ws])
    draws_w = np.exp(np.random.default_rng(seed).uniform(np.log(20), np.log(200), 10_000))
    return float(np.mean(np.exp(np.interp(np.log(draws_w), np.log(ws), np.log(ts)))))


def packed_study_s(per_width: dict, packed: dict, k: int, epochs: int, seed: int) -> float:
    """Seconds of packs (one at a time) for 1800 trials of ``epochs`` epochs: 9 variants x 200
    widths drawn log-uniform in [20, 200], packed as the sweep packs them (sorted by width within
    windows of 4 packs), each pack costing its fixed cost plus ``epochs`` pack epochs at its
    widest member's width (interpolated log-log between the measured widths)."""
    import numpy as np

    from lstm_research.sweeps.packs import SORT_WINDOW
    ws = np.array(sorted(int(w) for w in packed), float)
    epoch = np.array([packed[str(int(w))]["pack_epoch_s"] for w in ws])
    fixed = np.mean([packed[str(int(w))]["fixed_cost_per_pack_s"] for w in ws])
    rng, total = np.random.default_rng(seed), 0.0
    for _ in range(9):
        draws = np.exp(rng.uniform(np.log(20), np.log(200), 200))
        for w in range(0, 200, SORT_WINDOW * k):
            window = np.sort(draws[w:w + SORT_WINDOW * k])
            for i in range(0, len(window), k):
                widest = window[i:i + k].max()
                total += fixed + epochs * float(np.exp(np.interp(np.log(widest), np.log(ws), np.log(epoch))))
    return total


def machine_probe() -> dict:
    """How fast this machine is today, for comparing runs on these shared machines (their speed
    moved 2-3x between sessions): one 2048x2048 float32 matmul (GFLOP/s, best of 5) and one
    jitted batch-1 matvec call at width 200 (us, median of 500), both in a subprocess."""
    code = """
import json, time, jax, jax.numpy as jnp
a = jnp.ones((2048, 2048)); f = jax.jit(lambda a: a @ a); f(a).block_until_ready()
best = 1e9
for _ in range(5):
    t = time.perf_counter(); f(a).block_until_ready(); best = min(best, time.perf_counter() - t)
v, w = jnp.ones((1, 200)), jnp.ones((200, 800)); g = jax.jit(lambda v, w: v @ w); g(v, w).block_until_ready()
ts = []
for _ in range(500):
    t = time.perf_counter(); g(v, w).block_until_ready(); ts.append(time.perf_counter() - t)
print(json.dumps({"matmul_2048_gflops": round(2 * 2048 ** 3 / best / 1e9, 1),
                  "matvec_call_us": round(sorted(ts)[250] * 1e6, 1)}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else {"error": out.stderr[-300:]}


def study_trials(cells: str, draws: int, seed: int) -> list[tuple[str, int]]:
    """``(cell, width)`` of a Greff sweep's trials (cells x draws, AXES), in the order workers
    take them."""
    from lstm_research.sweeps.spec import spec_from_strings

    spec = spec_from_strings(CONFIG, grid=[f"model.cell={cells}"], random=list(AXES), trials=draws,
                             sweep_seed=seed)
    return [(t.overrides["model.cell"], t.overrides["model.hidden_size"])
            for t in spec.run_order(spec.expand())]


def padded(w: int, multiple: int) -> int:
    return -(-w // multiple) * multiple


def worker_s(per_width: dict, trials, epochs: int, multiple: int = 1, workers: int = 1) -> float:
    """Seconds of work of ``workers`` workers for ``trials`` (cell, width), each run for ``epochs``
    epochs: a trial costs the fixed cost of a new width (compiling its programs) the first time
    its cell and padded width (``model.width_multiple``) come up in the sweep (workers share the
    compilation cache), the cost of the width below a new one (the padded programs in memory;
    before 2026-12-03 its own init program compiled) the first time its own width does, a seen
    width's fixed cost after that, plus its epochs (times interpolated log-log between the
    measured widths). Where the trial's worker (trials dealt in turn; replaced after its
    ``WorkerOptions.max_trials`` trials) no longer holds the programs (the most recently used
    ``training.loop.STEPS_KEPT``), it pays what a width seen before costs from the program
    store instead of from memory (``fixed_cost_cached_programs_s``; runs before 2026-12-02
    20:00 did not measure it and assumed memory)."""
    from collections import OrderedDict

    from lstm_research.sweeps.workers import WorkerOptions
    from lstm_research.training.loop import STEPS_KEPT
    import numpy as np
    ws = np.log(np.array(sorted(int(w) for w in per_width), float))

    def at(name, w):
        v = np.array([per_width[str(int(x))][name] for x in sorted(int(k) for k in per_width)])
        return float(np.exp(np.interp(np.log(w), ws, np.log(np.maximum(v, 1e-6)))))

    def in_memory(k, program):
        if ran[k] == WorkerOptions.max_trials:
            held[k], ran[k] = OrderedDict(), 0
        ran[k] += 1
        hit = held[k].pop(program, None) is not None
        if not hit and len(held[k]) >= STEPS_KEPT:
            held[k].popitem(last=False)
        held[k][program] = True
        return hit

    seen, programs, total = set(), set(), 0.0
    held, ran = [OrderedDict() for _ in range(workers)], [0] * workers
    cached = "fixed_cost_cached_programs_s" in next(iter(per_width.values()))
    for i, (cell, w) in enumerate(trials):
        program = (cell, padded(w, multiple))
        hit = in_memory(i % workers, program) or not cached
        if (cell, w) in seen:
            total += at("fixed_cost_per_trial_s" if hit else "fixed_cost_cached_programs_s", w)
        elif program in programs:
            total += at("fixed_cost_width_below_s", w) + (0.0 if hit else max(
                0.0, at("fixed_cost_cached_programs_s", w) - at("fixed_cost_per_trial_s", w)))
        else:
            total += at("fixed_cost_new_width_s", w)
        total += epochs * at("epoch_s", w)
        seen.add((cell, w))
        programs.add(program)
    return total


def width_multiple(sets) -> int:
    """``model.width_multiple`` of the study's config with the timing overrides ``sets``."""
    import run
    from lstm_research.models import width
    _, config = run.parse_command_line(["run.py", f"--config={CONFIG}",
                                        *[f"--config.{kv}" for kv in sets]])
    return width.multiple(config.model)


def project_workers(report: dict, args) -> dict:
    """Hours for the full study's own draws (9 variants x 200, sweep seed 0) in ``P`` workers,
    per :func:`worker_s`: widths repeat (963 distinct variant-widths among the 1800 draws), so
    most trials after the first hundreds compile nothing. Calibrated by the workers mode of this
    run: its measured wall time over what :func:`worker_s` predicts for its own draws (P workers
    share the machine's cores and caches)."""
    from lstm_research.cells import GREFF_VARIANTS

    full = study_trials(",".join(GREFF_VARIANTS), 200, 0)
    multiple = width_multiple(args.set + args.timing_set)
    out = {"distinct_variant_widths": len(set(full)), "width_multiple": multiple,
           "distinct_programs": len({(c, padded(w, multiple)) for c, w in full})}
    m = report["modes"].get("workers")
    if m is not None:
        bench = worker_s(report["per_width"], study_trials(",".join(report["cells"]), args.draws,
                                                           args.sweep_seed), args.epochs,
                         multiple, args.parallel) / args.parallel
        out["calibration"] = round(m["wall_s"] / bench, 3)
    for e in STUDY_EPOCHS:
        out[str(e)] = round(worker_s(report["per_width"], full, e, multiple, args.parallel) / args.parallel / 3600
                            * out.get("calibration", 1.0), 2)
    # the fixed costs alone (no epochs; not calibrated): hours of P workers, seconds per trial
    fixed = worker_s(report["per_width"], full, 0, multiple, args.parallel)
    out["fixed_costs_h"] = round(fixed / args.parallel / 3600, 3)
    out["fixed_cost_per_trial_s"] = round(fixed / len(full), 2)
    return out


def project(report: dict, args) -> dict:
    """Hours for 1800 trials of E epochs, per mode: the measured mean trial duration (its fixed
    cost and E_bench epochs) plus (E - E_bench) epochs at the mean epoch time over drawn widths,
    P trials at a time; for packs, :func:`packed_study_s`, P packs at a time."""
    epoch = mean_epoch_s(report["per_width"], args.draws, args.sweep_seed)
    out = {}
    for e in STUDY_EPOCHS:
        out[str(e)] = {m: round(1800 * (r["mean_trial_duration_s"] + (e - args.epochs) * epoch)
                                / args.parallel / 3600, 2)
                       for m, r in report["modes"].items() if m != "packed"}
        if "packed_per_width" in report:
            out[str(e)]["packed"] = round(packed_study_s(report["per_width"], report["packed_per_width"],
                                                         args.pack, e, args.sweep_seed) / args.parallel / 3600, 2)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--draws", type=int, default=10, help="random draws per cell variant (K)")
    p.add_argument("--cells", default="vanilla", help="comma-separated Greff variants (model.cell grid)")
    p.add_argument("--epochs", type=int, default=5, help="epochs per trial (E; patience 0)")
    p.add_argument("--parallel", type=int, default=2, help="trials at once, and workers (P)")
    p.add_argument("--sweep_seed", type=int, default=0)
    p.add_argument("--widths", default="20,63,200", help="widths for the update / fixed-cost timing")
    p.add_argument("--modes", default="processes,workers,packed",
                   help="comma-separated of processes, workers, packed; 'none' to only time widths")
    p.add_argument("--pack", type=int, default=8, help="packed mode: trials per program (K)")
    p.add_argument("--pack_sizes", default="",
                   help="comma-separated K: per width, also time a pack of K trials for each "
                        "(in this process, as --modes packed does for --pack), e.g. 64,256,1024 "
                        "on a GPU")
    p.add_argument("--timing_epochs", type=int, default=4,
                   help="per width: epoch time = (time of a (1+this)-epoch trial - a 1-epoch trial) / this")
    p.add_argument("--steps_per_call", type=int, default=0,
                   help="also time, per width, a training epoch at one call per update against "
                        "train.steps_per_call=this (interleaved; 0: skip)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override of every trial, swept and timed (e.g. model.width_multiple=1)")
    p.add_argument("--timing_set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override of the per-width timing trials (repeatable), e.g. "
                        "model.cell=fgr, model.fused=false")
    p.add_argument("--out", default=str(REPO_ROOT / "experiments" / "results" / "sweep_throughput_cpu.json"))
    args = p.parse_args(argv)
    for name in ("draws", "epochs", "parallel", "timing_epochs", "pack"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    try:
        pack_sizes = [int(k) for k in args.pack_sizes.split(",") if k.strip()]
    except ValueError:
        p.error(f"--pack_sizes must be comma-separated integers, e.g. 64,256,1024; "
                f"got {args.pack_sizes!r}")
    if any(k < 1 for k in pack_sizes):
        p.error(f"--pack_sizes must be >= 1 each, got {args.pack_sizes!r}")
    report = {"protocol": CONFIG, "axes": AXES, "cells": args.cells.split(","), "draws": args.draws,
              "epochs": args.epochs, "parallel": args.parallel, "pack": args.pack, "cpus": len(os.sched_getaffinity(0)),
              "machine": platform.processor() or platform.machine(), "machine_probe": machine_probe(),
              "modes": {}}
    with tempfile.TemporaryDirectory(prefix="sweep_throughput_") as tmp:
        root = Path(tmp)
        for mode in [m for m in args.modes.split(",") if m not in ("", "none")]:
            r = run_mode(mode, args, root)
            report["modes"][mode] = r
            print(f"{mode:>9}: {r['trials']} trials x {args.epochs} epochs in {r['wall_s']:.1f}s "
                  f"({r['states']}) -> {r['trial_epochs_per_hour']:.0f} trial-epochs/h",
                  flush=True)
        m = report["modes"]
        if "processes" in m and "workers" in m:
            report["workers_vs_processes"] = round(m["workers"]["trial_epochs_per_hour"]
                                                   / m["processes"]["trial_epochs_per_hour"], 3)
            print(f"workers / processes: {report['workers_vs_processes']:.2f}x")
        if "workers" in m and "packed" in m:
            report["packed_vs_workers"] = round(m["packed"]["trial_epochs_per_hour"]
                                                / m["workers"]["trial_epochs_per_hour"], 3)
            print(f"packed (K={args.pack}) / workers: {report['packed_vs_workers']:.2f}x")
        widths = [int(w) for w in args.widths.split(",")]
        report["per_width"] = time_widths(widths, root, args.timing_epochs,
                                          args.set + args.timing_set)
        for name in ("set", "timing_set"):
            if getattr(args, name):
                report[name] = getattr(args, name)
        if args.steps_per_call > 1:
            report["steps_per_call"] = time_calls(widths, args.steps_per_call)
            for w, r in report["steps_per_call"].items():
                print(f"width {w:>3}: training epoch, one call per update "
                      f"{r['train_epoch_s_one_per_call']:.3f}s, {args.steps_per_call} per call "
                      f"{r[f'train_epoch_s_{args.steps_per_call}_per_call']:.3f}s: "
                      f"{r['speedup']:.2f}x")
        if "packed" in m:
            report["packed_per_width"] = time_packs(widths, args.pack, root, args.timing_epochs,
                                                    report["per_width"])
        if pack_sizes:
            report["packs_by_size"] = time_pack_sizes(widths, pack_sizes, root, args,
                                                      report["per_width"])
        report["projection"] = project(report, args)
        for e, h in report["projection"].items():
            if h:
                print(f"projected full study (1800 trials x {e} epochs, {args.parallel} at a time): "
                      + ", ".join(f"{m} {v:.1f} h" for m, v in h.items()))
        report["projection_workers_study_draws"] = p = project_workers(report, args)
        print(f"projected full study in {args.parallel} workers, on its own draws ({p['distinct_variant_widths']} "
              f"distinct variant-widths, {p['distinct_programs']} programs at model.width_multiple="
              f"{p['width_multiple']}; calibration {p.get('calibration', 1.0):.2f}): "
              + ", ".join(f"{p[str(e)]:.1f} h at {e} epochs" for e in STUDY_EPOCHS)
              + f"; of it fixed costs {p['fixed_costs_h']:.2f} h (not calibrated), "
              f"{p['fixed_cost_per_trial_s']:.2f} s per trial on average")
        for w, r in report["per_width"].items():
            print(f"width {w:>3}: epoch {r['epoch_s']:.3f}s, update {r['update_ms_per_sequence']:.3f} ms/sequence "
                  f"(validation included), fixed cost per trial in a worker {r['fixed_cost_per_trial_s']:.3f}s")
            top = list(r["new_width_compile_s"].items())[:4]
            print(f"           a new width {r['fixed_cost_new_width_s']:.2f}s, of it "
                  + ", ".join(f"{k} {v:.2f}s" for k, v in top)
                  + f"; width {int(w) - 1} after it {r['fixed_cost_width_below_s']:.2f}s")
        print_packs(report.get("packed_per_width", {}), args.pack)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
