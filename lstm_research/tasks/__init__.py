"""Tasks by name: ``build(config.task, seed)`` and each task's default config fields."""
from __future__ import annotations

import ml_collections

from lstm_research.tasks import real, synthetic
from lstm_research.tasks.base import Task

# name -> default fields of config.task (besides ``name``)
DEFAULTS = {
    "adding": dict(T=100, variant="le", batch_size=50, eval_size=1000),
    "copy": dict(T=100, batch_size=50, eval_size=1000),
    "temporal_order": dict(variant="6a", batch_size=50, eval_size=1000),
    "reber": dict(batch_size=20, eval_size=1000),
    "continual_reber": dict(batch_size=1, bptt=100, steps_per_epoch=100, eval_size=10,
                            eval_length=100_000),
    "ptb": dict(data_dir="", batch_size=20, bptt=35, eval_batch_size=20, loss_norm="sum_time"),
    "jsb": dict(data_dir="", batch_size=1, eval_batch_size=100, loss_norm="mean_frame"),
}


def default_config(name: str, **overrides) -> ml_collections.ConfigDict:
    _check(name)
    return ml_collections.ConfigDict({"name": name, **DEFAULTS[name], **overrides})


def _check(name):
    if name not in DEFAULTS:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(DEFAULTS)}")


def build(cfg, seed: int = 0) -> Task:
    """The task named ``cfg.name`` with the fields of ``cfg``."""
    _check(cfg.name)
    f = {k: v for k, v in cfg.items() if k != "name"}
    unknown = set(f) - set(DEFAULTS[cfg.name])
    if unknown:
        raise ValueError(f"unknown field(s) {sorted(unknown)} for task {cfg.name!r}; "
                         f"valid: {sorted(DEFAULTS[cfg.name])}")
    name = cfg.name
    if name == "adding":
        if f["variant"] not in ("le", "hochreiter"):
            raise ValueError(f"task.variant={f['variant']!r}; valid: 'le', 'hochreiter'")
        # the 1997 criterion is on the worst sequence: |error| < 0.04 on every one
        metric = "mse" if f["variant"] == "le" else "max_abs_error"
        return synthetic.Adding(name, "seq2one", 2, 1, metric, seed=seed, **f)
    if name == "copy":
        return synthetic.CopyMemory(name, "per_step", 10, 10, "ce", seed=seed, **f)
    if name == "temporal_order":
        classes = {"6a": 4, "6b": 8}
        if f["variant"] not in classes:
            raise ValueError(f"task.variant={f['variant']!r}; valid: '6a', '6b'")
        return synthetic.TemporalOrder(name, "seq2one", 8, classes[f["variant"]], "error_rate",
                                       seed=seed, **f)
    if name == "reber":
        return synthetic.EmbeddedReber(name, "per_step", 7, 7, "string_error", seed=seed,
                                       predicts_next=True, **f)
    if name == "continual_reber":
        return synthetic.ContinualReber(name, "per_step", 7, 7, "symbols_to_error",
                                        lower_is_better=False, stateful=True, predicts_next=True,
                                        seed=seed, **f)
    if name == "ptb":
        from lstm_research.data import ptb

        data = ptb.load_ptb(f["data_dir"] or None)
        steps = ptb.lm_num_batches(len(data["train"]), f["batch_size"], f["bptt"])
        return real.PennTreebank(name, "lm", len(data["vocab"]), len(data["vocab"]), "perplexity",
                                 stateful=True, steps_per_epoch=steps, token_inputs=True, predicts_next=True,
                                 tokens=data, **f)
    if name == "jsb":
        from lstm_research.data import jsb

        rolls = jsb.load_jsb(f["data_dir"] or None)
        steps = jsb.jsb_num_batches(len(rolls["train"]), f["batch_size"])
        return real.JSBChorales(name, "per_step", 88, 88, "nll", steps_per_epoch=steps,
                                predicts_next=True, seed=seed, rolls=rolls, **f)
    raise AssertionError(name)


__all__ = ["Task", "DEFAULTS", "default_config", "build"]
