"""The linear recurrence h_t = a_t * h_{t-1} + b_t of the minLSTM/minGRU parallel form
(:mod:`lstm_research.cells.linear_recurrence`): every method against a sequential float64 NumPy
loop, ragged and even chunkings, and the chunked form's custom VJP against autodiff of a plain
sequential loop."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_research.cells.linear_recurrence import linear_recurrence, linear_recurrence_log

FAST_COMPILE = {"xla_backend_optimization_level": 0}
SHAPE = (2, 3)
CASES = [(1, None), (5, None), (13, 4), (16, 4), (33, None), (40, 7)]  # (T, chunk)


def reference(a, b, h0):
    """The recurrence step by step, in float64."""
    h, out = np.asarray(h0, np.float64), []
    for a_t, b_t in zip(np.asarray(a, np.float64), np.asarray(b, np.float64)):
        h = a_t * h + b_t
        out.append(h)
    return np.stack(out)


def draw(T, seed=0, positive=False):
    k = jax.random.split(jax.random.key(seed), 3)
    a = jax.random.uniform(k[0], (T, *SHAPE), minval=-1.2 if not positive else 0.05,
                           maxval=1.2)
    b = jax.random.normal(k[1], (T, *SHAPE))
    if positive:
        b = jnp.abs(b) + 0.01
    return a, b, jax.random.normal(k[2], SHAPE)


@pytest.mark.parametrize("T,chunk", CASES)
def test_every_method_equals_the_sequential_loop(T, chunk):
    a, b, h0 = draw(T, seed=T)
    ap, bp, _ = draw(T, seed=T + 100, positive=True)

    def run(a, b, h0, ap, bp):
        return (linear_recurrence(a, b, h0),
                linear_recurrence(a, b, h0, method="chunked", chunk=chunk),
                linear_recurrence_log(jnp.log(ap), jnp.log(bp), h0))
    assoc, chunked, logspace = jax.jit(run, compiler_options=FAST_COMPILE)(a, b, h0, ap, bp)
    ref = reference(a, b, h0)
    np.testing.assert_allclose(np.asarray(assoc), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(chunked), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(logspace), reference(ap, bp, h0), rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("T,chunk", [(1, None), (13, 4), (33, None)])
def test_chunked_gradients_equal_autodiff_of_the_sequential_loop(T, chunk):
    a, b, h0 = draw(T, seed=7 * T)
    w = jax.random.normal(jax.random.key(99), (T, *SHAPE))  # weights every output differently

    def sequential(a, b, h0):
        def step(h, ab):
            h = ab[0] * h + ab[1]
            return h, h
        return jax.lax.scan(step, h0, (a, b))[1]

    def loss(f):
        return lambda a, b, h0: jnp.sum(w * f(a, b, h0)) + jnp.sum(f(a, b, h0)[-1] ** 2)

    def run(a, b, h0):
        chunked = lambda a, b, h0: linear_recurrence(a, b, h0, method="chunked", chunk=chunk)
        return [jax.grad(loss(f), argnums=(0, 1, 2))(a, b, h0)
                for f in (sequential, chunked, linear_recurrence)]
    ref, chunked, assoc = jax.jit(run, compiler_options=FAST_COMPILE)(a, b, h0)
    for want, got_c, got_a in zip(ref, chunked, assoc):
        np.testing.assert_allclose(np.asarray(got_c), np.asarray(want), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(np.asarray(got_a), np.asarray(want), rtol=1e-4, atol=1e-5)


def test_unknown_method_refused():
    a, b, h0 = draw(3)
    with pytest.raises(ValueError, match="method must be one of"):
        linear_recurrence(a, b, h0, method="sequential")
