"""Penn Treebank word-level language model: Zaremba et al. 2014's small model by default
(``configs/ptb.py:medium`` and ``:large`` give the others; see configs/papers/zaremba2014.py)."""
from configs.papers.zaremba2014 import get_config as _zaremba


def get_config(variant="small"):
    return _zaremba(variant)
