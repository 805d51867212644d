"""The Flax NNX adapters (lstm_research/interop/nnx.py) and nnx.bridge.ToNNX(RNNStack) against
the pure cells and Stack with the same params: outputs, gradients, and optimizer steps equal to
the same steps done with optax on the pure functions. Also runs the README's snippets."""
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from lstm_research import cells
from lstm_research.errors import UserError
from lstm_research.interop import flax as flax_interop
from lstm_research.interop.nnx import NNXCell, NNXStack
from lstm_research.layers import Stack

B, T, I, H = 4, 6, 3, 5
STEPS = 4


def _task():
    """A small generated regression: unit 0 of the last layer should track the running mean
    of the first input feature."""
    xs = jax.random.normal(jax.random.key(10), (B, T, I))
    target = jnp.cumsum(xs[..., 0], axis=1) / jnp.arange(1, T + 1)
    return xs, target


def _loss(ys, target):
    return jnp.mean((ys[..., 0] - target) ** 2)


def _optax_steps(stack, params, xs, target, tx):
    """STEPS optimizer steps on the pure Stack: the first step's (ys, carries, grads), the
    losses, the final params."""
    @jax.jit
    def step(params, state):
        (loss, out), g = jax.value_and_grad(
            lambda p: (lambda out: (_loss(out[0], target), out))(stack.apply(p, xs)),
            has_aux=True)(params)
        updates, state = tx.update(g, state, params)
        return loss, (*out, g), optax.apply_updates(params, updates), state

    state, losses, first = tx.init(params), [], None
    for _ in range(STEPS):
        loss, out, params, state = step(params, state)
        losses.append(loss)
        first = first or out
    return first, losses, params


def _nnx_steps(model, xs, target, tx):
    """The same STEPS with nnx.Optimizer on ``model``: the first step's (ys, carries, grads as
    an nnx.State), the losses."""
    @nnx.jit
    def step(model, optimizer):
        (loss, out), grads = nnx.value_and_grad(
            lambda m: (lambda out: (_loss(out[0], target), out))(m(xs)), has_aux=True)(model)
        optimizer.update(model, grads)
        return loss, (*out, grads)

    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    losses, first = [], None
    for _ in range(STEPS):
        loss, out = step(model, optimizer)
        losses.append(loss)
        first = first or out
    return first, losses


def _assert_trees_close(a, b, atol=1e-6):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(x, y, atol=atol, rtol=0)


@pytest.mark.parametrize("name", ["vanilla", "gru"])
def test_nnx_cell_matches_cell_step_and_its_gradients(name):
    cell = cells.get(name, H)
    params = cell.init(jax.random.key(0), I)
    model = NNXCell(cell, params=params)
    assert sorted(nnx.to_pure_dict(nnx.state(model, nnx.Param))["params"]) == sorted(params)
    x = jax.random.normal(jax.random.key(1), (B, I))
    carry = jax.tree.map(lambda c: c + 0.3, model.initial_carry((B,)))
    c_ours, y_ours = model(carry, x)
    c_ref, y_ref = cell.step(params, carry, x)
    np.testing.assert_array_equal(y_ours, y_ref)
    _assert_trees_close(c_ours, c_ref, atol=0)

    grads = nnx.grad(lambda m: jnp.sum(m(carry, x)[1] ** 2))(model)
    ref = jax.grad(lambda p: jnp.sum(cell.step(p, carry, x)[1] ** 2))(params)
    _assert_trees_close(nnx.to_pure_dict(grads)["params"], ref)


