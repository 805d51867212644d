"""Hyperparameter importance by functional ANOVA (Hutter, Hoos & Leyton-Brown 2014), as in
Greff et al. 2015 (Sec. V-B): which hyperparameters, and which pairs of them, explain the
variance of a sweep's metric.

A random forest predicts the metric from the hyperparameters; fANOVA splits the variance of
each tree's prediction over the whole search space into the parts due to each hyperparameter
alone (its *main effect*), each pair beyond their main effects (the *interaction*), and the rest.
Importances are fractions of each tree's total variance, averaged over the trees (with their
std across trees).

The forest is scikit-learn's, with the settings of optuna's ``FanovaImportanceEvaluator`` (64
trees, depth 64, leaves of one sample). The variances of the marginals are computed here in
closed form from each tree's leaf boxes, vectorized, so pairwise interactions and marginal
curves (which the evaluator does not return) take milliseconds; ``tests/test_importance.py``
checks every tree's variance, marginal variances and marginal predictions against optuna's
fANOVA trees, and the fractions against an analytic decomposition. A hyperparameter drawn
log-uniformly is analysed in log10 space, so the search space is weighted as it was sampled.
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import Mapping, Sequence

import numpy as np
from sklearn.ensemble import RandomForestRegressor

from lstm_research.errors import UserError


@dataclasses.dataclass
class Importance:
    """Fractions of the metric's variance: ``main[name]`` and ``pairs[(a, b)]`` are
    (mean, std) over the forest's trees."""
    names: list[str]
    main: dict[str, tuple[float, float]]
    pairs: dict[tuple[str, str], tuple[float, float]]
    n: int

    def ranked(self) -> list[tuple[str, float, float]]:
        """(label, mean, std) of main effects and interactions, the largest first."""
        rows = [(n, *v) for n, v in self.main.items()]
        rows += [(f"{a} x {b}", *v) for (a, b), v in self.pairs.items()]
        return sorted(rows, key=lambda r: -r[1])


