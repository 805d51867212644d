"""The scanned stack core: padding masks in both directions, what each Greff ablation switch
changes (read off the carries), error messages, bfloat16, remat, dropout / zoneout, jit."""
import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_research import cells
from lstm_research.cells import CellConfigError
from lstm_research.errors import UserError
from lstm_research.layers import Stack, scan

from conftest import fast_jit

B, T, I, H = 3, 5, 4, 6
LENGTHS = [T, 3, 1]


def randomize(make, seed, scale=0.5):
    """Random normal arrays shaped like what ``make()`` returns (found without running it)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda a: jnp.asarray(rng.normal(0.0, scale, a.shape), a.dtype),
                        jax.eval_shape(make))


def inputs(seed=0, shape=(B, T, I)):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


# --- (a) masking ----------------------------------------------------------------------------
@pytest.mark.parametrize("name,parallel", [("vanilla", False), ("mlstm", False),
                                           ("minlstm", True)])
def test_padded_batch_equals_each_sequence_alone(name, parallel):
    stack = Stack(cells.get(name, H), num_layers=2, bidirectional=True, parallel=parallel)
    params = randomize(lambda: stack.init(jax.random.key(0), I), seed=1)
    xs = np.array(inputs(2))
    for b, L in enumerate(LENGTHS):
        xs[b, L:] = np.nan  # padding must not leak anywhere, not even as NaN
    run_padded = fast_jit(lambda p, x, lengths: stack.apply(p, x, lengths=lengths))
    run_alone = fast_jit(lambda p, x: stack.apply(p, x))
    ys, carries = run_padded(params, jnp.asarray(xs), jnp.array(LENGTHS))
    assert ys.shape == (B, T, 2 * H)
    for b, L in enumerate(LENGTHS):
        ys_b, carries_b = run_alone(params, jnp.asarray(xs[b:b + 1, :L]))
        np.testing.assert_allclose(ys[b, :L], ys_b[0], rtol=1e-6, atol=1e-6)
        assert np.all(np.asarray(ys[b, L:]) == 0), "outputs past the end must be zero"
        for layer in range(2):
            for d in ("fwd", "bwd"):
                for k, v in carries[layer][d].items():
                    np.testing.assert_allclose(v[b], carries_b[layer][d][k][0], rtol=1e-6,
                                               atol=1e-6, err_msg=f"layer {layer} {d} {k}")


@pytest.mark.parametrize("fused", [False, "auto"])
def test_a_length_above_T_counts_as_T_in_both_directions(fused):
    # the backward direction read past the end (NaN) while the forward one stopped at T
    stack = Stack(cells.get("vanilla", H), bidirectional=True, fused=fused)
    params = randomize(lambda: stack.init(jax.random.key(0), I), seed=1)
    xs = inputs(3)
    run = fast_jit(lambda p, x, lengths: stack.apply(p, x, lengths=lengths))
    over = jnp.array([T + 2, *LENGTHS[1:]])
    ys, carries = run(params, xs, over)
    ys_t, carries_t = run(params, xs, jnp.minimum(over, T))
    assert np.all(np.isfinite(np.asarray(ys)))
    for a, b in zip(jax.tree.leaves((ys, carries)), jax.tree.leaves((ys_t, carries_t))):
        np.testing.assert_array_equal(a, b)


# --- (b) the ablation switches, read off the carries -----------------------------------------
PRESENT = {"vanilla": "ifzo", "nig": "fzo", "nfg": "izo", "nog": "ifz", "niaf": "ifzo",
           "noaf": "ifzo", "np": "ifzo", "cifg": "izo", "fgr": "ifzo"}
Z_PRE = 0.8  # block input pre-activation, fixed by zeroing z's weights


def probe_params(name, seed=3, peepholes_zero=True):
    """Random params with z's weights zeroed and b_z = Z_PRE, so z_t is known and constant."""
    cell = cells.get(name, H)
    p = dict(randomize(lambda: cell.init(jax.random.key(0), I), seed))
    gates = PRESENT[name]
    zs = slice(gates.index("z") * H, (gates.index("z") + 1) * H)
    p["w_x"] = p["w_x"].at[:, zs].set(0.0)
    p["w_h"] = p["w_h"].at[:, zs].set(0.0)
    p["b"] = p["b"].at[zs].set(Z_PRE)
    if peepholes_zero:
        p.update({k: jnp.zeros_like(v) for k, v in p.items() if k.startswith("peephole_")})
    return cell, p


