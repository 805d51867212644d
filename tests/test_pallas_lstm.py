"""The opt-in Pallas LSTM layer (``fused="pallas"``), run in Pallas interpret mode on CPU, against
autodiff of the generic scan: outputs, final carries and gradients with respect to params, inputs
and the initial carry for every switch it covers; padding of H and the batch; bfloat16; the
wiring (Stack, ``config.model.fused=pallas``), the fallbacks, and that "auto" never picks it.
What these tests cannot show: that the Triton kernels compile and run correctly on a GPU (only
their lowering to Triton IR is checked) or how fast they are."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import FAST_COMPILE

from lstm_research import cells, models, tasks
from lstm_research.errors import UserError
from lstm_research.layers import Stack, fused, pallas_lstm, scan
from lstm_research.models.recurrent import stack_knobs
from lstm_research.training import base_config
from lstm_research.training.validate import check_model

# Small shapes: interpret mode runs every kernel op as an XLA op. H = 5 and B = 3 are padded to
# 16 and 16 inside the layer.
T, B, I, H = 7, 3, 4, 5
#: float32: the same sums in another order (the kernel's matmuls per gate, padded)
F32_TOL = dict(rtol=1e-5, atol=1e-5)
#: bfloat16 against a float32 reference: bfloat16 keeps 8 significant bits (relative rounding
#: 2^-9 per op), and it rounds the inputs, weights, h and the matmul operands at every step
BF16_TOL = dict(rtol=2e-2, atol=2e-2)


def _cell(name, **switches):
    return cells.get(name, H, **switches)


CASES = {  # label: (cell, options)
    "nig": (_cell("nig"), {}),
    "nfg": (_cell("nfg"), {}),
    "nog": (_cell("nog"), {}),
    "niaf": (_cell("niaf"), {}),
    "noaf": (_cell("noaf"), {}),
    "cifg": (_cell("cifg"), {}),
    "lstm1997_reverse": (_cell("lstm1997"), {"reverse": True}),
    "clip_lengths": (_cell("vanilla", cell_clip=0.3), {"lengths": [T, 1, 0]}),
    "vanilla_lengths_reverse": (_cell("vanilla"), {"lengths": [T, 1, 0], "reverse": True}),
    "cifg_short_lengths": (_cell("cifg"), {"lengths": [T - 2, 3, 1]}),
    "vanilla_recurrent_mask": (_cell("vanilla"), {"recurrent_mask": True}),
    "np_mask_lengths": (_cell("np"), {"recurrent_mask": True, "lengths": [T - 1, 4, 0]}),
    "nog_niaf": (_cell("nog", input_activation="identity"), {"lengths": [2, T, 5]}),
    "nig_noaf_np": (_cell("nig", output_activation="identity", peepholes=False), {}),
    # no padding of H (16), and two batch blocks (B = 19 -> 32): the grid's second program
    "two_blocks_h16": (cells.get("vanilla", 16), {"B": 19, "lengths": "random"}),
    # full gate recurrence: the carried (i, f, o) and w_gates (its gradient and the carry's too)
    "fgr": (_cell("fgr"), {}),
    "fgr_lengths_reverse": (_cell("fgr"), {"lengths": [T, 1, 0], "reverse": True}),
    "fgr_mask_lengths": (_cell("fgr"), {"recurrent_mask": True, "lengths": [T - 1, 4, 0]}),
    "fgr_clip_identity_np": (_cell("fgr", cell_clip=0.3, input_activation="identity",
                                   peepholes=False), {"lengths": [2, T, 5]}),
}


def _param_shapes(cell):
    """The LSTM cell's param shapes (see :class:`lstm_research.cells.lstm.LSTM`)."""
    if cell.layer_norm or cell.full_gate_recurrence:
        return {n: v.shape for n, v in cell.init(jax.random.key(0), I).items()}
    G, h = len(cell.gates), cell.hidden_size
    shapes = {"w_x": (I, G * h), "w_h": (h, G * h), "b": (G * h,)}
    return shapes | {f"peephole_{g}": (h,) for g in "ifo" if cell.peepholes and g in cell.gates}


