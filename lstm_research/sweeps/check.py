"""A sweep checked against its trial config before anything is launched or written.

The trial config is loaded as ``run.py`` loads it (the config file's ``get_config(variant)``,
locked), and every override of the spec (``--set``, ``--grid``, ``--zip``, every ``--random``
draw) is applied to a copy through the same ``ml_collections`` flag parsing a trial's
``--config.<key>=<value>`` goes through. So a sweep refuses up front what every one of its
trials would fail on:

* an unknown key -- the error names the valid keys of its section and the closest match;
* a value of the wrong type (``model.hidden_size=12.5``, ``train.lr=fast``);
* a cell string ``cells.get`` refuses (``model.cell=vanila``, ``lstm:forget_bais=1``).

:func:`check_run_options` refuses the run options that make no sense (``--parallel 0``,
``--workers`` with Slurm), for ``experiments/sweep.py`` and ``run_sweep`` alike.
"""

from __future__ import annotations

import copy
import difflib
import importlib.util
import inspect
import json
from pathlib import Path
from typing import Any, Iterable

from lstm_research.errors import UserError
from lstm_research.sweeps.spec import SweepSpec, SweepSpecError
from lstm_research.sweeps.values import format_value, is_seed_key

__all__ = ["CELL_KEY", "EXECUTORS", "apply_overrides", "check_run_options", "check_spec", "load_trial_config"]

#: where :func:`~lstm_research.sweeps.scheduler.run_sweep` runs trials
EXECUTORS = ("local", "submitit_local", "slurm")

#: The config key holding a cell string (validated with ``cells.get``).
CELL_KEY = "model.cell"


