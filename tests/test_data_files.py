"""Tests of lstm_research.data.files: data-dir resolution and checksum verification."""

import hashlib
import re
from pathlib import Path

import pytest

from lstm_research.data import files

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = (REPO / ".." / "shared" / "data").resolve()


def test_default_dirs(monkeypatch, tmp_path):
    monkeypatch.delenv(files.DATA_ENV_VAR, raising=False)
    monkeypatch.delenv(files.TFDS_ENV_VAR, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert files.default_data_dir() == tmp_path / "home" / ".cache" / "lstm_research" / "data"
    assert files.uses_default_data_dir(None)
    assert not files.uses_default_data_dir(tmp_path)
    assert files.default_tfds_dir() == tmp_path / "home" / ".cache" / "lstm_research" / "tfds"
    monkeypatch.setenv(files.DATA_ENV_VAR, str(tmp_path))
    assert files.default_data_dir() == tmp_path
    assert not files.uses_default_data_dir(None)
    assert files.resolve_data_dir(None) == tmp_path
    assert files.resolve_data_dir(tmp_path / "x") == tmp_path / "x"
    monkeypatch.setenv(files.TFDS_ENV_VAR, str(tmp_path / "tfds"))
    assert files.resolve_tfds_dir(None) == tmp_path / "tfds"


def test_missing_known_file_names_the_download_command(tmp_path):
    with pytest.raises(files.DataError) as e:
        files.verify_files(tmp_path / "ptb", files.known_checksums("ptb"))
    assert f"python -m lstm_research.data download ptb --data_dir {tmp_path}" in str(e.value)


def test_verify_file(tmp_path):
    p = tmp_path / "f.txt"
    p.write_bytes(b"abc")
    # sha256("abc"), FIPS 180-2 test vector
    sha = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert files.verify_file(p, sha, "http://x") == p
    with pytest.raises(files.DataError) as e:
        files.verify_file(p, "1" * 64, "http://example.org/f.txt")
    msg = str(e.value)
    assert str(p) in msg and "1" * 64 in msg and sha in msg and "http://example.org/f.txt" in msg
    with pytest.raises(files.DataError, match=r"Missing data file .*nope\.txt.*expected sha256 "
                                              + sha):
        files.verify_file(tmp_path / "nope.txt", sha, "http://x")


def test_known_files_match_shared_readme():
    readme = REAL_DATA / "README.md"
    if not readme.is_file():
        pytest.skip(f"{readme} not found")
    rows = dict(re.findall(r"\| ([\w.-]+\.(?:txt|json)) \|.*\| ([0-9a-f]{64}) \|",
                           readme.read_text()))
    assert len(rows) == 4
    for rel, known in files.KNOWN_FILES.items():
        assert rows[Path(rel).name] == known.sha256


def test_real_files_verify():
    if not REAL_DATA.is_dir():
        pytest.skip(f"{REAL_DATA} not found")
    for rel, known in files.KNOWN_FILES.items():
        path = REAL_DATA / rel
        assert path.stat().st_size == known.size
        files.verify_file(path, known.sha256, known.url)
        assert hashlib.sha256(path.read_bytes()).hexdigest() == known.sha256