def _case(cell, options, dtype=jnp.float32):
    """(params, xs, carry) in ``dtype``, and (loss weights, lengths, recurrent mask); drawn with
    numpy (eager jax.random ops would each compile: most of this file's time)."""
    b, h = options.get("B", B), cell.hidden_size
    rng = np.random.default_rng(0)
    shapes = _param_shapes(cell)
    # random biases and peepholes too, so that every term matters
    params = {n: 0.5 * rng.standard_normal(shape) for n, shape in shapes.items()}
    xs = rng.standard_normal((T, b, I))
    carry = {"c": rng.standard_normal((b, h)), "h": rng.standard_normal((b, h))}
    if cell.full_gate_recurrence:  # FGR's carried (i, f, o)
        carry["gates"] = rng.random((b, 3 * h))
    weights = rng.standard_normal((T, b, h)).astype(np.float32)  # every output its own weight
    lengths = options.get("lengths")
    if lengths == "random":
        lengths = rng.integers(0, T + 1, b)
    mask = ((rng.random((b, h)) < 0.7) / 0.7 if options.get("recurrent_mask") else None)
    args = jax.tree.map(lambda a: jnp.asarray(a, dtype), (params, xs, carry))
    return args, (jnp.asarray(weights), None if lengths is None else jnp.asarray(lengths),
                  None if mask is None else jnp.asarray(mask, dtype))


def _grad_fn(cell, options, weights, lengths, mask, fused):
    def loss(params, xs, carry):
        new, ys = scan(cell, params, xs, carry, lengths=lengths, recurrent_mask=mask,
                       reverse=options.get("reverse", False), fused=fused)
        f32 = jnp.float32
        value = (jnp.sum(ys.astype(f32) * weights) + jnp.sum(jnp.sin(new["c"].astype(f32)))
                 + jnp.sum(new["h"].astype(f32) ** 2))
        if "gates" in new:  # FGR's carried (i, f, o): a gradient flows in from the end too
            value = value + jnp.sum(jnp.cos(3.0 * new["gates"].astype(f32)))
        return value, (ys, new)
    return jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)


def _assert_close(got, want, tol, label):
    flat0, tree0 = jax.tree.flatten(want)
    flat1, tree1 = jax.tree.flatten(got)
    assert tree0 == tree1, label
    for a, b in zip(flat0, flat1):
        assert np.all(np.isfinite(np.asarray(a, np.float32))), label  # NaN == NaN to allclose
        np.testing.assert_allclose(np.asarray(b, np.float32), np.asarray(a, np.float32),
                                   err_msg=label, **tol)


def test_pallas_matches_autodiff_of_generic_scan_every_switch():
    fns, args = {}, {}
    for label, (cell, options) in CASES.items():
        assert pallas_lstm.pallas_unsupported(cell, H, B, jnp.float32) is None, label
        a, (w, lengths, mask) = _case(cell, options)
        fns[label] = [_grad_fn(cell, options, w, lengths, mask, f) for f in (False, "pallas")]
        args[label] = a
        # the Pallas kernels really run: one forward and one backward pallas_call
        jaxpr = str(jax.make_jaxpr(fns[label][1])(*a))
        assert jaxpr.count("pallas_call[") == 2, label

    def run(args):
        return {k: [f(*args[k]) for f in fns[k]] for k in fns}
    out = jax.jit(run, compiler_options=FAST_COMPILE)(args)
    for label, (generic, pallas) in out.items():
        _assert_close(pallas, generic, F32_TOL, label)


