"""Padded units (``model.width_multiple``, lstm_research/models/width.py): a run padded to a wider
width equals the run at its own width up to float rounding, its padded units stay exactly zero,
the widths of a bucket share one compiled program, a pack of padded trials equals those trials
alone, and configs where padding would not be exact are refused by name."""
import json

import jax
import numpy as np
import pytest

from lstm_research.errors import UserError
from lstm_research.models import width
from lstm_research.models.width import embed, padded_width
from lstm_research.training import loop, steps
from lstm_research.training.checkpoint import Checkpoints
from lstm_research.training.loop import Trainer
from lstm_research.training.pack import PackTrainer
from lstm_research.training.validate import validate_config

from conftest import small_config

RTOL = 1e-5


def config(task="reber", cell="vanilla", width=5, multiple=8, **train):
    c = small_config(task, steps=30, eval_every=10, hidden_size=width)
    c.model.cell, c.model.width_multiple = cell, multiple
    c.train.optimizer, c.train.lr, c.train.input_noise = "nesterov", 0.05, 0.2
    c.train.weight_decay, c.train.clip_norm = 1e-3, 1.0
    c.train.update(train)
    return c


def curve(workdir, metric="nll"):
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [(r["step"], r[metric]) for r in map(json.loads, lines) if r["split"] == "valid"]


def final_params(c, workdir):
    like = Trainer(c, workdir / "_like", progress=False).init_state()[0]
    arrays, _ = Checkpoints(workdir).restore_latest(like)
    return jax.tree.map(np.asarray, arrays["params"])


def assert_same_run(padded_dir, own_dir, padded, own):
    assert padded["num_params"] == own["num_params"]
    assert padded["best_step"] == own["best_step"]
    for split in ("valid", "test"):
        for k, v in own[split].items():
            np.testing.assert_allclose(padded[split][k], v, rtol=RTOL, err_msg=f"{split} {k}")
    a, b = curve(padded_dir, own["metric"]), curve(own_dir, own["metric"])
    assert [s for s, _ in a] == [s for s, _ in b]
    np.testing.assert_allclose([v for _, v in a], [v for _, v in b], rtol=RTOL)


CASES = {
    # per-step head on variable-length strings (the fused layer's visited chunks)
    "vanilla": dict(cell="vanilla"),
    # FGR: a padded unit's gates are 0.5, not 0, and feed the real gates through w_gates; only
    # the gradient mask keeps those rows at zero. Several updates per call (the chunked step).
    "fgr, 4 updates per call": dict(cell="fgr", steps_per_call=4),
    "cifg, identity output": dict(cell="cifg:output_activation=identity"),
    # two layers (the second's inputs are padded too), state carried across batches (and
    # through evaluation streams of 2,000 symbols, not the task's 100,000: this case took 41 s
    # with those, 19 s now)
    "2 layers, carried state": dict(task="continual_reber", cell="lstm:forget_bias=1",
                                    num_layers=2, eval_length=2000),
    # bidirectional: the second layer and the head read two blocks of units (the shared init
    # drew them as one: other bits than the run at its own width); Adam
    "2 layers, bidirectional, adam": dict(task="adding", num_layers=2, bidirectional=True,
                                          optimizer="adam", lr=0.01),
}


@pytest.mark.parametrize("case", CASES)
def test_a_padded_run_equals_the_run_at_its_own_width(tmp_path, case):
    kw = dict(CASES[case])
    task, num_layers = kw.pop("task", "reber"), kw.pop("num_layers", 1)
    eval_length, bidirectional = kw.pop("eval_length", None), kw.pop("bidirectional", False)
    runs = {}
    for multiple in (1, 8):
        c = config(task, multiple=multiple, **kw)
        c.model.num_layers, c.model.bidirectional = num_layers, bidirectional
        if eval_length:
            c.task.eval_length = eval_length
        runs[multiple] = c, tmp_path / f"m{multiple}"
        runs[multiple] += (Trainer(c, runs[multiple][1], progress=False).run(),)
    (c1, d1, own), (c8, d8, padded) = runs[1], runs[8]
    assert_same_run(d8, d1, padded, own)
    small, big = final_params(c1, d1), final_params(c8, d8)
    real = embed(jax.tree.map(np.ones_like, small), big, 5, 8)
    assert jax.tree.map(np.shape, big) != jax.tree.map(np.shape, small)  # it did run padded
    for b, s, m in zip(*map(jax.tree.leaves, (big, embed(small, big, 5, 8), real))):
        assert np.all(b[m == 0] == 0), "a padded unit's parameter moved"
        np.testing.assert_allclose(b, s, rtol=RTOL, atol=1e-6)