def probe_gates(cell, params, carry, x, z):
    """Recover i and f from two steps that differ only in c_{t-1} (gates must not peep at it):
    c = z i + c_prev f, so c_prev = 0 gives z i and c_prev = 1 gives z i + f."""
    new0, y0 = cell.step(params, {**carry, "c": jnp.zeros((B, H))}, x)
    new1, _ = cell.step(params, {**carry, "c": jnp.ones((B, H))}, x)
    i = new0["c"] / z
    f = new1["c"] - new0["c"]
    return np.asarray(i), np.asarray(f), np.asarray(new0["c"]), np.asarray(y0), new0


def _carry(cell, seed):
    return randomize(lambda: cell.initial_carry((B,)), seed, scale=1.0)


@pytest.mark.parametrize("name", ["vanilla", "nig", "nfg", "nog", "cifg", "fgr"])
def test_gate_switches_do_what_they_claim(name):
    cell, p = probe_params(name)
    carry = _carry(cell, 4)
    if name == "fgr":
        carry["gates"] = jax.nn.sigmoid(carry["gates"])
    x = inputs(5)[:, 0]
    i, f, c, y, new = probe_gates(cell, p, carry, x, np.tanh(Z_PRE))
    o = y / np.tanh(c)
    open_ = lambda g: np.all((g > 1e-4) & (g < 1 - 1e-4)) and np.std(g) > 0.05
    if name == "nig":
        np.testing.assert_allclose(i, 1.0, atol=1e-6)
    else:
        assert open_(i)
    if name == "nfg":
        np.testing.assert_allclose(f, 1.0, atol=1e-6)
    elif name == "cifg":
        np.testing.assert_allclose(f, 1.0 - i, atol=1e-6)
    else:
        assert open_(f)
        assert not np.allclose(f, 1.0 - i, atol=1e-3)
    if name == "nog":
        np.testing.assert_allclose(y, np.tanh(c), atol=1e-6)
    else:
        assert open_(o)
    if name == "fgr":
        # the carry holds this step's (i, f, o), and the previous gates feed the next ones
        np.testing.assert_allclose(new["gates"], np.concatenate([i, f, o], -1), atol=1e-5)
        other = {**carry, "gates": 1.0 - carry["gates"], "c": jnp.zeros((B, H))}
        assert not np.allclose(cell.step(p, other, x)[0]["c"], c, atol=1e-4)
    else:
        assert "gates" not in new


def test_nfg_cell_never_decays():
    """With z = 0 the cell state of NFG stays put (f = 1); vanilla's forget gate decays it."""
    xs = inputs(6)
    c0 = np.asarray(_carry(cells.get("nfg", H), 7)["c"])
    for name in ("nfg", "vanilla"):
        cell, p = probe_params(name, peepholes_zero=False)
        zs = PRESENT[name].index("z") * H
        p["b"] = p["b"].at[zs:zs + H].set(0.0)  # z = tanh(0) = 0
        carry = {**_carry(cell, 7)}
        for t in range(T):
            carry, _ = cell.step(p, carry, xs[:, t])
            if name == "nfg":
                np.testing.assert_array_equal(carry["c"], c0)
        if name == "vanilla":
            assert np.all(np.abs(np.asarray(carry["c"])) < np.abs(c0) * 0.9)