@pytest.mark.parametrize("name", ["vanilla", "fgr"])
def test_pallas_bfloat16_against_float32_reference(name):
    cell, options = _cell(name), {"lengths": [T, 1, 4], "recurrent_mask": True}
    args, (w, lengths, mask) = _case(cell, options)
    args16, _ = _case(cell, options, jnp.bfloat16)
    ref = _grad_fn(cell, options, w, lengths, mask, False)
    pallas = _grad_fn(cell, options, w, lengths, mask.astype(jnp.bfloat16), "pallas")
    want, got = jax.jit(lambda a, b: (ref(*a), pallas(*b)), compiler_options=FAST_COMPILE)(
        args, args16)
    assert {a.dtype for a in jax.tree.leaves(got[1])} == {jnp.dtype(jnp.bfloat16)}
    assert got[0][1][0].dtype == jnp.bfloat16   # ys in the input dtype
    _assert_close(got, want, BF16_TOL, f"bfloat16 {name}")


@pytest.mark.parametrize("name", ["vanilla", "fgr"])
def test_padded_units_stay_exactly_zero(name):
    """H = 5 runs as 16 units: the 11 padded ones must stay 0 in c. (Their gates are s(0) = 1/2,
    harmless: they meet only zero rows of w_h and, with FGR, of w_gates' blocks.)"""
    cell = _cell(name)
    (params, xs, carry), (_, lengths, _) = _case(cell, {"lengths": [T, 2, 0]})
    spec = fused.make_spec(cell, True, False)
    cfg = pallas_lstm._Cfg(spec, 16, True)
    peeps = tuple(params[f"peephole_{g}"] for g in spec.peep)
    _, (C, _, *R) = pallas_lstm._forward(
        cfg, params["w_x"], params["w_h"], params.get("w_gates"), params["b"], peeps, xs,
        carry["h"], carry["c"], carry.get("gates"), lengths, None, save=True)
    assert C.shape == (T + 1, 16, 16)
    assert not np.asarray(C[:, :, H:]).any()
    assert np.asarray(C[1:, :B, :H]).any()
    if name == "fgr":
        assert R[0].shape == (T + 1, 3, 16, 16)
        blocks = pallas_lstm._gate_blocks(params["w_gates"], H, 16)   # [source, target, in, out]
        assert not np.asarray(blocks[:, :, H:, :]).any()
        assert not np.asarray(blocks[:, :, :, H:]).any()


def _model_loss(fused, hidden=5):
    config = base_config("adding")
    config.model.update(cell="vanilla", hidden_size=hidden, num_layers=2, fused=fused)
    assert not check_model(config.model, "adding")
    task = tasks.build(config.task, config.seed)
    batch = next(iter(task.train_batches(0)))
    x, y = batch["x"][:3, :8], batch["y"][:3]
    lengths = jnp.minimum(batch["lengths"][:3], 8).at[1].set(5)
    model = models.build(config.model, task)
    params = jax.jit(model.init)(jax.random.key(0), x, None, lengths)

    def loss(params):
        out, _ = model.apply(params, x, None, lengths)
        return jnp.mean((out[:, 0] - y) ** 2)
    return model, loss, params


def test_config_model_fused_pallas_same_loss_and_grads():
    """``--config.model.fused=pallas`` through a 2-layer model: same loss and grads as
    ``false`` (the reverse direction: ``CASES``)."""
    model, loss, params = _model_loss("pallas")
    _, loss0, _ = _model_loss("false")
    assert model.rnn.stack.fused == "pallas"
    assert not model.rnn.stack.length_free   # the kernels run over all T steps
    assert "pallas_call" in str(jax.make_jaxpr(jax.grad(loss))(params))
    out = jax.jit(lambda p: [jax.value_and_grad(f)(p) for f in (loss0, loss)],
                  compiler_options=FAST_COMPILE)(params)
    _assert_close(out[1], out[0], F32_TOL, "model")