def load_trial_config(config: str, cwd: Path | str):
    """``path/to/config.py[:variant]`` -> the locked ConfigDict its ``get_config`` returns.

    The path is relative to ``cwd`` (where the trials run), as for ``run.py --config=...``.
    """
    file, sep, variant = config.partition(":")
    path = Path(file) if Path(file).is_absolute() else Path(cwd) / file
    if not path.is_file():
        raise SweepSpecError(f"config file {file!r} not found (looked for {path}); pass "
                             "--config=path/to/config.py[:variant], relative to --cwd")
    where = f"--config={config}"
    try:
        module_spec = importlib.util.spec_from_file_location("sweep_trial_config", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    except SyntaxError as e:
        raise SweepSpecError(f"{where}: syntax error in {path} line {e.lineno}: {e.msg}") from None
    except ImportError as e:
        raise SweepSpecError(f"{where}: cannot import {path}: {e}") from None
    get_config = getattr(module, "get_config", None)
    if not callable(get_config):
        raise SweepSpecError(f"{where}: {path} defines no get_config() (an ml_collections config file)")
    takes_variant = bool(inspect.signature(get_config).parameters)
    variants = getattr(module, "VARIANTS", None)
    named = f"; variants: {', '.join(variants)}" if variants else ""
    if sep and not takes_variant:
        raise SweepSpecError(f"{where}: {file} has no variants; drop ':{variant}'")
    needs_variant = any(p.default is p.empty for p in inspect.signature(get_config).parameters.values())
    if not sep and needs_variant:
        raise SweepSpecError(f"{where}: {file} needs a variant, --config={file}:VARIANT{named}")
    try:
        cfg = get_config(variant) if sep else get_config()
    except (TypeError, ValueError, KeyError) as e:
        msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise SweepSpecError(f"{where}: {msg}{named if variants and 'valid' not in msg else ''}") from None
    if hasattr(cfg, "lock"):
        cfg.lock()
    return cfg


def check_spec(spec: SweepSpec, cwd: Path | str) -> dict:
    """Raises :class:`SweepSpecError` (one line) unless every trial of ``spec`` fits its config.

    Returns the trials' common config (the config file's, with ``--set`` applied) as plain JSON
    values: ``sweep.json`` keeps it, so a rerun after the file or the library's defaults changed
    is noticed (``sweepdir.prepare_sweep_dir``).
    """
    import ml_collections

    config = load_trial_config(spec.config, cwd)
    sources = _sources(spec)
    for key, flag in sources.items():
        _check_key(config, key, flag, ml_collections.ConfigDict)
    fixed = [f"--config.{k}={format_value(v)}" for k, v in spec.fixed.items()]
    applied = apply_overrides(config, fixed, "--set", spec.config)
    if CELL_KEY in spec.fixed:
        _check_cell(spec.fixed[CELL_KEY], applied, "--set")
    base = applied
    _validate(base, "--set")
    random_keys = {a.key for a in spec.random}
    for key, values in _swept_values(spec):
        flag = sources[key]
        for value in values:
            applied = apply_overrides(config, [*fixed, f"--config.{key}={format_value(value)}"], flag, spec.config)
            if key == CELL_KEY:
                _check_cell(value, applied, flag)
            if key in random_keys or is_seed_key(key):  # (the other axes: in combination, below)
                _validate(applied, f"{flag} {key}={format_value(value)}")
    # the grid and zip axes' combinations, each value checked with the others it runs with
    combos = {tuple((k, format_value(v)) for k, v in sorted(t.overrides.items())
                    if k not in random_keys and not is_seed_key(k)) for t in spec.expand()}
    for combo in sorted(combos):
        if combo:
            where = ", ".join(f"{sources[k]} {k}={v}" for k, v in combo)
            _validate(apply_overrides(config, [*fixed, *(f"--config.{k}={v}" for k, v in combo)],
                                      "--grid", spec.config), where)
    return json.loads(base.to_json_best_effort(sort_keys=True))


#: the sections of a run.py config: a trial config with all of them is checked as run.py will
RUN_SECTIONS = ("task", "model", "train", "parallel")


def _validate(config, where: str) -> None:
    """run.py's config checks (:func:`lstm_research.training.validate.validate_config`), for
    a config of run.py's shape (an entry point of another shape checks its own)."""
    if not all(k in config for k in RUN_SECTIONS):
        return
    from lstm_research.training.validate import validate_config
    try:
        validate_config(config)
    except UserError as e:
        raise SweepSpecError(f"{where}: {e}") from None


def _sources(spec: SweepSpec) -> dict[str, str]:
    """Each key of the spec -> the flag that set it (for error messages)."""
    out = {k: "--set" for k in spec.fixed}
    out.update({a.key: "--grid" for a in spec.grid})
    out.update({a.key: "--zip" for g in spec.zip_groups for a in g})
    out.update({a.key: "--random" for a in spec.random})
    return out


def _swept_values(spec: SweepSpec) -> Iterable[tuple[str, list[Any]]]:
    """Every swept key with its distinct values (random axes: every draw)."""
    for axis in [*spec.grid, *(a for g in spec.zip_groups for a in g)]:
        yield axis.key, list(axis.values)
    draws = spec.random_draws() if spec.random else []
    for axis in spec.random:
        seen: dict[str, Any] = {}
        for d in draws:
            seen.setdefault(format_value(d[axis.key]), d[axis.key])
        yield axis.key, list(seen.values())


def _check_key(config, key: str, flag: str, config_dict_type) -> None:
    parts = key.split(".")
    node = config
    for i, part in enumerate(parts):
        section = ".".join(parts[:i])
        if not isinstance(node, config_dict_type):
            raise SweepSpecError(f"{flag} {key}: {section} is a {type(node).__name__} value, not a "
                                 "section of the config")
        if part not in node:
            valid = sorted(node.keys())
            hint = _did_you_mean(config, key, part, valid, section)
            where = f"of {section}" if section else "at the top level"
            raise SweepSpecError(f"{flag}: unknown config key {key!r}{hint}; valid keys {where}: "
                                 f"{', '.join(valid)}")
        node = node[part]


def _did_you_mean(config, key: str, part: str, valid: list[str], section: str) -> str:
    close = difflib.get_close_matches(part, valid, n=1)
    if close:
        return f" (did you mean {'.'.join([*filter(None, [section]), close[0]])!r}?)"
    everywhere = _flat_keys(config)
    close = difflib.get_close_matches(key, everywhere, n=1) or [
        k for k in everywhere if k.rsplit(".", 1)[-1] == part][:1]
    return f" (did you mean {close[0]!r}?)" if close else ""


def _flat_keys(node, prefix: str = "") -> list[str]:
    out = []
    for k in node.keys():
        value = node[k]
        full = f"{prefix}{k}"
        out += _flat_keys(value, full + ".") if hasattr(value, "keys") and hasattr(value, "lock") else [full]
    return out


def apply_overrides(config, overrides: list[str], flag: str, config_name: str):
    """A copy of ``config`` with ``--config.k=v`` overrides applied as run.py's flags apply them."""
    from absl import flags
    from ml_collections import config_flags

    argv = ["run.py", *overrides]
    values = flags.FlagValues()
    config_flags.DEFINE_config_dict("config", copy.deepcopy(config), flag_values=values, sys_argv=argv,
                                    lock_config=True)
    try:
        values(argv)
    except (flags.Error, ValueError, TypeError, KeyError, AttributeError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if msg.startswith("flag --config."):
            msg = msg[len("flag --config."):]
        raise SweepSpecError(f"{flag} {msg} (trial config {config_name})") from None
    return values.config


def _check_cell(value: Any, config, flag: str) -> None:
    from lstm_research import cells

    hidden = getattr(getattr(config, "model", None), "hidden_size", None)
    hidden = hidden if isinstance(hidden, int) and hidden > 0 else 8
    try:
        cells.get(str(value), hidden_size=hidden)
    except ValueError as e:
        raise SweepSpecError(f"{flag} {CELL_KEY}={format_value(value)}: {e}") from None


def check_run_options(executor: str, parallel: int, workers: bool, pack: int | None,
                      kill_timeout: float) -> None:
    """Refuses options of :func:`~lstm_research.sweeps.scheduler.run_sweep` that make no sense,
    naming the value and the choices."""
    if executor not in EXECUTORS:
        raise UserError(f"unknown executor {executor!r}; valid: {', '.join(EXECUTORS)}")
    if int(parallel) < 1:
        raise UserError(f"--parallel must be >= 1 (trials at once), got {parallel}")
    if workers and executor != "local":
        raise UserError(f"--workers runs trials in local worker processes; it cannot be combined with "
                        f"--executor {executor} (drop --workers to submit one job per trial)")
    if pack is not None and int(pack) < 1:
        raise UserError(f"--pack must be >= 1 (trials per program), got {pack}")
    if float(kill_timeout) < 0:
        raise UserError(f"--kill_timeout must be >= 0 seconds, got {kill_timeout:g}")
