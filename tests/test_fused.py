"""The fused LSTM path (hand-written backward) against autodiff of the generic scan: outputs, final
carries and gradients with respect to params, inputs and the initial carry, for every supported
configuration; the dispatch (what falls back to the generic scan), the ``Stack`` fields ``fused``
and ``unroll``, and the chunked parallel form of minLSTM/minGRU against the associative scan."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_research import cells
from lstm_research.errors import UserError
from lstm_research.layers import Stack, fused, scan

T, B, I, H = 7, 3, 5, 4

CONFIGS = {
    "lstm": ("lstm", {}),
    **{name: (name, {}) for name in cells.GREFF_VARIANTS},
    "fgr_no_peepholes": ("fgr", {"peepholes": False}),
    "fgr_clip_niaf": ("fgr", {"cell_clip": 0.3, "input_activation": "identity"}),
    "lstm1997": ("lstm1997", {}),
    "cifg_no_peepholes": ("cifg", {"peepholes": False}),
    "nig_noaf_no_peepholes": ("nig", {"peepholes": False, "output_activation": "identity"}),
    "nog_niaf": ("nog", {"input_activation": "identity"}),
    "clip": ("vanilla", {"cell_clip": 0.3}),
}
OPTIONS = {
    "plain": {},
    "reverse": {"reverse": True},
    "lengths": {"lengths": True},
    "lengths_reverse": {"lengths": True, "reverse": True},
    # every sequence shorter than T: the fused loops stop at the longest one (a traced count)
    "short_lengths": {"lengths": "short"},
    "short_lengths_reverse": {"lengths": "short", "reverse": True},
    "recurrent_mask": {"recurrent_mask": True},
}


def _random_params(cell, key, input_size=I):
    params = cell.init(key, input_size)
    # non-trivial biases and peepholes so that every term matters
    return {k: v + 0.3 * jax.random.normal(jax.random.fold_in(key, n), v.shape)
            for n, (k, v) in enumerate(sorted(params.items()))}


def _case(cell, input_size=I):
    k = jax.random.split(jax.random.key(0), 6)
    params = _random_params(cell, k[0], input_size)
    xs = jax.random.normal(k[1], (T, B, input_size))
    carry = {"c": jax.random.normal(k[2], (B, H)), "h": jax.random.normal(k[3], (B, H))}
    if getattr(cell, "full_gate_recurrence", False):  # the carried (i, f, o) of FGR: values a sigmoid can give
        carry["gates"] = jax.random.uniform(k[5], (B, 3 * H))
    weights = jax.random.normal(k[4], (T, B, H))  # a loss that weights every output differently
    return params, xs, carry, weights


def _loss(cell, options, weights, fused_flag, parallel=False):
    lengths = None
    if options.get("lengths"):
        lengths = jnp.array(([T - 2, 3, 0] if options["lengths"] == "short" else [T, 3, 0])[:B])
    mask = (jax.random.bernoulli(jax.random.key(7), 0.7, (B, H)) / 0.7
            if options.get("recurrent_mask") else None)

    def loss(params, xs, carry):
        new, ys = scan(cell, params, xs, carry, lengths=lengths,
                       reverse=options.get("reverse", False), recurrent_mask=mask,
                       fused=fused_flag, parallel=parallel)
        value = (jnp.sum(ys * weights) + jnp.sum(jnp.sin(new.get("c", 0.0)))
                 + jnp.sum(new["h"] ** 2) + jnp.sum(jnp.cos(3.0 * new.get("gates", 0.0))))
        return value, (ys, new)
    return loss


# Compiling dominates this file's run time; LLVM's optimizations are not what is tested here.
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def _check_all(cases):
    """cases: {label: (cell, options, input_size)}; compiled together (one XLA compilation is
    several times faster than one per case)."""
    fns, args = {}, {}
    for label, (cell, options, input_size) in cases.items():
        params, xs, carry, weights = _case(cell, input_size)
        fns[label] = [jax.value_and_grad(_loss(cell, options, weights, flag), argnums=(0, 1, 2),
                                         has_aux=True) for flag in (False, True)]
        args[label] = (params, xs, carry)

    def run(args):  # plain and fused for every case
        return {k: [f(*args[k]) for f in fns[k]] for k in fns}
    out = jax.jit(run, compiler_options=FAST_COMPILE)(args)
    for label, (plain, fast) in out.items():
        flat0, tree0 = jax.tree.flatten(plain)
        flat1, tree1 = jax.tree.flatten(fast)
        assert tree0 == tree1, label
        for a, b in zip(flat0, flat1):
            assert np.all(np.isfinite(np.asarray(a))), label  # NaN == NaN to assert_allclose
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-5,
                                       err_msg=label)


def test_fused_matches_autodiff_every_cell():
    cases = {}
    for config, (name, switches) in CONFIGS.items():
        cell = cells.get(name, H, **switches)
        assert fused.unsupported(cell) is None, config
        cases[config] = (cell, {}, I)
    cases["input_size_one"] = (cells.get("vanilla", H), {"lengths": True}, 1)
    _check_all(cases)


def test_fused_matches_autodiff_with_options():
    cases = {}
    for config, option in [("lstm", "reverse"), ("lstm", "lengths"), ("lstm", "recurrent_mask"),
                           ("vanilla", "lengths_reverse"), ("vanilla", "recurrent_mask"),
                           ("clip", "lengths"), ("nog_niaf", "lengths_reverse"),
                           ("vanilla", "short_lengths"), ("cifg", "short_lengths"),
                           ("noaf", "short_lengths_reverse"), ("np", "short_lengths"),
                           ("fgr", "lengths"), ("fgr", "short_lengths_reverse"),
                           ("fgr", "recurrent_mask"), ("fgr_clip_niaf", "short_lengths")]:
        name, switches = CONFIGS[config]
        cases[f"{config}-{option}"] = (cells.get(name, H, **switches), OPTIONS[option], I)
    _check_all(cases)


@pytest.mark.parametrize("row_chunk,name", [(None, "vanilla"), (4, "vanilla"), (4, "fgr")])
def test_fused_padding_does_not_change_results(monkeypatch, row_chunk, name):
    """Padding a batch along time (what the trainer does so that one program serves every
    length) leaves outputs, final carries and gradients as they were, to float rounding; also
    when the matmuls outside the loops visit only the chunks of steps the loops visit
    (``fused.ROW_CHUNK``; here 4 steps, so the padded batch runs in 2 of its 4 chunks)."""
    monkeypatch.setattr(fused, "ROW_CHUNK", row_chunk)
    cell = cells.get(name, H)
    params, xs, carry, weights = _case(cell)
    lengths = jnp.array([T, 3, 0])
    pad = 9
    xs_pad = jnp.concatenate([xs, 5.0 * jnp.ones((pad, B, I))])  # garbage past every end

    def loss(params, xs, carry, weights):
        new, ys = scan(cell, params, xs, carry, lengths=lengths, fused=True)
        return (jnp.sum(ys * weights) + jnp.sum(jnp.sin(new["c"])) + jnp.sum(new["h"] ** 2)
                + jnp.sum(jnp.cos(3.0 * new.get("gates", 0.0)))), ys

    f = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))
    (v0, ys0), g0 = f(params, xs, carry, weights)
    (v1, ys1), g1 = f(params, xs_pad, carry, jnp.concatenate([weights, jnp.ones((pad, B, H))]))
    np.testing.assert_allclose(v1, v0, rtol=1e-6)
    np.testing.assert_allclose(ys1[:T], ys0, rtol=1e-6, atol=1e-7)
    assert not np.asarray(ys1[T:]).any()
    for a, b in zip(jax.tree.leaves((g0[0], g0[2])), jax.tree.leaves((g1[0], g1[2]))):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g1[1][:T], g0[1], rtol=1e-5, atol=1e-6)
    assert not np.asarray(g1[1][T:]).any()


def test_stack_uses_fused_path_and_matches():
    """``Stack(fused=...)``: "auto" (the default) takes the fused path, False the generic scan;
    same values and gradients."""
    auto = Stack(cells.get("lstm", H), num_layers=2, bidirectional=True)
    assert auto.fused == "auto"
    generic = dataclasses.replace(auto, fused=False)
    params = auto.init(jax.random.key(1), I)
    xs = jax.random.normal(jax.random.key(2), (B, T, I))
    lengths = jnp.array([T, 4, 1])

    def loss_of(stack):
        def loss(params, xs):
            ys, carries = stack.apply(params, xs, lengths=lengths)
            return jnp.sum(jnp.tanh(ys)) + sum(jnp.sum(c["fwd"]["c"]) for c in carries)
        return loss

    def both(params, xs):
        return [jax.value_and_grad(loss_of(s), argnums=(0, 1))(params, xs)
                for s in (generic, auto)]
    out = jax.jit(both, compiler_options=FAST_COMPILE)(params, xs)
    for a, b in zip(jax.tree.leaves(out[0]), jax.tree.leaves(out[1])):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-5)
    # the fused path really runs: its custom_vjp shows up in the jaxpr
    assert "custom_vjp" in str(jax.make_jaxpr(loss_of(auto))(params, xs))
    assert "custom_vjp" in str(jax.make_jaxpr(loss_of(
        dataclasses.replace(auto, fused=True)))(params, xs))
    assert "custom_vjp" not in str(jax.make_jaxpr(loss_of(generic))(params, xs))


def test_stack_fused_field_checked_and_required():
    cell = cells.get("lstm", H)
    for bad in ("yes", None, 1):
        with pytest.raises(UserError, match="fused must be one of"):
            Stack(cell, fused=bad)
    with pytest.raises(UserError, match="fused path does not support this: layer_norm"):
        Stack(cells.get("layernorm_lstm", H), fused=True)


def test_stack_unroll_same_results_on_both_paths():
    """``unroll`` reaches the fused loops and the generic scan alike and changes no value."""
    base = Stack(cells.get("vanilla", H), num_layers=2)
    params = base.init(jax.random.key(4), I)
    xs = jax.random.normal(jax.random.key(5), (B, T, I))
    lengths = jnp.array([T, 4, 1])
    stacks = [dataclasses.replace(base, unroll=u, fused=f) for f in ("auto", False)
              for u in (1, 3)]

    def run(params, xs):
        return [jax.value_and_grad(lambda p, x: jnp.sum(
            jnp.sin(s.apply(p, x, lengths=lengths)[0])), argnums=(0, 1))(params, xs)
            for s in stacks]
    out = jax.jit(run, compiler_options=FAST_COMPILE)(params, xs)
    for other in out[1:]:
        for a, b in zip(jax.tree.leaves(out[0]), jax.tree.leaves(other)):
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-5)
    for bad in (0, -1, 1.5):
        with pytest.raises(UserError, match="unroll must be a positive int"):
            dataclasses.replace(base, unroll=bad)


@pytest.mark.parametrize("spec,kwargs,reason", [
    ("layernorm_lstm", {}, "layer_norm"),
    ("lstmp:proj_size=3", {}, "proj_size"),
    ("lstm:gate_activation=hard_sigmoid", {}, "gate_activation"),
    ("lstm:input_activation=relu", {}, "input_activation"),
    ("gru", {}, "not the LSTM family"),
    ("lstm", {"zoneout": {"c": 0.1, "h": 0.1}, "key": jax.random.key(0), "train": True},
     "zoneout"),
    ("lstm", {"remat": True}, "remat"),
])
def test_unsupported_configurations_fall_back(spec, kwargs, reason):
    cell = cells.get(spec, H)
    why = fused.unsupported(cell, **{k: v for k, v in kwargs.items() if k in ("zoneout", "remat")})
    assert why is not None and reason in why
    params = cell.init(jax.random.key(0), I)
    xs, carry = jnp.ones((T, B, I)), cell.initial_carry((B,))
    with pytest.raises(ValueError, match="fused path does not support"):
        jax.eval_shape(lambda p, x, c: scan(cell, p, x, c, fused=True, **kwargs), params, xs,
                       carry)
    # "auto" falls back to the generic scan (traced only: no compilation needed)
    jaxpr = str(jax.make_jaxpr(lambda p, x, c: scan(cell, p, x, c, **kwargs))(params, xs, carry))
    assert "custom_vjp" not in jaxpr


def test_chunked_parallel_form_matches_associative_scan():
    fns, args = {}, {}
    for name, option in [("minlstm", "plain"), ("minlstm", "lengths_reverse"),
                         ("mingru", "lengths_reverse"),
                         ("mingru:positive_candidate=false", "plain")]:
        cell = cells.get(name, H)
        params, xs, _, weights = _case(cell)
        carry = {"h": jax.random.normal(jax.random.key(5), (B, H))}
        fns[(name, option)] = [jax.value_and_grad(
            _loss(cell, OPTIONS[option], weights, flag, parallel=True), argnums=(0, 1, 2),
            has_aux=True) for flag in (False, True)]   # associative scan, chunked
        args[(name, option)] = (params, xs, carry)

    def run(args):
        return [[f(*args[k]) for f in fns[k]] for k in fns]
    with jax.default_device(jax.devices("cpu")[0]):
        out = jax.jit(run, compiler_options=FAST_COMPILE)(args)
    for label, (r0, r1) in zip(fns, out):
        for a, b in zip(jax.tree.leaves(r0), jax.tree.leaves(r1)):
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-5,
                                       err_msg=str(label))


def test_auto_takes_fused_fgr_at_every_width():
    """``fused="auto"`` runs FGR through the fused layer at every width, as ``True`` does;
    ``False`` never."""
    def uses_fused(width, flag):
        cell = cells.get("fgr", width)
        params = cell.init(jax.random.key(0), I)
        xs, carry = jnp.ones((T, B, I)), cell.initial_carry((B,))
        jaxpr = jax.make_jaxpr(lambda p, x, c: scan(cell, p, x, c, fused=flag))(params, xs, carry)
        return "custom_vjp" in str(jaxpr)
    assert uses_fused(4, "auto") and uses_fused(63, "auto") and uses_fused(4, True)
    assert not uses_fused(63, False)
    assert Stack(cells.get("fgr", 4), fused="auto").length_free
    assert not Stack(cells.get("fgr", 63), fused=False).length_free


_SMALL_LOOPS_PROBE = """
import json, os, sys
import numpy as np
import jax, jax.numpy as jnp
from lstm_research import cells
from lstm_research.layers import Stack
stack = Stack(cells.get("vanilla", 24), num_layers=1, fused=True)
params = stack.init(jax.random.key(0), 5)
xs = jax.random.normal(jax.random.key(1), (1, 40, 5))
lengths = jnp.array([33])
grad = jax.jit(jax.grad(lambda p, x: jnp.sum(stack.apply(p, x, lengths=lengths)[0] ** 2)))
hlo = grad.lower(params, xs).compile().as_text()
print(json.dumps({"xla_flags": os.environ.get("XLA_FLAGS"), "small_calls": hlo.count("xla_cpu_small_call"),
                  "grads": [np.asarray(g).tolist() for g in jax.tree.leaves(grad(params, xs))]}))
