"""Tests of lstm_research.data.synthetic against the task definitions in the papers.

Expectations are recomputed from the generated inputs (never read back from the generator's
internals), and the Reber grammar is checked with an independent transition table below.
"""

import math

import numpy as np
import pytest

from lstm_research.data import synthetic as syn


def embedded_reber_accepts(string) -> bool:
    """Whether ``string`` is exactly one embedded Reber string: the grammar walk that builds the
    training targets (``embedded_reber_next_sets``) accepts it."""
    if not isinstance(string, str) or set(string) - set(syn.REBER_SYMBOLS):
        return False
    try:
        syn.embedded_reber_next_sets(string)
    except ValueError:
        return False
    return True


def rng(seed=0):
    return np.random.default_rng(seed)


def _same(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------ adding problem, Le et al.

def test_adding_le_markers_and_target():
    T = 50
    d = syn.adding_problem(rng(1), 500, T, variant="le")
    x, y, lengths = d["x"], d["y"], d["lengths"]
    assert x.shape == (500, T, 2) and x.dtype == np.float32
    assert y.shape == (500,) and y.dtype == np.float32
    assert lengths.dtype == np.int32 and np.all(lengths == T)
    vals, marks = x[..., 0], x[..., 1]
    assert vals.min() >= 0.0 and vals.max() < 1.0
    assert set(np.unique(marks)) == {0.0, 1.0}
    for b in range(500):
        pos = np.flatnonzero(marks[b] == 1.0)
        assert len(pos) == 2
        assert 0 <= pos[0] < T // 2 <= pos[1] < T
        assert y[b] == pytest.approx(vals[b, pos[0]] + vals[b, pos[1]], abs=1e-6)


def test_adding_le_odd_length_halves_and_coverage():
    # T=7: first half is positions 0..2, second half 3..6; every position gets used.
    d = syn.adding_problem(rng(2), 2000, 7, variant="le")
    pos = np.array([np.flatnonzero(m == 1.0) for m in d["x"][..., 1]])
    assert set(pos[:, 0]) == {0, 1, 2}
    assert set(pos[:, 1]) == {3, 4, 5, 6}


def test_adding_le_baseline_is_one_sixth():
    # Var(U1 + U2) = 2 * Var(U[0,1]) = 2/12. Std of the MSE estimate over 2e5 draws ~ 4.4e-4.
    assert syn.ADDING_LE_BASELINE_MSE == pytest.approx(2 / 12)
    y = syn.adding_problem(rng(3), 200_000, 2, variant="le")["y"].astype(np.float64)
    assert np.mean((y - 1.0) ** 2) == pytest.approx(1 / 6, abs=3e-3)


def test_adding_deterministic_from_seed():
    for variant in ("le", "hochreiter"):
        a = syn.adding_problem(rng(7), 16, 30, variant=variant)
        b = syn.adding_problem(rng(7), 16, 30, variant=variant)
        c = syn.adding_problem(rng(8), 16, 30, variant=variant)
        assert _same(a, b)
        assert not np.array_equal(a["y"], c["y"])


# ----------------------------------------------------------- adding problem, Hochreiter 1997

def test_adding_hochreiter_definition():
    T, B = 100, 400
    d = syn.adding_problem(rng(4), B, T, variant="hochreiter")
    x, y, lengths = d["x"], d["y"], d["lengths"]
    assert lengths.min() >= T and lengths.max() <= T + T // 10
    assert set(lengths.tolist()) == set(range(100, 111))  # 400 draws cover all 11 lengths
    assert x.shape == (B, lengths.max(), 2)
    first_marked = 0
    for b in range(B):
        L = lengths[b]
        vals, marks = x[b, :, 0], x[b, :, 1]
        assert np.all(x[b, L:] == 0.0)  # padding
        assert vals[:L].min() >= -1.0 and vals[:L].max() <= 1.0
        pos = np.flatnonzero(marks == 1.0)
        assert len(pos) == 2
        # X1 is one of the first ten pairs; X2 one of the first T/2 - 1 unmarked pairs, so
        # both marks lie in the first T/2 pairs and at least one in the first ten.
        assert pos[0] <= 9 and pos[1] <= T // 2 - 1
        # first and last pair carry -1 unless marked; everything else 0
        expected = np.zeros(len(marks))
        expected[0] = -1.0
        expected[L - 1] = -1.0
        expected[pos] = 1.0
        assert np.array_equal(marks, expected)
        if pos[0] == 0:
            first_marked += 1
            assert vals[0] == 0.0  # "we set X1 to zero"
        assert y[b] == pytest.approx(0.5 + (vals[pos[0]] + vals[pos[1]]) / 4.0, abs=1e-6)
    # P(first pair marked) >= 1/10, so the special case is exercised.
    assert 15 <= first_marked <= 80


def test_adding_hochreiter_second_mark_range_is_uniform_over_first_half():
    # X2 ranges over the first T/2 pairs minus X1: with T=20, positions 0..9 (minus X1).
    d = syn.adding_problem(rng(5), 3000, 20, variant="hochreiter")
    marks = d["x"][..., 1]
    all_pos = np.concatenate([np.flatnonzero(m == 1.0) for m in marks])
    assert set(all_pos.tolist()) == set(range(10))
    # With T = 100, X1 < 10 always, so a mark at 10..49 is X2, the (p - 1)-th of the first
    # T/2 - 1 = 49 unmarked pairs: each position 10..49 has probability 1/49, none above 49.
    n, T = 20000, 100
    marks = syn.adding_problem(rng(6), n, T, variant="hochreiter")["x"][..., 1]
    late = np.array([np.flatnonzero(m == 1.0).max() for m in marks])
    assert late.max() == T // 2 - 1
    counts = np.bincount(late, minlength=T // 2)[10:]
    assert np.all(np.abs(counts / (n / 49) - 1) < 0.25), counts  # +-0.25 is about 5 sd


def test_adding_solved_criterion():
    y = np.array([0.2, 0.5, 0.9], dtype=np.float32)
    assert syn.adding_solved(y + 0.039, y)
    assert syn.adding_solved(y - 0.039, y)
    assert not syn.adding_solved(y + np.array([0.0, 0.05, 0.0]), y)
    with pytest.raises(ValueError, match="shape"):
        syn.adding_solved(y[:2], y)


def test_adding_bad_arguments():
    with pytest.raises(ValueError, match=r"'bogus'.*'le', 'hochreiter'"):
        syn.adding_problem(rng(), 2, 10, variant="bogus")
    with pytest.raises(ValueError, match="T must be an integer >= 11"):
        syn.adding_problem(rng(), 2, 10, variant="hochreiter")
    with pytest.raises(ValueError, match="batch_size"):
        syn.adding_problem(rng(), 0, 10)
    with pytest.raises(TypeError, match="Generator"):
        syn.adding_problem(np.random.RandomState(0), 2, 10)


# ------------------------------------------------------------------------------ copy memory

def test_copy_memory_hand_layout():
    # T=3, copy_len=2, 3 symbols: [s1 s2 _ _ 9->4 _ _] ; targets [_ _ _ _ _ s1 s2]
    d = syn.copy_memory(rng(0), 5, 3, n_symbols=3, copy_len=2)
    x, y = d["x"], d["y"]
    assert x.shape == y.shape == (5, 7) and x.dtype == y.dtype == np.int32
    for b in range(5):
        s1, s2 = x[b, 0], x[b, 1]
        assert 1 <= s1 <= 3 and 1 <= s2 <= 3
        assert x[b].tolist() == [s1, s2, 0, 0, 4, 0, 0]
        assert y[b].tolist() == [0, 0, 0, 0, 0, s1, s2]


def test_copy_memory_default_sizes():
    T = 100
    d = syn.copy_memory(rng(1), 64, T)
    x, y = d["x"], d["y"]
    assert x.shape == (64, T + 20)
    seq = x[:, :10]
    assert set(np.unique(seq)) == set(range(1, 9))
    assert np.all(x[:, 10:10 + T - 1] == 0)
    assert np.all(x[:, 10 + T - 1] == 9)
    assert np.all(x[:, T + 10:] == 0)
    assert np.all(y[:, :T + 10] == 0)
    assert np.array_equal(y[:, T + 10:], seq)
    assert _same(d, syn.copy_memory(rng(1), 64, T))


def test_copy_memory_baseline_value():
    # 10 ln 8 / (T + 20) at T = 100: 20.794415 / 120
    assert syn.copy_memory_baseline(100) == pytest.approx(0.17328679, rel=1e-7)
    assert syn.copy_memory_baseline(10, n_symbols=4, copy_len=5) == pytest.approx(
        5 * math.log(4) / 20)


# --------------------------------------------------------------------------- temporal order

CLASSES_6A = {"XX": 0, "XY": 1, "YX": 2, "YY": 3}  # Q R S U
CLASSES_6B = {"XXX": 0, "XXY": 1, "XYX": 2, "XYY": 3,  # Q R S U
              "YXX": 4, "YXY": 5, "YYX": 6, "YYY": 7}  # V A B C


@pytest.mark.parametrize("variant,table,ranges", [
    ("6a", CLASSES_6A, [(10, 20), (50, 60)]),
    ("6b", CLASSES_6B, [(10, 20), (33, 43), (66, 76)]),
])
def test_temporal_order_definition(variant, table, ranges):
    B = 400
    d = syn.temporal_order(rng(9), B, variant=variant)
    x, y, lengths = d["x"], d["y"], d["lengths"]
    assert x.dtype == np.float32 and x.shape == (B, lengths.max(), 8)
    assert lengths.min() >= 100 and lengths.max() <= 110
    sym = "abcdXYBE"
    for b in range(B):
        L = lengths[b]
        assert np.all(x[b, L:] == 0)
        assert np.all(x[b, :L].sum(-1) == 1.0) and set(np.unique(x[b, :L])) == {0.0, 1.0}
        s = "".join(sym[i] for i in x[b, :L].argmax(-1))
        assert s[0] == "E" and s[-1] == "B"  # "starts with an E, ends with a B"
        rel = [i for i, c in enumerate(s) if c in "XY"]
        assert len(rel) == len(ranges)
        assert set(s[1:-1]) - set("XY") <= set("abcd")
        for p, (lo, hi) in zip(rel, ranges):
            assert lo <= p <= hi
        assert d["positions"][b].tolist() == rel
        assert y[b] == table["".join(s[p] for p in rel)]
    assert set(y.tolist()) == set(table.values())


def test_temporal_order_bad_variant_and_determinism():
    with pytest.raises(ValueError, match=r"'6c'.*'6a', '6b'"):
        syn.temporal_order(rng(), 2, variant="6c")
    assert _same(syn.temporal_order(rng(3), 8, "6b"), syn.temporal_order(rng(3), 8, "6b"))


# ----------------------------------------------------------------- (embedded) Reber grammar

# Independent Reber graph (Reber 1967 / Hochreiter & Schmidhuber 1997 Fig. 5), own numbering:
# node -> {symbol: next node}; "end" accepts after the final E.
_GRAPH = {
    "n1": {"T": "n2", "P": "n3"},
    "n2": {"S": "n2", "X": "n4"},
    "n3": {"T": "n3", "V": "n5"},
    "n4": {"X": "n3", "S": "n6"},
    "n5": {"P": "n4", "V": "n6"},
    "n6": {"E": "end"},
}
ALPHABET = "BTSXPVE"


def oracle_next_sets(s, continual=False):
    """Allowed-next symbol sets per position of one embedded Reber string, or None if the
    string is not an embedded Reber string. Written independently of the module."""
    if len(s) < 9 or s[0] != "B" or s[1] not in "TP" or s[2] != "B":
        return None
    sets = [set("TP"), {"B"}, set(_GRAPH["n1"])]
    node, i = "n1", 3
    while node != "end":
        if i >= len(s) or s[i] not in _GRAPH[node]:
            return None
        node = _GRAPH[node][s[i]]
        sets.append({s[1]} if node == "end" else set(_GRAPH[node]))
        i += 1
    if s[i:] != s[1] + "E":
        return None
    return sets + [{"E"}, {"B"} if continual else set()]


def as_sets(arr):
    return [{ALPHABET[j] for j in np.flatnonzero(row)} for row in arr]


def test_reber_hand_examples():
    s = "BTBTSSXXTVVETE"
    expected = [set("TP"), {"B"}, set("TP"), set("SX"), set("SX"), set("SX"), set("XS"),
                set("TV"), set("TV"), set("PV"), {"E"}, {"T"}, {"E"}, set()]
    got = syn.embedded_reber_next_sets(s)
    assert got.shape == (14, 7) and got.dtype == np.float32
    assert as_sets(got) == expected
    assert as_sets(syn.embedded_reber_next_sets(s, continual=True))[-1] == {"B"}
    s2 = "BPBPVVEPE"
    assert as_sets(syn.embedded_reber_next_sets(s2)) == [
        set("TP"), {"B"}, set("TP"), set("TV"), set("PV"), {"E"}, {"P"}, {"E"}, set()]
    assert embedded_reber_accepts(s) and embedded_reber_accepts(s2)
    # the sets are kept per string: a caller writing into its copy changes nothing after it
    got[:] = 0
    assert as_sets(syn.embedded_reber_next_sets(s)) == expected


def test_generated_strings_match_independent_grammar():
    r = rng(11)
    strings = [syn.embedded_reber_string(r) for _ in range(300)]
    assert {s[1] for s in strings} == {"T", "P"}
    assert min(len(s) for s in strings) >= 9  # shortest inner Reber strings have length 5
    for s in strings:
        sets = oracle_next_sets(s)
        assert sets is not None, s
        assert embedded_reber_accepts(s)
        assert as_sets(syn.embedded_reber_next_sets(s)) == sets
        assert as_sets(syn.embedded_reber_next_sets(s, continual=True)) == \
            oracle_next_sets(s, continual=True)
    inner = [syn.reber_string(r) for _ in range(200)]
    for s in inner:
        assert oracle_next_sets("BT" + s + "TE") is not None
    r1, r2 = rng(5), rng(5)
    assert [syn.embedded_reber_string(r1) for _ in range(20)] == \
        [syn.embedded_reber_string(r2) for _ in range(20)]


def test_corruptions_rejected():
    r = rng(12)
    n_rejected = 0
    for _ in range(300):
        s = syn.embedded_reber_string(r)
        flipped = s[0] + ("P" if s[1] == "T" else "T") + s[2:]  # outer symbols now differ
        assert not embedded_reber_accepts(flipped)
        assert not embedded_reber_accepts(s[:-1]) and not embedded_reber_accepts(s + "B")
        i = int(r.integers(len(s)))
        c = ALPHABET[(ALPHABET.index(s[i]) + 1 + int(r.integers(6))) % 7]
        bad = s[:i] + c + s[i + 1:]
        assert bad != s
        assert embedded_reber_accepts(bad) == (oracle_next_sets(bad) is not None), bad
        n_rejected += not embedded_reber_accepts(bad)
    assert n_rejected >= 250
    assert not embedded_reber_accepts("BTBTSSXXTVVETZ")
    with pytest.raises(ValueError, match=r"'V' at position 3.*'TP'"):
        syn.embedded_reber_next_sets("BTBVSSXXTVVETE")


def test_continual_stream():
    n = 600
    d = syn.continual_reber_stream(rng(13), n)
    x, y, s = d["x"], d["y"], d["string"]
    assert x.shape == y.shape == (n, 7) and x.dtype == y.dtype == np.float32
    assert "".join(ALPHABET[i] for i in x.argmax(-1)) == s and np.all(x.sum(-1) == 1)
    # split the stream after each outer E (an E followed by B); inner Es are followed by T/P
    starts = [0] + [i + 1 for i in range(n - 1) if s[i] == "E" and s[i + 1] == "B"]
    pieces = [s[a:b] for a, b in zip(starts, starts[1:] + [n])]
    assert len(pieces) > 20
    expected = []
    for p in pieces[:-1]:
        sets = oracle_next_sets(p, continual=True)
        assert sets is not None, p
        expected += sets
    # the last piece is a prefix of an ERG string: a longer stream from the same seed draws the
    # same strings, so it completes that string, and the oracle gives its allowed sets
    last = pieces[-1]
    assert "".join(ALPHABET[i] for i in x[starts[-1]:].argmax(-1)) == last
    longer = syn.continual_reber_stream(rng(13), n + 60)["string"]
    assert longer[:n] == s
    whole = longer[starts[-1]:longer.index("EB", starts[-1]) + 1]  # up to the outer E
    sets = oracle_next_sets(whole, continual=True)
    assert sets is not None and whole.startswith(last), (last, whole)
    expected += sets[:len(last)]
    expected_all = as_sets(y)
    assert expected_all == expected
    for i, p in enumerate(pieces[:-1]):
        assert expected_all[starts[i] + len(p) - 1] == {"B"}  # after E comes the next B
    for i in range(n - 1):
        assert s[i + 1] in expected_all[i]
    assert _same(d, syn.continual_reber_stream(rng(13), n))


def test_first_error_index():
    y = syn.embedded_reber_next_sets("BTBTSSXXTVVETE", continual=True)
    good = np.where(y > 0, 0.9, 0.1).astype(np.float32)
    assert syn.first_error_index(good, y) == 14
    a = good.copy()
    a[7, ALPHABET.index("B")] = 0.6  # a forbidden symbol above threshold
    a[9, ALPHABET.index("P")] = 0.2
    assert syn.first_error_index(a, y) == 7
    b = good.copy()
    b[3, ALPHABET.index("X")] = 0.4  # an allowed symbol below threshold
    assert syn.first_error_index(b, y) == 3
    assert syn.first_error_index(b, y, threshold=0.3) == 14
    batch = syn.first_error_index(np.stack([good, a, b]), np.stack([y, y, y]))
    assert batch.tolist() == [14, 7, 3]
    with pytest.raises(ValueError, match="same shape"):
        syn.first_error_index(good[:3], y)