@pytest.mark.parametrize("spec,hidden,reason,path", [
    ("layernorm_lstm", H, "layer_norm", "generic scan"),
    # H = 65 runs as 128 units: 4 gates x 128 x 128 float32 = 256 KiB of w_h, over the budget
    ("vanilla", 65, "above the 160 KiB budget", "fused LSTM layer"),
    # FGR at H = 64: w_h and w_gates are 13 x 64 x 64 float32 = 208 KiB, plus 36 KiB of tiles
    ("fgr", 64, "FGR, float32) needs 244 KiB", "fused LSTM layer"),
    # ... and at H = 40 (padded to 64)
    ("fgr", 40, "above the 160 KiB budget", "fused LSTM layer"),
])
def test_unsupported_falls_back_with_same_results(spec, hidden, reason, path, monkeypatch):
    monkeypatch.setattr(pallas_lstm, "_LOGGED", set())
    # the warnings as absl logging is asked to write them (pytest's caplog misses absl's records
    # once a test in the same process has run an absl app, as run.py's tests do)
    warnings = []
    monkeypatch.setattr(pallas_lstm.logging, "warning", lambda msg, *a: warnings.append(msg % a))
    cell = cells.get(spec, hidden)
    why = pallas_lstm.pallas_unsupported(cell, hidden, B, jnp.float32)
    assert why is not None and reason in why
    (params, xs, carry), (w, lengths, _) = _case(cell, {"lengths": [T, 3, 1]})
    fns = [_grad_fn(cell, {}, w, lengths, None, f) for f in (False, "pallas")]
    assert "pallas_call" not in str(jax.make_jaxpr(fns[1])(params, xs, carry))
    out = jax.jit(lambda *a: [f(*a) for f in fns], compiler_options=FAST_COMPILE)(
        params, xs, carry)
    logged = [m for m in warnings if reason in m and path in m]
    assert len(logged) == 1 and len(warnings) == 1   # once, though traced twice
    _assert_close(out[1], out[0], F32_TOL, spec)


def test_auto_and_true_never_pick_pallas_and_bad_values_list_it():
    stack = Stack(cells.get("vanilla", H))
    params = stack.init(jax.random.key(0), I)
    xs = jnp.ones((B, T, I))
    for flag in ("auto", True, False):
        s = dataclasses.replace(stack, fused=flag)
        assert "pallas_call" not in str(jax.make_jaxpr(lambda p: s.apply(p, xs))(params))
    s = dataclasses.replace(stack, fused="pallas")
    assert "pallas_call" in str(jax.make_jaxpr(lambda p: s.apply(p, xs))(params))
    assert stack.length_free and not s.length_free
    with pytest.raises(UserError, match="pallas"):
        Stack(cells.get("vanilla", H), fused="triton")
    with pytest.raises(UserError, match="pallas"):
        stack_knobs({"fused": "triton"})
    assert stack_knobs({"fused": "pallas"}) == {"fused": "pallas"}
    config = base_config("adding")
    config.model.fused = "triton"
    assert any("pallas" in p for p in check_model(config.model, "adding"))


def test_lowers_to_one_triton_kernel_forward_and_one_backward():
    """The real (not interpret-mode) lowering for a GPU, done on this CPU: the gradient of one
    layer and direction is exactly two Triton kernels (the lowering checks Triton's rules:
    power-of-two loads and stores, 2-D dots). Compiling them to PTX needs a GPU: not done."""
    for cell, dts in ((_cell("vanilla", cell_clip=1.0), (jnp.float32, jnp.bfloat16)),
                      (_cell("fgr"), (jnp.float32, jnp.bfloat16))):
        _lower_for_gpu(cell, dts)


def _lower_for_gpu(cell, dts):
    (params, xs, carry), (_, lengths, _) = _case(cell, {"lengths": [T, 2, 0]})
    mask = jnp.ones((B, H))
    for dt in dts:
        args = jax.tree.map(lambda a: a.astype(dt), (params, xs, carry))

        def loss(p, x, c):
            new, ys = pallas_lstm.pallas_scan(cell, p, x, c, lengths=lengths,
                                              recurrent_mask=mask.astype(dt), interpret=False)
            return jnp.sum(ys.astype(jnp.float32)) + jnp.sum(new["c"].astype(jnp.float32))
        text = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).trace(*args).lower(
            lowering_platforms=("cuda",)).as_text()
        assert text.count("@__gpu$xla.gpu.triton(") == 2, dt
