"""``fold_in``, ``split``, ``uniform``, ``normal`` and ``bernoulli`` with the same bits as ``jax.random``'s,
computed by an unrolled Threefry-2x32 that XLA fuses into the kernel that uses the numbers.

Why: on the CPU, JAX lowers its Threefry hash to a rolled loop (five iterations of about sixteen
small kernels each, a choice that saves compile time). Inside a training step that runs in a
fraction of a millisecond this is expensive: the input noise of one Greff JSB update (a [1, 128,
88] normal draw and two ``fold_in``) took 136 us this way and 61 us unrolled (2-core CPU,
jax 0.10.2, ``jax.random`` against this module in one process), about a sixth of a width-20
update; a ``fold_in`` per time step (dropout keys in the generic scan) pays the loop at every step.

The hash (Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2, 3", Threefry-2x32 with
20 rounds) and the conversions follow ``jax.random`` with its defaults: the ``threefry2x32``
implementation with ``jax_threefry_partitionable`` (element ``n`` of a draw hashes the counter
``n``, its bits are the XOR of the two output words). ``tests/test_prng.py`` checks the results
bit for bit against ``jax.random``; any other key implementation, configuration, dtype or size
falls back to ``jax.random`` itself, so results never depend on which path ran. The draws are
jitted as ``jax.random``'s are (run op by op, ``minval + u * (maxval - minval)`` rounds
differently from the fused kernel).
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_U32 = np.uint32
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def threefry2x32(k1, k2, x1, x2):
    """The Threefry-2x32 hash (20 rounds) of the counter words ``(x1, x2)`` under the key
    ``(k1, k2)``, all uint32, broadcast together; returns the two output words."""
    ks = (k1, k2, k1 ^ k2 ^ _U32(0x1BD11BDA))
    x1, x2 = x1 + ks[0], x2 + ks[1]
    for i in range(5):
        for r in _ROTATIONS[i % 2]:
            x1 = x1 + x2
            x2 = x1 ^ ((x2 << _U32(r)) | (x2 >> _U32(32 - r)))
        x1 = x1 + ks[(i + 1) % 3]
        x2 = x2 + ks[(i + 2) % 3] + _U32(i + 1)
    return x1, x2


def _fast(key, dtype=jnp.float32, shape=()) -> bool:
    """Whether this module computes ``jax.random``'s bits for ``key`` (else it calls it)."""
    return (jnp.issubdtype(key.dtype, jax.dtypes.prng_key) and key.shape == ()
            and str(jax.random.key_impl(key)) == "threefry2x32"
            and jax.config.jax_threefry_partitionable
            and jnp.dtype(dtype) == jnp.float32 and math.prod(shape) < 2 ** 32)


def _hash(key, counter):
    """The two output words of the hash of the uint32 counters ``counter`` (high word 0)."""
    k = jax.random.key_data(key)
    return threefry2x32(k[0], k[1], jnp.zeros(counter.shape, jnp.uint32), counter)


def _key(y1, y2):
    return jax.random.wrap_key_data(jnp.stack([y1, y2], axis=-1), impl="threefry2x32")


def fold_in(key, data):
    """``jax.random.fold_in(key, data)`` (a typed scalar key; ``data`` an integer scalar)."""
    if not _fast(key):
        return jax.random.fold_in(key, data)
    return _key(*_hash(key, jnp.asarray(data, jnp.uint32)))


def split(key, num: int = 2):
    """``jax.random.split(key, num)`` (a typed scalar key): key ``j`` is the hash of counter j."""
    if not _fast(key):
        return jax.random.split(key, num)
    return _key(*_hash(key, lax.iota(jnp.uint32, num)))


def _default_float(dtype):
    """``jax.random``'s default: float64 with ``jax_enable_x64``, else float32."""
    return jax.dtypes.canonicalize_dtype(jnp.float64) if dtype is None else dtype


def _bits(key, shape, within):
    """The bits of the elements in the leading corner ``shape`` of a draw of shape ``within``:
    element ``n`` (row-major in ``within``) hashes the counter ``n`` (< 2**32)."""
    counter = sum(lax.broadcasted_iota(jnp.uint32, shape, d) * _U32(math.prod(within[d + 1:]))
                  for d in range(len(shape)) if shape[d] > 1)
    y1, y2 = _hash(key, jnp.broadcast_to(jnp.asarray(counter, jnp.uint32), shape))
    return y1 ^ y2


def _corner(draw, shape, within):
    """``draw(within)`` cut to its leading corner ``shape`` (the ``jax.random`` fallback)."""
    return draw(within)[tuple(slice(0, n) for n in shape)]


@functools.partial(jax.jit, static_argnames=("shape", "dtype", "within"))
def uniform(key, shape, dtype=None, minval=0.0, maxval=1.0, within=None):
    """``jax.random.uniform(key, shape, dtype, minval, maxval)``; with ``within`` (a shape
    at least ``shape`` in every axis), the leading corner ``shape`` of
    ``jax.random.uniform(key, within, ...)``, computed for those elements only."""
    shape, dtype = tuple(shape), _default_float(dtype)
    within = shape if within is None else tuple(within)
    if not _fast(key, dtype, within):
        return _corner(lambda s: jax.random.uniform(key, s, dtype, minval, maxval), shape, within)
    return _uniform_of(_bits(key, shape, within), minval, maxval)


