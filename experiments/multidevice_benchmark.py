"""Data-parallel training on N forced CPU devices against 1, same global batch.

python experiments/multidevice_benchmark.py [--devices 4] [--steps 300]

Runs ``run.py`` (the adding problem, T=100, global batch 64) in fresh processes with
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` and reports the training wall time from
each run's result.json. On a 2-core machine the forced devices share the same cores, so this
measures the overhead of the sharded program, not a speedup; on a many-core host or with real
accelerators the same command line scales out.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(devices, steps, workdir):
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    cmd = [sys.executable, "run.py", "--config.task.batch_size=64", f"--config.train.steps={steps}",
           f"--config.train.eval_every={steps}",
           f"--workdir={workdir}", "--progress=false"]
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True)
    return json.loads((Path(workdir) / "result.json").read_text())


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--devices", type=int, default=4)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--out", default="experiments/results/multidevice_cpu.json")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (1, args.devices):
            r = run(n, args.steps, Path(tmp) / f"d{n}")
            rows.append({"devices": r["devices"], "wall_time_s": r["wall_time"],
                         "steps_per_s": round(args.steps / r["wall_time"], 2),
                         "test_mse": r["test"]["mse"]})
            print(rows[-1])
    out = {"rows": rows, "steps": args.steps, "global_batch": 64, "task": "adding T=100",
           "machine": f"{os.cpu_count()} CPU cores", "date": time.strftime("%Y-%m-%d")}
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