def test_the_widths_of_a_bucket_share_one_compiled_program(tmp_path):
    results = [Trainer(config(width=w), tmp_path / f"w{w}", progress=False).run()
               for w in (5, 7, 8)]
    keys = {loop._steps_key(config(width=w)) for w in (5, 7, 8)}
    assert len(keys) == 1
    (jitted,) = [loop._STEPS[k] for k in keys]
    assert len(jitted[3].executables) == 1  # the train step, compiled once for the three widths
    assert [r["num_params"] for r in results] == sorted({r["num_params"] for r in results})
    assert padded_width(config(width=9).model) == 16
    assert loop._steps_key(config(width=9)) not in keys


def test_a_pack_of_padded_trials_equals_each_trial_alone(tmp_path):
    widths = (5, 11)
    configs = [config(width=w) for w in widths]
    for c in configs:
        c.train.patience = 0
    dirs = [tmp_path / f"p{w}" for w in widths]
    packed = PackTrainer(configs, dirs, tmp_path / "pack", progress=False).run()
    for c, d, p in zip(configs, dirs, packed):
        own = Trainer(c, d.with_name(d.name + "_alone"), progress=False).run()
        assert_same_run(d, d.with_name(d.name + "_alone"), p, own)


def test_a_packed_trial_starts_from_the_bits_of_the_trial_alone(tmp_path):
    """A pack initializes each trial through the program the trial alone runs (one per width
    bucket), so that above 128 units too, where the bucket's QR rounds otherwise than the
    width's own, a packed trial starts from the same bits, embedded at the pack's width."""
    widths = (137, 150)  # buckets 144 and 152: the pack runs at 152
    configs = [config(width=w) for w in widths]
    pack = PackTrainer(configs, [tmp_path / f"p{w}" for w in widths], tmp_path / "pack",
                       progress=False)
    arrays, _, masks = pack._initial_state()
    for k, (c, w) in enumerate(zip(configs, widths)):
        alone = _init_params(c, tmp_path / f"a{w}")
        ones = jax.tree.map(np.ones_like, _init_params(width.unpadded(c), tmp_path / f"o{w}"))
        big = jax.tree.map(lambda x: x[k], arrays["params"])
        expected = embed(alone, big, padded_width(c.model), 152)
        for (path, b), e in zip(jax.tree_util.tree_leaves_with_path(big),
                                jax.tree.leaves(expected)):
            np.testing.assert_array_equal(b, e, err_msg=f"width {w}: {jax.tree_util.keystr(path)}")
        for m, o in zip(jax.tree.leaves(jax.tree.map(lambda x: x[k], masks)),
                        jax.tree.leaves(embed(ones, big, w, 152))):
            np.testing.assert_array_equal(m, o)


def _init_params(c, workdir):
    t = Trainer(c, workdir, progress=False)
    return jax.tree.map(np.asarray, steps.init_arrays(c, t.task, t.model, t.tx, t.mesh,
                                                      t.apply)["params"])