def _uniform_of(bits, minval, maxval):
    """``jax.random.uniform``'s floats in [minval, maxval) from the draw's bits."""
    lo, hi = jnp.asarray(minval, jnp.float32), jnp.asarray(maxval, jnp.float32)
    # 23 random mantissa bits under the exponent of 1.0: a float in [1, 2), minus 1
    one = _U32(np.float32(1.0).view(np.uint32))
    floats = lax.bitcast_convert_type((bits >> _U32(9)) | one, jnp.float32) - 1.0
    return lax.max(lo, floats * (hi - lo) + lo)


@functools.partial(jax.jit, static_argnames=("shape", "dtype", "within"))
def normal(key, shape, dtype=None, within=None):
    """``jax.random.normal(key, shape, dtype)``: ``sqrt(2) erfinv(u)``, u uniform in (-1, 1);
    ``within`` as for :func:`uniform`."""
    shape, dtype = tuple(shape), _default_float(dtype)
    within = shape if within is None else tuple(within)
    if not _fast(key, dtype, within):
        return _corner(lambda s: jax.random.normal(key, s, dtype), shape, within)
    return _normal_of(uniform(key, shape, jnp.float32, _NORMAL_LO, 1.0, within=within))


#: the uniform draw under a normal one is in (-1, 1): from the float above -1
_NORMAL_LO = np.nextafter(np.float32(-1.0), np.float32(0.0))


def _normal_of(u):
    """``jax.random.normal``'s floats from its uniform draw ``u`` in (-1, 1)."""
    return np.float32(np.sqrt(2)) * lax.erf_inv(u)


# --- draws of a shape known when the program runs -------------------------------------------
# ``used`` gives sizes that may be traced (at most ``shape``'s): the draw of shape ``used`` laid
# out in the leading corner of an array of the static ``shape``, with the bits of
# ``jax.random`` at shape ``used`` (element n hashes counter n). One compiled program then draws
# for every ``used`` (models.width: one init program for all the widths of a bucket). The
# elements outside the corner hold other draws' values: the caller zeros them, after the
# program or through a matmul -- a select in the draw's fusion made XLA:CPU round the floats
# otherwise (1 ulp from ``jax.random``'s, jaxlib 0.10.2, the init program's compile options).

def counter_based(key) -> bool:
    """Whether the draws below can serve ``key`` (threefry2x32, partitionable, float32)."""
    return _fast(key)


def _bits_in(key, shape, used):
    """The bits of a draw of shape ``used`` at its elements' places in ``shape``."""
    if not _fast(key):
        raise ValueError("draws of a traced shape need a threefry2x32 key with "
                         "jax_threefry_partitionable (JAX's default)")
    counter, stride = jnp.zeros(shape, jnp.uint32), _U32(1)
    for d in reversed(range(len(shape))):
        counter = counter + lax.broadcasted_iota(jnp.uint32, shape, d) * stride
        stride = stride * jnp.asarray(used[d]).astype(jnp.uint32)
    y1, y2 = _hash(key, counter)
    return y1 ^ y2


def uniform_in(key, shape, used, minval=0.0, maxval=1.0):
    """``jax.random.uniform(key, used, float32, minval, maxval)`` in the corner of ``shape``."""
    return _uniform_of(_bits_in(key, tuple(shape), used), minval, maxval)


def normal_in(key, shape, used):
    """``jax.random.normal(key, used, float32)`` in the corner of ``shape``."""
    return _normal_of(uniform_in(key, shape, used, _NORMAL_LO, 1.0))


def truncated_normal_in(key, lower, upper, shape, used):
    """``jax.random.truncated_normal(key, lower, upper, used, float32)`` in the corner of
    ``shape`` (as JAX computes it: the normal's quantiles of a uniform draw, clipped)."""
    sqrt2 = np.array(np.sqrt(2), np.float32)
    lower = lax.convert_element_type(lower, jnp.float32)
    upper = lax.convert_element_type(upper, jnp.float32)
    a, b = lax.erf(lower / sqrt2), lax.erf(upper / sqrt2)
    return jnp.clip(sqrt2 * lax.erf_inv(uniform_in(key, shape, used, a, b)),
                    lax.nextafter(lower, np.array(np.inf, np.float32)),
                    lax.nextafter(upper, np.array(-np.inf, np.float32)))


@functools.partial(jax.jit, static_argnames=("shape",))
def bernoulli(key, p, shape):
    """``jax.random.bernoulli(key, p, shape)``: ``uniform < p`` (p a float32 scalar or array)."""
    shape = tuple(shape)
    if not _fast(key, jnp.float32, shape) or jnp.result_type(p) != jnp.float32:
        return jax.random.bernoulli(key, p, shape)
    return uniform(key, shape) < p
