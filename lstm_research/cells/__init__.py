"""The cell zoo: every cell by name, with switch overrides.

    >>> from lstm_research import cells
    >>> cell = cells.get("vanilla", hidden_size=128, peepholes=False)   # Greff's NP variant
    >>> cell = cells.get("vanilla:peepholes=false", hidden_size=128)    # same thing as a string
    >>> cell = cells.get("lstm:forget_bias=1.0", hidden_size=128)       # Jozefowicz's LSTM-b
    >>> params = cell.init(jax.random.key(0), input_size=32)
    >>> carry, y = cell.step(params, cell.initial_carry((batch,)), x)

A cell string is ``name`` or ``name:switch=value,switch=value`` so that one command-line flag
(``--config.model.cell=vanilla:peepholes=false``) selects any variant.
"""
from __future__ import annotations

import dataclasses

from lstm_research.cells import base, gru, lstm, minrnn, mogrifier, xlstm
from lstm_research.cells.base import Cell, CellConfigError
from lstm_research.cells.gru import GRU, Elman
from lstm_research.cells.lstm import LSTM
from lstm_research.cells.minrnn import MinGRU, MinLSTM
from lstm_research.cells.mogrifier import Mogrifier
from lstm_research.cells.xlstm import MLSTM, SLSTM

#: name -> (class, preset switches, citation)
REGISTRY: dict[str, tuple[type, dict, str]] = {
    **{name: (LSTM, sw, lstm.PAPERS[name]) for name, sw in lstm.PRESETS.items()},
    **{name: (cls, sw, gru.PAPERS[name]) for name, (cls, sw) in gru.PRESETS_GRU.items()},
    "mogrifier": (Mogrifier, {}, "Melis, Kocisky & Blunsom 2020 (Mogrifier LSTM)"),
    "slstm": (SLSTM, {}, "Beck et al. 2024 (xLSTM: sLSTM)"),
    "mlstm": (MLSTM, {}, "Beck et al. 2024 (xLSTM: mLSTM)"),
    "minlstm": (MinLSTM, {}, "Feng et al. 2024 (Were RNNs All We Needed?)"),
    "mingru": (MinGRU, {}, "Feng et al. 2024 (Were RNNs All We Needed?)"),
}

GREFF_VARIANTS = ("vanilla", "nig", "nfg", "nog", "niaf", "noaf", "np", "cifg", "fgr")


def names() -> list[str]:
    return list(REGISTRY)


def parse(spec: str) -> tuple[str, dict]:
    """'vanilla:peepholes=false,forget_bias=1' -> ('vanilla', {'peepholes': False, ...})."""
    name, _, rest = spec.partition(":")
    switches = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise CellConfigError(f"cell switch {item!r} in {spec!r} is not of the form key=value")
        if key.strip() in switches:
            raise CellConfigError(f"cell switch {key.strip()!r} is set twice in {spec!r}")
        switches[key.strip()] = base.parse_switch_value(value)
    return name.strip(), switches


def switch_names(name: str) -> list[str]:
    cls = REGISTRY[name][0]
    return [f.name for f in dataclasses.fields(cls)]


def get(spec: str, hidden_size: int, **switches) -> Cell:
    """Build a cell from its name (or ``name:switch=value,...`` string) and switch overrides."""
    name, parsed = parse(spec)
    if name not in REGISTRY:
        raise CellConfigError(f"unknown cell {name!r}; valid cells: {', '.join(REGISTRY)}")
    cls, preset, _ = REGISTRY[name]
    chosen = {**preset, **parsed, **switches}
    valid = [n for n in switch_names(name) if n != "hidden_size"]
    unknown = sorted(set(chosen) - set(valid))
    if unknown:
        raise CellConfigError(
            f"unknown switch{'es' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
            f"for cell {name!r}; valid switches: {', '.join(valid)}")
    if name == "lstmp" and not chosen.get("proj_size"):
        raise CellConfigError("cell 'lstmp' needs proj_size > 0, e.g. 'lstmp:proj_size=64'")
    return cls(hidden_size=hidden_size, **chosen)


__all__ = ["Cell", "CellConfigError", "LSTM", "GRU", "Elman", "Mogrifier", "SLSTM", "MLSTM",
           "MinLSTM", "MinGRU", "REGISTRY", "GREFF_VARIANTS", "get", "parse", "names",
           "switch_names"]
