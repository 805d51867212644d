"""JSB Chorales as 88-key piano rolls (Boulanger-Lewandowski, Bengio & Vincent 2012 split).

Data: 382 four-part Bach chorales at quarter-note resolution, split 229 / 76 / 77
(train / valid / test) by Boulanger-Lewandowski et al. (2012), "Modeling Temporal Dependencies
in High-Dimensional Sequences"; the polyphonic-music data of Chung et al. (2014) and Greff et
al. (2015). File: ``jsb-chorales-quarter.json`` (a JSON object with keys ``train``, ``valid``,
``test``; each a list of chorales; each chorale a list of time steps; each time step the list
of sounding MIDI note numbers).

Piano roll: ``roll[t, midi - 21] = 1`` for every note sounding at step ``t``; the 88 columns
are the piano keys MIDI 21 (A0) .. 108 (C8).

:class:`JsbChorales` is a TFDS builder (one example per chorale, original order,
``array_record``, no TensorFlow needed) over ``<data_dir>/jsb_chorales``; :func:`load_jsb` is
the simple API, :func:`jsb_batches` a deterministic, resumable epoch iterator.
"""

from __future__ import annotations

import json
import math
import numbers
from typing import Iterator, Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds

from lstm_research.data import files
from lstm_research.data.arrays import check_int, pad_batch
from lstm_research.data._tfds_util import VerifiedManualBuilder, prepared_builder, read_split

SPLITS = ("train", "valid", "test")
JSON_FILE = "jsb-chorales-quarter.json"
N_KEYS = 88
MIDI_LOW, MIDI_HIGH = 21, 108

_CITATION = """\
@inproceedings{boulanger2012modeling,
  title={Modeling Temporal Dependencies in High-Dimensional Sequences: Application to
         Polyphonic Music Generation and Transcription},
  author={Boulanger-Lewandowski, Nicolas and Bengio, Yoshua and Vincent, Pascal},
  booktitle={ICML}, year={2012}}
"""


def notes_to_pianoroll(steps: Sequence[Sequence[int]]) -> np.ndarray:
    """``[T, 88]`` float32 piano roll: ``roll[t, m - 21] = 1`` for each MIDI note ``m`` in
    ``steps[t]``. Notes must be integers in 21..108 (ValueError naming the note and step)."""
    roll = np.zeros((len(steps), N_KEYS), dtype=np.float32)
    for t, step in enumerate(steps):
        for note in step:
            if isinstance(note, bool) or not isinstance(note, numbers.Real) or \
                    not math.isfinite(note) or note != int(note):
                raise ValueError(f"note {note!r} at time step {t} is not an integer MIDI number")
            if not MIDI_LOW <= note <= MIDI_HIGH:
                raise ValueError(f"note {note!r} at time step {t} is outside the 88-key piano "
                                 f"range MIDI {MIDI_LOW}..{MIDI_HIGH}")
            roll[t, int(note) - MIDI_LOW] = 1.0
    return roll


class JsbChorales(VerifiedManualBuilder):
    """TFDS builder for JSB Chorales: one example per chorale,
    ``{"pianoroll": uint8 [T, 88], "index": position in the JSON split}``, in file order.

    Manual dir: the data dir's ``jsb_chorales/`` folder holding ``jsb-chorales-quarter.json``
    (sha256 verified before reading). Splits: ``train``, ``valid``, ``test``.
    """

    name = "lstm_research_jsb_chorales"
    KNOWN_SUBDIR = "jsb_chorales"
    LABEL = files.DATASETS["jsb"].label
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Piano rolls of jsb-chorales-quarter.json, in file order."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put jsb-chorales-quarter.json (https://github.com/czhuang/JSB-Chorales-dataset) in "
        "<data_dir>/jsb_chorales/.")

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="JSB Chorales (Boulanger-Lewandowski et al. 2012 split), quarter-note "
                        "88-key piano rolls, column = MIDI note - 21.",
            features=tfds.features.FeaturesDict({
                "pianoroll": tfds.features.Tensor(shape=(None, N_KEYS), dtype=np.uint8),
                "index": tfds.features.Scalar(dtype=np.int32),
            }),
            homepage="http://www-etud.iro.umontreal.ca/~boulanni/icml2012",
            citation=_CITATION,
            disable_shuffling=True,
            metadata=tfds.core.MetadataDict(source_sha256=self.checksums),
        )

    def _split_generators(self, dl_manager):
        path = self.verified_manual_files(dl_manager.manual_dir)[JSON_FILE]
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        missing = [s for s in SPLITS if s not in data]
        if missing:
            raise files.DataError(f"{path} lacks split(s) {missing}; found keys {sorted(data)}")
        return {split: self._generate_examples(data[split]) for split in SPLITS}

    def _generate_examples(self, chorales):
        for i, steps in enumerate(chorales):
            yield i, {"pianoroll": notes_to_pianoroll(steps).astype(np.uint8), "index": i}


def jsb_builder(data_dir=None, tfds_dir=None, checksums: Mapping[str, str] | None = None,
                download: bool = False) -> JsbChorales:
    """The JSB TFDS builder, prepared (built from ``<data_dir>/jsb_chorales`` if not cached).

    Arguments (data dir, TFDS cache dir, expected ``{file name: sha256}``, download missing
    files first) as in :func:`~lstm_research.data._tfds_util.prepared_builder`.
    """
    return prepared_builder(JsbChorales, data_dir, tfds_dir, checksums, download)


def load_jsb(data_dir=None, tfds_dir=None, checksums: Mapping[str, str] | None = None,
             download: bool = False) -> dict:
    """``dict(train=[...], valid=[...], test=[...])``: lists of ``[T, 88]`` float32 piano rolls
    in file order (229 / 76 / 77 on the real data). Arguments as in :func:`jsb_builder`."""
    builder = jsb_builder(data_dir, tfds_dir, checksums, download)
    out = {}
    for split in SPLITS:
        records = sorted(read_split(builder, split), key=lambda r: int(r["index"]))
        out[split] = [np.asarray(r["pianoroll"], dtype=np.float32) for r in records]
    return out


def jsb_epoch_order(n: int, rng_seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """Sequence order of one epoch: a permutation drawn from
    ``np.random.default_rng([rng_seed, epoch])`` (``arange(n)`` if not ``shuffle``), so it
    depends on (seed, epoch) only."""
    for name, v in (("n", n), ("rng_seed", rng_seed), ("epoch", epoch)):
        check_int(name, v, 0)
    if not shuffle:
        return np.arange(n)
    return np.random.default_rng([int(rng_seed), int(epoch)]).permutation(n)


def jsb_num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    batch_size = check_int("batch_size", batch_size)
    return n // batch_size if drop_last else -(-n // batch_size)


def jsb_batches(seqs: Sequence[np.ndarray], batch_size: int, rng_seed: int, epoch: int,
                start: int = 0, shuffle: bool = True, drop_last: bool = False,
                ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Padded batches ``(x [B, Tmax, 88], lengths [B])`` of one epoch in
    :func:`jsb_epoch_order` order; batch ``k`` holds ``order[k*batch_size:(k+1)*batch_size]``
    (the last one may be smaller unless ``drop_last``). ``start=k`` resumes at batch ``k``:
    a resumed run sees exactly the batches it would have seen."""
    n_batches = jsb_num_batches(len(seqs), batch_size, drop_last)
    check_int("start", start, 0, n_batches)
    order = jsb_epoch_order(len(seqs), rng_seed, epoch, shuffle)
    for k in range(int(start), n_batches):
        yield pad_batch([seqs[i] for i in order[k * batch_size:(k + 1) * batch_size]])
