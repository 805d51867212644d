"""Wall time of K trials as one vmapped program against K separate runs, same process.

python experiments/vmap_speedup.py [--k 8] [--steps 200] [--hidden 100]

JSB Chorales (real data from ../shared/data), one-layer vanilla LSTM, batch 8; the separate
runs are what ``run.py`` does per trial (compile, train, validate, test).
"""
import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402

from lstm_research.training import base_config  # noqa: E402
from lstm_research.training.loop import Trainer  # noqa: E402
from lstm_research.training.vmap import VmapTrainer  # noqa: E402


def config(args):
    c = base_config("jsb", batch_size=8, eval_batch_size=100)
    c.model.cell = "vanilla"
    c.model.hidden_size = args.hidden
    c.train.steps = args.steps
    c.train.eval_every = args.steps
    c.train.log_every = 50
    return c


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--hidden", type=int, default=100)
    p.add_argument("--out", default="experiments/results/vmap_speedup.json")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        c = config(args)
        c.train.vmap_trials = args.k
        t = time.time()
        VmapTrainer(c, Path(tmp) / "vmap", progress=False).run()
        t_vmap = time.time() - t
        t = time.time()
        for k in range(args.k):
            c = config(args)
            c.seed = k
            Trainer(c, Path(tmp) / f"s{k}", progress=False).run()
        t_sep = time.time() - t
    out = {"k": args.k, "steps": args.steps, "hidden": args.hidden, "task": "jsb",
           "vmap_s": round(t_vmap, 1), "separate_s": round(t_sep, 1),
           "speedup": round(t_sep / t_vmap, 2), "platform": jax.devices()[0].platform,
           "date": time.strftime("%Y-%m-%d")}
    print(json.dumps(out))
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