def test_activation_switches():
    """NIAF: z = W x + ... without tanh; NOAF: y = c o. Same params as vanilla, so the gates
    are equal and only the activation differs."""
    x = inputs(8)[:, 0]
    results = {}
    for name in ("vanilla", "niaf", "noaf"):
        cell, p = probe_params(name, peepholes_zero=False)
        carry = {**_carry(cell, 9), "c": jnp.zeros((B, H))}
        results[name] = cell.step(p, carry, x)
    (cv, yv), (cn, yn), (ca, ya) = (
        (np.asarray(results[n][0]["c"]), np.asarray(results[n][1]))
        for n in ("vanilla", "niaf", "noaf"))
    np.testing.assert_allclose(cn / cv, Z_PRE / np.tanh(Z_PRE), rtol=1e-5)   # z = Z_PRE vs tanh
    np.testing.assert_allclose(ca, cv, rtol=1e-6)
    np.testing.assert_allclose(ya / yv, cv / np.tanh(cv), rtol=1e-5)          # c o vs tanh(c) o


def test_no_peepholes():
    """NP has no peephole params, and its cell update is affine in c_{t-1} (the gates do not
    read it); vanilla's peepholes make it non-affine."""
    x = inputs(10)[:, 0]
    second_diff = {}
    for name in ("np", "vanilla"):
        cell, p = probe_params(name, peepholes_zero=False)
        carry = _carry(cell, 11)
        cs = [np.asarray(cell.step(p, {**carry, "c": jnp.full((B, H), v)}, x)[0]["c"], np.float64)
              for v in (0.0, 1.0, 2.0)]
        second_diff[name] = np.abs(cs[2] - 2 * cs[1] + cs[0]).max()
        peeps = {k for k in p if k.startswith("peephole_")}
        assert peeps == (set() if name == "np" else {"peephole_i", "peephole_f", "peephole_o"})
    assert second_diff["np"] < 1e-5 and second_diff["vanilla"] > 1e-2


# --- (c) errors -----------------------------------------------------------------------------
def test_unknown_cell_lists_valid_names():
    with pytest.raises(CellConfigError) as e:
        cells.get("lstn", H)
    assert "'lstn'" in str(e.value)
    for name in cells.names():
        assert name in str(e.value)


def test_unknown_switch_lists_valid_switches():
    with pytest.raises(CellConfigError) as e:
        cells.get("vanilla:peephole=false", H)
    msg = str(e.value)
    assert "'peephole'" in msg
    for switch in ("peepholes", "forget_gate", "coupled_forget", "cell_clip", "proj_size"):
        assert switch in msg
    with pytest.raises(CellConfigError, match="num_head"):
        cells.get("mlstm", H, num_head=2)
    with pytest.raises(CellConfigError, match="'forget_bias' is set twice in 'lstm:forget_bias"):
        cells.get("lstm:forget_bias=1,forget_bias=2", H)
    with pytest.raises(CellConfigError, match="not of the form key=value"):
        cells.get("lstm:forget_bias", H)


def test_contradictory_switches_refused_with_reason():
    with pytest.raises(CellConfigError, match="input gate"):
        cells.get("cifg", H, input_gate=False)
    with pytest.raises(CellConfigError, match="proj_size"):
        cells.get("lstmp", H)
    with pytest.raises(CellConfigError, match="divide"):
        cells.get("mlstm", H, num_heads=4)


def test_cell_config_errors_are_user_errors():
    assert issubclass(CellConfigError, UserError) and issubclass(CellConfigError, ValueError)
    with pytest.raises(UserError, match="hidden_size"):
        cells.get("lstm", 0)
    with pytest.raises(UserError, match="must be in"):
        Stack(cells.get("lstm", H), dropout=1.5)


