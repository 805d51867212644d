"""Evaluate a run's latest (final) or best checkpoint on a split.

python experiments/evaluate_checkpoint.py --workdir=runs/zaremba_small [--which latest] [--split test]

Papers such as Zaremba et al. 2014 report the test score of the final epoch's parameters, while
``run.py`` tests the best-on-validation ones; this gives the other number.
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ml_collections  # noqa: E402

from lstm_research.training.checkpoint import Checkpoints  # noqa: E402
from lstm_research.training.loop import Trainer  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--workdir", required=True)
    p.add_argument("--which", choices=["latest", "best"], default="latest")
    p.add_argument("--split", default="test")
    args = p.parse_args()
    config = ml_collections.ConfigDict(json.loads((Path(args.workdir) / "config.json").read_text()))
    trainer = Trainer(config, args.workdir, progress=False)
    arrays, _ = trainer.init_state()
    ckpt = Checkpoints(args.workdir)
    restored = (ckpt.restore_latest(arrays) if args.which == "latest"
                else ckpt.restore_best({"params": arrays["params"]}))
    if restored is None:
        sys.exit(f"no {args.which} checkpoint in {args.workdir}")
    saved, meta = restored
    metrics = trainer.evaluate(saved["params"], args.split)
    print(json.dumps({"workdir": args.workdir, "checkpoint": args.which, "step": meta["step"],
                      "split": args.split, **metrics}))


if __name__ == "__main__":
    main()
