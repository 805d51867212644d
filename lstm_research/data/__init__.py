"""Input pipelines: synthetic long-lag tasks (:mod:`.synthetic`) and real corpora
(:mod:`.ptb` Penn Treebank, :mod:`.jsb` JSB Chorales; these import tensorflow_datasets, which
works here without TensorFlow). File locations and checksums: :mod:`.files`."""

from lstm_research.data.files import DataError, verify_file

__all__ = ["DataError", "verify_file"]
