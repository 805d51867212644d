"""Every experiment config under configs/ (each variant) builds its task and model and
initializes parameters; the paper configs keep the protocol numbers their docstrings state."""
import importlib.util
from pathlib import Path

import jax
import numpy as np
import pytest

from lstm_research.data.files import DataError
from lstm_research import models, tasks

ROOT = Path(__file__).resolve().parents[1]


def _module(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _cases():
    for path in sorted((ROOT / "configs").rglob("*.py")):
        for v in getattr(_module(path), "VARIANTS", None) or (None,):
            yield pytest.param(path, v, id=f"{path.relative_to(ROOT)}:{v}" if v else str(path.relative_to(ROOT)))


@pytest.mark.parametrize("path,variant", list(_cases()))
def test_config_builds_task_and_model(path, variant, tmp_path):
    mod = _module(path)
    config = mod.get_config(variant) if variant else mod.get_config()
    assert _num_params(config) > 0


def _num_params(config):
    """Builds the task and model of ``config`` and counts parameters (shapes only)."""
    try:
        task = tasks.build(config.task, config.seed)
    except DataError as e:  # PTB / JSB files absent on this machine
        pytest.skip(str(e))
    model = models.build(config.model, task)
    batch = next(iter(task.train_batches(0)))
    shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, None, batch.get("lengths")),
                            batch["x"])
    return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(shapes["params"]))


def test_unknown_variant_names_the_choices():
    for name in ("hochreiter1997", "gers2000", "chung2014", "jozefowicz2015"):
        mod = _module(ROOT / "configs" / "papers" / f"{name}.py")
        with pytest.raises(ValueError, match="valid"):
            mod.get_config("nonsense")


def test_chung2014_sizes_give_about_20k_parameters():
    """The paper's Table 1 sizes: tanh RNN 100, GRU 46, LSTM 36 units; the counts by hand
    (recurrent layer with peepholes for the LSTM, plus the 88-way sigmoid output layer)."""
    mod = _module(ROOT / "configs" / "papers" / "chung2014.py")
    for variant, (cell, hidden) in mod.VARIANTS.items():
        gates = {"vanilla": 4, "gru_cho": 3, "elman": 1}[cell]
        peepholes = 3 * hidden if cell == "vanilla" else 0
        by_hand = gates * hidden * (88 + hidden + 1) + peepholes + hidden * 88 + 88
        assert _num_params(mod.get_config(variant)) == by_hand, variant
        assert 18_000 <= by_hand <= 28_000, (variant, by_hand)