@pytest.mark.parametrize("case", [
    dict(cell="vanilla", widths=(9, 13, 16)),
    dict(cell="fgr", widths=(11, 14)),
    dict(cell="cifg:output_activation=identity", widths=(10,)),
    dict(cell="nig", widths=(12,)),
    # two layers: the second layer's inputs are the traced width too; the adding task's
    # sequence-to-one head
    dict(cell="np", widths=(9, 15), num_layers=2, task="adding"),
])
def test_one_init_program_draws_each_width_of_its_bucket_as_the_width_alone(tmp_path, case):
    """The widths of a bucket are initialized by one program, the width a traced input
    (models.width.with_init_width): each gets the bits of the model at its own width, embedded
    with zeros (the per-width program and ``embed``, as before)."""
    steps.forget_programs()
    for w in case["widths"]:
        bucket, own = (config(case.get("task", "reber"), case["cell"], w, m) for m in (8, 1))
        for c in (bucket, own):
            c.model.num_layers = case.get("num_layers", 1)
        t = Trainer(bucket, tmp_path / f"b{w}", progress=False)
        assert width.shared_init(bucket, t.task) is None
        big = _init_params(bucket, tmp_path / f"b{w}")
        small = embed(_init_params(own, tmp_path / f"o{w}"), big, w, 16)
        for (path, b), s in zip(jax.tree_util.tree_leaves_with_path(big), jax.tree.leaves(small)):
            np.testing.assert_array_equal(b, s, err_msg=f"width {w}: {jax.tree_util.keystr(path)}")
        # the gradient mask (from the shapes at 16 and 15 units): ones where embed puts the
        # width's own params
        ones = embed(jax.tree.map(np.ones_like, _init_params(own, tmp_path / f"o{w}")), big, w, 16)
        for m, o in zip(*map(jax.tree.leaves, (steps.grad_mask(bucket, t.task, t.model), ones))):
            np.testing.assert_array_equal(m, o)
    shared = [k for k in steps._INIT_PROGRAMS if k[0] == "bucket"]
    assert len(shared) == 1, shared  # one program for the bucket's widths


def test_above_128_units_the_shared_init_differs_only_by_the_qr_rounding(tmp_path):
    """Above 128 units LAPACK's blocked QR of the identity-completed draw rounds otherwise than
    the QR at the width itself (cells.base.orthogonal): the recurrent weights agree to 1e-5,
    every other array bit for bit."""
    bucket, own = config(width=137, multiple=8), config(width=137, multiple=1)
    big = _init_params(bucket, tmp_path / "b")
    small = embed(_init_params(own, tmp_path / "o"), big, 137, 144)
    for (path, b), s in zip(jax.tree_util.tree_leaves_with_path(big), jax.tree.leaves(small)):
        if jax.tree_util.keystr(path).endswith("['w_h']"):
            np.testing.assert_allclose(b, s, rtol=0, atol=1e-5)
            assert np.all(b[s == 0] == 0)
        else:
            np.testing.assert_array_equal(b, s)


@pytest.mark.parametrize("change, why", [
    ({"train.init": "uniform"}, "train.init='uniform'"),
    ({"model.width_multiple": 1}, "model.width_multiple=1"),
])
def test_where_one_init_program_cannot_serve_the_bucket_it_says_why(tmp_path, change, why):
    c = config()
    for key, value in change.items():
        section, field = key.split(".")
        c[section][field] = value
    t = Trainer(c, tmp_path, progress=False)
    assert why in width.shared_init(c, t.task)


@pytest.mark.parametrize("change, named", [
    ({"model.cell": "gru"}, "model.cell='gru'"),
    ({"model.cell": "vanilla:layer_norm=true"}, "layer norm"),
    ({"model.recurrent_dropout": 0.1}, "model.recurrent_dropout=0.1"),
    ({"model.zoneout": 0.1}, "model.zoneout=0.1"),
    ({"train.gate_stats": True}, "train.gate_stats=True"),
    ({"model.width_multiple": 0}, "model.width_multiple=0 must be an integer >= 1"),
])
def test_padding_where_it_is_not_exact_is_refused_by_name(change, named):
    c = config()
    for key, value in change.items():
        section, field = key.split(".")
        c[section][field] = value
    with pytest.raises(UserError, match="width_multiple") as e:
        validate_config(c)
    assert named in str(e.value)