"""


def test_import_compiles_the_fused_loops_as_single_cpu_kernels():
    """Importing lstm_research sets XLA:CPU's small-while-loop threshold (unless XLA_FLAGS already
    passes backend options): the fused layer's forward and backward loops then compile to one
    kernel each (``xla_cpu_small_call``), with the same gradients as XLA's default, which
    dispatches every operation of the loop body at each step."""
    import json
    import os
    import subprocess
    import sys

    import lstm_research

    def probe(xla_flags):
        env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
        if xla_flags is not None:
            env["XLA_FLAGS"] = xla_flags
        out = subprocess.run([sys.executable, "-c", _SMALL_LOOPS_PROBE], env=env, check=True,
                             capture_output=True, text=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    default = probe(None)
    assert default["xla_flags"] == ("--xla_backend_extra_options=xla_cpu_small_while_loop_byte_threshold="
                                    f"{lstm_research.SMALL_WHILE_LOOP_BYTES}")
    assert default["small_calls"] == 2  # the forward loop and the backward loop
    off = "--xla_backend_extra_options=xla_cpu_small_while_loop_byte_threshold=0"
    xla_default = probe(off)
    assert xla_default["xla_flags"] == off and xla_default["small_calls"] == 0  # left as the user set it
    for a, b in zip(default["grads"], xla_default["grads"], strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
