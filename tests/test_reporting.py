"""Reporter: TensorBoard tags (one name per quantity), test metrics, steps per second and the
HParams session, read back from the event files; heartbeat lines without a terminal; the
training-loss-is-a-metric table against each task's own loss and summarize."""
import json

import jax
import numpy as np
import pytest
from conftest import tensorboard_events, tensorboard_scalars

from lstm_research import tasks
from lstm_research.console import HEARTBEAT_ENV
from lstm_research.tasks import TASKS
from lstm_research.training import base_config, reporting
from lstm_research.training.reporting import Reporter


def _result(config, steps=20):
    return {"steps": steps, "valid": {"mse": 0.25, "max_abs_error": 1.5},
            "test": {"mse": 0.5, "max_abs_error": 2.0},
            "config": json.loads(config.to_json_best_effort())}


def test_tensorboard_tags_test_metrics_and_hparams(tmp_path, monkeypatch):
    monkeypatch.setenv(HEARTBEAT_ENV, "0")
    config = base_config("adding")
    config.train.lr = 0.125
    config.model.hidden_size = 17
    r = Reporter(tmp_path, loss_metric="mse")
    r.start(total=20, initial=0, progress=False)
    for step in (10, 20):
        r.train(step, loss=1.0 / step, lr=0.125, grad_norm=2.0 * step)
        r.valid(step, {"mse": 2.0 / step, "max_abs_error": 3.0})
    r.result(_result(config))
    r.close()

    s = tensorboard_scalars(tmp_path / "tensorboard")
    # the training loss of the adding task is its MSE: one chart "mse" with train, valid, test
    assert s["mse/train"] == [(10, np.float32(0.1)), (20, np.float32(0.05))]  # float32 in TB
    assert s["mse/valid"] == [(10, np.float32(0.2)), (20, np.float32(0.1))]
    assert s["max_abs_error/valid"] == [(10, 3.0), (20, 3.0)]
    assert s["mse/test"] == [(20, 0.5)] and s["max_abs_error/test"] == [(20, 2.0)]
    assert s["best_valid/mse"] == [(20, 0.25)]
    assert s["optim/lr"] == [(10, 0.125), (20, 0.125)]
    assert s["optim/grad_norm"] == [(10, 20.0), (20, 40.0)]
    assert [k for k, _ in s["perf/steps_per_sec"]] == [10, 20]
    assert all(v > 0 for _, v in s["perf/steps_per_sec"])
    assert not any(t.startswith(("train/", "valid/")) or t == "loss/train" for t in s)

    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData
    plugin = {}
    for e in tensorboard_events(tmp_path / "tensorboard"):
        for v in e.summary.value:
            if v.metadata.plugin_data.plugin_name == "hparams":
                plugin[v.tag] = HParamsPluginData.FromString(v.metadata.plugin_data.content)
    assert set(plugin) == {"_hparams_/experiment", "_hparams_/session_start_info",
                           "_hparams_/session_end_info"}
    hp = plugin["_hparams_/session_start_info"].session_start_info.hparams
    assert hp["train.lr"].number_value == 0.125
    assert hp["model.hidden_size"].number_value == 17
    assert hp["model.cell"].string_value == "lstm"
    assert hp["task.name"].string_value == "adding"
    assert hp["model.bidirectional"].bool_value is False
    assert "train.target" not in hp  # None: not a hyperparameter value
    metrics = {m.name.tag for m in plugin["_hparams_/experiment"].experiment.metric_infos}
    assert metrics == {"mse/test", "max_abs_error/test", "best_valid/mse",
                       "best_valid/max_abs_error"}
    # every metric of the session is a scalar of the same run (what the plugin shows)
    assert metrics <= set(s)


def test_loss_tag_when_the_loss_is_not_a_metric(tmp_path, monkeypatch):
    monkeypatch.setenv(HEARTBEAT_ENV, "0")
    r = Reporter(tmp_path, loss_metric=None)
    r.start(total=5, initial=0, progress=False)
    r.train(5, loss=3.0, lr=1.0, grad_norm=1.0)
    r.close()
    assert tensorboard_scalars(tmp_path / "tensorboard")["loss/train"] == [(5, 3.0)]


