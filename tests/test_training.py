"""The experiment runner: resume equivalence, SIGTERM, NaN handling, workdir checks, schedules,
and the default run reaching its criterion."""
import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_research import visited
from lstm_research.errors import UserError
from lstm_research.training import base_config, optim, steps
from lstm_research.training.checkpoint import Checkpoints
from lstm_research.training.loop import NonFiniteLoss, Trainer, WorkdirMismatch

from conftest import small_config

ROOT = Path(__file__).resolve().parents[1]


def small_adding():
    return small_config("adding", T=12, batch_size=16, eval_size=64, steps=30, eval_every=10)


def small_stateful():
    """Continual Reber: state carried across batches, 2 layers with dropout (RNG per step)."""
    return small_config("continual_reber", batch_size=2, bptt=8, steps_per_epoch=6, eval_size=2,
                        eval_length=60, num_layers=2, dropout=0.2, steps=20, eval_every=5,
                        lr=1e-2)


class Crash(Exception):
    pass


def _crash_after(trainer, n_calls, how="raise"):
    real, count = trainer.train_step, [0]

    def step(*args):
        count[0] += 1
        out = real(*args)
        if count[0] == n_calls:
            if how == "raise":
                raise Crash()
            trainer._stop_requested = True  # what the SIGTERM handler does
        return out
    trainer.train_step = step


def _final_params(workdir, like):
    arrays, meta = Checkpoints(workdir).restore_latest(like)
    return arrays["params"], meta


