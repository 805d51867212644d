"""Our standard LSTM/GRU against PyTorch nn.LSTM / nn.GRU and Flax's cells, with mapped weights."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_research import cells
from lstm_research.errors import UserError
from lstm_research.interop import flax as flax_interop
from lstm_research.layers import Stack

torch = pytest.importorskip("torch")
from lstm_research.interop import torch as tconv  # noqa: E402

B, T, I, H = 3, 5, 4, 6


def _torch_module(kind, **kw):
    torch.manual_seed(0)
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind]
    mod = cls(I, H, num_layers=2, bidirectional=True, batch_first=True, **kw)
    with torch.no_grad():  # non-zero, distinct biases so both bias vectors matter
        for name, p in mod.named_parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    return mod


def _grads_to_ours(kind, mod):
    """Torch's weight gradients, transposed into our layout by the converters."""
    grads = {k: p.grad for k, p in mod.named_parameters()}
    return (tconv.lstm_from_torch if kind == "lstm" else tconv.gru_from_torch)(grads)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_against_torch_outputs_states_and_gradients(kind):
    mod = _torch_module(kind)
    x = torch.randn(B, T, I)
    y_t, state_t = mod(x)
    loss_t = (y_t * torch.linspace(-1, 1, 2 * H)).sum() + (state_t[0] if kind == "lstm" else state_t).pow(2).sum()
    loss_t.backward()

    stack, params = tconv.stack_from_torch(mod)
    xj = jnp.asarray(x.numpy())
    ys, carries = stack.apply(params, xj)
    np.testing.assert_allclose(ys, y_t.detach().numpy(), atol=1e-5)
    # torch's h_n is [layers * directions, B, H] in order (l0 fwd, l0 bwd, l1 fwd, l1 bwd)
    h_n = state_t[0] if kind == "lstm" else state_t
    ours_h = np.stack([carries[l][d]["h"] for l in range(2) for d in ("fwd", "bwd")])
    np.testing.assert_allclose(ours_h, h_n.detach().numpy(), atol=1e-5)
    if kind == "lstm":
        ours_c = np.stack([carries[l][d]["c"] for l in range(2) for d in ("fwd", "bwd")])
        np.testing.assert_allclose(ours_c, state_t[1].detach().numpy(), atol=1e-5)

    def loss(p):
        ys, carries = stack.apply(p, xj)
        h = jnp.stack([carries[l][d]["h"] for l in range(2) for d in ("fwd", "bwd")])
        return (ys * jnp.linspace(-1, 1, 2 * H)).sum() + (h ** 2).sum()

    np.testing.assert_allclose(loss(params), loss_t.item(), rtol=1e-5)
    g_ours = jax.grad(loss)(params)
    g_torch = _grads_to_ours(kind, mod)
    for layer in range(2):
        for d in ("fwd", "bwd"):
            for name in ("w_x", "w_h"):
                np.testing.assert_allclose(g_ours["layers"][layer][d][name],
                                           g_torch["layers"][layer][d][name], atol=1e-4)
            # our b enters exactly where torch's b_ih does, so dL/db = dL/db_ih
            sfx = "_reverse" if d == "bwd" else ""
            np.testing.assert_allclose(g_ours["layers"][layer][d]["b"],
                                       getattr(mod, f"bias_ih_l{layer}{sfx}").grad.numpy(),
                                       atol=1e-4)
            if kind == "gru":
                np.testing.assert_allclose(g_ours["layers"][layer][d]["b_hn"],
                                           getattr(mod, f"bias_hh_l{layer}{sfx}").grad[2 * H:].numpy(),
                                           atol=1e-4)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_round_trip_to_torch(kind):
    mod = _torch_module(kind)
    stack, params = tconv.stack_from_torch(mod)
    to_torch = tconv.lstm_to_torch if kind == "lstm" else tconv.gru_to_torch
    fresh = type(mod)(I, H, num_layers=2, bidirectional=True, batch_first=True)
    fresh.load_state_dict(to_torch(params))
    x = torch.randn(B, T, I)
    np.testing.assert_allclose(fresh(x)[0].detach().numpy(), mod(x)[0].detach().numpy(), atol=1e-6)


def test_lstmp_against_torch_proj_size():
    torch.manual_seed(1)
    mod = torch.nn.LSTM(I, H, num_layers=2, proj_size=3, batch_first=True)
    x = torch.randn(B, T, I)
    stack, params = tconv.stack_from_torch(mod)
    ys, _ = stack.apply(params, jnp.asarray(x.numpy()))
    np.testing.assert_allclose(ys, mod(x)[0].detach().numpy(), atol=1e-5)


def test_converter_refuses_peephole_lstm():
    stack = Stack(cells.get("vanilla", H))
    params = stack.init(jax.random.key(0), I)
    with pytest.raises(ValueError, match="peephole"):
        tconv.lstm_to_torch(params)


@pytest.mark.parametrize("name", ["lstm:cell_clip=3", "lstm:input_activation=identity",
                                  "lstm:gate_activation=hard_sigmoid", "gru_cho", "lstm1997"])
