"""Command-line values of a sweep: value lists, ranges, dotted keys and random distributions.

The bottom of the sweeps stack (it imports nothing from it). One value is parsed by
:func:`lstm_research.cells.base.parse_switch_value`, the parser cell strings use too;
:func:`format_value` is its inverse, for ``--config.key=value`` flags.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import numpy as np

from lstm_research.cells.base import parse_switch_value
from lstm_research.errors import UserError

__all__ = [
    "DISTRIBUTIONS",
    "Distribution",
    "SweepSpecError",
    "canonical",
    "check_key",
    "format_value",
    "is_seed_key",
    "parse_assignment",
    "parse_distribution",
    "parse_value",
    "parse_values",
    "split_top_level",
]

DISTRIBUTIONS = ("uniform", "loguniform", "choice", "int_uniform", "int_loguniform")

_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_RANGE_RE = re.compile(r"^([+-]?\d+):([+-]?\d+)(?::([+-]?\d+))?$")
_DIST_RE = re.compile(r"^\s*([a-z_]+)\s*\((.*)\)\s*$", re.S)


class SweepSpecError(UserError):
    """A sweep definition that cannot be parsed, expanded, or applied to its trial config."""


# ----------------------------------------------------------------------------------------- values


def parse_value(text: str) -> Any:
    """One command-line value (``cells.base.parse_switch_value``; a bad literal is a SweepSpecError).

    ``true``/``false`` -> bool; ``none``/``null`` -> None; ``3`` -> int; ``1e-3`` -> float;
    ``(64,64)``/``[1,2]`` -> tuple; ``'3'`` or ``"3"`` -> the str ``3``; anything else -> str.
    """
    try:
        return parse_switch_value(text)
    except ValueError as e:
        raise SweepSpecError(str(e)) from None


def canonical(value: Any) -> Any:
    """Lists become tuples (hashable, and equal to their JSON round trip after ``canonical``)."""
    if isinstance(value, (list, tuple)):
        return tuple(canonical(v) for v in value)
    return value


def format_value(value: Any) -> str:
    """Formats a value for a ``--config.key=value`` flag (the inverse of :func:`parse_value`)."""
    if isinstance(value, bool):
        return "True" if value else "False"
    if value is None:
        return "None"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (tuple, list)):
        return repr(tuple(value))
    return str(value)


def split_top_level(text: str, sep: str = ",") -> list[str]:
    """Splits on ``sep`` outside brackets and quotes: ``a,(1,2),'x,y'`` -> ``a``, ``(1,2)``, ``'x,y'``."""
    parts, depth, quote, cur = [], 0, None, []
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur))
    return parts


def parse_values(text: str) -> tuple:
    """Parses a comma-separated value list; ``a:b[:step]`` tokens expand to ``range(a, b, step)``."""
    out: list[Any] = []
    for token in split_top_level(text):
        token = token.strip()
        if not token:
            raise SweepSpecError(f"empty value in the list {text!r} (values are comma-separated)")
        m = _RANGE_RE.match(token)
        if m:
            start, stop, step = int(m.group(1)), int(m.group(2)), int(m.group(3) or 1)
            if step == 0:
                raise SweepSpecError(f"range {token!r} has step 0")
            values = list(range(start, stop, step))
            if not values:
                raise SweepSpecError(
                    f"range {token!r} is empty (start:stop[:step] excludes stop, like Python's range)")
            out.extend(values)
        else:
            out.append(parse_value(token))
    return tuple(out)


# ------------------------------------------------------------------------------------------- keys


def check_key(key: str) -> str:
    key = key.strip()
    if not _KEY_RE.match(key):
        raise SweepSpecError(
            f"invalid config key {key!r}: expected a dotted name like 'model.cell' or 'train.lr'")
    return key


def parse_assignment(text: str) -> tuple[str, str]:
    """Splits ``key=rest`` at the first ``=`` and validates the key."""
    if "=" not in text:
        raise SweepSpecError(f"expected KEY=VALUES, got {text!r}")
    key, rest = text.split("=", 1)
    if key.startswith("config."):  # tolerate --set config.train.steps=200
        key = key[len("config."):]
    return check_key(key), rest


def is_seed_key(key: str) -> bool:
    """``seed`` or ``*.seed``: replicate axes, not hyper-parameters (summaries aggregate over them)."""
    return key == "seed" or key.endswith(".seed")


# ---------------------------------------------------------------------------------- distributions


@dataclasses.dataclass(frozen=True)
class Distribution:
    """A random-search distribution. Integer kinds are inclusive of both bounds."""

    kind: str
    args: tuple

    def __post_init__(self):
        kind, args = self.kind, self.args
        if kind not in DISTRIBUTIONS:
            raise SweepSpecError(f"unknown distribution {kind!r}; valid: {', '.join(DISTRIBUTIONS)}")
        if kind == "choice":
            if not args:
                raise SweepSpecError("choice() needs at least one value")
            return
        if len(args) != 2:
            raise SweepSpecError(f"{kind}(a, b) takes exactly 2 bounds, got {len(args)}: {args}")
        lo, hi = args
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in args):
            raise SweepSpecError(f"{kind}{args}: bounds must be numbers")
        if kind.startswith("int_") and not all(isinstance(v, int) for v in args):
            raise SweepSpecError(f"{kind}{args}: bounds must be integers")
        if not lo < hi:
            raise SweepSpecError(f"{kind}({lo}, {hi}): need a < b")
        if kind.endswith("loguniform") and lo <= 0:
            raise SweepSpecError(f"{kind}({lo}, {hi}): bounds must be > 0 for a log scale")

    @property
    def log_scale(self) -> bool:
        return self.kind.endswith("loguniform")

    def sample(self, rng: np.random.Generator, n: int) -> list:
        kind, args = self.kind, self.args
        if kind == "choice":
            return [args[i] for i in rng.integers(0, len(args), size=n)]
        lo, hi = args
        if kind == "uniform":
            return [min(max(_round_sig(x), lo), hi) for x in rng.uniform(lo, hi, size=n)]
        if kind == "loguniform":
            xs = np.exp(rng.uniform(math.log(lo), math.log(hi), size=n))
            return [min(max(_round_sig(x), lo), hi) for x in xs]
        if kind == "int_uniform":
            return [int(x) for x in rng.integers(lo, hi + 1, size=n)]
        # int_loguniform: floor of a log-uniform draw on [lo, hi + 1): P(k) ~ log((k+1)/k).
        xs = np.floor(np.exp(rng.uniform(math.log(lo), math.log(hi + 1), size=n)))
        return [int(min(max(x, lo), hi)) for x in xs]

    def __str__(self) -> str:
        """The text :func:`parse_distribution` reads back as this distribution (``sweep.json``
        stores random axes so): a string argument that would read back as something else (a
        comma-separated cell string, ``'3'``, ``'true'``) is quoted."""
        return f"{self.kind}({','.join(_format_arg(a) for a in self.args)})"


def _format_arg(value: Any) -> str:
    text = format_value(value)
    if not isinstance(value, str):
        return text
    if not any(c in text for c in ",()[]{}'\"") and parse_value(text) == value:
        return text
    quote = "'" if "'" not in value else '"'
    if quote in value:
        raise SweepSpecError(f"the choice() value {value!r} holds both quote characters; it "
                             "cannot be written so that it reads back the same")
    return f"{quote}{value}{quote}"


def _round_sig(x: float, digits: int = 6) -> float:
    """Six significant digits: readable overrides/dir names, far finer than any tuning resolution."""
    return float(f"{float(x):.{digits}g}")


def parse_distribution(text: str) -> Distribution:
    """Parses ``loguniform(1e-4,1e-2)``, ``choice(a,b,c)``, ``int_uniform(1,4)`` ..."""
    m = _DIST_RE.match(text)
    if not m:
        raise SweepSpecError(
            f"cannot parse the distribution {text!r}: expected NAME(args) with NAME one of "
            f"{', '.join(DISTRIBUTIONS)}, e.g. loguniform(1e-4,1e-2)")
    kind, inner = m.group(1), m.group(2)
    if kind not in DISTRIBUTIONS:
        raise SweepSpecError(f"unknown distribution {kind!r} in {text!r}; valid: {', '.join(DISTRIBUTIONS)}")
    args = tuple(parse_value(t) for t in split_top_level(inner)) if inner.strip() else ()
    if kind != "choice" and kind.startswith("int_"):
        args = tuple(int(a) if isinstance(a, float) and a.is_integer() else a for a in args)
    return Distribution(kind, args)