def test_switch_of_a_type_the_base_does_not_know_is_left_to_the_cell():
    """A new cell may have switches of any type (here ``tuple[int, ...]``): the base checks the
    types it knows (int, bool, str, float, float | None) and leaves the others to ``validate``."""
    @dataclasses.dataclass(frozen=True)
    class Banded(cells.GRU):
        bands: tuple[int, ...] = (1, 2)
        scale: float = 1.0

        def validate(self):
            if not all(isinstance(b, int) for b in self.bands):
                raise CellConfigError(f"bands must be ints, got {self.bands!r}")

    assert Banded(hidden_size=H, bands=(3, 4, 5)).bands == (3, 4, 5)
    with pytest.raises(CellConfigError, match="bands must be ints"):
        Banded(hidden_size=H, bands=("a",))
    # known types are still checked, naming the switch and its type
    with pytest.raises(CellConfigError, match="switch scale='big' must be of type float"):
        Banded(hidden_size=H, scale="big")
    with pytest.raises(CellConfigError, match="switch reset_after=1 must be of type bool"):
        Banded(hidden_size=H, reset_after=1)


def test_wrong_input_shape_names_expected_and_given():
    stack = Stack(cells.get("lstm", H))
    params = randomize(lambda: stack.init(jax.random.key(0), I), 0)
    with pytest.raises(ValueError) as e:
        stack.apply(params, jnp.zeros((B, T, I + 1)))
    assert f"[batch, time, {I}]" in str(e.value) and f"({B}, {T}, {I + 1})" in str(e.value)
    with pytest.raises(ValueError, match=r"\(5, 4\)"):
        stack.apply(params, jnp.zeros((T, I)))
    with pytest.raises(ValueError, match="rng key"):
        Stack(cells.get("lstm", H), dropout=0.5).apply(params, jnp.zeros((B, T, I)), train=True)


@pytest.mark.parametrize("name", ["mlstm", "minlstm"])
def test_recurrent_dropout_on_a_cell_without_recurrent_weights_is_refused(name):
    # by the Stack itself, before anything runs (a run wrote its workdir first)
    with pytest.raises(ValueError, match=f"cell '{name}' has no recurrent weights"):
        Stack(cells.get(name, H), recurrent_dropout=0.3)
    with pytest.raises(ValueError, match="has no parallel form"):
        Stack(cells.get("lstm", H), parallel=True)
    with pytest.raises(ValueError, match="parallel form supports neither"):
        Stack(cells.get("minlstm", H), parallel=True, zoneout=0.1)


# --- (d) bfloat16 ---------------------------------------------------------------------------
@pytest.mark.parametrize("name,parallel", [("vanilla", False), ("slstm", False),
                                           ("mlstm", False), ("minlstm", True)])
def test_bfloat16_close_to_float32(name, parallel):
    stack = Stack(cells.get(name, H), num_layers=1, parallel=parallel)
    params = randomize(lambda: stack.init(jax.random.key(0), I), seed=12)
    xs = inputs(13)
    run = fast_jit(lambda p, x: stack.apply(p, x, lengths=jnp.array(LENGTHS)))
    run16 = fast_jit(lambda p, x: stack.apply(p, x, lengths=jnp.array(LENGTHS),
                                              dtype=jnp.bfloat16))
    ys, carries = run(params, xs)
    ys16, carries16 = run16(params, xs)
    assert ys16.dtype == jnp.bfloat16
    assert all(c.dtype == jnp.bfloat16 for c in jax.tree.leaves(carries16))
    scale = float(np.abs(ys).max())
    np.testing.assert_allclose(np.asarray(ys16, np.float32), ys, atol=0.05 * scale + 0.02)
    assert not np.array_equal(np.asarray(ys16, np.float32), ys)  # it really ran in bfloat16


# --- (e) remat ------------------------------------------------------------------------------
def test_remat_gives_the_same_gradients():
    cell = cells.get("vanilla", H)
    params = randomize(lambda: Stack(cell, 1, bidirectional=True).init(jax.random.key(0), I), 14)
    xs, lengths = inputs(15), jnp.array(LENGTHS)
    grads = []
    for remat in (False, True):
        stack = Stack(cell, num_layers=1, bidirectional=True, remat=remat)

        def loss(p):
            ys, carries = stack.apply(p, xs, lengths=lengths)
            return jnp.sum(ys ** 2) + jnp.sum(carries[-1]["bwd"]["c"])

        grads.append(fast_jit(jax.grad(loss))(params))
    for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert any(np.abs(np.asarray(g)).max() > 1e-3 for g in jax.tree.leaves(grads[0]))