def test_given_its_cell_a_converter_refuses_what_torch_computes_otherwise(name):
    # same arrays as the standard LSTM (or GRU), other equations: only the cell can tell
    stack = Stack(cells.get(name, H))
    params = stack.init(jax.random.key(0), I)
    to_torch = tconv.gru_to_torch if name.startswith("gru") else tconv.lstm_to_torch
    with pytest.raises(ValueError, match="maps to torch.nn"):
        to_torch(params, cell=stack)


def test_given_its_cell_a_standard_lstm_converts():
    for name, to_torch in (("lstm:forget_bias=1", tconv.lstm_to_torch),
                           ("lstmp:proj_size=3", tconv.lstm_to_torch), ("gru", tconv.gru_to_torch)):
        stack = Stack(cells.get(name, H))
        assert to_torch(stack.init(jax.random.key(0), I), cell=stack.cell)


def test_batch_first_module_with_time_major_is_refused():
    with pytest.raises(ValueError, match="batch_first=True"):
        tconv.stack_from_torch(torch.nn.LSTM(I, H, batch_first=True), time_major=True)


def test_against_flax_optimized_lstm_cell():
    """Flax's OptimizedLSTMCell in nn.RNN, its weights mapped into our 'lstm' params."""
    x = jax.random.normal(jax.random.key(1), (B, T, I))
    rnn = nn.RNN(nn.OptimizedLSTMCell(H), return_carry=True)
    variables = rnn.init(jax.random.key(2), x)
    fp = jax.tree.map(lambda a: a + 0.1 * jax.random.normal(jax.random.key(3), a.shape),
                      variables)["params"]["cell"]
    (c_f, h_f), y_f = rnn.apply({"params": {"cell": fp}}, x)
    # Flax gates: i, f, g, o; input kernels ii.. (no bias), recurrent hi.. with bias.
    ours = {"w_x": jnp.concatenate([fp[f"i{g}"]["kernel"] for g in "ifgo"], axis=1),
            "w_h": jnp.concatenate([fp[f"h{g}"]["kernel"] for g in "ifgo"], axis=1),
            "b": jnp.concatenate([fp[f"h{g}"]["bias"] for g in "ifgo"])}
    stack = Stack(cells.get("lstm", H))
    ys, carries = stack.apply({"layers": [{"fwd": ours}]}, x)
    np.testing.assert_allclose(ys, y_f, atol=1e-5)
    np.testing.assert_allclose(carries[0]["fwd"]["c"], c_f, atol=1e-5)
    np.testing.assert_allclose(carries[0]["fwd"]["h"], h_f, atol=1e-5)


@pytest.mark.parametrize("name", ["cifg", "gru", "mlstm"])
def test_flax_cell_adapter_in_nn_rnn_matches_stack(name):
    cell = cells.get(name, H)
    x = jax.random.normal(jax.random.key(4), (B, T, I))
    rnn = nn.RNN(flax_interop.FlaxCell(cell))
    variables = rnn.init(jax.random.key(5), x)
    y_flax = rnn.apply(variables, x)
    ys, _ = Stack(cell).apply({"layers": [{"fwd": variables["params"]["cell"]["cell"]}]}, x)
    np.testing.assert_allclose(y_flax, ys, atol=1e-6)
    bi = nn.Bidirectional(nn.RNN(flax_interop.FlaxCell(cell)), nn.RNN(flax_interop.FlaxCell(cell)))
    out = bi.apply(bi.init(jax.random.key(6), x), x)
    assert out.shape == (B, T, 2 * H)


def test_flax_stack_module():
    x = jax.random.normal(jax.random.key(7), (B, T, I))
    mod = flax_interop.RNNStack(cell="vanilla:peepholes=false", hidden_size=H, num_layers=2,
                                dropout=0.5)
    variables = mod.init(jax.random.key(8), x)
    ys, carries = mod.apply(variables, x)
    ref, _ = mod.make_stack().apply(flax_interop.stack_layout(variables["params"]["stack"]), x)
    np.testing.assert_allclose(ys, ref, atol=1e-6)
    ys_train, _ = mod.apply(variables, x, train=True, rngs={"dropout": jax.random.key(9)})
    assert not np.allclose(ys_train, ys)


