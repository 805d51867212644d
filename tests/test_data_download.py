"""``python -m lstm_research.data download`` against a local HTTP server on 127.0.0.1.

The server (python's http.server in a thread) serves a mirror (``<url>/<relpath>``), a
``simple-examples.tgz`` laid out as Mikolov's archive and the JSB JSON, built from small
generated files whose sizes and sha256 replace the known ones (monkeypatched
``files.KNOWN_FILES``), or from the real files when ``$LSTM_RESEARCH_DATA`` has them. No test
touches any other address.
"""
from __future__ import annotations

import dataclasses
import hashlib
import http.server
import io
import json
import os
import shutil
import socket
import tarfile
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from lstm_research.data import download, files, jsb
from lstm_research.data.__main__ import main

PTB_TEXT = {"train": " the cat sat \n on the mat \n", "valid": " the mat \n", "test": " a cat \n"}
JSB_DATA = {"train": [[[60, 64, 67], [62]], [[21], [108, 60]]], "valid": [[[65]]],
            "test": [[[], [70, 72]]]}


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A local HTTP server over ``root``; ``requests`` lists the paths asked for."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    root = tmp_path / "www"
    root.mkdir()
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield SimpleNamespace(root=root, url=f"http://127.0.0.1:{httpd.server_port}",
                          requests=requests)
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def small(server, monkeypatch):
    """Small PTB and JSB files served as a mirror (``/mirror/<relpath>``), as the archive
    ``/archive/simple-examples.tgz`` and as ``/json/jsb-chorales-quarter.json``; the known
    files' sizes, checksums and URLs point at them. Returns ``{relpath: bytes}``."""
    content = {f"ptb/ptb.{s}.txt": t.encode() for s, t in PTB_TEXT.items()}
    content["jsb_chorales/jsb-chorales-quarter.json"] = json.dumps(JSB_DATA).encode()
    for rel, data in content.items():
        (server.root / "mirror" / rel).parent.mkdir(parents=True, exist_ok=True)
        (server.root / "mirror" / rel).write_bytes(data)
    (server.root / "archive").mkdir()
    with tarfile.open(server.root / "archive" / "simple-examples.tgz", "w:gz") as tar:
        for name, data in [*((f"./simple-examples/data/ptb.{s}.txt", t.encode())
                             for s, t in PTB_TEXT.items()),
                           ("./simple-examples/README", b"not needed\n")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (server.root / "json").mkdir()
    (server.root / "json" / jsb.JSON_FILE).write_bytes(content[f"jsb_chorales/{jsb.JSON_FILE}"])
    for rel, data in content.items():
        url = (f"{server.url}/archive/simple-examples.tgz" if rel.startswith("ptb/")
               else f"{server.url}/json/{jsb.JSON_FILE}")
        monkeypatch.setitem(files.KNOWN_FILES, rel, dataclasses.replace(
            files.KNOWN_FILES[rel], size=len(data), sha256=hashlib.sha256(data).hexdigest(),
            url=url))
    return content


def _run_cli(argv, capfd):
    capfd.readouterr()
    rc = main(argv)
    out, err = capfd.readouterr()
    return rc, err.splitlines()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.startswith("."))


def test_a_folder_path_is_a_mirror_too(small, server, tmp_path, capfd):
    # an offline copy of a data dir; it needed file:// before (the error told the user to pass
    # the --mirror they had passed)
    data_dir = tmp_path / "data"
    rc, err = _run_cli(["download", "jsb", "--data_dir", str(data_dir),
                        "--mirror", str(server.root / "mirror")], capfd)
    assert rc == 0, err
    rel = "jsb_chorales/jsb-chorales-quarter.json"
    assert (data_dir / rel).read_bytes() == small[rel] and server.requests == []


def test_mirror_downloads_every_file_then_has_nothing_to_do(small, server, tmp_path, capfd):
    data_dir = tmp_path / "data"
    rc, err = _run_cli(["download", "all", "--data_dir", str(data_dir),
                        "--mirror", f"{server.url}/mirror/"], capfd)
    assert rc == 0, err
    for rel, data in small.items():
        assert (data_dir / rel).read_bytes() == data
    assert sorted(server.requests) == sorted(f"/mirror/{rel}" for rel in small)
    assert _leftovers(data_dir) == []
    assert len(err) == 2 and all("sha256 verified" in line for line in err), err
    umask = os.umask(0)
    os.umask(umask)
    assert {(data_dir / rel).stat().st_mode & 0o777 for rel in small} == {0o666 & ~umask}
    # again: every file is there and verified, nothing is fetched
    rc, err = _run_cli(["download", "--data_dir", str(data_dir), "--mirror", server.url], capfd)
    assert rc == 0 and len(server.requests) == len(small)
    assert all("already in" in line for line in err), err


def test_canonical_sources_archive_and_json(small, server, tmp_path, capfd):
    data_dir = tmp_path / "data"
    paths = download.download("ptb", data_dir) + download.download("jsb", data_dir)
    assert sorted(p.relative_to(data_dir).as_posix() for p in paths) == sorted(small)
    for rel, data in small.items():
        assert (data_dir / rel).read_bytes() == data
    # one request for the archive (its three files), one for the JSON; the archive not kept
    assert sorted(server.requests) == ["/archive/simple-examples.tgz", f"/json/{jsb.JSON_FILE}"]
    assert sorted(p.name for p in (data_dir / "ptb").iterdir()) == [
        "ptb.test.txt", "ptb.train.txt", "ptb.valid.txt"]


