"""Sweep definitions: grid / zipped / random axes over dotted config keys, and their expansion.

Values and distributions are parsed in :mod:`~lstm_research.sweeps.values`; checking a spec
against its trial config is :mod:`~lstm_research.sweeps.check`.

A sweep is a :class:`SweepSpec`: a trial config file, fixed overrides applied to every trial, and
axes over dotted config keys (``model.cell``, ``train.lr``, ``seed``...):

* grid axes -- the cartesian product of their values (first axis varies slowest);
* zip groups -- axes of equal length that advance together (one combined axis, crossed with the grid);
* random axes -- distributions (``uniform``, ``loguniform``, ``choice``, ``int_uniform``,
  ``int_loguniform``) sampled ``trials`` times with a sweep seed.

Expansion: every grid point x every zip tuple x every random draw, in that nesting order. Random draw
``j`` is *the same* for every grid point (a paired design: in an ablation over ``model.cell`` each cell
sees the same ``trials`` hyper-parameter settings). Each random axis has its own generator seeded by
``(sweep_seed, crc32(key))``, so adding or removing another axis does not change its draws.

Each trial gets a stable, filesystem-safe directory name ``<index>_<k=v,...>_<hash8>``; the hash covers
the config path and all of the trial's overrides (fixed and swept), so re-running the same sweep maps to
the same directories. (Not the config file's contents: ``sweep.json`` keeps the resolved config, and
``sweepdir.prepare_sweep_dir`` refuses a rerun that changed it.)

Command-line strings (see :func:`spec_from_strings`)::

    --grid model.cell=vanilla,nig   --grid seed=0:5        (0:5 -> 0,1,2,3,4; 0:10:2 -> 0,2,4,6,8)
    --zip model.num_layers=1,2 --zip model.dropout=0,0.2   (all --zip axes form one zipped group)
    --random train.lr=loguniform(1e-4,1e-2) --trials 20
    --set train.steps=200                                   (fixed override)
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import re
import zlib
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from lstm_research.cells import GREFF_VARIANTS
from lstm_research.sweeps.values import (
    Distribution,
    SweepSpecError,
    canonical,
    check_key,
    format_value,
    is_seed_key,
    parse_assignment,
    parse_distribution,
    parse_value,
    parse_values,
)

__all__ = [
    "ABLATION_BASELINE",
    "ABLATION_KEY",
    "Axis",
    "Distribution",
    "RandomAxis",
    "SweepSpec",
    "SweepSpecError",
    "Trial",
    "format_value",
    "is_seed_key",
    "parse_assignment",
    "parse_distribution",
    "parse_value",
    "parse_values",
    "spec_from_strings",
    "trial_dirname",
    "trial_hash",
]

#: ``--ablation`` sweeps this key over ``cells.GREFF_VARIANTS`` (Greff et al. 2017), against this baseline.
ABLATION_KEY = "model.cell"
ABLATION_BASELINE = "vanilla"


# ------------------------------------------------------------------------------------------- axes


@dataclasses.dataclass(frozen=True)
class Axis:
    key: str
    values: tuple

    def __post_init__(self):
        check_key(self.key)
        if not self.values:
            raise SweepSpecError(f"axis {self.key!r} has no values")
        object.__setattr__(self, "values", tuple(canonical(v) for v in self.values))
        if len(set(map(_hashable, self.values))) != len(self.values):
            raise SweepSpecError(f"axis {self.key!r} repeats a value: {list(self.values)}")


@dataclasses.dataclass(frozen=True)
class RandomAxis:
    key: str
    dist: Distribution

    def __post_init__(self):
        check_key(self.key)


def _hashable(v: Any) -> Any:
    return json.dumps(v, sort_keys=True, default=str)


@dataclasses.dataclass(frozen=True)
class Trial:
    """One expanded trial: its overrides of swept keys and its stable directory name."""

    index: int
    overrides: Mapping[str, Any]
    hash: str
    id: str

    def to_dict(self) -> dict:
        return {"index": self.index, "id": self.id, "hash": self.hash, "overrides": dict(self.overrides)}


# ------------------------------------------------------------------------------------------- spec


@dataclasses.dataclass
class SweepSpec:
    """A sweep: trial config, fixed overrides and axes. See the module docstring for the semantics."""

    config: str
    grid: Sequence[Axis] = ()
    zip_groups: Sequence[Sequence[Axis]] = ()
    random: Sequence[RandomAxis] = ()
    trials: int | None = None
    sweep_seed: int = 0
    fixed: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        self.grid = tuple(self.grid)
        self.zip_groups = tuple(tuple(g) for g in self.zip_groups if len(g))
        self.random = tuple(self.random)
        self.fixed = {check_key(k): canonical(v) for k, v in dict(self.fixed).items()}
        if not self.config:
            raise SweepSpecError("a sweep needs a trial config file (--config=path/to/config.py[:variant])")
        for group in self.zip_groups:
            lengths = {a.key: len(a.values) for a in group}
            if len(set(lengths.values())) > 1:
                raise SweepSpecError(
                    "zipped axes must have the same number of values, got "
                    + ", ".join(f"{k}: {n}" for k, n in lengths.items()))
        keys = self.swept_keys + list(self.fixed)
        dup = sorted({k for k in keys if keys.count(k) > 1})
        if dup:
            raise SweepSpecError(
                f"config key(s) {dup} appear in more than one of --grid/--zip/--random/--set/--ablation")
        if self.random:
            if self.trials is None or int(self.trials) < 1:
                raise SweepSpecError(
                    f"random axes ({', '.join(a.key for a in self.random)}) need a trial budget "
                    f"--trials N >= 1, got {self.trials}")
            self.trials = int(self.trials)
        elif self.trials is not None:
            raise SweepSpecError(f"--trials {self.trials} given but there is no --random axis to draw")
        self.sweep_seed = int(self.sweep_seed)

    # ---------------------------------------------------------------- introspection

    @property
    def swept_keys(self) -> list[str]:
        return ([a.key for a in self.grid] + [a.key for g in self.zip_groups for a in g]
                + [a.key for a in self.random])

    @property
    def log_scale_keys(self) -> list[str]:
        return [a.key for a in self.random if a.dist.log_scale]

    def __len__(self) -> int:
        n = 1
        for a in self.grid:
            n *= len(a.values)
        for g in self.zip_groups:
            n *= len(g[0].values)
        return n * (self.trials or 1)

    # ---------------------------------------------------------------- expansion

    def random_draws(self) -> list[dict]:
        """The ``trials`` random draws (one dict key -> value each); reproducible from ``sweep_seed``."""
        if not self.random:
            return [{}]
        columns = {}
        for axis in self.random:
            rng = np.random.default_rng([self.sweep_seed, zlib.crc32(axis.key.encode())])
            columns[axis.key] = axis.dist.sample(rng, self.trials)
        return [{k: col[j] for k, col in columns.items()} for j in range(self.trials)]

    def expand(self) -> list[Trial]:
        factors: list[list[dict]] = [[{a.key: v} for v in a.values] for a in self.grid]
        for group in self.zip_groups:
            factors.append([{a.key: a.values[i] for a in group} for i in range(len(group[0].values))])
        factors.append(self.random_draws())
        trials = []
        for index, combo in enumerate(itertools.product(*factors)):
            overrides: dict[str, Any] = {}
            for part in combo:
                overrides.update(part)
            h = trial_hash(self.config, {**self.fixed, **overrides})
            trials.append(Trial(index, overrides, h, trial_dirname(index, overrides, h)))
        return trials

    def run_order(self, trials: Sequence[Trial]) -> list[Trial]:
        """The order trials are launched in: draw by draw when there are random draws (all grid
        points of draw 0, then of draw 1, ...), so a sweep stopped early, or sized to a time
        budget, holds the same number of paired draws for every grid point. Otherwise as listed."""
        n = len(self.random_draws())
        return sorted(trials, key=lambda t: (t.index % n, t.index))

    def command(self, trial: Trial, workdir: str, *, python: str, entry: str) -> list[str]:
        """The trial's command line (the run.py contract)."""
        flags = [f"--config.{k}={format_value(v)}" for k, v in {**self.fixed, **trial.overrides}.items()]
        return [python, entry, f"--config={self.config}", *flags, f"--workdir={workdir}"]

    # ---------------------------------------------------------------- (de)serialization

    def to_dict(self) -> dict:
        return {
            "config": self.config,
            "grid": [[a.key, list(a.values)] for a in self.grid],
            "zip_groups": [[[a.key, list(a.values)] for a in g] for g in self.zip_groups],
            "random": [[a.key, str(a.dist)] for a in self.random],
            "trials": self.trials,
            "sweep_seed": self.sweep_seed,
            "fixed": dict(self.fixed),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SweepSpec":
        return cls(
            config=d["config"],
            grid=[Axis(k, tuple(v)) for k, v in d.get("grid", [])],
            zip_groups=[[Axis(k, tuple(v)) for k, v in g] for g in d.get("zip_groups", [])],
            random=[RandomAxis(k, parse_distribution(s)) for k, s in d.get("random", [])],
            trials=d.get("trials"),
            sweep_seed=d.get("sweep_seed", 0),
            fixed=d.get("fixed", {}),
        )

    def canonical_json(self) -> str:
        """For comparing specs: JSON of :meth:`to_dict` (tuples and lists compare equal)."""
        return json.dumps(self.to_dict(), sort_keys=True, default=str)


def trial_hash(config: str, overrides: Mapping[str, Any]) -> str:
    payload = json.dumps({"config": config, "overrides": sorted((k, v) for k, v in overrides.items())},
                         sort_keys=True, default=str)
    return hashlib.sha1(payload.encode()).hexdigest()[:8]


_SLUG_BAD = re.compile(r"[^A-Za-z0-9.+\-]+")


def _slug_value(v: Any) -> str:
    if isinstance(v, float):
        v = f"{v:.3g}"
    return _SLUG_BAD.sub("_", format_value(v)).strip("_")[:16] or "_"


def trial_dirname(index: int, overrides: Mapping[str, Any], h: str, max_slug: int = 48) -> str:
    """``0007_cell=nig,seed=1_3fa2b1c0``: index, short readable values, hash of the full overrides."""
    pairs = [f"{k.rsplit('.', 1)[-1]}={_slug_value(v)}" for k, v in overrides.items()]
    slug = ""
    for pair in pairs:  # whole pairs while they fit; the hash disambiguates the rest
        if len(slug) + len(pair) + 1 > max_slug:
            break
        slug = f"{slug},{pair}" if slug else pair
    if not slug and pairs:
        slug = pairs[0][:max_slug]
    return f"{index:04d}_{slug}_{h}" if slug else f"{index:04d}_{h}"


# --------------------------------------------------------------------------------- CLI strings


def spec_from_strings(
    config: str,
    *,
    grid: Iterable[str] = (),
    zip: Iterable[str] = (),  # noqa: A002 - mirrors the --zip flag
    random: Iterable[str] = (),
    trials: int | None = None,
    sweep_seed: int = 0,
    ablation: bool = False,
    fixed: Iterable[str] = (),
) -> SweepSpec:
    """Builds a :class:`SweepSpec` from command-line strings (``KEY=VALUES`` / ``KEY=DIST(...)``).

    ``ablation=True`` prepends the grid axis ``model.cell`` over ``cells.GREFF_VARIANTS``.
    """
    grid_axes = [Axis(ABLATION_KEY, GREFF_VARIANTS)] if ablation else []
    for s in grid:
        key, rest = parse_assignment(s)
        grid_axes.append(Axis(key, parse_values(rest)))
    zipped = []
    for s in zip:
        key, rest = parse_assignment(s)
        zipped.append(Axis(key, parse_values(rest)))
    random_axes = []
    for s in random:
        key, rest = parse_assignment(s)
        random_axes.append(RandomAxis(key, parse_distribution(rest)))
    fixed_overrides: dict[str, Any] = {}
    for s in fixed:
        key, rest = parse_assignment(s)
        if key in fixed_overrides:
            raise SweepSpecError(f"fixed override {key!r} given twice")
        fixed_overrides[key] = parse_value(rest)
    return SweepSpec(config=config, grid=grid_axes, zip_groups=[zipped] if zipped else [],
                     random=random_axes, trials=trials, sweep_seed=sweep_seed, fixed=fixed_overrides)
