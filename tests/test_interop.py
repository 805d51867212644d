"""Our standard LSTM/GRU against PyTorch nn.LSTM / nn.GRU and Flax's cells, with mapped weights."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_research import cells
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
    ref, _ = mod.make_stack().apply(variables["params"]["stack"], x)
    np.testing.assert_allclose(ys, ref, atol=1e-6)
    ys_train, _ = mod.apply(variables, x, train=True, rngs={"dropout": jax.random.key(9)})
    assert not np.allclose(ys_train, ys)
