"""Tests of the PTB pipeline: Zaremba batching, tokenization/vocab, the TFDS builder, errors.

Real-data checks run only when the shared data folder (repo root/../shared/data) exists.
"""

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from lstm_research.data import files, ptb

REAL_DATA = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()
TRAIN_SHA = "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf"  # README


# ------------------------------------------------------------------------ Zaremba batching

def test_lm_batches_hand_example():
    # 21 tokens, batch 2 -> batch_len 10, token 20 dropped; rows [0..9] and [10..19];
    # epoch_size = (10 - 1) // 3 = 3.
    got = list(ptb.lm_batches(np.arange(21), batch_size=2, num_steps=3))
    expected = [
        ([[0, 1, 2], [10, 11, 12]], [[1, 2, 3], [11, 12, 13]]),
        ([[3, 4, 5], [13, 14, 15]], [[4, 5, 6], [14, 15, 16]]),
        ([[6, 7, 8], [16, 17, 18]], [[7, 8, 9], [17, 18, 19]]),
    ]
    assert len(got) == 3 == ptb.lm_num_batches(21, 2, 3)
    for (x, y), (ex, ey) in zip(got, expected):
        assert x.dtype == y.dtype == np.int32
        assert x.tolist() == ex and y.tolist() == ey


def test_lm_batches_stream_continuity():
    tokens = np.random.default_rng(0).integers(0, 50, size=1003).astype(np.int32)
    bs, ns = 4, 7
    batches = list(ptb.lm_batches(tokens, bs, ns))
    batch_len = 1003 // 4
    assert len(batches) == (batch_len - 1) // ns == ptb.lm_num_batches(1003, bs, ns)
    for x, y in batches:
        assert x.shape == y.shape == (bs, ns)
        assert np.array_equal(x[:, 1:], y[:, :-1])  # y is x shifted by one
    for (x0, y0), (x1, _) in zip(batches, batches[1:]):
        assert np.array_equal(y0[:, -1], x1[:, 0])  # last target = next batch's first input
    # each row of the concatenated inputs is a contiguous slice of the token stream
    xs = np.concatenate([x for x, _ in batches], axis=1)
    for r in range(bs):
        assert np.array_equal(xs[r], tokens[r * batch_len:r * batch_len + xs.shape[1]])


def test_lm_batches_resume_and_errors():
    t = np.arange(100)
    full = list(ptb.lm_batches(t, 3, 4))
    for k in range(len(full) + 1):
        rest = list(ptb.lm_batches(t, 3, 4, start=k))
        assert len(rest) == len(full) - k
        assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
                   for a, b in zip(rest, full[k:]))
    with pytest.raises(ValueError, match=r"start .*\[0, 8\].*9"):
        list(ptb.lm_batches(t, 3, 4, start=9))
    with pytest.raises(ValueError, match="epoch_size == 0"):
        list(ptb.lm_batches(np.arange(10), 5, 2))
    with pytest.raises(ValueError, match="num_steps"):
        list(ptb.lm_batches(t, 3, 0))


def test_lm_num_batches_ptb_train():
    # 929589 // 20 = 46479 columns; (46479 - 1) // 20 = 2323 batches per epoch
    assert ptb.lm_num_batches(929589, 20, 20) == 2323
    assert ptb.lm_num_batches(929589, 20, 35) == (46479 - 1) // 35 == 1327


# ------------------------------------------------------------------- tiny corpus, builder

TINY = {
    "ptb.train.txt": "the cat sat\nthe dog\n the cat \n",
    "ptb.valid.txt": "dog sat\n",
    "ptb.test.txt": "cat\n\n",
}


def write_corpus(root: Path, texts) -> dict:
    (root / "ptb").mkdir(parents=True, exist_ok=True)
    sums = {}
    for name, text in texts.items():
        (root / "ptb" / name).write_text(text)
        sums[name] = hashlib.sha256(text.encode()).hexdigest()
    return sums


def test_tiny_corpus_eos_and_vocab(tmp_path):
    sums = write_corpus(tmp_path / "data", TINY)
    d = ptb.load_ptb(data_dir=tmp_path / "data", tfds_dir=tmp_path / "tfds", checksums=sums)
    # counts: the 3, <eos> 3, cat 2, dog 1, sat 1 -> (-count, word) order; '<' < 't'
    assert d["vocab"] == ["<eos>", "the", "cat", "dog", "sat"]
    # the cat sat <eos> the dog <eos> the cat <eos>
    assert d["train"].dtype == np.int32
    assert d["train"].tolist() == [1, 2, 4, 0, 1, 3, 0, 1, 2, 0]
    assert d["valid"].tolist() == [3, 4, 0]
    assert d["test"].tolist() == [2, 0, 0]  # an empty line is just <eos>


