"""Downloading the real data sets into a data dir: ``python -m lstm_research.data download``.

Every file comes from the source listed in :data:`~lstm_research.data.files.KNOWN_FILES` (PTB:
the three files of Mikolov's ``simple-examples.tgz``; JSB: the JSON file), or, with ``mirror``,
from ``<mirror>/<relpath>`` (e.g. ``<mirror>/ptb/ptb.train.txt``) for users behind a proxy or
with an offline copy. A file is streamed into a temporary file next to its destination while
its sha256 is computed, and renamed into place only when the checksum matches: a wrong or
truncated download keeps nothing. Network failures and wrong files raise
:class:`~lstm_research.data.files.DataError` (a UserError: one line naming the URL).
"""
from __future__ import annotations

import hashlib
import os
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import BinaryIO, Callable, Iterable

from tqdm.auto import tqdm

from lstm_research.data.files import (DATASETS, KNOWN_FILES, DataError, KnownFile,
                                      resolve_data_dir, sha256_file)
from lstm_research.errors import bad_choice

TIMEOUT_S = 60
_CHUNK = 1 << 16


def say(line: str) -> None:
    """One status line on stderr (stdout stays free for results)."""
    print(line, file=sys.stderr, flush=True)


def dataset_files(name: str) -> list[KnownFile]:
    """The known files of data set ``name`` (a key of :data:`~.files.DATASETS`)."""
    if name not in DATASETS:
        raise bad_choice("data set", name, sorted(DATASETS))
    subdir = DATASETS[name].subdir
    return [f for f in KNOWN_FILES.values() if Path(f.relpath).parent.as_posix() == subdir]


def missing_files(name: str, data_dir=None) -> list[KnownFile]:
    """The known files of ``name`` that are not in ``data_dir`` (not checksummed: a present
    file with another checksum is an error when it is read, not something to fetch again)."""
    root = resolve_data_dir(data_dir)
    return [f for f in dataset_files(name) if not (root / f.relpath).is_file()]


class Unreachable(DataError):
    """A URL could not be fetched (:func:`download` adds how to use a mirror instead)."""


def _unreachable(url: str, err: BaseException) -> Unreachable:
    reason = (f"HTTP {err.code} {err.reason}" if isinstance(err, urllib.error.HTTPError)
              else getattr(err, "reason", None) or err)
    return Unreachable(f"cannot download {url}: {reason}")


def _copy_hashed(src: BinaryIO, dst: BinaryIO, bar=None) -> str:
    """Copy ``src`` to ``dst`` in chunks (advancing ``bar``); the sha256 of what was copied."""
    h = hashlib.sha256()
    while block := src.read(_CHUNK):
        h.update(block)
        dst.write(block)
        if bar is not None:
            bar.update(len(block))
    return h.hexdigest()


def _temp_next_to(path: Path):
    return tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".part",
                                       delete=False)


def _fetch(url: str, dest: Path, desc: str, progress: bool | None) -> tuple[Path, str]:
    """Stream ``url`` into a temporary file next to ``dest``: ``(temp path, sha256)``. The
    caller renames or deletes it; on a failure here it is deleted."""
    try:
        resp = urllib.request.urlopen(url, timeout=TIMEOUT_S)  # noqa: S310 (http(s) sources)
    except (OSError, ValueError) as e:  # URLError, HTTPError, timeouts; ValueError: bad URL
        raise _unreachable(url, e) from None
    tmp = _temp_next_to(dest)
    try:
        with resp, tmp:
            total = resp.headers.get("Content-Length")
            with tqdm(total=int(total) if total else None, unit="B", unit_scale=True,
                      desc=desc, disable=None if progress is None else not progress,
                      file=sys.stderr, leave=False) as bar:
                sha = _copy_hashed(resp, tmp, bar)
    except OSError as e:
        os.unlink(tmp.name)
        raise _unreachable(url, e) from None
    except BaseException:
        os.unlink(tmp.name)
        raise
    return Path(tmp.name), sha


def _keep_if_verified(tmp: Path, sha: str, known: KnownFile, dest: Path, source: str) -> Path:
    """Rename ``tmp`` to ``dest`` if ``sha`` is the known one; else delete it and raise."""
    if sha != known.sha256:
        tmp.unlink()
        raise DataError(f"{source} is not the known {known.relpath}: sha256 {sha}, expected "
                        f"{known.sha256}; nothing was kept (a different version, or a broken "
                        f"mirror: try again or another --mirror)")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # a temporary file is private (0600); the data file is not
    os.replace(tmp, dest)
    return dest


def _fetch_file(url: str, known: KnownFile, dest: Path, progress) -> Path:
    tmp, sha = _fetch(url, dest, known.relpath, progress)
    return _keep_if_verified(tmp, sha, known, dest, url)


