"""What a run tells the researcher: a progress bar with ETA and live loss (on a terminal), a
heartbeat line (elsewhere), ``metrics.jsonl``, TensorBoard event files. Only process 0 writes.

TensorBoard tags, one name per quantity (so the splits of one quantity overlay in one chart):

* ``<metric>/valid`` for every validation metric, ``<metric>/test`` for the test metrics of
  the best checkpoint (at the last step);
* the training loss as ``<key>/train`` when it is the same quantity as the summary key
  ``<key>`` (:func:`loss_metric`: e.g. ``nll/train`` next to ``nll/valid`` on JSB), otherwise
  as ``loss/train`` (PTB's Zaremba loss is summed over the unrolled steps, not per token);
* ``optim/lr``, ``optim/grad_norm``, ``perf/steps_per_sec`` (wall clock between logged steps);
* at the end, the HParams plugin's session (every config key as a hyperparameter; metrics
  ``best_valid/<metric>`` and ``<metric>/test``), so that ``tensorboard --logdir`` over a
  sweep's trials compares them in the HPARAMS tab.

``metrics.jsonl`` holds the same records without timings, so that it is the same bit for bit
whether a run was resumed or not.

Without a progress bar (stdout/stderr not a terminal: sweeps, Slurm) a heartbeat line goes to
stdout every ``$LSTM_RESEARCH_HEARTBEAT_SECS`` seconds (default 60; 0 = off), checked at each
logged step: step, loss, last validation metric, throughput and ETA.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Callable

from tqdm.auto import tqdm

from lstm_research.console import duration, heartbeat_secs
from lstm_research.training.workdir import write_atomic


def summary_writer():
    """tensorboardX's ``SummaryWriter`` class, imported without PyTorch: where torch is installed,
    tensorboardX imports it for type hints only (its ``writer.py``; torch tensors are converted
    by a lazy import), which costs each run's start about 2 s on a 2-core CPU. A torch already
    imported is left alone."""
    if "torch" in sys.modules:
        from tensorboardX import SummaryWriter
        return SummaryWriter
    sys.modules["torch"] = None  # so that tensorboardX's ``import torch`` raises ImportError
    try:
        from tensorboardX import SummaryWriter
    finally:
        del sys.modules["torch"]
    return SummaryWriter


def loss_metric(task) -> str | None:
    """The key of ``task.summarize`` whose value is the training loss of a batch (the loss is
    the same quantity as that metric, summed and divided the same way), or None when the
    training loss is its own quantity. ``tests/test_reporting.py`` checks each entry against
    the task's ``loss`` and ``summarize``."""
    norm = getattr(task, "loss_norm", None)
    return {"adding": "mse", "copy": "ce", "temporal_order": "ce", "reber": "nll",
            "continual_reber": "nll", "ptb": "nll" if norm == "mean_token" else None,
            "jsb": "nll" if norm == "mean_frame" else None}.get(task.name)


def hparams_of(config: dict, prefix: str = "") -> dict:
    """A config dict flattened to ``{dotted key: value}`` for the HParams plugin (strings,
    bools, numbers; None and empty values left out)."""
    out = {}
    for k, v in config.items():
        if isinstance(v, dict):
            out.update(hparams_of(v, f"{prefix}{k}."))
        elif isinstance(v, (str, bool, int, float)) and v != "":
            out[prefix + k] = v
    return out


def _complete_records(path: Path) -> list[str]:
    """The lines of ``metrics.jsonl`` (with their newline) that are complete JSON records; a
    last line cut short by a kill during the append is dropped."""
    out = []
    with open(path) as f:
        for line in f:
            if not line.endswith("\n") or not line.strip():
                continue
            try:
                json.loads(line)
            except json.JSONDecodeError:
                continue
            out.append(line)
    return out


