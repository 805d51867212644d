"""The console of a running sweep: a progress bar on a terminal; elsewhere (a log file, Slurm,
nohup) a heartbeat line every ``$LSTM_RESEARCH_HEARTBEAT_SECS`` seconds (default 60; 0 = off):

    [sweep] 1480/1800 trials (82%): 1478 done, 2 failed, 2 running | 14.2 trials/h | ETA 22h32m

The rate counts the trials ended (done or failed) since this invocation started."""
from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm

from lstm_research.console import duration, heartbeat_secs


class SweepProgress:
    def __init__(self, total: int, ended: int, desc: str, progress: bool = True):
        self.total, self.ended_before = total, ended
        self.counts = (0, 0, 0)  # done, failed, running
        self.bar = None
        if progress and sys.stderr.isatty():  # tqdm's carriage-return frames garble logs
            self.bar = tqdm(total=total, initial=ended, unit="trial", file=sys.stderr, desc=desc,
                            dynamic_ncols=True)
        self.heartbeat = heartbeat_secs() if self.bar is None else 0.0
        self.started = self.beat_at = time.time()

    def show(self, done: int, failed: int, running: int, ended_now: int = 0) -> None:
        """The counts as they stand; ``ended_now`` trials have just ended."""
        self.counts = (done, failed, running)
        if self.bar is not None:
            self.bar.set_postfix_str(f"done={done} failed={failed} running={running}",
                                     refresh=not ended_now)
            self.bar.update(ended_now)

    def tick(self) -> None:
        """A heartbeat line when one is due."""
        now = time.time()
        if self.heartbeat > 0 and now - self.beat_at >= self.heartbeat:
            self.beat_at = now
            tqdm.write(self.line(now), file=sys.stderr)

    def line(self, now: float) -> str:
        done, failed, running = self.counts
        ended = done + failed
        per_h = (ended - self.ended_before) / max(now - self.started, 1e-9) * 3600
        eta = duration((self.total - ended) / per_h * 3600) if per_h > 0 else "?"
        return (f"[sweep] {ended}/{self.total} trials ({100 * ended / max(self.total, 1):.0f}%): "
                f"{done} done, {failed} failed, {running} running | {per_h:.1f} trials/h | "
                f"ETA {eta}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