def _fetch_from_archive(url: str, members: list[KnownFile], root: Path, progress) -> list[Path]:
    """Download the .tgz at ``url`` once and extract ``members`` (each verified) into ``root``;
    the archive itself is not kept."""
    first = root / members[0].relpath
    archive, _ = _fetch(url, first.parent / Path(url).name, Path(url).name, progress)
    out = []
    try:
        with tarfile.open(archive, "r:gz") as tar:
            by_name = {m.name.removeprefix("./"): m for m in tar.getmembers() if m.isfile()}
            for known in members:
                member = by_name.get(known.member)
                if member is None:
                    raise DataError(f"{url} has no file {known.member}; nothing was kept from it "
                                    f"(pass --mirror URL for another source)")
                dest = root / known.relpath
                tmp = _temp_next_to(dest)
                try:
                    with tmp, tar.extractfile(member) as src:
                        sha = _copy_hashed(src, tmp)
                except BaseException:
                    os.unlink(tmp.name)
                    raise
                out.append(_keep_if_verified(Path(tmp.name), sha, known, dest,
                                             f"{known.member} of {url}"))
    except (tarfile.TarError, EOFError, zlib.error) as e:
        raise DataError(f"{url} is not a readable .tgz archive ({e}); nothing more was kept; "
                        f"try again or pass --mirror URL") from None
    finally:
        archive.unlink()
    return out


def mirror_url(mirror: str) -> str:
    """``--mirror`` as a URL: a folder path (an offline copy of a data dir) becomes file://."""
    if "://" not in mirror:
        return Path(mirror).expanduser().resolve().as_uri()
    return mirror


def _fetch_all(todo: list[KnownFile], root: Path, mirror: str | None, progress) -> None:
    if mirror:
        base = mirror_url(mirror).rstrip("/")
        for f in todo:
            _fetch_file(f"{base}/{f.relpath}", f, root / f.relpath, progress)
        return
    by_url: dict[str, list[KnownFile]] = {}
    for f in todo:
        by_url.setdefault(f.url, []).append(f)
    for url, group in by_url.items():
        archived = [f for f in group if f.member]
        if archived:
            _fetch_from_archive(url, archived, root, progress)
        for f in group:
            if not f.member:
                _fetch_file(url, f, root / f.relpath, progress)


def download(name: str, data_dir=None, mirror: str | None = None,
             progress: bool | None = None, only: Iterable[KnownFile] | None = None,
             log: Callable[[str], None] = say) -> list[Path]:
    """Download data set ``name`` (``"ptb"`` or ``"jsb"``) into ``data_dir`` (default: the
    default data dir); return the paths of its files.

    Files already there with the known sha256 are kept; any other is fetched (from
    ``<mirror>/<relpath>`` if ``mirror`` is given), verified, and renamed into place.
    ``only`` restricts the files considered. ``progress``: byte progress bars on stderr
    (None: when stderr is a terminal). Raises :class:`DataError` for an unreachable URL (naming
    it and ``--mirror``), a file with another checksum, or a data dir that cannot be written.
    """
    root = resolve_data_dir(data_dir)
    wanted = list(dataset_files(name) if only is None else only)
    todo = [f for f in wanted if not ((root / f.relpath).is_file()
                                      and sha256_file(root / f.relpath) == f.sha256)]
    label = DATASETS[name].label
    if not todo:
        log(f"{label}: {len(wanted)} file(s) already in {root}, checksums verified")
        return [root / f.relpath for f in wanted]
    try:
        for f in todo:
            (root / f.relpath).parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create the data dir {root}: {e.strerror}; pass --data_dir DIR "
                        f"(or set $LSTM_RESEARCH_DATA) to a writable folder") from None
    try:
        _fetch_all(todo, root, mirror, progress)
    except Unreachable as e:
        raise DataError(f"{e}; check the network, or use a mirror: python -m lstm_research.data "
                        f"download {name} --data_dir {root} --mirror URL (a server holding "
                        f"URL/<relpath> of each file, e.g. URL/{todo[0].relpath})") from None
    log(f"{label}: downloaded {', '.join(f.relpath for f in todo)} into {root} "
        f"(sha256 verified)")
    return [root / f.relpath for f in wanted]


def download_missing(name: str, data_dir=None, mirror: str | None = None,
                     progress: bool | None = None) -> None:
    """Before a run: download the files of ``name`` missing from ``data_dir``, saying so in one
    line first (nothing happens when all are there)."""
    missing = missing_files(name, data_dir)
    if missing:
        root = resolve_data_dir(data_dir)
        say(f"{DATASETS[name].label} is not in {root} yet: downloading it once "
            f"(python -m lstm_research.data download {name})")
        download(name, root, mirror, progress, only=missing, log=lambda line: None)