class Reporter:
    """``metrics.jsonl``, TensorBoard and the console of one run.

    ``resume_step``: records after it are dropped (they are recomputed); ``train_logged(step)``
    says whether a training record at ``step`` belongs to the run as configured now (a run
    extended past its old last step drops the record of that step when the longer run would not
    log there); ``loss_metric``: see :func:`loss_metric`; ``metric``: the validation metric the
    progress line shows (the task's, which picks the best step; default: the first reported);
    ``console=False``: files only (the trials of a pack share one console)."""

    def __init__(self, workdir: Path, is_main: bool = True, resume_step: int = 0, *,
                 train_logged: Callable[[int], bool] | None = None,
                 loss_metric: str | None = None, metric: str | None = None,
                 console: bool = True):
        self.is_main, self.console, self.metric = is_main, console, metric
        self.path = Path(workdir) / "metrics.jsonl"
        self.bar, self.tb, self._postfix = None, None, {}
        self.loss_tag = f"{loss_metric}/train" if loss_metric else "loss/train"
        self.heartbeat = heartbeat_secs()
        self.total, self._last_valid = None, ""
        self._rate_at = self._beat_at = (time.time(), resume_step)  # (time, step) of the last
        if not is_main:
            return
        if self.path.exists():  # drop what was logged after the checkpoint we resume from
            keep = []
            for line in _complete_records(self.path):
                r = json.loads(line)
                if r["step"] <= resume_step and (r["split"] != "train" or train_logged is None
                                                 or train_logged(r["step"])):
                    keep.append(line)
            write_atomic(self.path, "".join(keep))
        self.file = self.path.open("a")
        self.tb = summary_writer()(str(Path(workdir) / "tensorboard"), purge_step=resume_step + 1)

    def start(self, total, initial, progress=True):
        """Begin the training loop: a progress bar when ``progress`` and stderr is a terminal
        (tqdm's carriage-return frames garble logs), heartbeat lines otherwise."""
        self.total = total
        self._rate_at = self._beat_at = (time.time(), initial)
        if self.is_main and progress and sys.stderr.isatty():
            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True,
                            mininterval=0.5)

    def _tag(self, split: str, key: str) -> str:
        """The TensorBoard tag of ``key`` of a ``split`` record (see the module docstring)."""
        if split != "train":
            return f"{key}/{split}"
        return {"loss": self.loss_tag, "lr": "optim/lr", "grad_norm": "optim/grad_norm"}.get(
            key, f"{key}/train")

    def _write(self, record):
        if not self.is_main:
            return
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in record.items():
                if k not in ("step", "split") and isinstance(v, (int, float)):
                    self.tb.add_scalar(self._tag(record["split"], k), v, record["step"])

    def train(self, step, **values):
        self._write({"step": step, "split": "train", **values})
        if not self.is_main:
            return
        now = time.time()
        t0, s0 = self._rate_at
        if now > t0 and step > s0 and self.tb is not None:
            self.tb.add_scalar("perf/steps_per_sec", (step - s0) / (now - t0), step)
        self._rate_at = (now, step)
        self._postfix.update(loss=f"{values['loss']:.4g}", lr=f"{values['lr']:.3g}")
        if self.bar is not None:
            self.bar.n = step
            self.bar.set_postfix(self._postfix, refresh=False)
            self.bar.update(0)
        elif self.console and self.heartbeat > 0 and now - self._beat_at[0] >= self.heartbeat:
            self._beat(step, values["loss"], now)

    def _beat(self, step, loss, now):
        t0, s0 = self._beat_at
        rate = (step - s0) / max(now - t0, 1e-9)
        total = self.total or step
        eta = duration((total - step) / rate) if rate > 0 else "?"
        pct = f" ({100 * step / total:.0f}%)" if total else ""
        print(f"step {step}/{total}{pct} | loss {loss:.4g}{self._last_valid} | "
              f"{rate:.3g} steps/s | ETA {eta}", flush=True)
        self._beat_at = (now, step)

    def valid(self, step, metrics):
        self._write({"step": step, "split": "valid", **metrics})
        first = self.metric if self.metric in metrics else next(iter(metrics))
        self._postfix[f"valid_{first}"] = f"{metrics[first]:.4g}"
        self._last_valid = f" | valid {first} {metrics[first]:.4g}"
        if self.bar is not None:
            self.bar.set_postfix(self._postfix, refresh=False)
        else:
            self.message(f"step {step}: valid " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))

    def result(self, result: dict) -> None:
        """TensorBoard at the end of a run: ``<metric>/test`` at the last step, and the HParams
        session of this run (its config as hyperparameters; best validation and test metrics)."""
        if not self.is_main or self.tb is None:
            return
        step = result["steps"]
        metrics = {}
        for k, v in (result.get("test") or {}).items():
            self.tb.add_scalar(f"{k}/test", v, step)
            metrics[f"{k}/test"] = v
        for k, v in (result.get("valid") or {}).items():
            self.tb.add_scalar(f"best_valid/{k}", v, step)
            metrics[f"best_valid/{k}"] = v
        from tensorboardX.summary import hparams
        for summary in hparams(hparams_of(result["config"]), metrics):
            self.tb.file_writer.add_summary(summary, step)
        self.tb.flush()

    def message(self, text):
        if self.is_main and self.console:
            (self.bar.write if self.bar is not None else print)(text)

    def end(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def close(self):
        self.end()
        if self.is_main:
            self.file.close()
            if self.tb is not None:
                self.tb.close()
