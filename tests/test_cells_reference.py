"""Every cell against a NumPy reference written from its paper's equations.

The references below are written gate by gate from the papers (float64), from per-gate weight
matrices drawn here (normal(0, 0.5), non-zero biases and peepholes, random initial state). The
library's params dict is then *assembled* from those matrices by the documented layout (gate
order and column order in ``w_x``/``w_h``/``b``), so a test fails if either the equations or the
documented layout disagree with the code. The library is run both as ``Stack(cell, 1)`` (hoisted
input projection inside ``lax.scan``) and as ``cell.step`` in a Python loop.
"""
import math
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_research import cells
from lstm_research.layers import Stack
from lstm_research.layers.scan import scan as scan_over_time
from lstm_research.training import steps

from conftest import fast_jit

B, T, I, H = 3, 5, 4, 6
ATOL = RTOL = 1e-5
# cheaper XLA compilation (the CI budget is mostly compile time); semantics are unchanged


# --- tiny float64 helpers --------------------------------------------------------------------
def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def layer_norm(x, gain, bias, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)  # biased variance
    return (x - mu) / np.sqrt(var + eps) * gain + bias


def g_min(x):
    """Feng et al. 2024's positive candidate activation g."""
    return np.where(x >= 0, x + 0.5, sigmoid(x))


class Draw:
    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)

    def __call__(self, *shape, scale=0.5):
        return self.rng.normal(0.0, scale, shape)


def f32(tree):
    return jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), tree)


