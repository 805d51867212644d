"""``Stack(wavefront=True)``: all layers in one loop, layer l at time step s - l. Against the
layers run one after the other by the generic scan (``fused=False``): outputs, final carries
and gradients, with and without lengths; bad combinations refused."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_research import cells
from lstm_research.errors import UserError
from lstm_research.layers import Stack


@pytest.mark.parametrize("cell,layers,masked", [("lstm", 3, True), ("lstm", 2, False),
                                                ("gru", 2, True), ("nfg", 1, True),
                                                ("mlstm", 2, True)])
def test_wavefront_equals_the_layers_one_after_the_other(cell, layers, masked):
    c = cells.get(cell, 6)
    ref = Stack(c, num_layers=layers, fused=False)
    wave = Stack(c, num_layers=layers, wavefront=True)
    rng = np.random.default_rng(0)
    xs = jnp.asarray(rng.normal(size=(3, 9, 4)), jnp.float32)
    lengths = jnp.array([9, 4, 1]) if masked else None
    params = ref.init(jax.random.key(1), 4)
    carries = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape), a.dtype),
                           ref.initial_carry(3))

    def run(stack, params, xs):
        return stack.apply(params, xs, carries, lengths=lengths)

    ys_ref, c_ref = run(ref, params, xs)
    ys, c = run(wave, params, xs)
    np.testing.assert_allclose(ys, ys_ref, rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(c), jax.tree.leaves(c_ref)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

    def loss(stack):
        def f(params, xs):
            ys, c = run(stack, params, xs)
            return jnp.sum(ys ** 2) + sum(jnp.sum(jnp.sin(a)) for a in jax.tree.leaves(c))
        return jax.grad(f, argnums=(0, 1))(params, xs)
    for a, b in zip(jax.tree.leaves(loss(wave)), jax.tree.leaves(loss(ref))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("knob", [{"bidirectional": True}, {"dropout": 0.1},
                                  {"zoneout": 0.1}, {"remat": True}])
def test_wavefront_refuses_what_it_does_not_run(knob):
    with pytest.raises(UserError, match=f"wavefront=True .* {next(iter(knob))}="):
        Stack(cells.get("lstm", 4), num_layers=2, wavefront=True, **knob)