# --- (f) dropout and zoneout ----------------------------------------------------------------
def _elman(seed=16, **kw):
    stack = Stack(cells.get("elman", H), **kw)
    return stack, randomize(lambda: stack.init(jax.random.key(0), I), seed)


def _elman_run(p, xs, h0=None, in_mask=None, rec_mask=None):
    """h_t = tanh((x_t m_in) W + (h_{t-1} m_rec) U + b) in NumPy float64."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), p)
    xs = np.asarray(xs, np.float64)
    h = np.zeros((xs.shape[0], H)) if h0 is None else h0
    ys = []
    for t in range(xs.shape[1]):
        x = xs[:, t] if in_mask is None else xs[:, t] * in_mask
        hr = h if rec_mask is None else h * rec_mask
        h = np.tanh(x @ p["w_x"] + hr @ p["w_h"] + p["b"])
        ys.append(h)
    return np.stack(ys, 1)


def test_regularizers_are_off_at_eval_and_deterministic_given_key():
    kw = dict(num_layers=2, bidirectional=True)
    plain, params = _elman(**kw)
    noisy = Stack(plain.cell, dropout=0.5, input_dropout=0.3, recurrent_dropout=0.4, zoneout=0.2,
                  **kw)
    xs, lengths = inputs(17), jnp.array(LENGTHS)
    run = fast_jit(lambda p, x, k: noisy.apply(p, x, lengths=lengths, train=True, key=k))
    ys_plain, _ = fast_jit(lambda p, x: plain.apply(p, x, lengths=lengths))(params, xs)
    # at eval, dropout is the identity (zoneout's expectation is checked in test_zoneout)
    no_zoneout = Stack(plain.cell, dropout=0.5, input_dropout=0.3, recurrent_dropout=0.4, **kw)
    ys_eval, _ = fast_jit(lambda p, x, k: no_zoneout.apply(p, x, lengths=lengths, train=False,
                                                           key=k))(params, xs, jax.random.key(1))
    np.testing.assert_allclose(ys_eval, ys_plain, rtol=1e-6, atol=1e-6)
    a, b, c = (run(params, xs, jax.random.key(s))[0] for s in (1, 1, 2))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c) and not np.allclose(a, ys_plain)
    assert np.all(np.asarray(a)[2, 1:] == 0)  # masking still applies in training


def test_jit_equals_eager():
    stack, params = _elman(recurrent_dropout=0.3, zoneout=0.2)
    xs, lengths, key = inputs(21), jnp.array(LENGTHS), jax.random.key(6)
    eager = stack.apply(params, xs, lengths=lengths, train=True, key=key)
    jitted = jax.jit(lambda p, x, l, k: stack.apply(p, x, lengths=l, train=True, key=k))(
        params, xs, lengths, key)
    for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def _find_masks(p, xs, ys, n_units, which, scale):
    """For each sequence, all masks in {0, scale}^n_units that reproduce its whole output."""
    found = []
    for b in range(xs.shape[0]):
        fits = []
        for bits in itertools.product((0.0, scale), repeat=n_units):
            m = np.array(bits)[None]
            ref = _elman_run(p, xs[b:b + 1], **{which: m})
            if np.allclose(ref[0], ys[b], atol=1e-5):
                fits.append(bits)
        found.append(fits)
    return found


@pytest.mark.parametrize("which,n_units", [("rec_mask", H), ("in_mask", I)])
def test_variational_dropout_uses_one_mask_per_sequence(which, n_units):
    rate = 0.5
    stack, params = _elman(recurrent_dropout=rate if which == "rec_mask" else 0.0,
                           input_dropout=rate if which == "in_mask" else 0.0)
    xs = inputs(18)
    ys, _ = stack.apply(params, xs, train=True, key=jax.random.key(3))
    p = params["layers"][0]["fwd"]
    found = _find_masks(p, np.asarray(xs), np.asarray(ys), n_units, which, 1 / (1 - rate))
    # exactly one fixed mask (scaled by 1/(1-rate)) explains every step of each sequence
    assert all(len(f) == 1 for f in found), found
    masks = np.array([f[0] for f in found])
    assert 0 < np.count_nonzero(masks) < masks.size and len({tuple(m) for m in masks}) > 1


def test_dropout_between_layers_fresh_mask_per_step_and_not_on_last_layer():
    rate = 0.5
    stack, params = _elman(num_layers=2, dropout=rate)
    xs = inputs(19)
    ys, _ = stack.apply(params, xs, train=True, key=jax.random.key(4))
    p1, p2 = params["layers"][0]["fwd"], params["layers"][1]["fwd"]
    ys1 = _elman_run(p1, xs)  # layer 1 is not dropped out on its input
    ys, masks = np.asarray(ys, np.float64), np.zeros((B, T, H))
    for b in range(B):
        h = np.zeros((1, H))
        for t in range(T):
            fits = [np.array(bits) for bits in itertools.product((0.0, 2.0), repeat=H)
                    if np.allclose(_elman_run(p2, ys1[b:b + 1, t:t + 1], h0=h,
                                              in_mask=np.array(bits)[None])[0, 0],
                                   ys[b, t], atol=1e-5)]
            assert len(fits) == 1, (b, t, fits)
            masks[b, t] = fits[0]
            h = ys[b:b + 1, t]
    assert len({tuple(m) for m in masks.reshape(-1, H)}) > T  # fresh masks, not one per sequence
    assert 0 < np.count_nonzero(masks) < masks.size
    # a single layer has no inter-layer connection: dropout does nothing there
    one, p_one = _elman(num_layers=1, dropout=rate)
    np.testing.assert_array_equal(one.apply(p_one, xs, train=True, key=jax.random.key(4))[0],
                                  one.apply(p_one, xs)[0])


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_zoneout(train):
    """Zoneout (Krueger et al. 2017) on the carry: at eval the expectation
    rate * h_{t-1} + (1 - rate) * h_new; in training each unit is either h_{t-1} or h_new.

    The library documents zoneout as acting on the carry; the step's *output* is the cell's
    output computed from the (zoned) previous carry, which is what is replayed here."""
    rate = 0.3
    stack, params = _elman(zoneout=rate)
    xs = np.asarray(inputs(20))
    ys, carries = stack.apply(params, jnp.asarray(xs), train=train, key=jax.random.key(5))
    ys, final = np.asarray(ys, np.float64), np.asarray(carries[0]["fwd"]["h"], np.float64)
    p = params["layers"][0]["fwd"]
    step = lambda h, t, b=slice(None): _elman_run(p, xs[b, t:t + 1], h0=h)[:, 0]
    h, kept = np.zeros((B, H)), []
    for t in range(T):
        h_new = step(h, t)
        np.testing.assert_allclose(ys[:, t], h_new, atol=1e-5)
        if not train:
            h = rate * h + (1 - rate) * h_new
        elif t == T - 1:
            assert np.all(np.isclose(final, h, atol=1e-6) | np.isclose(final, h_new, atol=1e-6))
        else:  # which units were kept: the one pattern that explains the next output
            for b in range(B):
                fits = [np.array(bits, bool) for bits in itertools.product((0, 1), repeat=H)
                        if np.allclose(step(np.where(bits, h[b], h_new[b])[None], t + 1,
                                            slice(b, b + 1))[0], ys[b, t + 1], atol=1e-5)]
                assert len(fits) == 1, (t, b, len(fits))
                kept.append(fits[0])
                h_new[b] = np.where(fits[0], h[b], h_new[b])
            h = h_new
    if train:
        assert 0.1 < np.mean(kept) < 0.55, np.mean(kept)
    else:
        np.testing.assert_allclose(final, h, atol=1e-5)


def test_time_major_and_unroll_change_nothing_but_layout():
    stack, params = _elman(num_layers=2, bidirectional=True)
    xs, lengths = inputs(22), jnp.array(LENGTHS)
    ys, carries = fast_jit(lambda p, x: stack.apply(p, x, lengths=lengths))(params, xs)
    ys_tm, carries_tm = fast_jit(lambda p, x: stack.apply(p, x, lengths=lengths, time_major=True))(
        params, jnp.swapaxes(xs, 0, 1))
    unrolled = Stack(stack.cell, num_layers=2, bidirectional=True, unroll=2)
    ys_u, carries_u = fast_jit(lambda p, x: unrolled.apply(p, x, lengths=lengths))(params, xs)
    np.testing.assert_allclose(jnp.swapaxes(ys_tm, 0, 1), ys, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ys_u, ys, rtol=1e-6, atol=1e-6)
    for a, b, c in zip(*map(jax.tree.leaves, (carries, carries_tm, carries_u))):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(c, a, rtol=1e-6, atol=1e-6)


def test_unroll_true_unrolls_the_fused_layer_fully():
    # True == 1 in Python: the fused layer took it for "no unrolling" (and length_free said so)
    full, plain = Stack(cells.get("vanilla", H), unroll=True), Stack(cells.get("vanilla", H))
    params = randomize(lambda: plain.init(jax.random.key(0), I), seed=1)
    xs, lengths = inputs(23), jnp.array(LENGTHS)
    hlo = jax.jit(lambda p, x: full.apply(p, x)).lower(params, xs).as_text()
    assert "while" not in hlo and not full.length_free and plain.length_free
    np.testing.assert_allclose(fast_jit(lambda p, x: full.apply(p, x, lengths=lengths))(params, xs)[0],
                               plain.apply(params, xs, lengths=lengths)[0], rtol=1e-6, atol=1e-6)


def test_zoneout_refused_where_it_has_no_meaning_and_checked():
    with pytest.raises(ValueError, match="zoneout is not defined for cell 'mlstm'"):
        Stack(cells.get("mlstm", 4), zoneout=0.1)
    with pytest.raises(ValueError, match=r"zoneout keys \['n'\] .* valid: \['c', 'h'\]"):
        Stack(cells.get("lstm", 4), zoneout={"n": 0.1})
    with pytest.raises(ValueError, match="must be in"):
        Stack(cells.get("gru", 4), zoneout=1.5)


def test_scan_applies_a_zoneout_float_to_the_cells_zoneout_keys_only():
    # scan() itself, not only Stack: a float zoned every carry entry (FGR's gates, sLSTM's n, m)
    xs = inputs(4, (T, B, I))
    slstm = cells.get("slstm", H)
    with pytest.raises(ValueError, match="zoneout is not defined for cell 'slstm'"):
        scan(slstm, slstm.init(jax.random.key(0), I), xs, slstm.initial_carry((B,)),
             zoneout=0.3, key=jax.random.key(0), train=True)
    cell = cells.get("fgr", H)
    params = randomize(lambda: cell.init(jax.random.key(0), I), seed=2)
    carry = _carry(cell, 5)
    key = jax.random.key(1)
    zoned, _ = scan(cell, params, xs, carry, zoneout=0.5, key=key, train=True)
    by_key, _ = scan(cell, params, xs, carry, zoneout={"c": 0.5, "h": 0.5}, key=key, train=True)
    plain, _ = scan(cell, params, xs, carry)
    for k in zoned:
        np.testing.assert_array_equal(zoned[k], by_key[k])
    assert not np.allclose(zoned["c"], plain["c"])