@pytest.mark.parametrize("source", ["mirror", "archive"])
def test_a_wrong_file_is_refused_and_nothing_is_kept(source, small, server, tmp_path, capfd):
    wrong = b" the dog sat \n"
    if source == "mirror":
        (server.root / "mirror" / "ptb" / "ptb.valid.txt").write_bytes(wrong)
        argv = ["--mirror", f"{server.url}/mirror"]
    else:
        with tarfile.open(server.root / "archive" / "simple-examples.tgz", "w:gz") as tar:
            for s, text in PTB_TEXT.items():
                data = wrong if s == "valid" else text.encode()
                info = tarfile.TarInfo(f"./simple-examples/data/ptb.{s}.txt")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        argv = []
    data_dir = tmp_path / "data"
    rc, err = _run_cli(["download", "ptb", "--data_dir", str(data_dir), *argv], capfd)
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert hashlib.sha256(wrong).hexdigest() in err[0]
    assert files.KNOWN_FILES["ptb/ptb.valid.txt"].sha256 in err[0]
    assert "nothing was kept" in err[0]
    assert not (data_dir / "ptb" / "ptb.valid.txt").exists()
    assert _leftovers(data_dir) == []


def test_unreachable_or_missing_url_is_one_line_naming_it_and_mirror(small, server, tmp_path,
                                                                    capfd):
    with socket.socket() as s:  # a port on 127.0.0.1 that nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    data_dir = tmp_path / "data"
    for mirror, reason in [(closed, "refused"), (f"{server.url}/nowhere", "HTTP 404")]:
        rc, err = _run_cli(["download", "jsb", "--data_dir", str(data_dir), "--mirror", mirror],
                           capfd)
        assert rc == 2 and len(err) == 1, err
        assert f"{mirror}/jsb_chorales/{jsb.JSON_FILE}" in err[0]
        assert f"python -m lstm_research.data download jsb --data_dir {data_dir} --mirror URL" \
            in err[0]
        assert reason in err[0], err
        assert not (data_dir / "jsb_chorales" / jsb.JSON_FILE).exists()
        assert _leftovers(data_dir) == []
    rc, err = _run_cli(["download", "mnist"], capfd)
    assert rc == 2 and len(err) == 1 and "'mnist'" in err[0] and "ptb" in err[0], err


def test_a_run_downloads_missing_data_into_the_default_dir_only(small, server, tmp_path,
                                                                monkeypatch, capfd):
    from lstm_research.tasks.real import JSBChorales

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(files.DATA_ENV_VAR)
    monkeypatch.delenv(files.TFDS_ENV_VAR, raising=False)
    capfd.readouterr()
    task = JSBChorales()
    task.load()
    _, err = capfd.readouterr()
    default = tmp_path / "home" / ".cache" / "lstm_research" / "data"
    assert err.splitlines() == [
        f"JSB Chorales is not in {default} yet: downloading it once "
        f"(python -m lstm_research.data download jsb)",
        f"preparing JSB Chorales, once (cached in {tmp_path}/home/.cache/lstm_research/tfds/"
        f"lstm_research_jsb_chorales/default/1.0.0)"]
    assert server.requests == [f"/json/{jsb.JSON_FILE}"]
    assert [len(task.rolls[s]) for s in jsb.SPLITS] == [2, 1, 1]
    expected = np.zeros((2, 88), np.float32)
    expected[0, [60 - 21, 64 - 21, 67 - 21]] = expected[1, 62 - 21] = 1
    np.testing.assert_array_equal(task.rolls["train"][0], expected)

    # a data dir the user chose is not written by a run: the error names the command
    chosen = tmp_path / "chosen"
    monkeypatch.setenv(files.DATA_ENV_VAR, str(chosen))
    monkeypatch.setenv(files.TFDS_ENV_VAR, str(tmp_path / "tfds2"))
    with pytest.raises(files.DataError, match="python -m lstm_research.data download jsb "
                                              f"--data_dir {chosen}"):
        JSBChorales().load()
    assert len(server.requests) == 1 and not chosen.exists()


def test_mirror_of_the_real_files(server, tmp_path, capfd):
    real = Path(os.environ[files.DATA_ENV_VAR])
    if not all((real / rel).is_file() for rel in files.KNOWN_FILES):
        pytest.skip(f"the real data files are not in {real}")
    for rel in files.KNOWN_FILES:
        (server.root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(real / rel, server.root / rel)
    rc, err = _run_cli(["download", "--data_dir", str(tmp_path / "data"), "--mirror",
                        server.url], capfd)
    assert rc == 0, err
    for rel, known in files.KNOWN_FILES.items():
        got = tmp_path / "data" / rel
        assert got.stat().st_size == known.size and files.sha256_file(got) == known.sha256


def test_a_broken_archive_is_refused_and_nothing_is_kept(small, server, tmp_path, capfd):
    tgz = server.root / "archive" / "simple-examples.tgz"
    tgz.write_bytes(tgz.read_bytes()[:40])  # cut inside the compressed stream
    data_dir = tmp_path / "data"
    rc, err = _run_cli(["download", "ptb", "--data_dir", str(data_dir)], capfd)
    assert rc == 2 and len(err) == 1 and "is not a readable .tgz archive" in err[0], err
    assert not list((data_dir / "ptb").iterdir())