def test_heartbeat_lines_and_no_progress_frames_without_a_terminal(tmp_path, monkeypatch,
                                                                   capfd):
    monkeypatch.setenv(HEARTBEAT_ENV, "1e-9")
    r = Reporter(tmp_path, metric="mse")  # the task's metric, not the first one reported
    r.start(total=40, initial=0, progress=True)  # asked for, but stderr is not a terminal
    assert r.bar is None
    r.train(10, loss=0.5, lr=0.1, grad_norm=1.0)
    r.valid(10, {"max_abs_error": 0.5, "mse": 0.25})
    r.train(20, loss=0.125, lr=0.1, grad_norm=1.0)
    r.close()
    out, err = capfd.readouterr()
    beats = [line for line in out.splitlines() if line.startswith("step ") and "ETA" in line]
    assert len(beats) == 2, out
    assert beats[0].startswith("step 10/40 (25%) | loss 0.5 | ")
    assert beats[1].startswith("step 20/40 (50%) | loss 0.125 | valid mse 0.25 | ")
    assert "steps/s" in beats[1]
    assert "\r" not in out + err


def test_heartbeat_interval(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv(HEARTBEAT_ENV, "3600")
    r = Reporter(tmp_path)
    r.start(total=40, initial=0, progress=False)
    for step in (10, 20, 30):
        r.train(step, loss=0.5, lr=0.1, grad_norm=1.0)
    r.close()
    assert "ETA" not in capfd.readouterr().out  # not an hour yet


def _output_shape(task, batch):
    """The shape of the outputs ``task``'s head gives for ``batch``."""
    if task.head == "seq2one":
        return (batch["y"].shape[0], task.output_size)
    return (*batch["y"].shape[:2], task.output_size)


def _fake_real_batch(name, rng):
    if name == "jsb":  # binary piano rolls, padded: lengths below T
        return {"y": (rng.random((4, 12, 88)) < 0.1).astype(np.float32),
                "lengths": np.array([12, 7, 3, 10])}
    return {"y": rng.integers(0, 50, (4, 12))}  # ptb tokens of a 50-word vocabulary


@pytest.mark.parametrize("name,fields", [
    ("adding", {"T": 20, "eval_size": 8}),
    ("adding", {"T": 20, "variant": "hochreiter", "eval_size": 8}),
    ("copy", {"T": 10, "eval_size": 8}), ("temporal_order", {"eval_size": 8}),
    ("reber", {"eval_size": 8}), ("continual_reber", {"eval_length": 50, "eval_size": 3}),
    ("jsb", {"loss_norm": "mean_frame"}), ("jsb", {"loss_norm": "sum_time"}),
    ("ptb", {"loss_norm": "mean_token"}), ("ptb", {"loss_norm": "sum_time"}),
])
def test_loss_metric_is_the_task_metric_of_the_batch(name, fields):
    """Where :func:`reporting.loss_metric` names a key, the training loss of a batch equals
    ``summarize`` of that batch's sums under that key; where it names none, they differ."""
    rng = np.random.default_rng(0)
    if name in ("jsb", "ptb"):  # their loss needs no data: a fake batch, no load
        task = TASKS[name](**fields)
        batch = _fake_real_batch(name, rng)
        shape = (*batch["y"].shape[:2], 88 if name == "jsb" else 50)
    else:
        task = tasks.build(tasks.default_config(name, **fields))
        batch = next(iter(task.eval_batches("valid")))
        shape = _output_shape(task, batch)
    outputs = rng.normal(size=shape).astype(np.float32)
    loss, sums = jax.jit(task.loss)(outputs, batch)  # one program: faster than op by op
    summary = task.summarize(jax.device_get(sums))
    key = reporting.loss_metric(task)
    if key is None:
        assert not any(np.isclose(float(loss), float(v), rtol=1e-5) for v in summary.values())
    else:
        np.testing.assert_allclose(float(loss), float(summary[key]), rtol=1e-5)


def test_loss_metric_covers_every_task():
    assert set(TASKS) <= {"adding", "copy", "temporal_order", "reber", "continual_reber", "ptb",
                          "jsb"}, "a new task: say in reporting.loss_metric what its loss is"


def test_hparams_of_flattens_and_drops_empty_values():
    assert reporting.hparams_of({"a": {"b": 1, "c": None, "d": ""}, "e": True, "f": [1]}) == \
        {"a.b": 1, "e": True}
