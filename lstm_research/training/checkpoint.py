"""Orbax checkpoints of a run: the latest state (for resuming) and the best-by-validation one.

A checkpoint holds the arrays of the training state (params, optimizer state, carried recurrent
state) and a JSON record of the loop's bookkeeping (step, best metric, early-stopping and
plateau counters), so a resumed run continues exactly where the saved one was.

Crash consistency (a process killed at any instant, including inside a save):

* orbax writes a step into ``<step>.orbax-checkpoint-tmp-*`` and renames it to ``<step>`` when
  complete, so a step folder is either whole or absent; leftover tmp folders of a killed save
  are removed when the run starts again (``cleanup_tmp_directories``).
* After a step is written, ``<step>/files.sha256`` records a sha256 of every file in it (written
  atomically; single-process runs). A restore checks it before orbax reads anything, so a
  damaged step is refused with one line rather than with tensorstore's errors.
* The JSON record holds a sha256 of every array's bytes (params, optimizer state and the carried
  recurrent state), checked on restore. A step that fails a check or cannot be read is moved to
  ``checkpoints/corrupt/`` with a one-line warning and the previous step is used; two latest
  (and two best) steps are kept so there is one to fall back to. With none left the restore
  raises :class:`CheckpointError` naming the step and the file.
* Saves are idempotent: saving a step that already exists with the same checksums does nothing;
  one with different checksums is replaced. The loop saves best before latest, so after a kill
  best can be ahead of latest: :meth:`Checkpoints.drop_best_after` removes best steps newer than
  the step resumed from (the resumed run recreates them bit-identically).
* Arrays with a non-finite float value are never written.
* A SIGTERM stops a run after its next step with a checkpoint saved (exit status 143 from
  ``run.py``); once it has stopped, further SIGTERMs are ignored (:func:`end_sigterm_handling`).
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import signal
import sys
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

from lstm_research.errors import UserError

CHECKSUMS = "checksums"  # key of the per-array sha256 record in a checkpoint's JSON item
FILES = "files.sha256"   # per-file sha256 record written into a step folder after the save
KEEP = 2                 # steps kept of latest and of best: one to fall back to


class CheckpointError(UserError):
    """No readable, intact checkpoint is left to restore."""


class NonFiniteCheckpoint(RuntimeError):
    """Refused to save arrays holding NaN/inf (the loop checks before; this is a safeguard)."""


def array_checksums(arrays) -> dict[str, str]:
    """``{tree path: sha256 of dtype, shape and bytes}`` of every leaf that this process holds
    entirely (all of them on one host; shards of multi-host arrays are not checked)."""
    out = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(arrays):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            continue
        a = np.ascontiguousarray(np.asarray(leaf))
        h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
        out[jax.tree_util.keystr(path)] = h.hexdigest()
    return out


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _files_of(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): _file_sha256(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != FILES}


def record_files(folder: Path) -> None:
    """Write ``folder/files.sha256`` (sha256 of every file in a finished step), atomically."""
    tmp = folder / (FILES + ".tmp")
    tmp.write_text(json.dumps(_files_of(folder), indent=0))
    os.replace(tmp, folder / FILES)


def check_files(folder: Path) -> None:
    """Raise ValueError naming the first missing or changed file of a step that has a
    ``files.sha256`` record (a step without one is left to the array checksums)."""
    record = folder / FILES
    if not record.exists():
        return
    try:
        expected = json.loads(record.read_text())
    except (OSError, ValueError):
        raise ValueError(f"{record} unreadable") from None
    for rel, digest in expected.items():
        path = folder / rel
        if not path.is_file():
            raise ValueError(f"{path} missing")
        if _file_sha256(path) != digest:
            raise ValueError(f"{path}: checksum mismatch")


def _all_finite(arrays) -> bool:
    for leaf in jax.tree.leaves(arrays):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            continue  # multi-host shards: the loop checks params with jnp.isfinite
        a = np.asarray(leaf)
        if np.issubdtype(a.dtype, np.inexact) and not np.isfinite(a).all():
            return False
    return True


def warn(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr, flush=True)


class Checkpoints:
    def __init__(self, workdir: str | Path, read_only: bool = False):
        self.root = Path(workdir).absolute() / "checkpoints"
        self.read_only = read_only
        opts = ocp.CheckpointManagerOptions(max_to_keep=KEEP, create=not read_only,
                                            enable_async_checkpointing=False,
                                            cleanup_tmp_directories=not read_only,
                                            read_only=read_only)
        self.latest = ocp.CheckpointManager(self.root / "latest", options=opts)
        self.best = ocp.CheckpointManager(self.root / "best", options=opts)

    # --- saving ---------------------------------------------------------------------------
    def _save(self, manager, step, arrays, meta):
        if jax.process_count() == 1:
            # one copy to the host for the checks, the checksums and orbax, which writes NumPy
            # leaves with less work than jax.Array ones (the two saves at the end of a Greff
            # trial: 0.17-0.20 -> 0.12 s of CPU, experiments/trial_end_cost.py); they restore
            # as the jax.Arrays of ``like``, on its devices and shardings (a multi-process
            # job's arrays are shards: kept)
            arrays = jax.device_get(arrays)
        if not _all_finite(arrays):
            raise NonFiniteCheckpoint(f"refusing to save non-finite arrays at step {step}")
        sums = array_checksums(arrays)
        folder = Path(manager.directory) / str(step)
        if step in manager.all_steps():
            old = self._read_meta(manager, step)
            if old is not None and old.get(CHECKSUMS) == sums and self._intact(folder):
                return  # already saved (e.g. an evaluation step, then SIGTERM): idempotent
            self._move_aside(manager, step)
        meta = {**meta, CHECKSUMS: sums}
        manager.save(step, args=ocp.args.Composite(arrays=ocp.args.StandardSave(arrays),
                                                   meta=ocp.args.JsonSave(meta)), force=True)
        manager.wait_until_finished()
        if jax.process_count() == 1:  # several processes write parts of one folder
            record_files(folder)

    @staticmethod
    def _intact(folder: Path) -> bool:
        try:
            check_files(folder)
        except ValueError:
            return False
        return True

    def save_latest(self, step, arrays, meta):
        self._save(self.latest, step, arrays, meta)

    def save_best(self, step, arrays, meta):
        self._save(self.best, step, arrays, meta)

    def drop_best_after(self, step: int) -> None:
        """Delete best checkpoints newer than ``step`` (saved before a kill that came before
        the latest of the same step): the resumed run recreates them."""
        for s in self.best.all_steps():
            if s > step:
                self.best.delete(s)
        self.best.reload()

    # --- restoring ------------------------------------------------------------------------
    @staticmethod
    def _read_meta(manager, step):
        try:
            return manager.restore(step, args=ocp.args.Composite(
                meta=ocp.args.JsonRestore()))["meta"]
        except Exception:  # noqa: BLE001 - unreadable counts as absent
            return None

    def _move_aside(self, manager, step):
        src = Path(manager.directory) / str(step)
        dest_dir = self.root / "corrupt"
        dest_dir.mkdir(parents=True, exist_ok=True)
        for n in itertools.count():
            dest = dest_dir / f"{Path(manager.directory).name}_{step}_{n}"
            if not dest.exists():
                break
        shutil.move(str(src), str(dest))
        manager.reload()
        return dest

    def _restore_one(self, manager, step, like):
        """(arrays, meta) of ``step``, or raise ValueError saying which file is wrong."""
        folder = Path(manager.directory) / str(step)
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
            like)
        check_files(folder)  # before orbax reads: its errors on damaged files are noisy
        try:
            meta = manager.restore(step, args=ocp.args.Composite(
                meta=ocp.args.JsonRestore()))["meta"]
            if not isinstance(meta, dict):
                raise ValueError("no JSON record")
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"{folder}/meta unreadable ({_one_line(e)})") from None
        try:
            arrays = manager.restore(step, args=ocp.args.Composite(
                arrays=ocp.args.StandardRestore(abstract)))["arrays"]
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"{folder}/arrays unreadable ({_one_line(e)})") from None
        expected = meta.pop(CHECKSUMS, None)
        if expected is not None:  # checkpoints written before checksums existed: not checked
            got = array_checksums(arrays)
            # a name that the writer did not record (a multi-host array's shards, written by
            # several processes) is not checked: a two-process checkpoint restores in one
            for name in sorted(set(expected) & set(got)):
                if expected[name] != got[name]:
                    raise ValueError(f"{folder}/arrays: checksum mismatch in {name}")
        return arrays, meta

    def _restore(self, manager, like, at_most=None):
        bad = []
        for step in sorted(manager.all_steps(), reverse=True):
            if at_most is not None and step > at_most:
                continue
            try:
                out = self._restore_one(manager, step, like)
            except ValueError as e:
                bad.append((step, str(e)))
                moved = "" if self.read_only else f"; moved to {self._move_aside(manager, step)}"
                warn(f"checkpoint step {step} is damaged: {e}{moved}; trying the previous step")
                continue
            return out
        if bad:
            raise CheckpointError(
                f"no intact checkpoint left in {manager.directory}: "
                + "; ".join(f"step {step}: {why}" for step, why in bad)
                + "; start over with --overwrite (damaged steps are kept in checkpoints/corrupt)")
        return None

    def restore_latest(self, like):
        """(arrays, meta) of the newest intact latest checkpoint shaped like ``like``, or None."""
        return self._restore(self.latest, like)

    def restore_best(self, like, at_most=None):
        """(arrays, meta) of the newest intact best checkpoint (of step <= ``at_most``)."""
        return self._restore(self.best, like, at_most)

    def close(self):
        self.latest.close()
        self.best.close()


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()).split(" See full TensorStore")[0] or type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def end_sigterm_handling(prev_handler, stopped: bool) -> None:
    """At the end of a run that replaced the SIGTERM handler with its own: restore
    ``prev_handler``, or, once a SIGTERM has ``stopped`` the run (it has saved and is on its way
    out), ignore further SIGTERMs. A cluster's cancel signals every process of the job and the
    launcher forwards its own (``sweeps.cluster.TrialJob``): a second SIGTERM arriving after the
    default action was back killed the process as it shut down (status -15, not 143)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN if stopped else prev_handler)