def f64(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


# --- LSTM family (Greff et al. 2015; Hochreiter & Schmidhuber 1997; PyTorch; Ba et al. 2016;
#     Sak et al. 2014) -----------------------------------------------------------------------
# What each name means, written from the papers (not read from the library's presets).
LSTM_MEANING = {
    "vanilla": dict(peep=True),
    "nig": dict(peep=True, i=False),
    "nfg": dict(peep=True, f=False),
    "nog": dict(peep=True, o=False),
    "niaf": dict(peep=True, g="identity"),
    "noaf": dict(peep=True, h="identity"),
    "np": dict(peep=False),
    "cifg": dict(peep=True, cifg=True),
    "fgr": dict(peep=True, fgr=True),
    "lstm": dict(),
    "lstm1997": dict(f=False),
    "layernorm_lstm": dict(ln=True),
    "lstmp": dict(),
}
ACT = {"tanh": np.tanh, "identity": lambda v: v}


def lstm_case(name, switches, draw):
    m = dict(peep=False, i=True, f=True, o=True, g="tanh", h="tanh", cifg=False, fgr=False,
             ln=False, clip=None, proj=0)
    m.update(LSTM_MEANING[name])
    m["clip"] = switches.get("cell_clip")
    m["proj"] = switches.get("proj_size", 0)
    P = m["proj"] or H
    gates = [g for g, on in (("i", m["i"]), ("f", m["f"] and not m["cifg"]), ("z", True),
                             ("o", m["o"])) if on]
    W = {g: draw(I, H) for g in gates}          # input weights
    R = {g: draw(P, H) for g in gates}          # recurrent weights (from y_{t-1})
    bias = {g: draw(H) for g in gates}
    peep = {g: draw(H) for g in "ifo" if m["peep"] and g in gates}
    Rg = {(a, b): draw(H, H) for a in "ifo" for b in "ifo"} if m["fgr"] else None
    W_proj = draw(H, P) if m["proj"] else None
    ln = None
    if m["ln"]:
        ln = {"x": ({g: 1 + draw(H) for g in gates}, {g: draw(H) for g in gates}),
              "h": ({g: 1 + draw(H) for g in gates}, {g: draw(H) for g in gates}),
              "c": (1 + draw(H), draw(H))}

    # the documented layout: gates stacked (i, f, z, o) along columns, present ones only
    cat = lambda d: np.concatenate([d[g] for g in gates], axis=-1)
    params = {"w_x": cat(W), "w_h": cat(R), "b": cat(bias)}
    params.update({f"peephole_{g}": v for g, v in peep.items()})
    if Rg:  # rows: previous (i, f, o); columns: additions to (i, f, o)
        params["w_gates"] = np.block([[Rg[a, b] for b in "ifo"] for a in "ifo"])
    if W_proj is not None:
        params["w_proj"] = W_proj
    if ln:
        for k in ("x", "h"):
            params[f"ln_{k}_scale"], params[f"ln_{k}_bias"] = cat(ln[k][0]), cat(ln[k][1])
        params["ln_c_scale"], params["ln_c_bias"] = ln["c"]

    carry0 = {"c": draw(B, H, scale=1.0), "h": draw(B, P, scale=1.0)}
    if m["fgr"]:
        carry0["gates"] = np.random.default_rng(7).uniform(0.05, 0.95, (B, 3 * H))
    g_act, h_act = ACT[m["g"]], ACT[m["h"]]
    clipped = []

    def reference(xs, carry, mask=None):
        c, y = carry["c"], carry["h"]
        prev = None
        if m["fgr"]:
            prev = dict(zip("ifo", np.split(carry["gates"], 3, axis=-1)))
        ys = []
        for t in range(xs.shape[1]):
            x = xs[:, t]
            y_in = y if mask is None else y * mask  # Gal & Ghahramani: dropout on y into R
            if m["ln"]:
                # Ba et al. eq. 20: LN(W_h h) + LN(W_x x) + b, each LN over all gates at once
                ax = np.concatenate([x @ W[g] for g in gates], -1)
                ah = np.concatenate([y_in @ R[g] for g in gates], -1)
                ax = dict(zip(gates, np.split(layer_norm(ax, cat(ln["x"][0]), cat(ln["x"][1])),
                                              len(gates), -1)))
                ah = dict(zip(gates, np.split(layer_norm(ah, cat(ln["h"][0]), cat(ln["h"][1])),
                                              len(gates), -1)))
                pre = {g: ax[g] + ah[g] + bias[g] for g in gates}
            else:
                pre = {g: x @ W[g] + y_in @ R[g] + bias[g] for g in gates}
            if m["fgr"]:  # sum over all gates' previous activations
                for a in "ifo":
                    pre[a] = pre[a] + sum(prev[b] @ Rg[b, a] for b in "ifo")
            p = lambda g, cc: peep[g] * cc if g in peep else 0.0
            z = g_act(pre["z"])
            i = sigmoid(pre["i"] + p("i", c)) if m["i"] else np.ones_like(z)
            if m["cifg"]:
                f = 1.0 - i
            else:
                f = sigmoid(pre["f"] + p("f", c)) if m["f"] else np.ones_like(z)
            c = z * i + c * f
            if m["clip"] is not None:
                clipped.append(np.abs(c) > m["clip"])
                c = np.clip(c, -m["clip"], m["clip"])
            o = sigmoid(pre["o"] + p("o", c)) if m["o"] else np.ones_like(z)
            c_out = layer_norm(c, *ln["c"]) if m["ln"] else c
            y = h_act(c_out) * o
            if m["proj"]:
                y = y @ W_proj  # Sak et al.: r_t = W_rm m_t is the output and recurrent input
            prev = {"i": i, "f": f, "o": o}
            ys.append(y)
        final = {"c": c, "h": y}
        if m["fgr"]:
            final["gates"] = np.concatenate([prev["i"], prev["f"], prev["o"]], -1)
        return np.stack(ys, 1), final

    def check_nontrivial():
        if m["clip"] is not None:
            assert np.any(clipped), "the cell clip never engaged; the test would not test it"

    return params, carry0, reference, check_nontrivial


# --- GRU (Cho et al. 2014, both forms) and Elman ----------------------------------------------
def gru_case(name, switches, draw):
    reset_after = switches.get("reset_after", name == "gru")
    W = {g: draw(I, H) for g in "run"}
    U = {g: draw(H, H) for g in "run"}
    bias = {g: draw(H) for g in "run"}
    b_hn = draw(H)
    params = {"w_x": np.concatenate([W[g] for g in "run"], -1),
              "w_h": np.concatenate([U[g] for g in "run"], -1),
              "b": np.concatenate([bias[g] for g in "run"], -1)}
    if reset_after:
        params["b_hn"] = b_hn

    def reference(xs, carry, mask=None):
        h = carry["h"]
        ys = []
        for t in range(xs.shape[1]):
            x = xs[:, t]
            # Gal & Ghahramani 2016's GRU: dropout on h where U multiplies it; the state
            # update below keeps the unmasked h
            hd = h if mask is None else h * mask
            r = sigmoid(x @ W["r"] + hd @ U["r"] + bias["r"])
            u = sigmoid(x @ W["u"] + hd @ U["u"] + bias["u"])
            if reset_after:   # PyTorch / cuDNN
                n = np.tanh(x @ W["n"] + bias["n"] + r * (hd @ U["n"] + b_hn))
            else:             # Cho et al. eq. 8: reset before U
                n = np.tanh(x @ W["n"] + (r * hd) @ U["n"] + bias["n"])
            h = u * h + (1 - u) * n
            ys.append(h)
        return np.stack(ys, 1), {"h": h}

    return params, {"h": draw(B, H, scale=1.0)}, reference, lambda: None


def elman_case(name, switches, draw):
    W, U, b = draw(I, H), draw(H, H), draw(H)

    def reference(xs, carry, mask=None):
        h, ys = carry["h"], []
        for t in range(xs.shape[1]):
            h = np.tanh(xs[:, t] @ W + (h if mask is None else h * mask) @ U + b)
            ys.append(h)
        return np.stack(ys, 1), {"h": h}

    return {"w_x": W, "w_h": U, "b": b}, {"h": draw(B, H, scale=1.0)}, reference, lambda: None


# --- Mogrifier LSTM (Melis et al. 2019) ---------------------------------------------------------
def mogrifier_case(name, switches, draw):
    rounds = switches.get("rounds", 5)
    W = {g: draw(I, H) for g in "ifzo"}
    U = {g: draw(H, H) for g in "ifzo"}
    bias = {g: draw(H) for g in "ifzo"}
    # paper orientation: Q^i in R^{I x H} maps h to x's size, R^i in R^{H x I} maps x to h's size
    Q = {i: draw(I, H, scale=0.7) for i in range(1, rounds + 1, 2)}
    Rm = {i: draw(H, I, scale=0.7) for i in range(2, rounds + 1, 2)}
    params = {"w_x": np.concatenate([W[g] for g in "ifzo"], -1),
              "w_h": np.concatenate([U[g] for g in "ifzo"], -1),
              "b": np.concatenate([bias[g] for g in "ifzo"], -1),
              # stored right-multiplied (``h @ q``), i.e. transposed, in round order
              "mog_q": np.stack([Q[i].T for i in sorted(Q)]) if Q else np.zeros((0, H, I)),
              "mog_r": np.stack([Rm[i].T for i in sorted(Rm)]) if Rm else np.zeros((0, I, H))}

    def reference(xs, carry, mask=None):
        c, h_prev = carry["c"], carry["h"]
        ys = []
        for t in range(xs.shape[1]):
            xm = {-1: xs[:, t]}
            hm = {0: h_prev if mask is None else h_prev * mask}  # h_{t-1} enters only weights
            for i in range(1, rounds + 1):
                if i % 2:   # x^i = 2 σ(Q^i h^{i-1}) ⊙ x^{i-2}
                    hm[i] = hm[i - 1]
                    xm[i] = 2 * sigmoid(np.einsum("ij,bj->bi", Q[i], hm[i - 1])) * xm[i - 2]
                else:       # h^i = 2 σ(R^i x^{i-1}) ⊙ h^{i-2}
                    xm[i] = xm[i - 1]
                    hm[i] = 2 * sigmoid(np.einsum("ij,bj->bi", Rm[i], xm[i - 1])) * hm[i - 2]
            x, h = xm[max(xm)], hm[max(hm)]
            pre = {g: x @ W[g] + h @ U[g] + bias[g] for g in "ifzo"}
            c = sigmoid(pre["f"]) * c + sigmoid(pre["i"]) * np.tanh(pre["z"])
            h_prev = sigmoid(pre["o"]) * np.tanh(c)
            ys.append(h_prev)
        return np.stack(ys, 1), {"c": c, "h": h_prev}

    carry0 = {"c": draw(B, H, scale=1.0), "h": draw(B, H, scale=1.0)}
    return params, carry0, reference, lambda: None


# --- xLSTM (Beck et al. 2024), unstabilized equations ---------------------------------------
def log_forget(f_pre, kind):
    return f_pre if kind == "exp" else np.log(sigmoid(f_pre))


def slstm_case(name, switches, draw):
    kind = switches.get("forget_activation", "sigmoid")
    W = {g: draw(I, H) for g in "ifzo"}
    R = {g: draw(H, H) for g in "ifzo"}
    bias = {g: draw(H) for g in "ifzo"}
    params = {k: np.concatenate([d[g] for g in "ifzo"], -1)
              for k, d in (("w_x", W), ("w_h", R), ("b", bias))}

    def reference(xs, carry, mask=None):
        c, n, h, m = carry["c"], carry["n"], carry["h"], carry["m"]
        ys = []
        for t in range(xs.shape[1]):
            h_in = h if mask is None else h * mask
            pre = {g: xs[:, t] @ W[g] + h_in @ R[g] + bias[g] for g in "ifzo"}
            i = np.exp(pre["i"])                                   # eq. 11 (exp input gate)
            f = np.exp(log_forget(pre["f"], kind))                 # eq. 12 (σ or exp)
            z, o = np.tanh(pre["z"]), sigmoid(pre["o"])
            c = f * c + i * z                                      # eq. 8
            n = f * n + i                                          # eq. 9
            h = o * c / n                                          # eq. 10
            m = np.maximum(log_forget(pre["f"], kind) + m, pre["i"])   # eq. 15 stabilizer
            ys.append(h)
        return np.stack(ys, 1), {"c": c, "n": n, "m": m, "h": h}

    # initial stabilizer m = 0, so stabilized and unstabilized states start equal
    carry0 = {"c": draw(B, H, scale=1.0), "n": 0.5 + np.abs(draw(B, H)),
              "m": np.zeros((B, H)), "h": draw(B, H, scale=1.0)}
    return params, carry0, reference, lambda: None


def mlstm_case(name, switches, draw):
    kind = switches.get("forget_activation", "sigmoid")
    NH = switches.get("num_heads", 1)
    d = H // NH
    # per head j: q, k, v, o weights [I, d]; scalar input / forget gates per head
    Wq, Wk, Wv, Wo = ([draw(I, d) for _ in range(NH)] for _ in range(4))
    bq, bk, bv, bo = ([draw(d) for _ in range(NH)] for _ in range(4))
    wi, wf = draw(I, NH), draw(I, NH)
    bi, bf = draw(NH), draw(NH)
    heads = lambda ws: np.concatenate(ws, -1)  # head j owns columns j*d:(j+1)*d of its block
    params = {"w_x": np.concatenate([heads(Wq), heads(Wk), heads(Wv), heads(Wo), wi, wf], -1),
              "b": np.concatenate([heads(bq), heads(bk), heads(bv), heads(bo), bi, bf], -1)}

    def reference(xs, carry):
        C, n, m = carry["C"].copy(), carry["n"].copy(), carry["m"].copy()
        ys = []
        for t in range(xs.shape[1]):
            x = xs[:, t]
            out = []
            for j in range(NH):
                q = x @ Wq[j] + bq[j]                               # eq. 22-24
                k = (x @ Wk[j]) / math.sqrt(d) + bk[j]
                v = x @ Wv[j] + bv[j]
                o = sigmoid(x @ Wo[j] + bo[j])                      # eq. 27
                i_pre = x @ wi[:, j] + bi[j]
                f_pre = x @ wf[:, j] + bf[j]
                i = np.exp(i_pre)[:, None]                          # eq. 25
                f = np.exp(log_forget(f_pre, kind))[:, None]        # eq. 26
                C[:, j] = f[..., None] * C[:, j] + i[..., None] * np.einsum("bi,bj->bij", v, k)
                n[:, j] = f * n[:, j] + i * k                       # eq. 20
                num = np.einsum("bij,bj->bi", C[:, j], q)
                den = np.maximum(np.abs(np.sum(n[:, j] * q, -1)), 1.0)   # eq. 21
                out.append(o * num / den[:, None])
                m[:, j] = np.maximum(log_forget(f_pre, kind) + m[:, j], i_pre)  # stabilizer
            ys.append(np.concatenate(out, -1))
        return np.stack(ys, 1), {"C": C, "n": n, "m": m}

    carry0 = {"C": draw(B, NH, d, d), "n": draw(B, NH, d), "m": np.zeros((B, NH))}
    return params, carry0, reference, lambda: None


# --- minLSTM / minGRU (Feng et al. 2024), sequential form -----------------------------------
def minrnn_case(name, switches, draw):
    positive = switches.get("positive_candidate", True)
    cand = g_min if positive else (lambda v: v)
    blocks = "fih" if name == "minlstm" else "zh"
    W = {g: draw(I, H) for g in blocks}
    bias = {g: draw(H) for g in blocks}
    params = {"w_x": np.concatenate([W[g] for g in blocks], -1),
              "b": np.concatenate([bias[g] for g in blocks], -1)}

    def reference(xs, carry):
        h, ys = carry["h"], []
        for t in range(xs.shape[1]):
            x = xs[:, t]
            h_tilde = cand(x @ W["h"] + bias["h"])
            if name == "minlstm":
                f, i = sigmoid(x @ W["f"] + bias["f"]), sigmoid(x @ W["i"] + bias["i"])
                h = f / (f + i) * h + i / (f + i) * h_tilde
            else:
                z = sigmoid(x @ W["z"] + bias["z"])
                h = (1 - z) * h + z * h_tilde
            ys.append(h)
        return np.stack(ys, 1), {"h": h}

    return params, {"h": draw(B, H, scale=1.0)}, reference, lambda: None


FAMILY = {**{n: lstm_case for n in LSTM_MEANING}, "gru": gru_case, "gru_cho": gru_case,
          "elman": elman_case, "mogrifier": mogrifier_case, "slstm": slstm_case,
          "mlstm": mlstm_case, "minlstm": minrnn_case, "mingru": minrnn_case}

EXTRA_CASES = [
    ("lstmp", {"proj_size": 3}),
    ("vanilla", {"proj_size": 3, "cell_clip": 0.4}),  # Sak et al.'s LSTMP had peepholes
    ("vanilla", {"cell_clip": 0.3}),
    ("lstm", {"cell_clip": 0.3}),
    ("mogrifier", {"rounds": 0}),
    ("mogrifier", {"rounds": 1}),
    ("mogrifier", {"rounds": 4}),
    ("mogrifier", {"rounds": 5}),
    ("slstm", {"forget_activation": "exp"}),
    ("mlstm", {"num_heads": 2}),
    ("mlstm", {"forget_activation": "exp"}),
    ("mlstm", {"num_heads": 2, "forget_activation": "exp"}),
    ("minlstm", {"positive_candidate": False}),
    ("mingru", {"positive_candidate": False}),
]


def all_cases():
    plain = [(n, {}) for n in cells.names() if n != "lstmp"]  # lstmp needs a proj_size
    return plain + EXTRA_CASES


def case_id(case):
    name, sw = case
    return name + "".join(f",{k}={v}" for k, v in sw.items())


def test_every_registered_cell_has_a_reference():
    assert set(cells.names()) == set(FAMILY), "a cell was added without a reference test"


def build(name, switches, seed):
    draw = Draw(seed)
    cell = cells.get(name, H, **switches)
    params, carry0, reference, check = FAMILY[name](name, switches, draw)
    xs = draw(B, T, I, scale=1.0)
    return cell, params, carry0, xs, reference, check


def compare_carry(name, lib, ref):
    lib = {k: np.asarray(v, np.float64) for k, v in lib.items()}
    assert set(lib) == set(ref)
    if name in ("slstm", "mlstm"):
        # the library keeps the stabilized states c~ = c exp(-m), n~ = n exp(-m) (and C~)
        m = lib["m"]
        for k in ("c", "n", "C"):
            if k in lib:
                scale = np.exp(m).reshape(m.shape + (1,) * (lib[k].ndim - m.ndim))
                lib[k] = lib[k] * scale
    for k in ref:
        np.testing.assert_allclose(lib[k], ref[k], rtol=RTOL, atol=ATOL, err_msg=f"carry {k!r}")


@pytest.mark.parametrize("case", all_cases(), ids=case_id)
def test_cell_matches_paper_equations(case):
    name, switches = case
    seed = zlib.crc32(case_id(case).encode())
    cell, params, carry0, xs, reference, check = build(name, switches, seed)

    # the documented layout is the one init() produces (names and shapes)
    lib_init = jax.eval_shape(lambda k: cell.init(k, I), jax.random.key(0))
    assert {k: tuple(v.shape) for k, v in lib_init.items()} == \
           {k: tuple(v.shape) for k, v in params.items()}
    lib_carry = jax.eval_shape(lambda: cell.initial_carry((B,)))
    assert {k: tuple(v.shape) for k, v in lib_carry.items()} == \
           {k: tuple(v.shape) for k, v in carry0.items()}

    # float64 reference from float32-rounded weights/inputs, so the only error is the library's
    p32, c32, x32 = f32(params), f32(carry0), f32(xs)
    ys_ref, final_ref = reference(f64(x32), f64(c32))
    check()
    assert np.all(np.isfinite(ys_ref)) and np.abs(ys_ref).max() > 0.05

    # 1) the scanned stack
    stack = Stack(cell, num_layers=1)
    apply = fast_jit(lambda p, x, c: stack.apply(p, x, carries=c))
    ys, carries = apply({"layers": [{"fwd": p32}]}, x32, [{"fwd": c32}])
    assert ys.shape == (B, T, cell.output_size) and ys.dtype == jnp.float32
    np.testing.assert_allclose(ys, ys_ref, rtol=RTOL, atol=ATOL)
    compare_carry(name, carries[0]["fwd"], final_ref)

    # 2) cell.step in a Python loop
    step = fast_jit(cell.step)
    carry, outs = c32, []
    for t in range(T):
        carry, y = step(p32, carry, x32[:, t])
        outs.append(y)
    np.testing.assert_allclose(np.stack(outs, 1), ys_ref, rtol=RTOL, atol=ATOL)
    compare_carry(name, carry, final_ref)


@pytest.mark.parametrize("kind", ["sigmoid", "exp"])
def test_slstm_first_step_from_the_empty_state_is_finite_for_any_input_gate(kind):
    # from c = n = 0 the unstabilized h_1 = o (i z) / i = o z, however small i = exp(i~) is;
    # with m_1 = max(log f, i~), exp(i~ - m_1) underflowed to 0 below i~ = -100: h = 0/0
    cell = cells.get("slstm", 2, forget_activation=kind)
    for i_pre in (-80.0, -120.0, -300.0):
        p = {"w_x": jnp.zeros((1, 8)), "w_h": jnp.zeros((2, 8)),  # b: gate blocks (i, f, z, o)
             "b": jnp.array([i_pre, i_pre, 0.5, 0.5, 1.0, 1.0, 2.0, 2.0])}
        carry, h = cell.step(p, cell.initial_carry((1,)), jnp.zeros((1, 1)))
        np.testing.assert_allclose(h, np.full((1, 2), sigmoid(2.0) * np.tanh(1.0)), rtol=1e-6)
        grads = jax.grad(lambda p: jnp.sum(cell.step(p, cell.initial_carry((1,)),
                                                     jnp.ones((1, 1)))[1]))(p)
        assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


# --- variational recurrent dropout (Gal & Ghahramani 2016) ----------------------------------
RECURRENT_CASES = [c for c in all_cases() if cells.get(c[0], H, **c[1]).recurrent_key]


@pytest.mark.parametrize("case", RECURRENT_CASES, ids=case_id)
def test_recurrent_dropout_masks_the_state_where_it_enters_the_recurrent_weights(case):
    """One mask for all steps, on h_{t-1} in its products with the recurrent weights only: the
    GRU's update u h_{t-1} + (1 - u) n keeps the unmasked state. Every path (fused or not)."""
    name, switches = case
    seed = zlib.crc32(("mask" + case_id(case)).encode())
    cell, params, carry0, xs, reference, _ = build(name, switches, seed)
    p32, c32, x32 = f32(params), f32(carry0), f32(xs)
    width = c32[cell.recurrent_key].shape[-1]
    mask = f32((np.random.default_rng(seed).random((B, width)) < 0.6) / 0.6)
    assert mask.min() == 0 and mask.max() > 1
    ys_ref, final_ref = reference(f64(x32), f64(c32), mask=f64(mask))
    ys_plain, _ = reference(f64(x32), f64(c32))
    assert np.abs(ys_ref - ys_plain).max() > 1e-2  # the mask matters here
    for fused in (False, "auto"):
        run = fast_jit(lambda p, x, c, m: scan_over_time(cell, p, x, c, recurrent_mask=m,
                                                         fused=fused))
        carry, ys = run(p32, jnp.swapaxes(x32, 0, 1), c32, mask)
        np.testing.assert_allclose(jnp.swapaxes(ys, 0, 1), ys_ref, rtol=RTOL, atol=ATOL,
                                   err_msg=f"fused={fused}")
        compare_carry(name, carry, final_ref)


# --- minLSTM / minGRU: the parallel (associative scan) form equals the sequential one --------
@pytest.mark.parametrize("name", ["minlstm", "mingru"])
@pytest.mark.parametrize("positive", [True, False], ids=["positive", "linear"])
@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("fused", ["auto", False], ids=["chunked", "associative"])
def test_min_rnn_parallel_form_equals_sequential(name, positive, with_lengths, fused):
    # on CPUs fused="auto" runs the chunked linear recurrence, fused=False the associative scan
    # (in log space with the positive candidate)
    cell, params, carry0, xs, reference, _ = build(
        name, {"positive_candidate": positive}, seed=11)
    p = {"layers": [{"fwd": f32(params)}]}
    lengths = jnp.array([T, 3, 1]) if with_lengths else None
    c = [{"fwd": f32(carry0)}]
    run = lambda stack: fast_jit(lambda p, x, c, l: stack.apply(p, x, carries=c, lengths=l))
    ys_seq, c_seq = run(Stack(cell))(p, f32(xs), c, lengths)
    ys_par, c_par = run(Stack(cell, parallel=True, fused=fused))(p, f32(xs), c, lengths)
    np.testing.assert_allclose(ys_par, ys_seq, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(c_par[0]["fwd"]["h"], c_seq[0]["fwd"]["h"], rtol=RTOL, atol=ATOL)
    # and both equal the paper's sequential equations, per sequence up to its own length
    for b, L in enumerate([T, 3, 1] if with_lengths else [T] * B):
        ys_ref, final_ref = reference(f64(f32(xs))[b:b + 1, :L],
                                      {"h": f64(f32(carry0))["h"][b:b + 1]})
        np.testing.assert_allclose(ys_par[b, :L], ys_ref[0], rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(c_par[0]["fwd"]["h"][b], final_ref["h"][0],
                                   rtol=RTOL, atol=ATOL)
        assert np.all(np.asarray(ys_par[b, L:]) == 0)


def test_initial_gate_biases_land_on_their_gates():
    """b is stored in gate order (i, f, z, o) minus absent gates: each *_bias switch fills its
    gate's H entries only; a bias for an absent gate is an error naming the gates present."""
    H = 3
    b = cells.get("lstm:forget_bias=1,input_bias=-3,output_bias=-2", H).init(jax.random.key(0), 2)["b"]
    np.testing.assert_array_equal(b, np.repeat([-3.0, 1.0, 0.0, -2.0], H))
    b = cells.get("lstm1997:input_bias=-6", H).init(jax.random.key(0), 2)["b"]  # gates (i, z, o)
    np.testing.assert_array_equal(b, np.repeat([-6.0, 0.0, 0.0], H))
    with pytest.raises(cells.CellConfigError, match="gates: f, z, o"):
        cells.get("nig:input_bias=-3", H)


@pytest.mark.parametrize("name", ["vanilla", "nig", "cifg", "np", "fgr"])
def test_init_draws_each_gate_block_with_its_own_key(name):
    """The documented init of the LSTM family: the 6 keys split from the cell's key give w_x
    Glorot-uniform (each gate block drawn with its own key split from k[0], limit
    sqrt(6 / (fan_in + fan_out))), w_h orthogonal (each block from a key split from k[1]) and
    peepholes U(-0.1, 0.1) from the keys split from k[2] in the order (i, f, o), FGR's
    w_gates U(-1/sqrt(H), 1/sqrt(H)) from k[3]. The reference
    is written with one jax.random / jax.nn.initializers call per block; the library draws the
    blocks in one vmapped call, which must give the same bits, eagerly and as the training
    init program is compiled. Each w_h block is orthogonal."""
    H, In = 7, 5
    cell = cells.get(name, H)
    G = len(cell.gates)
    lim = math.sqrt(6.0 / (In + H))

    def reference(key):
        k = jax.random.split(key, 6)
        out = {"w_x": jnp.concatenate([jax.random.uniform(kg, (In, H), jnp.float32, -lim, lim)
                                       for kg in jax.random.split(k[0], G)], axis=-1),
               "w_h": jnp.concatenate([jax.nn.initializers.orthogonal()(kg, (H, H), jnp.float32)
                                       for kg in jax.random.split(k[1], G)], axis=-1)}
        for gate, kk in zip("ifo", jax.random.split(k[2], 3)):
            if cell.peepholes and gate in cell.gates:
                out[f"peephole_{gate}"] = jax.random.uniform(kk, (H,), jnp.float32, -0.1, 0.1)
        if cell.full_gate_recurrence:  # U(-1/sqrt(H), 1/sqrt(H)) from k[3]
            out["w_gates"] = jax.random.uniform(k[3], (3 * H, 3 * H), jnp.float32,
                                                -1 / H ** 0.5, 1 / H ** 0.5)
        return out

    def o0(f, key):  # as the training init program is compiled on CPU
        return jax.jit(f).lower(key).compile(compiler_options=steps.INIT_COMPILER_OPTIONS)(key)

    key = jax.random.key(11)
    for got, want in ((cell.init(key, In), reference(key)),
                      (o0(lambda kk: cell.init(kk, In), key), o0(reference, key))):
        assert {p for p in got if p.startswith(("w_", "peephole_"))} == set(want)
        for p in want:
            np.testing.assert_array_equal(got[p], want[p], err_msg=p)
    for g in range(G):
        block = np.asarray(got["w_h"][:, g * H:(g + 1) * H], np.float64)
        np.testing.assert_allclose(block.T @ block, np.eye(H), atol=1e-5)