@pytest.mark.parametrize("make_config", [small_adding, small_stateful])
def test_resume_after_crash_and_sigterm_gives_identical_results(tmp_path, make_config):
    config = make_config()
    ref = Trainer(config, tmp_path / "ref", progress=False)
    ref_result = ref.run()
    like = ref.init_state()[0]

    # crash (as by SIGKILL) at step 13: the checkpoint of step 10 is the latest
    t = Trainer(config, tmp_path / "crash", progress=False)
    _crash_after(t, 13)
    with pytest.raises(Crash):
        t.run()
    assert not (tmp_path / "crash" / "result.json").exists()
    resumed = Trainer(config, tmp_path / "crash", progress=False).run()

    # SIGTERM at step 7: saved at step 7, exits, resumes
    t = Trainer(config, tmp_path / "term", progress=False)
    _crash_after(t, 7, how="sigterm")
    assert t.run()["status"] == "interrupted"
    assert _final_params(tmp_path / "term", like)[1]["step"] == 7
    termed = Trainer(config, tmp_path / "term", progress=False).run()

    for other, wd in ((resumed, "crash"), (termed, "term")):
        assert other["valid"] == ref_result["valid"]
        assert other["test"] == ref_result["test"]
        assert other["steps"] == ref_result["steps"]
        p_ref, _ = _final_params(tmp_path / "ref", like)
        p_other, _ = _final_params(tmp_path / wd, like)
        for a, b in zip(jax.tree.leaves(p_ref), jax.tree.leaves(p_other)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        # the metrics log holds each step once, as in the uninterrupted run
        ref_lines = (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()
        other_lines = (tmp_path / wd / "metrics.jsonl").read_text().splitlines()
        strip = lambda ls: [{k: v for k, v in json.loads(l).items()} for l in ls]
        assert [r["step"] for r in strip(other_lines)] == [r["step"] for r in strip(ref_lines)]
        assert [r.get("loss") for r in strip(other_lines)] == [r.get("loss") for r in strip(ref_lines)]


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    config = small_adding()
    t = Trainer(config, tmp_path, progress=False)
    real, count = t.train_step, [0]

    def poisoned(params, opt_state, batch, carries, base_key, step, lr):
        count[0] += 1
        if count[0] > 12:
            params = jax.tree.map(lambda p: p * jnp.nan, params)
        return real(params, opt_state, batch, carries, base_key, step, lr)
    t.train_step = poisoned
    with pytest.raises(NonFiniteLoss, match="loss is nan at step 15"):
        t.run()
    arrays, meta = Checkpoints(tmp_path).restore_latest(Trainer(config, tmp_path).init_state()[0])
    assert meta["step"] == 10
    assert all(bool(jnp.isfinite(x).all()) for x in jax.tree.leaves(arrays["params"]))


def test_result_tests_the_best_checkpoint_not_the_last_step(tmp_path):
    """The test metrics of ``result.json`` are those of the best checkpoint's parameters (held
    in memory by the loop, not read back), not of the last step's."""
    t = Trainer(small_adding(), tmp_path, progress=False)
    t._is_better = lambda value, best: best is None  # the first evaluation stays the best
    result = t.run()
    assert (result["best_step"], result["steps"]) == (10, 30)
    ckpt = Checkpoints(tmp_path)
    like = {"params": t.init_state()[0]["params"]}
    best, meta = ckpt.restore_best(like)
    last, _ = ckpt.restore_latest(t.init_state()[0])
    assert meta["step"] == 10
    assert t.evaluate(best["params"], "test") == result["test"]
    assert t.evaluate(last["params"], "test") != result["test"]


@pytest.mark.parametrize("optimizer", ["nesterov", "rmsprop"])
def test_momentum_and_input_noise_are_inputs_of_the_compiled_step(tmp_path, optimizer):
    """Trials differing only in lr, momentum or input noise share one compiled train step (the
    lowered programs are equal), and a step taking them as inputs gives the same bits as the
    same step with them baked in as constants."""
    def trainer(momentum, noise, name):
        c = small_adding()
        c.train.optimizer, c.train.momentum, c.train.input_noise = optimizer, momentum, noise
        return Trainer(c, tmp_path / name, progress=False)
    a, b = trainer(0.9, 0.3, "a"), trainer(0.5, 0.7, "b")
    arrays, _ = a.init_state()
    batch = next(a.task.train_batches(0))
    batch.pop("reset", None)
    key = jax.random.key(3)

    def lowered(t):  # traced from the trainer's own config (not its shared jitted step)
        train_fn, _ = steps.make_steps(steps.make_apply(t.model, t.task, True), t.task,
                                       t.config.train)
        hyper = optim.runtime_hyperparams(t.config.train, 0.01)
        return jax.jit(steps.keyed_by_step(train_fn)).lower(
            arrays["params"], arrays["opt_state"], batch, None, key, np.int32(0), hyper).as_text()
    assert lowered(a) == lowered(b)
    assert a.train_step is b.train_step  # so the trainers share one jitted step

    hyper = optim.runtime_hyperparams(b.config.train, 0.01)
    copy = lambda: jax.tree.map(jnp.copy, (arrays["params"], arrays["opt_state"]))
    params, opt_state = copy()
    runtime = b.train_step(params, opt_state, batch, None, key, np.int32(0), hyper)
    baked = {"lr": 0.01, "momentum": 0.5, "input_noise": 0.7}  # Python floats: constants
    step = jax.jit(lambda p, o, bt, k: b.train_step_fn(p, o, bt, None, k, baked))
    params, opt_state = copy()
    const = step(params, opt_state, batch, jax.random.fold_in(key, 0))
    for x, y in zip(jax.tree.leaves(runtime[:2]), jax.tree.leaves(const[:2]), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert float(runtime[3]["loss"]) == float(const[3]["loss"])


def test_workdir_of_another_config_is_refused(tmp_path):
    config = small_adding()
    config.train.steps = 5
    Trainer(config, tmp_path, progress=False).run()
    other = small_adding()
    other.model.hidden_size = 9
    with pytest.raises(WorkdirMismatch, match="model.hidden_size"):
        Trainer(other, tmp_path, progress=False)
    result = Trainer(other, tmp_path, overwrite=True, progress=False).run()
    assert result["config"]["model"]["hidden_size"] == 9


@pytest.mark.parametrize("make", [small_adding, small_stateful])
def test_small_evaluation_splits_are_built_once(make, tmp_path, monkeypatch):
    """A split within EVAL_CACHE_BYTES is read from the task once and kept on the device: the
    next evaluations give the same metrics (stateful too: the reset flags are kept); above the
    bound every evaluation reads the task again."""
    from lstm_research.training import loop
    results = []
    for limit, passes in ((loop.EVAL_CACHE_BYTES, 1), (0, 3)):
        monkeypatch.setattr(loop, "EVAL_CACHE_BYTES", limit)
        t = Trainer(make(), tmp_path / str(limit), progress=False)
        arrays, _ = t.init_state()
        calls, read = [], t.task.eval_batches
        monkeypatch.setattr(t.task, "eval_batches", lambda split: calls.append(split) or read(split))
        results.append([t.evaluate(arrays["params"], "valid") for _ in range(3)])
        assert calls == ["valid"] * passes
    assert results[0] == results[1] and results[0][0] == results[0][2]


def test_length_groups_split_a_batch_longest_first_without_adding_rows():
    from lstm_research.training.batches import length_groups
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 30, size=77)
    batch = {"x": rng.normal(size=(77, 32, 3)), "y": rng.normal(size=(77, 32, 2)),
             "lengths": lengths, "flag": np.float32(1)}
    groups = length_groups(batch, 20)
    assert [g["x"].shape[0] for g in groups] == [11] * 7  # 77 = 7 x 11: no row added
    order = np.argsort(-lengths, kind="stable")
    for k in ("x", "y", "lengths"):
        np.testing.assert_array_equal(np.concatenate([g[k] for g in groups]), batch[k][order])
    assert all(g["flag"] is batch["flag"] for g in groups)
    assert np.all(np.diff(np.concatenate([g["lengths"] for g in groups])) <= 0)
    # no divisor of 53 (a prime) at least 10 and at most 20, and 20 rows are one group already
    assert length_groups({**batch, "x": batch["x"][:53]}, 20)[0]["x"].shape[0] == 53
    assert len(length_groups({k: batch[k][:20] for k in ("x", "lengths")}, 20)) == 1


def test_variable_length_evaluation_in_groups_gives_the_metrics_of_one_batch(tmp_path,
                                                                              monkeypatch):
    """On the CPU a model whose loops stop at a batch's longest sequence evaluates a
    variable-length batch in groups of its sequences (``loop.EVAL_GROUP_ROWS``), longest first:
    the metrics are those of the whole batch at once, including the task's per-string count."""
    from lstm_research import models
    from lstm_research.training import loop
    config = small_config("reber", eval_size=60, steps=5, eval_every=5)
    grouped = Trainer(config, tmp_path / "grouped", progress=False)
    assert models.length_free(grouped.model)
    params = grouped.init_state()[0]["params"]
    metrics = grouped.evaluate(params, "valid")
    rows = [b["lengths"].shape[0] for b, _ in grouped._eval_batches("valid")]
    assert rows == [loop.EVAL_GROUP_ROWS] * 3
    monkeypatch.setattr(loop, "EVAL_GROUP_ROWS", 1000)
    whole = Trainer(config, tmp_path / "whole", progress=False)
    assert [b["lengths"].shape[0] for b, _ in whole._eval_batches("valid")] == [60]
    expected = whole.evaluate(params, "valid")
    # an untrained model gets every string wrong: 1.0 only if the groups count 60 strings
    assert metrics.keys() == expected.keys() and expected["string_error"] == 1.0
    for k in expected:
        np.testing.assert_allclose(metrics[k], expected[k], rtol=1e-6)


@pytest.mark.parametrize("longest", [0, 1, 31, 32, 33, 70, 128])
def test_input_noise_is_drawn_up_to_the_chunk_of_the_longest_sequence(longest):
    """``steps.with_noise``: x + std * N(0, 1) with jax.random's draw for the whole batch on
    the chunks of visited.CHUNK steps up to the longest sequence, the padding after untouched."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(3, 128, 5)).astype(np.float32))
    lengths = jnp.array([longest, longest // 2, 0])
    key, std = jax.random.key(4), np.float32(0.7)
    out = np.asarray(jax.jit(steps.with_noise)(key, x, std, lengths))
    drawn = min(128, max(1, -(-longest // visited.CHUNK)) * visited.CHUNK)
    expected = np.asarray(x + std * jax.random.normal(key, x.shape))
    np.testing.assert_allclose(out[:, :drawn], expected[:, :drawn], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(out[:, drawn:], np.asarray(x)[:, drawn:])
    # without lengths, all of it
    np.testing.assert_allclose(np.asarray(steps.with_noise(key, x, std)), expected, rtol=1e-6,
                               atol=1e-6)


def test_zero_carries_trace_the_model_once_per_batch_shape(tmp_path):
    """Zero carries of a stateful task: the shapes the model's forward pass gives, all zeros;
    the forward pass is traced for them once per shape of (params, batch), not at every reset."""
    t = Trainer(small_stateful(), tmp_path, progress=False)
    arrays, _ = t.init_state()
    traced = []

    def apply(*args, **kwargs):
        traced.append(1)
        return t.apply(*args, **kwargs)
    batch = next(t.task.train_batches(0))
    batch.pop("reset", None)
    expected = jax.eval_shape(lambda p, b: t.apply(p, b, None, False, None)[1],
                              arrays["params"], batch)
    for _ in range(3):
        carries = steps.zero_carries(apply, t.task, t.mesh, arrays["params"], batch)
        assert jax.tree.structure(carries) == jax.tree.structure(expected)
        for c, e in zip(jax.tree.leaves(carries), jax.tree.leaves(expected)):
            assert c.shape == e.shape and c.dtype == e.dtype and not np.asarray(c).any()
    assert len(traced) == 1
    wider = {k: np.concatenate([v, v]) for k, v in batch.items()}
    wide = steps.zero_carries(apply, t.task, t.mesh, arrays["params"], wider)
    assert len(traced) == 2
    assert jax.tree.leaves(wide)[0].shape[0] == 2 * jax.tree.leaves(carries)[0].shape[0]


def test_run_saved_before_a_key_was_retired_resumes(tmp_path):
    """A run saved by a version that still had ``train.vmap_trials``/``vmap_lrs`` (removed for
    sweep.py --pack) resumes when they were off there, and is another config when they were on."""
    config = small_adding()
    config.train.steps = 10
    Trainer(config, tmp_path, progress=False).run()
    saved = tmp_path / "config.json"
    record = json.loads(saved.read_text())
    record["train"].update(vmap_trials=0, vmap_lrs="")
    saved.write_text(json.dumps(record))
    config.train.steps = 20  # an extension of the saved run: it resumes from step 10
    assert Trainer(config, tmp_path, progress=False).run()["steps"] == 20
    record = json.loads(saved.read_text())
    record["train"].update(vmap_trials=4)
    saved.write_text(json.dumps(record))
    with pytest.raises(WorkdirMismatch, match="train.vmap_trials"):
        Trainer(config, tmp_path, progress=False)


def test_unknown_names_are_reported_with_choices(tmp_path):
    config = small_adding()
    config.model.cell = "lstmm"
    with pytest.raises(ValueError, match="unknown cell 'lstmm'; valid cells: vanilla"):
        Trainer(config, tmp_path / "a", progress=False)
    config = small_adding()
    config.train.optimizer = "adamw2"
    with pytest.raises(ValueError, match="valid: sgd, momentum, nesterov, adam, rmsprop"):
        Trainer(config, tmp_path / "b", progress=False)
    from lstm_research import tasks
    with pytest.raises(ValueError, match="unknown task 'addding'; valid tasks: adding"):
        tasks.default_config("addding")


def test_run_py_rejects_unknown_config_key(tmp_path):
    proc = subprocess.run([sys.executable, "run.py", "--config.model.hiden_size=3",
                           f"--workdir={tmp_path}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0
    assert "hiden_size" in proc.stderr


def test_zaremba_schedule_closed_form():
    c = base_config("adding").train
    c.schedule, c.lr, c.decay_after_epochs, c.decay_factor = "zaremba", 1.0, 4, 2.0
    lrs = [optim.learning_rate(c, e * 100, 100, 1300, 1.0) for e in range(7)]
    assert lrs == [1.0, 1.0, 1.0, 1.0, 0.5, 0.25, 0.125]


def test_uniform_init_draws_every_parameter_in_range():
    c = base_config("adding").train
    c.init, c.init_scale = "uniform", 0.05
    params = {"a": jnp.ones((30, 40)), "v": jnp.ones(40), "b": jnp.zeros(40)}
    out = optim.initialize(c, params, jax.random.key(0))
    for leaf in jax.tree.leaves(out):
        assert float(jnp.max(jnp.abs(leaf))) <= 0.05 and float(jnp.std(leaf)) > 0.02


@pytest.mark.parametrize("cell", ["lstm", "vanilla", "mogrifier"])
def test_uniform_init_keeps_the_cells_gate_bias_switches(tmp_path, cell):
    """Jozefowicz et al. 2015's LSTM-b under Zaremba's uniform init: ``forget_bias=1`` adds 1
    to the uniformly drawn b_f (it was silently dropped: the draw replaced every parameter).
    Against the same seed without the switches: b_f differs by exactly 1 (to float rounding),
    b_i by the input bias where the cell has one, and every other parameter is the same bits."""
    switches = "forget_bias=1" if cell == "mogrifier" else "forget_bias=1,input_bias=-2"

    def params(cell_string):
        c = small_config("adding", steps=1, eval_every=1, hidden_size=6, T=10)
        c.model.cell = cell_string
        c.train.init, c.train.init_scale = "uniform", 0.1
        workdir = tmp_path / cell_string.replace(":", "_")
        arrays = Trainer(c, workdir, progress=False).init_state()[0]
        return dict(jax.tree_util.tree_flatten_with_path(arrays["params"])[0])

    plain, biased = params(cell), params(f"{cell}:{switches}")
    assert plain.keys() == biased.keys()
    offsets = {"f": 1.0, "i": 0.0 if cell == "mogrifier" else -2.0}
    for path, p in plain.items():
        p, q = np.asarray(p), np.asarray(biased[path])
        if jax.tree_util.keystr(path).endswith("['b']"):  # gates (i, f, z, o), 6 units each
            assert np.abs(p).max() <= 0.1
            expected = p.reshape(4, 6) + np.array([offsets["i"], offsets["f"], 0, 0])[:, None]
            np.testing.assert_allclose(q.reshape(4, 6), expected, rtol=0, atol=1e-6)
        else:
            np.testing.assert_array_equal(p, q)


def test_default_adding_run_reaches_its_criterion_on_a_short_budget(tmp_path):
    """configs/adding.py with a shorter sequence (T=30) as the short budget: solved (test MSE
    far below the 1/6 of predicting the mean) within 1500 steps."""
    sys.path.insert(0, str(ROOT))
    from configs.adding import get_config
    config = get_config()
    config.task.T = 30
    config.train.steps = 1500
    result = Trainer(config, tmp_path, progress=False).run()
    assert result["test"]["mse"] < 0.01, result


def test_jsb_loss_norms_against_numpy():
    """mean_frame: NLL per predicted frame; sum_time: per-sequence sums, averaged over sequences.
    Both against Bernoulli NLLs summed over the 88 keys in NumPy, with one padded sequence."""
    from lstm_research.tasks.real import JSBChorales

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 5, 88)).astype(np.float32)
    y = (rng.random((2, 5, 88)) < 0.1).astype(np.float32)
    lengths = np.array([5, 3], np.int32)
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    per_frame = -(y * np.log(p) + (1 - y) * np.log(1 - p)).sum(-1)  # [2, 5]
    valid = np.arange(5)[None] < lengths[:, None]
    batch = {"y": y, "lengths": lengths}
    mean, stats = JSBChorales().loss(jnp.asarray(logits), batch)
    total, _ = JSBChorales(loss_norm="sum_time").loss(jnp.asarray(logits), batch)
    np.testing.assert_allclose(mean, per_frame[valid].mean(), rtol=1e-5)
    np.testing.assert_allclose(total, per_frame[valid].sum() / 2, rtol=1e-5)
    np.testing.assert_allclose(stats["nll"] / stats["frames"], per_frame[valid].mean(), rtol=1e-5)
    with pytest.raises(ValueError, match="'mean_frame', 'sum_time'"):
        JSBChorales(loss_norm="sum")


def test_pad_time_to_matches_numpy_pad():
    from lstm_research.training.batches import pad_time_at_least
    rng = np.random.default_rng(0)
    batch = {"x": rng.normal(size=(3, 7, 5)).astype(np.float32),
             "y": rng.integers(0, 9, size=(3, 7)), "lengths": np.array([7, 2, 5])}
    out = pad_time_at_least(batch, 40)  # 40 rounded up to the 32-step bucket: 64
    for k in ("x", "y"):
        pad = [(0, 0)] * batch[k].ndim
        pad[1] = (0, 64 - 7)
        ref = np.pad(batch[k], pad)
        assert out[k].dtype == ref.dtype
        np.testing.assert_array_equal(out[k], ref)
    assert out["lengths"] is batch["lengths"]


@pytest.mark.parametrize("cell", ["vanilla", "fgr"])
def test_several_updates_per_call_give_the_same_bits(tmp_path, cell):
    """``train.steps_per_call=4`` (up to 4 updates in one compiled call, never past an
    evaluation, an extra checkpoint or the end) gives the run of one call per update bit for bit:
    every logged loss and gradient norm, the validation curve, the result, the final params; and
    a SIGTERM after a call resumes to the same. Batch-1 variable-length data with input noise
    and Nesterov momentum, as in the Greff protocol; vanilla runs the fused layer (every batch
    padded to one length), FGR at width 8 the generic scan (batches bucketed by length: a call
    also ends where the shape changes)."""
    def trainer(steps_per_call, name):
        c = small_config("reber", batch_size=1, eval_size=20, steps=23, eval_every=7,
                         log_every=3, lr=0.05)
        c.model.cell, c.train.optimizer, c.train.input_noise = cell, "nesterov", 0.2
        c.train.checkpoint_every, c.train.steps_per_call = 5, steps_per_call
        return Trainer(c, tmp_path / name, progress=False)
    ref = trainer(1, "one")
    ref_result = ref.run()
    like = ref.init_state()[0]
    many = trainer(4, "many")
    calls = []
    real = many.train_steps

    def counted(*args):
        calls.append(int(args[3]))  # updates in this call
        return real(*args)
    many.train_steps = counted
    result = many.run()
    assert sum(calls) == 23 and max(calls) == 4 and len(calls) < 23
    t = trainer(4, "term")
    real_t, n = t.train_steps, [0]

    def stop_after_two(*args):
        n[0] += 1
        if n[0] == 2:
            t._stop_requested = True
        return real_t(*args)
    t.train_steps = stop_after_two
    assert t.run()["status"] == "interrupted"
    termed = trainer(4, "term").run()
    def read(wd):  # the metrics log without its timestamps
        rows = (tmp_path / wd / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(r).items() if k not in ("time", "wall_time")}
                for r in rows]
    for other, wd in ((result, "many"), (termed, "term")):
        assert (other["valid"], other["test"], other["steps"]) == (
            ref_result["valid"], ref_result["test"], ref_result["steps"])
        assert read(wd) == read("one")
        for a, b in zip(jax.tree.leaves(_final_params(tmp_path / "one", like)[0]),
                        jax.tree.leaves(_final_params(tmp_path / wd, like)[0])):
            np.testing.assert_array_equal(np.asarray(b), np.asarray(a))


def test_several_updates_per_call_refused_with_carried_state(tmp_path):
    c = small_stateful()
    c.train.steps_per_call = 3
    with pytest.raises(UserError, match=r"train.steps_per_call=3.*carried state.*steps_per_call=1"):
        Trainer(c, tmp_path, progress=False)


@pytest.mark.parametrize("optimizer", optim.OPTIMIZERS)
def test_init_state_equals_the_optimizers_own_init(optimizer):
    """optim.init_state (zeros of the traced shapes, the learning rate set) is tx.init exactly:
    same tree, dtypes, weak types and values, with clipping and weight decay in the chain too."""
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
              "b": jnp.asarray(rng.normal(size=5), jnp.float32)}
    for clip, decay in ((0.0, 0.0), (1.0, 1e-4)):
        c = base_config("adding")
        c.train.optimizer, c.train.clip_norm, c.train.weight_decay, c.train.lr = optimizer, clip, decay, 3e-3
        tx = optim.build_optimizer(c.train)
        want, got = tx.init(params), optim.init_state(tx, params, c.train.lr)
        assert jax.tree.structure(got) == jax.tree.structure(want)
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            g = jnp.asarray(g)
            assert (g.shape, g.dtype, g.weak_type) == (w.shape, w.dtype, w.weak_type)
            np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