def _leaf_boxes(tree, space: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The leaves of a fitted sklearn tree as boxes of the search space: (values [L],
    lo [L, D], hi [L, D])."""
    left, right = tree.children_left, tree.children_right
    values, lo, hi = [], [], []
    stack = [(0, space[:, 0].copy(), space[:, 1].copy())]
    while stack:
        node, a, b = stack.pop()
        if left[node] < 0:
            values.append(tree.value[node, 0, 0])
            lo.append(a)
            hi.append(b)
            continue
        f, t = tree.feature[node], tree.threshold[node]
        b_left, a_right = b.copy(), a.copy()
        b_left[f] = min(max(t, a[f]), b[f])
        a_right[f] = min(max(t, a[f]), b[f])
        stack.append((left[node], a, b_left))
        stack.append((right[node], a_right, b))
    return np.array(values), np.array(lo), np.array(hi)


class _Tree:
    """One tree's fANOVA: its variance over the search space and the variance of its marginal
    over any set of features, computed in closed form from the leaf boxes (a leaf contributes
    its value times the fraction of the other features' space it covers)."""

    def __init__(self, sk_tree, space: np.ndarray):
        self.values, self.lo, self.hi = _leaf_boxes(sk_tree, space)
        self.width = space[:, 1] - space[:, 0]
        frac = (self.hi - self.lo) / self.width  # [L, D]
        self.frac = frac
        vol = frac.prod(1)
        mean = np.average(self.values, weights=vol)
        self.variance = float(np.average((self.values - mean) ** 2, weights=vol))

    def _cells(self, d):
        """The cells of feature d between consecutive leaf edges: (indicator [L, C], weight [C])."""
        edges = np.unique(np.concatenate([self.lo[:, d], self.hi[:, d]]))
        a, b = edges[:-1], edges[1:]
        inside = (self.lo[:, d, None] <= a[None]) & (b[None] <= self.hi[:, d, None])
        return inside.astype(np.float64), (b - a) / self.width[d]

    def marginal_variance(self, features: Sequence[int]) -> float:
        """Variance over the space of ``features`` of the marginal prediction (the rest
        averaged out); one or two features."""
        rest = np.ones(len(self.values))
        for d in range(self.lo.shape[1]):
            if d not in features:
                rest = rest * self.frac[:, d]
        w = self.values * rest
        if len(features) == 1:
            ind, p = self._cells(features[0])
            m = w @ ind
        else:
            (ind_i, p_i), (ind_j, p_j) = self._cells(features[0]), self._cells(features[1])
            m = (ind_i * w[:, None]).T @ ind_j
            p = np.outer(p_i, p_j)
        mean = np.sum(p * m)
        return float(np.sum(p * (m - mean) ** 2))

    def marginal(self, feature: int, x: float) -> float:
        """The prediction at feature = x, the rest averaged out (a point on a split belongs to
        the left box, as in sklearn: x <= threshold goes left)."""
        rest = np.ones(len(self.values))
        for d in range(self.lo.shape[1]):
            if d != feature:
                rest = rest * self.frac[:, d]
        lo, hi = self.lo[:, feature], self.hi[:, feature]
        at = (x <= hi) & ((x > lo) | (lo == lo.min()))
        return float(np.sum(self.values[at] * rest[at]))


class Forest:
    """A random forest of the metric over the (log-scaled where asked) hyperparameters, with
    fANOVA marginals.

    ``params``: {name: values}; ``log``: names analysed in log10 space; ``bounds``: {name: (lo,
    hi)} of the search space in the original units (default: the range of the values).
    """

    def __init__(self, params: Mapping[str, Sequence[float]], y: Sequence[float], *,
                 log: Sequence[str] = (), bounds: Mapping[str, tuple[float, float]] | None = None,
                 n_trees: int = 64, max_depth: int = 64, seed: int = 0):
        self.names = list(params)
        self.log = set(log)
        y = np.asarray(y, np.float64)
        if not np.isfinite(y).all():
            raise UserError("fANOVA needs finite metric values; drop or cap diverged trials")
        if len(y) < 2:
            raise UserError(f"fANOVA needs at least 2 trials, got {len(y)}")
        self.X = np.stack([self._scale(n, np.asarray(params[n], np.float64)) for n in self.names], 1)
        bounds = dict(bounds or {})
        self.space = np.array([self._scale(n, np.asarray(bounds[n], np.float64)) if n in bounds
                               else (self.X[:, i].min(), self.X[:, i].max())
                               for i, n in enumerate(self.names)], np.float64)
        # the forest settings of optuna's FanovaImportanceEvaluator
        self.forest = RandomForestRegressor(n_estimators=n_trees, max_depth=max_depth,
                                            min_samples_split=2, min_samples_leaf=1,
                                            random_state=seed).fit(self.X, y)
        self.trees = [t for t in (_Tree(e.tree_, self.space) for e in self.forest.estimators_)
                      if t.variance > 0]
        if not self.trees:
            raise UserError("the metric does not vary: no importance to assess")
        self.n = len(y)

    def _scale(self, name, v):
        return np.log10(v) if name in self.log else v

    def _fractions(self, features: Sequence[int]) -> np.ndarray:
        """Per tree: the variance of the marginal over ``features``, as a fraction of the
        tree's variance (for a pair, the joint marginal: main effects included)."""
        return np.array([t.marginal_variance(list(features)) / t.variance for t in self.trees])

    def importance(self) -> Importance:
        single = {i: self._fractions([i]) for i in range(len(self.names))}
        main = {self.names[i]: (float(v.mean()), float(v.std())) for i, v in single.items()}
        pairs = {}
        for i, j in itertools.combinations(range(len(self.names)), 2):
            inter = np.clip(self._fractions([i, j]) - single[i] - single[j], 0.0, None)
            pairs[(self.names[i], self.names[j])] = (float(inter.mean()), float(inter.std()))
        return Importance(self.names, main, pairs, self.n)

    def marginal(self, name: str, values: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
        """The predicted metric at each of ``values`` of ``name``, averaged over the rest of
        the search space: (mean, std) over the trees."""
        i = self.names.index(name)
        xs = self._scale(name, np.asarray(values, np.float64))
        out = np.array([[t.marginal(i, x) for x in xs] for t in self.trees])
        return out.mean(0), out.std(0)