def test_builder_is_a_tfds_dataset(tmp_path):
    sums = write_corpus(tmp_path / "data", TINY)
    b = ptb.ptb_builder(tmp_path / "data", tmp_path / "tfds", checksums=sums)
    assert b.is_prepared() and str(b.version) == "1.0.0"
    assert {k: v.num_examples for k, v in b.info.splits.items()} == \
        {"train": 3, "valid": 1, "test": 2}
    assert dict(b.info.metadata["source_sha256"]) == sums
    files_written = [p.name for p in Path(b.data_dir).iterdir()]
    assert any(".array_record" in n for n in files_written)
    src = b.as_data_source(split="train")
    assert [src[i]["text"] for i in range(3)] == [b"the cat sat\n", b"the dog\n", b" the cat \n"]


def test_cache_reused_and_separated_by_checksums(tmp_path):
    sums = write_corpus(tmp_path / "a", TINY)
    first = ptb.load_ptb(tmp_path / "a", tmp_path / "tfds", checksums=sums)
    shutil.rmtree(tmp_path / "a")  # the prepared cache no longer needs the raw files
    again = ptb.load_ptb(tmp_path / "a", tmp_path / "tfds", checksums=sums)
    assert again["train"].tolist() == first["train"].tolist()
    # other files (other checksums) in the same cache dir get their own dataset
    other = dict(TINY, **{"ptb.valid.txt": "sat sat\n"})
    sums2 = write_corpus(tmp_path / "b", other)
    d2 = ptb.load_ptb(tmp_path / "b", tmp_path / "tfds", checksums=sums2)
    assert d2["valid"].tolist() == [4, 4, 0]


def test_missing_file_error_names_file_and_sha(tmp_path):
    (tmp_path / "ptb").mkdir()
    with pytest.raises(files.DataError) as e:
        ptb.load_ptb(data_dir=tmp_path, tfds_dir=tmp_path / "tfds")
    msg = str(e.value)
    assert "Missing" in msg and str(tmp_path / "ptb" / "ptb.train.txt") in msg
    assert TRAIN_SHA in msg and "simple-examples.tgz" in msg


def test_corrupt_file_error_names_expected_and_got(tmp_path):
    sums = write_corpus(tmp_path, TINY)
    bad = dict(sums, **{"ptb.valid.txt": "0" * 64})
    with pytest.raises(files.DataError) as e:
        ptb.load_ptb(data_dir=tmp_path, tfds_dir=tmp_path / "tfds", checksums=bad)
    msg = str(e.value)
    assert "Checksum mismatch" in msg and "ptb.valid.txt" in msg
    assert "0" * 64 in msg and sums["ptb.valid.txt"] in msg
    # a PTB-named file with the wrong content fails against the known sha256 too
    with pytest.raises(files.DataError, match=TRAIN_SHA):
        ptb.load_ptb(data_dir=tmp_path, tfds_dir=tmp_path / "tfds2")


def test_out_of_vocabulary_word_is_an_error(tmp_path):
    sums = write_corpus(tmp_path, dict(TINY, **{"ptb.test.txt": "cat zebra\n"}))
    with pytest.raises(files.DataError, match=r"'zebra' of split 'test'"):
        ptb.load_ptb(tmp_path, tmp_path / "tfds", checksums=sums)


# ------------------------------------------------------------------------------ real data

@pytest.fixture(scope="module")
def real_ptb(tmp_path_factory):
    if not (REAL_DATA / "ptb").is_dir():
        pytest.skip(f"real PTB data not found at {REAL_DATA / 'ptb'}")
    return ptb.load_ptb(data_dir=REAL_DATA, tfds_dir=tmp_path_factory.mktemp("tfds"))


def test_real_ptb_counts(real_ptb):
    assert len(real_ptb["train"]) == 929589
    assert len(real_ptb["valid"]) == 73760
    assert len(real_ptb["test"]) == 82430
    assert len(real_ptb["vocab"]) == 10000 == len(set(real_ptb["vocab"]))


def test_real_ptb_matches_zaremba_reader(real_ptb):
    # Zaremba's reader.py: read().replace("\n", "<eos>").split(); vocab by (-count, word)
    import collections

    def read(split):
        return (REAL_DATA / "ptb" / f"ptb.{split}.txt").read_text().replace(
            "\n", "<eos>").split()

    train = read("train")
    pairs = sorted(collections.Counter(train).items(), key=lambda x: (-x[1], x[0]))
    word_to_id = {w: i for i, (w, _) in enumerate(pairs)}
    assert real_ptb["vocab"] == [w for w, _ in pairs]
    for split in ("train", "valid", "test"):
        ids = np.array([word_to_id[w] for w in read(split)], dtype=np.int32)
        assert np.array_equal(real_ptb[split], ids), split
