"""Packed trials (training/pack.py): K trials in one vmapped program give each trial's result of
a run alone through the Trainer (relative 1e-5), for every axis a pack may mix; a pack resumes
from its checkpoint; what cannot share a program is refused by name."""
import json

import numpy as np
import pytest

from lstm_research.errors import UserError
from lstm_research.training.loop import NonFiniteLoss, Trainer
from lstm_research.models.width import embed
from lstm_research.training.pack import FAILURE_JSON, PackTrainer, pack_conflict

from conftest import small_config

RTOL = 1e-5


def config(task="adding", overrides=(), **task_kw):
    c = small_config(task, steps=60, eval_every=5, log_every=5, **task_kw)
    c.train.optimizer = "nesterov"
    c.train.lr = 1e-2
    c.train.patience = 2
    c.model.cell = "vanilla"  # Greff's vanilla LSTM, with peepholes
    for key, value in dict(overrides).items():
        node = c
        *path, last = key.split(".")
        for p in path:
            node = node[p]
        node[last] = value
    return c


def records(workdir, split):
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == split]


def assert_same_run(packed_dir, alone_dir, packed, alone, what):
    """The packed trial's result and validation curve are the lone run's (relative 1e-5)."""
    assert packed["best_step"] == alone["best_step"], what
    assert packed["steps"] == alone["steps"], what
    assert packed["stopped"] == alone["stopped"], what
    assert packed["num_params"] == alone["num_params"], what
    for split in ("valid", "test"):
        for k, v in alone[split].items():
            np.testing.assert_allclose(packed[split][k], v, rtol=RTOL, atol=1e-7,
                                       err_msg=f"{what}: {split} {k}")
    a, b = records(packed_dir, "valid"), records(alone_dir, "valid")
    assert [r["step"] for r in a] == [r["step"] for r in b], what
    np.testing.assert_allclose([r["mse" if "mse" in r else "ce"] for r in a],
                               [r["mse" if "mse" in r else "ce"] for r in b], rtol=RTOL,
                               err_msg=what)


#: each trial differs from the first in one axis a pack may mix (adding task, T = 10)
AXES = {
    "base": {},
    "seed": {"seed": 3},
    "lr and momentum": {"train.lr": 3e-2, "train.momentum": 0.5},
    "weight decay and clipping": {"train.weight_decay": 1e-3, "train.clip_norm": 0.5},
    "schedule": {"train.schedule": "cosine"},
    "init scheme": {"train.init": "uniform", "train.init_scale": 0.2},
    "input noise": {"train.input_noise": 0.3},
    "initial gate bias": {"model.cell": "vanilla:forget_bias=1"},
    "width": {"model.hidden_size": 5},
    "wider": {"model.hidden_size": 12},
    "patience": {"train.patience": 4},
    "diverges": {"train.lr": 30.0},
}


def test_pack_equals_runs_alone_on_every_axis(tmp_path):
    task_kw = dict(T=10, batch_size=8, eval_size=32)
    configs = [config("adding", o, **task_kw) for o in AXES.values()]
    dirs = [tmp_path / f"packed_{k}" for k in range(len(AXES))]
    results = PackTrainer(configs, dirs, tmp_path / "pack", progress=False).run()
    stops = set()
    for k, (what, overrides) in enumerate(AXES.items()):
        alone_dir = tmp_path / f"alone_{k}"
        if what == "diverges":
            with pytest.raises(NonFiniteLoss, match=r"at step (\d+)") as e:
                Trainer(config("adding", overrides, **task_kw), alone_dir, progress=False).run()
            failure = json.loads((dirs[k] / FAILURE_JSON).read_text())
            assert results[k] is None and f"at step {failure['step']};" in str(e.value)
            assert not (dirs[k] / "result.json").exists()
            continue
        alone = Trainer(config("adding", overrides, **task_kw), alone_dir, progress=False).run()
        assert_same_run(dirs[k], alone_dir, results[k], alone, what)
        stops.add(alone["steps"])
    assert len(stops) > 1, "the trials should stop at different evaluations"
    # the trials really differ (patience 4 keeps the base's best checkpoint, at a later stop)
    tests = [r["test"]["mse"] for what, r in zip(AXES, results) if r and what != "patience"]
    assert len(set(tests)) == len(tests)
    assert results[list(AXES).index("patience")]["steps"] > results[0]["steps"]


def test_pack_of_widths_with_gate_recurrence_on_variable_lengths(tmp_path):
    """FGR (gates fed back into gates: the padded gates are 0.5, not 0) on variable-length
    batches (temporal order), widths 6 and 9, through the fused layer."""
    task_kw = dict(batch_size=8, eval_size=16)
    overrides = [{"model.cell": "fgr", "model.hidden_size": 6},
                 {"model.cell": "fgr", "model.hidden_size": 9, "seed": 1}]
    configs = [config("temporal_order", o, **task_kw) for o in overrides]
    for c in configs:
        c.train.steps, c.train.patience = 20, 0
    dirs = [tmp_path / f"p{k}" for k in range(2)]
    results = PackTrainer(configs, dirs, tmp_path / "pack", progress=False).run()
    for k, o in enumerate(overrides):
        c = config("temporal_order", o, **task_kw)
        c.train.steps, c.train.patience = 20, 0
        alone = Trainer(c, tmp_path / f"a{k}", progress=False).run()
        assert_same_run(dirs[k], tmp_path / f"a{k}", results[k], alone, f"fgr width {o}")


