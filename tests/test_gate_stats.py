"""Gate diagnostics (``train.gate_stats``) against a NumPy reference of the LSTM gate equations:
per gate the mean activation, the saturated fraction and the forget timescale, over real steps
only."""
import jax
import numpy as np
import pytest

from lstm_research import cells
from lstm_research.layers import Stack
from lstm_research.training import diagnostics
from lstm_research.training.loop import Trainer

from conftest import small_config


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def numpy_lstm(cell, p, x, length):
    """Greff et al. 2015's equations for one sequence ``x`` [T, I], float64: the gate
    activations {name: [length, H]} of the gates the cell computes, and the outputs [T, H]
    (zeros past ``length``: what a next layer reads there)."""
    p = {k: np.asarray(v, np.float64) for k, v in p.items()}
    H = cell.hidden_size
    names = cell.gates  # stacked order of the pre-activations, e.g. (i, f, z, o)
    c, h = np.zeros(H), np.zeros(H)
    out = {g: [] for g in ("i", "f", "o")}
    ys = np.zeros((x.shape[0], H))
    peep = {g: p.get(f"peephole_{g}", np.zeros(H)) for g in "ifo"}
    for t in range(length):
        pre = x[t] @ p["w_x"] + h @ p["w_h"] + p["b"]
        a = {g: pre[k * H:(k + 1) * H] for k, g in enumerate(names)}
        i = sigmoid(a["i"] + peep["i"] * c) if "i" in a else np.ones(H)
        f = 1 - i if cell.coupled_forget else (
            sigmoid(a["f"] + peep["f"] * c) if "f" in a else np.ones(H))
        c = np.tanh(a["z"]) * i + c * f
        o = sigmoid(a["o"] + peep["o"] * c) if "o" in a else np.ones(H)
        h = ys[t] = np.tanh(c) * o
        out["i"].append(i), out["f"].append(f), out["o"].append(o)
    keep = {"i": cell.input_gate, "f": cell.forget_gate or cell.coupled_forget,
            "o": cell.output_gate}
    return {g: np.array(v) for g, v in out.items() if keep[g]}, ys


def reference_metrics(acts: dict, layer="L0") -> dict:
    """The metrics of :mod:`lstm_research.training.diagnostics`, from the pooled activations."""
    out = {}
    for g, a in acts.items():
        out[f"gates/{layer}/{g}_mean"] = a.mean()
        out[f"gates/{layer}/{g}_sat"] = ((a < 0.05) | (a > 0.95)).mean()
    if "f" in acts:
        out[f"gates/{layer}/f_timescale"] = 1 / (1 - acts["f"].mean())
    return out


@pytest.mark.parametrize("name", ["vanilla", "cifg", "nfg", "nig", "nog"])
def test_gate_metrics_match_numpy_on_padded_batch(name):
    cell = cells.get(name, 4)
    stack = Stack(cell)
    rng = np.random.default_rng(0)
    params = stack.init(jax.random.key(1), input_size=3)
    # large weights so that a good share of the gates saturate
    params = {"layers": [{"fwd": {k: np.asarray(v) * 3.0 for k, v in params["layers"][0]["fwd"].items()}}]}
    x = rng.normal(size=(3, 7, 3)).astype(np.float32)
    lengths = np.array([7, 2, 5], np.int32)
    x[1, 2:] = 100.0  # padding that would move the statistics if it were counted
    sums = diagnostics.gate_sums(stack, params, x, None, lengths)
    got = diagnostics.gate_metrics(diagnostics.to_host({k: np.asarray(v) for k, v in sums.items()}))

    acts = {}
    for b in range(3):
        gates, _ = numpy_lstm(cell, params["layers"][0]["fwd"], x[b].astype(np.float64),
                              lengths[b])
        for g, a in gates.items():
            acts.setdefault(g, []).append(a)
    acts = {g: np.concatenate(v) for g, v in acts.items()}
    for a in acts.values():  # no activation so close to a threshold that float32 could flip it
        assert np.min(np.abs(a - 0.05)) > 1e-5 and np.min(np.abs(a - 0.95)) > 1e-5
    want = reference_metrics(acts)
    assert sorted(got) == sorted(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, err_msg=k)
    sat = [want[k] for k in want if k.endswith("_sat")]
    if name != "nig":
        assert max(sat) > 0.1  # the saturation count is exercised, not all zeros


def test_gateless_cell_reports_nothing():
    stack = Stack(cells.get("elman", 4))
    params = stack.init(jax.random.key(0), input_size=3)
    sums = diagnostics.gate_sums(stack, params, np.ones((2, 5, 3), np.float32), None, None)
    assert diagnostics.gate_metrics(diagnostics.to_host(sums)) == {}


def test_trainer_evaluate_reports_gate_metrics_of_the_fused_model(tmp_path):
    """Through Trainer.evaluate (fused LSTM layer, the stack input recorded from the real
    forward pass, padded Reber batches, two layers): the gate metrics equal the NumPy
    reference over every validation sequence's real steps, and the task metrics are unchanged."""
    config = small_config("reber", steps=2, eval_every=1, hidden_size=5, num_layers=2,
                          eval_size=24, batch_size=8)
    config.model.cell = "vanilla"
    off = Trainer(config, tmp_path / "off", progress=False)
    config = config.copy_and_resolve_references()
    config.train.gate_stats = True
    on = Trainer(config, tmp_path / "on", progress=False)
    assert on.model.rnn.stack.length_free  # the evaluated model runs the fused layer
    arrays, _ = on.init_state()
    params = arrays["params"]
    got = on.evaluate(params, "valid")
    plain = off.evaluate(params, "valid")
    assert {k: v for k, v in got.items() if not k.startswith("gates/")} == plain

    cell = on.model.rnn.stack.cell
    layers = params["rnn"]["stack"]["layers"]
    acts = [{}, {}]
    for batch in on.task.eval_batches("valid"):
        for b in range(batch["x"].shape[0]):
            n = int(batch["lengths"][b])
            x = np.asarray(batch["x"][b], np.float64)
            for layer in range(2):
                p = layers[layer]["fwd"]
                gates, x = numpy_lstm(cell, p, x, n)
                for g, a in gates.items():
                    acts[layer].setdefault(g, []).append(a)
    want = {}
    for layer in range(2):
        want.update(reference_metrics({g: np.concatenate(v) for g, v in acts[layer].items()},
                                      f"L{layer}"))
    assert sorted(k for k in got if k.startswith("gates/")) == sorted(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=2e-5, atol=1e-6, err_msg=k)


def test_gate_stats_in_a_pack_is_refused(tmp_path):
    from lstm_research.errors import UserError
    from lstm_research.training.pack import PackTrainer
    config = small_config("adding", steps=2, eval_every=1)
    config.train.gate_stats = True
    with pytest.raises(UserError, match="gate_stats"):
        PackTrainer([config, config], [tmp_path / "a", tmp_path / "b"], tmp_path / "p")
