"""lstm_research.prng against jax.random: the same bits, for every function, shape and key tried,
jitted and vmapped; other key implementations and dtypes fall back to jax.random."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_research import prng

SHAPES = [(), (1,), (5,), (3, 7), (1, 128, 88), (2, 3, 5, 7)]
KEYS = [jax.random.key(0), jax.random.key(7), jax.random.fold_in(jax.random.key(123), 99)]


def same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype
    np.testing.assert_array_equal(a.reshape(-1).view(np.uint8), b.reshape(-1).view(np.uint8))


@pytest.mark.parametrize("data", [0, 1, 7, 2 ** 31 + 3, 2 ** 32 - 1])
def test_fold_in(data):
    for key in KEYS:
        same_bits(jax.random.key_data(prng.fold_in(key, data)),
                  jax.random.key_data(jax.random.fold_in(key, data)))
    f = jax.jit(lambda k, d: jax.random.key_data(prng.fold_in(prng.fold_in(k, d), 1)))
    g = jax.jit(lambda k, d: jax.random.key_data(jax.random.fold_in(jax.random.fold_in(k, d), 1)))
    same_bits(f(KEYS[1], np.uint32(data)), g(KEYS[1], np.uint32(data)))


@pytest.mark.parametrize("num", [1, 2, 3, 5])
def test_split(num):
    for key in KEYS:
        same_bits(jax.random.key_data(prng.split(key, num)),
                  jax.random.key_data(jax.random.split(key, num)))


@pytest.mark.parametrize("shape", SHAPES)
def test_uniform_normal_bernoulli(shape):
    for key in KEYS:
        same_bits(prng.uniform(key, shape), jax.random.uniform(key, shape))
        same_bits(prng.uniform(key, shape, minval=-3.0, maxval=0.5),
                  jax.random.uniform(key, shape, minval=-3.0, maxval=0.5))
        same_bits(prng.normal(key, shape), jax.random.normal(key, shape))
        same_bits(prng.bernoulli(key, 0.3, shape), jax.random.bernoulli(key, 0.3, shape))
    normal = jax.jit(lambda k: prng.normal(k, shape))
    same_bits(normal(KEYS[2]), jax.jit(lambda k: jax.random.normal(k, shape))(KEYS[2]))


@pytest.mark.parametrize("shape,within", [((1, 32, 88), (1, 128, 88)), ((3, 5, 7), (4, 9, 7)),
                                          ((2, 1), (2, 6)), ((5,), (5,))])
def test_a_corner_of_a_larger_draw(shape, within):
    """``within``: the leading corner ``shape`` of the draw of shape ``within``, same bits (also
    through the jax.random fallback, here a bfloat16 draw)."""
    corner = tuple(slice(0, n) for n in shape)
    for key in KEYS:
        same_bits(prng.normal(key, shape, within=within), jax.random.normal(key, within)[corner])
        same_bits(prng.uniform(key, shape, minval=-2.0, maxval=0.5, within=within),
                  jax.random.uniform(key, within, minval=-2.0, maxval=0.5)[corner])
    same_bits(prng.normal(KEYS[1], shape, jnp.bfloat16, within=within),
              jax.random.normal(KEYS[1], within, jnp.bfloat16)[corner])


def test_draws_of_a_traced_shape_in_one_program():
    """``used`` traced: one compiled program draws, in the corner of its static shape, the bits
    ``jax.random`` draws at each shape ``used`` (uniform with traced bounds, normal, truncated
    normal), also vmapped over keys as the cells' gate blocks draw."""
    shape = (6, 3, 9)

    @jax.jit
    def draws(key, used, lo, hi):
        return (prng.uniform_in(key, shape, used, lo, hi), prng.normal_in(key, shape, used),
                prng.truncated_normal_in(key, -2, 2, shape, used),
                jax.vmap(lambda k: prng.uniform_in(k, shape, used))(jax.random.split(key, 3)))

    for used in [(6, 3, 9), (1, 3, 5), (4, 3, 1), (5, 2, 8)]:
        corner = tuple(slice(0, n) for n in used)
        for key in KEYS:
            u, n, t, v = draws(key, np.array(used, np.int32), np.float32(-0.3), np.float32(0.7))
            same_bits(u[corner], jax.random.uniform(key, used, minval=-0.3, maxval=0.7))
            same_bits(n[corner], jax.random.normal(key, used))
            same_bits(t[corner], jax.random.truncated_normal(key, -2, 2, used))
            for j, k in enumerate(jax.random.split(key, 3)):
                same_bits(v[j][corner], jax.random.uniform(k, used))
    assert draws._cache_size() == 1


def test_under_vmap_and_with_an_array_of_probabilities():
    keys = jnp.stack(KEYS)
    same_bits(jax.vmap(lambda k: prng.normal(prng.fold_in(k, 5), (4, 9)))(keys),
              jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, 5), (4, 9)))(keys))
    p = jnp.linspace(0.0, 1.0, 9, dtype=jnp.float32)
    same_bits(prng.bernoulli(KEYS[0], p, (4, 9)), jax.random.bernoulli(KEYS[0], p, (4, 9)))


def test_with_x64_enabled():
    with jax.enable_x64(True):
        key = jax.random.key(3)
        same_bits(jax.jit(lambda k: prng.normal(prng.fold_in(k, 2 ** 31 + 5), (5, 7),
                                                jnp.float32))(key),
                  jax.jit(lambda k: jax.random.normal(jax.random.fold_in(k, 2 ** 31 + 5), (5, 7),
                                                      jnp.float32))(key))
        # float64 draws (the default dtype there) go to jax.random itself
        same_bits(prng.normal(key, (5,)), jax.random.normal(key, (5,)))
        same_bits(prng.bernoulli(key, 0.3, (9,)), jax.random.bernoulli(key, 0.3, (9,)))


def test_other_implementations_and_dtypes_fall_back_to_jax_random():
    rbg = jax.random.key(3, impl="rbg")
    same_bits(prng.normal(rbg, (4, 5)), jax.random.normal(rbg, (4, 5)))
    same_bits(jax.random.key_data(prng.fold_in(rbg, 2)),
              jax.random.key_data(jax.random.fold_in(rbg, 2)))
    same_bits(prng.normal(KEYS[0], (6,), jnp.bfloat16),
              jax.random.normal(KEYS[0], (6,), jnp.bfloat16))
    same_bits(prng.bernoulli(KEYS[0], jnp.bfloat16(0.5), (6,)),
              jax.random.bernoulli(KEYS[0], jnp.bfloat16(0.5), (6,)))


def test_the_hash_is_unrolled_on_the_cpu():
    """What the module is for: no rolled loop (jax.random lowers its hash to a while loop on
    the CPU), so XLA fuses the draw into the kernel that uses it."""
    ours = jax.jit(lambda k: prng.normal(prng.fold_in(k, 1), (8, 8))).lower(KEYS[0]).as_text()
    theirs = jax.jit(lambda k: jax.random.normal(jax.random.fold_in(k, 1), (8, 8)))
    assert "while" not in ours
    if jax.default_backend() == "cpu":
        assert "while" in theirs.lower(KEYS[0]).as_text()