def test_pack_of_dropout_rates(tmp_path):
    """Two layers: dropout between them, input and recurrent dropout, each rate its own trial's
    (a trial without dropout runs in a program that has it, with rate 0)."""
    task_kw = dict(T=10, batch_size=8, eval_size=32)
    overrides = [{}, {"model.dropout": 0.3},
                 {"model.input_dropout": 0.2, "model.recurrent_dropout": 0.1, "seed": 1}]

    def make(o):
        c = config("adding", {"model.num_layers": 2, **o}, **task_kw)
        c.train.steps, c.train.patience = 20, 0
        return c
    dirs = [tmp_path / f"p{k}" for k in range(3)]
    results = PackTrainer([make(o) for o in overrides], dirs, tmp_path / "pack",
                          progress=False).run()
    for k, o in enumerate(overrides):
        alone = Trainer(make(o), tmp_path / f"a{k}", progress=False).run()
        assert_same_run(dirs[k], tmp_path / f"a{k}", results[k], alone, f"dropout {o}")


def test_trials_with_the_same_evaluation_data_share_one_copy(tmp_path):
    """Trials whose validation and test batches are the same (one seed here; any seed on a real
    data set) are evaluated on one copy of them, with the same results."""
    task_kw = dict(T=10, batch_size=8, eval_size=32)
    overrides = [{}, {"train.lr": 3e-2, "model.hidden_size": 6}]

    def make(o):
        c = config("adding", o, **task_kw)
        c.train.steps, c.train.patience = 20, 0
        return c
    dirs = [tmp_path / f"p{k}" for k in range(2)]
    trainer = PackTrainer([make(o) for o in overrides], dirs, tmp_path / "pack", progress=False)
    results = trainer.run()
    assert trainer._shared_split("valid") and trainer._shared_split("test")
    for k, o in enumerate(overrides):
        alone = Trainer(make(o), tmp_path / f"a{k}", progress=False).run()
        assert_same_run(dirs[k], tmp_path / f"a{k}", results[k], alone, f"shared eval {o}")


def test_killed_pack_resumes_to_the_same_results(tmp_path, monkeypatch):
    task_kw = dict(T=10, batch_size=8, eval_size=32)
    overrides = [{}, {"seed": 1, "model.hidden_size": 6, "train.lr": 3e-2}]

    def configs():
        out = [config("adding", o, **task_kw) for o in overrides]
        for c in out:
            c.train.steps, c.train.patience = 30, 0
        return out

    whole = PackTrainer(configs(), [tmp_path / "w0", tmp_path / "w1"], tmp_path / "wp",
                        progress=False).run()
    stopped = PackTrainer(configs(), [tmp_path / "r0", tmp_path / "r1"], tmp_path / "rp",
                          progress=False)
    real_validate = PackTrainer._validate

    def validate_then_sigterm(self, arrays, meta):
        real_validate(self, arrays, meta)
        if meta["step"] == 15:
            self._stop_requested = True
    monkeypatch.setattr(PackTrainer, "_validate", validate_then_sigterm)
    assert stopped.run() == []
    assert not (tmp_path / "r0" / "result.json").exists()
    monkeypatch.setattr(PackTrainer, "_validate", real_validate)
    resumed = PackTrainer(configs(), [tmp_path / "r0", tmp_path / "r1"], tmp_path / "rp",
                          progress=False).run()
    for k in range(2):
        assert resumed[k]["test"] == whole[k]["test"]
        assert resumed[k]["valid"] == whole[k]["valid"]
        assert ((tmp_path / f"r{k}" / "metrics.jsonl").read_text()
                == (tmp_path / f"w{k}" / "metrics.jsonl").read_text())


def test_what_changes_the_program_is_refused_by_name():
    base = config("adding", T=10)
    assert pack_conflict([base, config("adding", {"seed": 1, "train.lr": 0.1,
                                                  "model.hidden_size": 20}, T=10)]) is None
    msg = pack_conflict([base, config("adding", {"model.num_layers": 2}, T=10)])
    assert msg.startswith("model.num_layers differs")
    msg = pack_conflict([base, config("adding", {"model.cell": "nfg"}, T=10)])
    assert msg.startswith("model.cell differs")
    dropout = {"model.num_layers": 2, "model.dropout": 0.1}
    msg = pack_conflict([config("adding", dropout, T=10),
                         config("adding", {**dropout, "model.hidden_size": 9}, T=10)])
    assert msg.startswith("model.hidden_size differs") and "model.dropout=0.1" in msg
    with pytest.raises(UserError, match="train.epochs|train.steps"):
        other = config("adding", {"train.steps": 10}, T=10)
        PackTrainer([base, other], ["/nonexistent/a", "/nonexistent/b"], "/nonexistent/p")


def test_embed_pads_each_gate_block():
    """[I, 3W] gate-stacked -> [I, 3Hp] with each gate's block padded by zeros on its own."""
    W, Hp = 2, 4
    small = {"w": np.arange(6, dtype=np.float32).reshape(1, 6), "v": np.ones((W,), np.float32)}
    big = {"w": np.zeros((1, 12), np.float32), "v": np.zeros((Hp,), np.float32)}
    out = embed(small, big, W, Hp)
    np.testing.assert_array_equal(out["w"], [[0, 1, 0, 0, 2, 3, 0, 0, 4, 5, 0, 0]])
    np.testing.assert_array_equal(out["v"], [1, 1, 0, 0])
