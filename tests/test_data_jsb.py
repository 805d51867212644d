"""Tests of the JSB Chorales pipeline: piano rolls, TFDS builder, padding, epoch order."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from lstm_research.data import files, jsb

REAL_DATA = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()
JSB_SHA = "2db9329f1881a1d3f49703ec556bf1d6f84b4f6c1d702c156536e93cf31e1c91"  # README


def test_notes_to_pianoroll_hand_example():
    # C major triad (60, 64, 67), a rest, the lowest and highest piano keys (A0=21, C8=108)
    roll = jsb.notes_to_pianoroll([[60, 64, 67], [], [21, 108]])
    assert roll.shape == (3, 88) and roll.dtype == np.float32
    assert np.flatnonzero(roll[0]).tolist() == [39, 43, 46]
    assert not roll[1].any()
    assert np.flatnonzero(roll[2]).tolist() == [0, 87]
    assert roll.sum() == 5
    assert jsb.notes_to_pianoroll([[60.0]])[0, 39] == 1.0  # integral floats are fine


@pytest.mark.parametrize("steps,match", [
    ([[60], [20]], r"note 20 at time step 1 is outside .*21\.\.108"),
    ([[109]], r"note 109 at time step 0"),
    ([[60.5]], r"note 60\.5 .* not an integer"),
    ([[60], [float("nan")]], r"note nan at time step 1 is not an integer"),
    ([[float("inf")]], r"note inf at time step 0 is not an integer"),
])
def test_notes_to_pianoroll_rejects_bad_notes(steps, match):
    with pytest.raises(ValueError, match=match):
        jsb.notes_to_pianoroll(steps)


TINY = {"train": [[[60], [62, 65]], [[70], [71], [72]]], "valid": [[[21]]],
        "test": [[[108], []]]}


def write_json(root: Path, obj) -> dict:
    (root / "jsb_chorales").mkdir(parents=True, exist_ok=True)
    text = json.dumps(obj)
    (root / "jsb_chorales" / jsb.JSON_FILE).write_text(text)
    return {jsb.JSON_FILE: hashlib.sha256(text.encode()).hexdigest()}


def roll_by_hand(steps):
    r = np.zeros((len(steps), 88), np.float32)
    for t, notes in enumerate(steps):
        r[t, [n - 21 for n in notes]] = 1
    return r


def test_tiny_json_through_tfds(tmp_path):
    sums = write_json(tmp_path / "data", TINY)
    d = jsb.load_jsb(tmp_path / "data", tmp_path / "tfds", checksums=sums)
    assert {k: len(v) for k, v in d.items()} == {"train": 2, "valid": 1, "test": 1}
    for split, seqs in TINY.items():
        for got, steps in zip(d[split], seqs):
            assert got.dtype == np.float32
            assert np.array_equal(got, roll_by_hand(steps))
    b = jsb.jsb_builder(tmp_path / "data", tmp_path / "tfds", checksums=sums)
    assert b.is_prepared() and str(b.version) == "1.0.0"
    assert b.info.features["pianoroll"].shape == (None, 88)


def test_missing_split_and_bad_checksum(tmp_path):
    sums = write_json(tmp_path, {"train": [], "valid": []})
    with pytest.raises(files.DataError, match=r"lacks split\(s\) \['test'\]"):
        jsb.load_jsb(tmp_path, tmp_path / "tfds", checksums=sums)
    with pytest.raises(files.DataError) as e:
        jsb.load_jsb(tmp_path, tmp_path / "tfds2")  # against the real file's sha256
    msg = str(e.value)
    assert "Checksum mismatch" in msg and jsb.JSON_FILE in msg and JSB_SHA in msg
    assert sums[jsb.JSON_FILE] in msg and "JSB-Chorales-dataset" in msg


def test_pad_batch():
    a = np.ones((2, 88), np.float32)
    b = np.full((4, 88), 0.5, np.float32)
    x, lengths = jsb.pad_batch([a, b])
    assert x.shape == (2, 4, 88) and x.dtype == np.float32
    assert lengths.tolist() == [2, 4] and lengths.dtype == np.int32
    assert np.all(x[0, :2] == 1) and np.all(x[0, 2:] == 0) and np.all(x[1] == 0.5)
    with pytest.raises(ValueError, match="at least one"):
        jsb.pad_batch([])
    with pytest.raises(ValueError, match="shapes"):
        jsb.pad_batch([np.ones((2, 88)), np.ones((2, 87))])


def _marked_seqs(n):
    # sequence i has length i % 7 + 1 and a single 1 at column i (identifiable)
    seqs = []
    for i in range(n):
        s = np.zeros((i % 7 + 1, 88), np.float32)
        s[0, i] = 1
        seqs.append(s)
    return seqs


def _ids(x):
    return x[:, 0].argmax(-1).tolist()


def test_jsb_batches_deterministic_and_resumable():
    seqs = _marked_seqs(50)
    run = lambda seed, epoch, start=0, **kw: list(jsb.jsb_batches(seqs, 8, seed, epoch, start, **kw))
    e0 = run(1, 0)
    assert len(e0) == 7 == jsb.jsb_num_batches(50, 8)
    ids = [i for x, _ in e0 for i in _ids(x)]
    assert sorted(ids) == list(range(50))  # every sequence exactly once
    assert ids == jsb.jsb_epoch_order(50, 1, 0).tolist()
    for x, lengths in e0:  # contents and lengths belong to the right sequences
        for row, i in enumerate(_ids(x)):
            assert lengths[row] == i % 7 + 1
            assert np.array_equal(x[row, :lengths[row]], seqs[i])
    assert [_ids(x) for x, _ in run(1, 0)] == [_ids(x) for x, _ in e0]
    assert [_ids(x) for x, _ in run(1, 1)] != [_ids(x) for x, _ in e0]
    assert [_ids(x) for x, _ in run(2, 0)] != [_ids(x) for x, _ in e0]
    assert [_ids(x) for x, _ in run(1, 0, 3)] == [_ids(x) for x, _ in e0[3:]]
    assert len(e0[-1][0]) == 2 and len(run(1, 0, drop_last=True)) == 6
    assert [i for x, _ in run(1, 0, shuffle=False) for i in _ids(x)] == list(range(50))
    with pytest.raises(ValueError, match=r"start .*\[0, 7\]"):
        run(1, 0, 8)


# ------------------------------------------------------------------------------ real data

@pytest.fixture(scope="module")
def real_jsb(tmp_path_factory):
    if not (REAL_DATA / "jsb_chorales").is_dir():
        pytest.skip(f"real JSB data not found at {REAL_DATA / 'jsb_chorales'}")
    return jsb.load_jsb(data_dir=REAL_DATA, tfds_dir=tmp_path_factory.mktemp("tfds"))


def test_real_jsb_sizes_and_contents(real_jsb):
    assert {k: len(v) for k, v in real_jsb.items()} == {"train": 229, "valid": 76, "test": 77}
    raw = json.loads((REAL_DATA / "jsb_chorales" / jsb.JSON_FILE).read_text())
    lengths = []
    for split in ("train", "valid", "test"):
        for got, steps in zip(real_jsb[split], raw[split]):
            assert np.array_equal(got, roll_by_hand(steps))
            assert got.sum(-1).max() <= 4  # four-part chorales
            lengths.append(len(got))
    assert 60 < np.mean(lengths) < 61  # README: mean length about 61 steps (60.56)
