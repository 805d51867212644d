"""What a run tells the researcher: a progress bar with ETA and live loss, ``metrics.jsonl``,
TensorBoard event files. Only process 0 writes."""
from __future__ import annotations

import json
import os
from pathlib import Path

from tqdm.auto import tqdm

from lstm_research.training.workdir import write_atomic


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
    def __init__(self, workdir: Path, is_main: bool = True, resume_step: int = 0):
        self.is_main = is_main
        self.path = Path(workdir) / "metrics.jsonl"
        self.bar, self.tb, self._postfix = None, None, {}
        if not is_main:
            return
        if self.path.exists():  # drop what was logged after the checkpoint we resume from
            keep = [line for line in _complete_records(self.path)
                    if json.loads(line)["step"] <= resume_step]
            write_atomic(self.path, "".join(keep))
        self.file = self.path.open("a")
        try:
            from tensorboardX import SummaryWriter
            self.tb = SummaryWriter(str(Path(workdir) / "tensorboard"), purge_step=resume_step + 1)
        except ImportError:  # pragma: no cover - tensorboardX is a requirement
            self.tb = None

    def start(self, total, initial, progress=True):
        if self.is_main and progress:
            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True,
                            mininterval=0.5)

    def _write(self, record):
        if not self.is_main:
            return
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in record.items():
                if k not in ("step", "split") and isinstance(v, (int, float)):
                    self.tb.add_scalar(f"{record['split']}/{k}", v, record["step"])

    def train(self, step, **values):
        self._write({"step": step, "split": "train", **values})
        self._postfix.update(loss=f"{values['loss']:.4g}", lr=f"{values['lr']:.3g}")
        if self.bar is not None:
            self.bar.n = step
            self.bar.set_postfix(self._postfix, refresh=False)
            self.bar.update(0)

    def valid(self, step, metrics):
        self._write({"step": step, "split": "valid", **metrics})
        first = next(iter(metrics))
        self._postfix[f"valid_{first}"] = f"{metrics[first]:.4g}"
        if self.bar is not None:
            self.bar.set_postfix(self._postfix, refresh=False)
        else:
            self.message(f"step {step}: valid " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))

    def message(self, text):
        if self.is_main:
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