def test_torch_weights_in_linen_rnn_stack():
    """Converted torch weights, put into RNNStack's dict-of-layers layout, give torch's outputs."""
    mod = _torch_module("lstm")
    x = torch.randn(B, T, I)
    linen = flax_interop.RNNStack(cell="lstm", hidden_size=H, num_layers=2, bidirectional=True)
    stack_params = tconv.lstm_from_torch(mod)
    ys, _ = linen.apply({"params": {"stack": flax_interop.linen_layout(stack_params)}},
                        jnp.asarray(x.numpy()))
    np.testing.assert_allclose(ys, mod(x)[0].detach().numpy(), atol=1e-5)
    back = flax_interop.stack_layout(flax_interop.linen_layout(stack_params))
    assert jax.tree.structure(back) == jax.tree.structure(stack_params)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_bias_false_round_trip(kind):
    mod = _torch_module(kind, bias=False)
    x = torch.randn(B, T, I)
    stack, params = tconv.stack_from_torch(mod)
    ys, _ = stack.apply(params, jnp.asarray(x.numpy()))
    np.testing.assert_allclose(ys, mod(x)[0].detach().numpy(), atol=1e-5)
    to_torch = tconv.lstm_to_torch if kind == "lstm" else tconv.gru_to_torch
    fresh = type(mod)(I, H, num_layers=2, bidirectional=True, batch_first=True, bias=False)
    fresh.load_state_dict(to_torch(params, bias=False), strict=True)
    np.testing.assert_array_equal(fresh(x)[0].detach().numpy(), mod(x)[0].detach().numpy())
    with_bias = tconv.stack_from_torch(_torch_module(kind))[1]
    with pytest.raises(UserError, match="bias=False, but the params have non-zero biases"):
        to_torch(with_bias, bias=False)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_batch_first_false_refused_or_time_major(kind):
    torch.manual_seed(2)
    mod = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind](I, H, num_layers=2)
    x = torch.randn(T, B, I)  # batch_first=False: [time, batch, features]
    with pytest.raises(UserError, match="batch_first=False.*time_major=True"):
        tconv.stack_from_torch(mod)
    stack, params = tconv.stack_from_torch(mod, time_major=True)
    y_t = mod(x)[0].detach().numpy()
    ys, _ = stack.apply(params, jnp.asarray(x.numpy()), time_major=True)
    np.testing.assert_allclose(ys, y_t, atol=1e-5)
    # what the refusal prevents: the same tensor read batch-major gives other numbers
    wrong, _ = stack.apply(params, jnp.asarray(x.numpy()))
    assert np.abs(np.asarray(wrong) - y_t).max() > 0.05


@pytest.mark.parametrize("kind", ["lstm", "gru", "lstmp"])
def test_initial_state_carries_from_and_to_torch(kind):
    torch.manual_seed(3)
    P = 3 if kind == "lstmp" else H
    if kind == "gru":
        mod = torch.nn.GRU(I, H, num_layers=2, bidirectional=True, batch_first=True)
    else:
        mod = torch.nn.LSTM(I, H, num_layers=2, bidirectional=True, batch_first=True,
                            proj_size=3 if kind == "lstmp" else 0)
    x = torch.randn(B, T, I)
    h0, c0 = torch.randn(4, B, P), torch.randn(4, B, H)
    y_t, state_t = mod(x, h0 if kind == "gru" else (h0, c0))
    carries = tconv.carries_from_torch(h0, None if kind == "gru" else c0, bidirectional=True)
    assert np.array_equal(carries[1]["bwd"]["h"], h0[3].numpy())  # torch's (layer, direction) order
    stack, params = tconv.stack_from_torch(mod)
    ys, out = stack.apply(params, jnp.asarray(x.numpy()), carries)
    np.testing.assert_allclose(ys, y_t.detach().numpy(), atol=1e-5)
    back = tconv.carries_to_torch(out)
    if kind == "gru":
        np.testing.assert_allclose(back.numpy(), state_t.detach().numpy(), atol=1e-5)
    else:
        for ours, theirs in zip(back, state_t):
            np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), atol=1e-5)
    with pytest.raises(UserError, match="h0/c0 must be"):
        tconv.carries_from_torch(h0[:3], bidirectional=True)


def test_prefix_loads_the_rnn_out_of_a_whole_model():
    torch.manual_seed(4)

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Linear(I, I)
            self.lstm = torch.nn.LSTM(I, H, num_layers=2, batch_first=True)

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = Encoder()
            self.decoder = torch.nn.GRU(H, H, batch_first=True)
            self.head = torch.nn.Linear(H, 2)

    model = Model()
    x = torch.randn(B, T, I)
    params = tconv.lstm_from_torch(model.state_dict(), prefix="encoder.lstm.")
    assert len(params["layers"]) == 2
    ys, _ = Stack(cells.get("lstm", H), num_layers=2).apply(params, jnp.asarray(x.numpy()))
    np.testing.assert_allclose(ys, model.encoder.lstm(x)[0].detach().numpy(), atol=1e-5)
    gru = tconv.gru_from_torch(model, prefix="decoder.")  # a module works as well
    h = torch.randn(B, T, H)
    ys, _ = Stack(cells.get("gru", H)).apply(gru, jnp.asarray(h.numpy()))
    np.testing.assert_allclose(ys, model.decoder(h)[0].detach().numpy(), atol=1e-5)
    with pytest.raises(UserError, match="prefix='decoder.', 'encoder.lstm.'"):
        tconv.lstm_from_torch(model.state_dict())
    with pytest.raises(UserError, match="under prefix='encoder.'.*'encoder.lstm.'"):
        tconv.lstm_from_torch(model.state_dict(), prefix="encoder.")
