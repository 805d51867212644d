"""Reverse-mode gradients of every cell (run by the scanned stack, with padding masks) against
central finite differences in float64, as directional derivatives along random directions in
(params, inputs, initial carry) space."""
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_research import cells
from lstm_research.layers import Stack

from conftest import FAST_COMPILE

B, T, I, H = 3, 5, 4, 6
EPS = 1e-6
N_DIRECTIONS = 3


@pytest.fixture
def x64():
    """float64 for this test only: jax_enable_x64 is global, so restore it afterwards."""
    with jax.enable_x64(True):
        yield


def _cases():
    cases = [(n, {"proj_size": 3} if n == "lstmp" else {}, False) for n in cells.names()]
    return cases + [
        ("slstm", {"forget_activation": "exp"}, False),
        ("mlstm", {"num_heads": 2, "forget_activation": "exp"}, False),
        # the parallel forms: on CPUs "auto" takes the chunked linear recurrence; fused=False
        # the associative scan (in log space for the positive candidate)
        ("minlstm", {}, "chunked"),
        ("mingru", {}, "chunked"),
        ("minlstm", {"positive_candidate": False}, "chunked"),
        ("minlstm", {}, "associative"),
        ("mingru", {}, "associative"),
        ("minlstm", {"positive_candidate": False}, "associative"),
    ]


def _id(case):
    name, sw, parallel = case
    return name + "".join(f",{k}={v}" for k, v in sw.items()) + (f",{parallel}" if parallel else "")


def _shapes(f):
    """The shapes f() would produce, without running (and compiling) it."""
    return jax.eval_shape(f)


def _random_like(rng, tree, scale):
    return jax.tree.map(lambda a: jnp.asarray(rng.normal(0.0, scale, a.shape)), tree)


def _tree_dot(a, b):
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.parametrize("case", _cases(), ids=_id)
def test_gradient_matches_finite_differences(case, x64):
    name, switches, parallel = case
    rng = np.random.default_rng(zlib.crc32(_id(case).encode()))
    cell = cells.get(name, H, **switches)
    stack = Stack(cell, num_layers=1, parallel=bool(parallel),
                  fused=False if parallel == "associative" else "auto")
    params = _random_like(rng, _shapes(lambda: stack.init(jax.random.key(0), I)), 0.5)
    carry0 = _random_like(rng, _shapes(lambda: stack.initial_carry(B)), 0.5)
    for c in carry0:
        if name == "slstm":  # the normalizer state is a positive sum; m = 0 is its usual start
            c["fwd"]["n"] = jnp.abs(c["fwd"]["n"]) + 0.5
        if "m" in c["fwd"]:
            c["fwd"]["m"] = jnp.zeros_like(c["fwd"]["m"])
    xs = jnp.asarray(rng.normal(size=(B, T, I)))
    assert xs.dtype == jnp.float64
    lengths = jnp.array([T, 3, 1])
    w_y = jnp.asarray(rng.normal(size=(B, T, cell.output_size)))
    w_c = _random_like(rng, carry0, 1.0)

    def loss(theta):
        p, x, c0 = theta
        ys, carries = stack.apply(p, x, carries=c0, lengths=lengths)
        return jnp.sum(ys * w_y) + _tree_dot(carries, w_c)

    theta = (params, xs, carry0)
    directions = [_random_like(rng, theta, 1.0) for _ in range(N_DIRECTIONS)]
    # one compiled function (value and gradient); the finite differences reuse its values
    value_and_grad = jax.jit(jax.value_and_grad(loss), compiler_options=FAST_COMPILE)
    _, g = value_and_grad(theta)
    shift = lambda s, v: jax.tree.map(lambda a, d: a + s * d, theta, v)
    analytic = np.array([_tree_dot(g, v) for v in directions])
    numeric = np.array([(value_and_grad(shift(EPS, v))[0] - value_and_grad(shift(-EPS, v))[0])
                        / (2 * EPS) for v in directions])
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(g))
    assert analytic.dtype == np.float64
    assert np.all(np.abs(analytic) > 1e-3), "degenerate direction"
    rel = np.abs(analytic - numeric) / np.maximum(np.abs(analytic), np.abs(numeric))
    assert np.all(rel < 1e-6), (analytic, numeric, rel)
    # padding: inputs past a sequence's end do not influence anything
    gx = np.asarray(g[1])
    assert np.all(gx[1, 3:] == 0) and np.all(gx[2, 1:] == 0)


def test_x64_is_restored():
    assert jnp.asarray(1.0).dtype == jnp.float32