def test_nnx_stack_matches_stack_gradients_and_optax_steps():
    stack = Stack(cells.get("lstm", H), num_layers=2, bidirectional=True)
    params = stack.init(jax.random.key(2), I)
    model = NNXStack(stack, params=params)
    n_params = len(jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert n_params == len(jax.tree.leaves(params)) == 12  # one nnx.Param per array
    xs, target = _task()
    tx = optax.adam(0.05)
    (ys, carries, grads), losses = _nnx_steps(model, xs, target, tx)
    (ys_ref, carries_ref, grads_ref), ref_losses, ref_params = _optax_steps(
        stack, params, xs, target, tx)
    _assert_trees_close((ys, carries), (ys_ref, carries_ref))
    for layer in range(2):
        for d in ("fwd", "bwd"):
            for k, g in grads_ref["layers"][layer][d].items():
                np.testing.assert_allclose(grads["layers"][layer][d]["params"][k][...], g,
                                           atol=1e-6, rtol=0)
    assert losses[-1] < 0.8 * losses[0]
    np.testing.assert_allclose(losses, ref_losses, atol=1e-6, rtol=0)
    _assert_trees_close(model.pure_params(), ref_params)


def test_nnx_stack_dropout_follows_train_eval_and_rngs():
    stack = Stack(cells.get("lstm", H), num_layers=2, dropout=0.5)
    xs, _ = _task()
    model = NNXStack(stack, I, rngs=nnx.Rngs(0))
    _assert_trees_close(model.pure_params(), stack.init(nnx.Rngs(0).params(), I), atol=0)
    run = nnx.jit(lambda m: m(xs)[0])
    clean = jax.jit(lambda p: stack.apply(p, xs)[0])(model.pure_params())
    first, second = run(model), run(model)      # nnx convention: stochastic until .eval();
    again = run(NNXStack(stack, I, rngs=nnx.Rngs(0)))  # the stream moves on; same seed, same masks
    assert not np.allclose(first, clean) and not np.allclose(first, second)
    np.testing.assert_array_equal(first, again)
    model.eval()
    np.testing.assert_allclose(run(model), clean, atol=1e-6, rtol=0)
    model.train()
    assert not np.allclose(run(model), clean)
    np.testing.assert_allclose(nnx.jit(lambda m: m(xs, deterministic=True)[0])(model), clean,
                               atol=1e-6, rtol=0)


def test_tonnx_rnn_stack_survives_optimizer_steps():
    """nnx.bridge.ToNNX(RNNStack) used to fail on nnx.Optimizer's second step: the layers were
    one Param holding a Python list. Now: one Param per array, and the steps equal optax's."""
    xs, target = _task()
    linen = flax_interop.RNNStack(cell="lstm", hidden_size=H, num_layers=2)
    model = nnx.bridge.ToNNX(linen, rngs=nnx.Rngs(0))
    nnx.bridge.lazy_init(model, xs)
    pure = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    params = flax_interop.stack_layout(pure["stack"])
    assert len(jax.tree.leaves(nnx.state(model, nnx.Param))) == 6
    tx = optax.adam(0.05)
    (ys, _, grads), losses = _nnx_steps(model, xs, target, tx)
    (ys_ref, _, grads_ref), ref_losses, ref_params = _optax_steps(
        linen.make_stack(), params, xs, target, tx)
    np.testing.assert_allclose(ys, ys_ref, atol=1e-6, rtol=0)
    _assert_trees_close(flax_interop.stack_layout(nnx.to_pure_dict(grads)["stack"]), grads_ref)
    assert losses[-1] < 0.8 * losses[0]
    np.testing.assert_allclose(losses, ref_losses, atol=1e-6, rtol=0)
    after = flax_interop.stack_layout(nnx.to_pure_dict(nnx.state(model, nnx.Param))["stack"])
    _assert_trees_close(after, ref_params)


def test_nnx_modules_refuse_missing_arguments():
    stack = Stack(cells.get("lstm", H), dropout=0.5)
    with pytest.raises(UserError, match="needs input_size= and rngs="):
        NNXCell(stack.cell, I)
    with pytest.raises(UserError, match="needs input_size= and rngs="):
        NNXStack(stack, rngs=nnx.Rngs(0))
    with pytest.raises(UserError, match="dropout or zoneout needs rngs="):
        NNXStack(stack, params=stack.init(jax.random.key(0), I))


def _readme_snippets():
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text.split("### From Flax NNX and PyTorch", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


@pytest.mark.parametrize("index", [0, 1])
def test_readme_snippets_run(index):
    """The README's "From Flax NNX and PyTorch" snippets run as written (they assert)."""
    snippets = _readme_snippets()
    assert len(snippets) == 2
    if "import torch" in snippets[index]:
        pytest.importorskip("torch")
    exec(compile(snippets[index], f"README snippet {index}", "exec"), {})
