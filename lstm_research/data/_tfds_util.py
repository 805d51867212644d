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

import contextlib
import functools
import hashlib
import inspect
import io
import json
import logging
import os
import sys
from pathlib import Path
from typing import Callable, Mapping

import tensorflow_datasets as tfds
from etils import epath

from lstm_research.data import download as downloads
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
    LABEL: str = ""  # the data set's name in messages
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


@contextlib.contextmanager
def _quiet_absl():
    """Hide absl's warnings (TFDS logs one about every new cache folder)."""
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        absl_logger.setLevel(level)


@contextlib.contextmanager
def _quiet_tfds():
    """Silence TFDS while it prepares: its "Downloading and preparing dataset Unknown size"
    and "Dataset ... prepared" prints, its progress bars and absl's warnings. Exceptions still
    propagate."""
    from tensorflow_datasets.core.utils import tqdm_utils
    bars = getattr(tqdm_utils, "_active", True)
    tfds.display_progress_bar(False)
    try:
        with _quiet_absl(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        tfds.display_progress_bar(bars)


def prepare(builder: VerifiedManualBuilder, manual_dir: Path,
            fetch: Callable[[], None] | None = None) -> VerifiedManualBuilder:
    """Build ``builder`` from ``manual_dir`` unless its cache is already prepared.

    ``fetch`` (if given) is called first when the cache is not prepared (to download missing
    raw files). The raw files are verified (clear :class:`~lstm_research.data.files.DataError`)
    before TFDS sees them; the first preparation prints one line on stderr instead of TFDS's
    output; a prepared cache is reused without touching the raw files.
    """
    if not builder.is_prepared():
        if fetch is not None:
            fetch()
        builder.verified_manual_files(manual_dir)
        print(f"preparing {builder.LABEL or builder.name}, once (cached in {builder.data_dir})",
              file=sys.stderr, flush=True)
        with _quiet_tfds():
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir)))
    return builder


def prepared_builder(cls: type[VerifiedManualBuilder], data_dir=None, tfds_dir=None,
                     checksums: Mapping[str, str] | None = None, download: bool = False):
    """A ``cls`` builder over ``<data_dir>/<cls.KNOWN_SUBDIR>``, prepared (see :func:`prepare`).

    ``data_dir``: raw data (default ``$LSTM_RESEARCH_DATA``, else
    ``~/.cache/lstm_research/data``); ``tfds_dir``: TFDS cache (default ``$TFDS_DATA_DIR``,
    else ``~/.cache/lstm_research/tfds``); ``checksums``: ``{file name: sha256}`` expected
    (default: the known files); ``download``: when the cache is not prepared, first download
    the known files missing from the data dir (one line says so).
    """
    manual_dir = files.resolve_data_dir(data_dir) / cls.KNOWN_SUBDIR
    with _quiet_absl():
        builder = cls(data_dir=os.fspath(files.resolve_tfds_dir(tfds_dir)), checksums=checksums)
    fetch = None
    if download and checksums is None:
        name = next(n for n, d in files.DATASETS.items() if d.subdir == cls.KNOWN_SUBDIR)
        fetch = functools.partial(downloads.download_missing, name, manual_dir.parent)
    return prepare(builder, manual_dir, fetch)


def read_split(builder: tfds.core.DatasetBuilder, split: str) -> list[dict]:
    """All records of ``split`` in stored order (the builders disable shuffling)."""
    source = builder.as_data_source(split=split)
    n = len(source)
    return list(source.__getitems__(list(range(n)))) if n else []
