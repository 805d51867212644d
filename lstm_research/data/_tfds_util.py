"""Shared plumbing for the project's TFDS builders (works without TensorFlow).

TFDS 4.9.10 can write and read ``array_record`` files without TensorFlow (its default
``tfrecord`` format needs ``tf.io.TFRecordWriter``), so every builder here defaults to
``file_format="array_record"`` and is read back with ``builder.as_data_source()``.

Builders read their raw files from a manual dir and verify each file's sha256 first. The
TFDS config encodes which checksums were expected: ``"default"`` for the project's known files
(:data:`lstm_research.data.files.KNOWN_FILES`), ``"custom_<digest>"`` for any other set (tests,
other versions of a corpus), so caches built from different sources never mix.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from pathlib import Path
from typing import Mapping

import tensorflow_datasets as tfds
from etils import epath

from lstm_research.data import files

DEFAULT_CONFIG = "default"


def config_for(checksums: Mapping[str, str], known: Mapping[str, str]):
    """The TFDS BuilderConfig (or its name) for a ``{file name: sha256}`` mapping."""
    if dict(checksums) == dict(known):
        return DEFAULT_CONFIG
    digest = hashlib.sha256(json.dumps(sorted(checksums.items())).encode()).hexdigest()[:16]
    return tfds.core.BuilderConfig(
        name=f"custom_{digest}",
        description=f"built from files with sha256 {dict(sorted(checksums.items()))}")


class VerifiedManualBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A GeneratorBasedBuilder over manually placed files with known sha256.

    Subclasses set ``KNOWN_SUBDIR`` (the folder under the data dir, e.g. ``"ptb"``).
    ``checksums`` (``{file name: sha256}``) defaults to the known files of that folder.
    ``data_dir`` is the TFDS cache dir (not the raw data dir).
    """

    KNOWN_SUBDIR: str = ""
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(
        name=DEFAULT_CONFIG, description="the project's known files (lstm_research.data.files)")]

    def __init__(self, *, checksums: Mapping[str, str] | None = None, **kwargs):
        known = files.known_checksums(self.KNOWN_SUBDIR)
        self._checksums = dict(known if checksums is None else checksums)
        if not self._checksums:
            raise ValueError(f"{type(self).__name__}: empty checksums")
        if "config" not in kwargs:
            kwargs["config"] = config_for(self._checksums, known)
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        """The file defining the builder.

        Overridden because TFDS 4.9.10's own ``code_path`` evaluates
        ``isinstance(path, importlib_resources.abc.Traversable)`` for builders defined inside a
        package, and ``importlib_resources`` (a PyPI backport TFDS declares only for Python
        < 3.9) is not installed: ``download_and_prepare`` would fail with
        ``ModuleNotFoundError: No module named 'importlib_resources'``.
        """
        return epath.Path(inspect.getfile(cls))

    @property
    def checksums(self) -> dict[str, str]:
        return dict(self._checksums)

    def verified_manual_files(self, manual_dir) -> dict[str, Path]:
        return files.verify_files(Path(os.fspath(manual_dir)), self._checksums)


def prepare(builder: VerifiedManualBuilder, manual_dir: Path) -> VerifiedManualBuilder:
    """Build ``builder`` from ``manual_dir`` unless its cache is already prepared.

    The raw files are verified (clear :class:`~lstm_research.data.files.DataError`) before
    TFDS sees them; a prepared cache is reused without touching the raw files.
    """
    if not builder.is_prepared():
        builder.verified_manual_files(manual_dir)
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir)))
    return builder


def read_split(builder: tfds.core.DatasetBuilder, split: str) -> list[dict]:
    """All records of ``split`` in stored order (the builders disable shuffling)."""
    source = builder.as_data_source(split=split)
    n = len(source)
    return list(source.__getitems__(list(range(n)))) if n else []
