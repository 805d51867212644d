"""K vmapped trials in one program give the results of K separate runs."""
import numpy as np
import pytest

from lstm_research.training.loop import Trainer
from lstm_research.training.vmap import VmapTrainer

from conftest import small_config


def config(task="adding", **task_kw):
    return small_config(task, steps=20, eval_every=10, lr=3e-3, **task_kw)


def _close(a, b):
    for split in ("valid", "test"):
        for k, v in a[split].items():
            np.testing.assert_allclose(v, b[split][k], rtol=2e-4, atol=1e-6, err_msg=f"{split} {k}")
    assert a["best_step"] == b["best_step"]


@pytest.mark.parametrize("mode", ["seeds", "lrs"])
def test_vmap_trials_equal_separate_runs(tmp_path, mode):
    c = config("adding", T=10, batch_size=16, eval_size=64)
    with c.unlocked():
        if mode == "seeds":
            c.train.vmap_trials = 3
        else:
            c.train.vmap_lrs = "1e-3,1e-2"
    results = VmapTrainer(c, tmp_path / "vmap", progress=False).run()
    for k, r in enumerate(results):
        single = config("adding", T=10, batch_size=16, eval_size=64)
        if mode == "seeds":
            single.seed = k
        else:
            single.train.lr = [1e-3, 1e-2][k]
        _close(r, Trainer(single, tmp_path / f"single{k}", progress=False).run())
    # the trials really differ from one another
    assert results[0]["test"]["mse"] != results[1]["test"]["mse"]


def test_vmap_trials_on_padded_variable_length_batches(tmp_path):
    """temporal order: each trial's batches have their own lengths, padded to a common T."""
    c = config("temporal_order", batch_size=8, eval_size=16)
    c.train.steps = 10
    c.train.vmap_trials = 2
    results = VmapTrainer(c, tmp_path / "vmap", progress=False).run()
    for k, r in enumerate(results):
        single = config("temporal_order", batch_size=8, eval_size=16)
        single.train.steps = 10
        single.seed = k
        _close(r, Trainer(single, tmp_path / f"s{k}", progress=False).run())


def test_vmap_refuses_early_stopping(tmp_path):
    c = config()
    c.train.vmap_trials = 2
    c.train.patience = 3
    with pytest.raises(ValueError, match="patience"):
        VmapTrainer(c, tmp_path, progress=False)
