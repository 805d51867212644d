"""Evaluate a run's latest (final) or best checkpoint on a split.

python experiments/evaluate_checkpoint.py --workdir=runs/zaremba_small [--which latest] [--split test]

Papers such as Zaremba et al. 2014 report the test score of the final epoch's parameters, while
``run.py`` tests the best-on-validation ones; this gives the other number. Nothing in the
workdir is changed. A user error (no such run, no checkpoint, a bad option) is one line
``error: ...`` on stderr and exit status 2.
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lstm_research.errors import UserError  # noqa: E402


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse prints usage + message; we print one line
        raise UserError(f"{message}; see {self.prog} --help")


def _parse(argv):
    p = _Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True)
    p.add_argument("--which", choices=["latest", "best"], default="latest")
    p.add_argument("--split", choices=["valid", "test"], default="test")
    return p.parse_args(argv)


def _load_config(workdir: Path):
    import ml_collections
    if not workdir.is_dir():
        raise UserError(f"--workdir={workdir}: no such folder; pass the workdir of a run")
    path = workdir / "config.json"
    if not path.is_file():
        raise UserError(f"{path} not found: --workdir={workdir} does not hold a run of run.py")
    try:
        return ml_collections.ConfigDict(json.loads(path.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid JSON ({e}); the run's config is damaged") from None


def evaluate(argv) -> dict:
    args = _parse(argv)
    workdir = Path(args.workdir)
    config = _load_config(workdir)
    if not (workdir / "checkpoints" / args.which).is_dir():
        raise UserError(f"no {args.which} checkpoint in {workdir}/checkpoints; run the "
                        "experiment (python run.py ...) first")
    from lstm_research.training import validate
    validate.validate_config(config)

    from absl import logging
    from lstm_research.training.checkpoint import Checkpoints
    from lstm_research.training.loop import Trainer
    logging.set_verbosity(logging.ERROR)  # orbax warns that a read-only folder is read-only
    trainer = Trainer(config, workdir, progress=False)
    arrays, _ = trainer.init_state()
    ckpt = Checkpoints(workdir, read_only=True)
    restored = (ckpt.restore_latest(arrays) if args.which == "latest"
                else ckpt.restore_best({"params": arrays["params"]}))
    if restored is None:
        raise UserError(f"no {args.which} checkpoint in {workdir}/checkpoints; run the "
                        "experiment (python run.py ...) first")
    saved, meta = restored
    metrics = trainer.evaluate(saved["params"], args.split)
    return {"workdir": str(args.workdir), "checkpoint": args.which, "step": meta["step"],
            "split": args.split, **metrics}


def main(argv=None) -> int:
    try:
        out = evaluate(sys.argv[1:] if argv is None else argv)
    except UserError as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr, flush=True)
        return 2
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
