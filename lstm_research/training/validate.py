"""Checks of a run's config and command line before anything is written or compiled.

``validate_config(config)`` runs one check per config section (:func:`check_task`,
:func:`check_model`, :func:`check_train`, :func:`check_parallel`) and raises one
:class:`~lstm_research.errors.UserError` listing every problem found. ``load_config_file`` and
``check_override_keys`` give one-line errors for a bad ``--config`` file, variant or key
(ml_collections would end those in a traceback).
"""
from __future__ import annotations

import importlib.util
import inspect
import math
import os
import sys
from pathlib import Path

from lstm_research.errors import UserError, did_you_mean

from lstm_research.models import width
from lstm_research.models.recurrent import DTYPES, FUSED, make_stack
from lstm_research.tasks import TASKS
from lstm_research.tasks.base import config_fields
from lstm_research.training.optim import INITS, OPTIMIZERS, SCHEDULES


def _causal(task_name) -> bool:
    """Targets are the next inputs or the state is carried: no backward layer."""
    cls = TASKS.get(task_name)
    return cls is not None and (cls.predicts_next or cls.stateful)


def _token_inputs(task_name) -> bool:
    cls = TASKS.get(task_name)
    return cls is not None and bool(cls.token_inputs)


def _has_epochs(task_name) -> bool:
    cls = TASKS.get(task_name)
    return cls is None or cls.steps_per_epoch is not None


# --- small predicates ---------------------------------------------------------------------
def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int(problems, name, v, lo, hi=None, what=None):
    if not _is_int(v) or v < lo or (hi is not None and v > hi):
        rng = what or (f">= {lo}" if hi is None else f"in [{lo}, {hi}]")
        problems.append(f"{name}={v!r} must be an integer {rng}")


def _num(problems, name, v, lo=None, hi=None, lo_open=False, hi_open=False, what=None):
    ok = _is_num(v)
    if ok and lo is not None:
        ok = v > lo if lo_open else v >= lo
    if ok and hi is not None:
        ok = v < hi if hi_open else v <= hi
    if not ok:
        if what is None:
            left = "" if lo is None else (f"> {lo}" if lo_open else f">= {lo}")
            right = "" if hi is None else (f"< {hi}" if hi_open else f"<= {hi}")
            what = " and ".join(filter(None, (left, right))) or "finite"
        problems.append(f"{name}={v!r} must be a number {what}")


def _choice(problems, name, v, choices):
    if v not in choices:
        problems.append(f"{name}={v!r}; valid: {', '.join(map(str, choices))}"
                        + did_you_mean(str(v), [str(c) for c in choices]))


# --- one check per config section ---------------------------------------------------------
def check_task(task) -> list[str]:
    problems: list[str] = []
    name = task.get("name")
    if name not in TASKS:
        _choice(problems, "task.name", name, list(TASKS))
        return problems
    fields = config_fields(TASKS[name])
    unknown = sorted(set(task) - set(fields) - {"name"})
    if unknown:
        problems.append(f"unknown field(s) {', '.join(unknown)} for task {name!r}; valid: "
                        f"{', '.join(sorted(fields))}")
    positive = ("batch_size", "eval_size", "bptt", "steps_per_epoch", "eval_length",
                "eval_batch_size")
    for key in positive:
        if key in task:
            _int(problems, f"task.{key}", task[key], 1)
    if "T" in task:
        _int(problems, "task.T", task["T"], 2)
    if not problems:
        try:  # the task's own checks of its fields (variants, loss norms); loads no data
            TASKS[name](**{k: v for k, v in task.items() if k != "name"})
        except UserError as e:
            problems.append(str(e))
    if "data_dir" in task and not isinstance(task["data_dir"], str):
        problems.append(f"task.data_dir={task['data_dir']!r} must be a path (string)")
    return problems


def check_model(model, task_name=None) -> list[str]:
    problems: list[str] = []
    _int(problems, "model.hidden_size", model.hidden_size, 1)
    _int(problems, "model.num_layers", model.num_layers, 1)
    _int(problems, "model.embedding_size", model.embedding_size, 0)
    for key in ("dropout", "input_dropout", "recurrent_dropout", "zoneout"):
        _num(problems, f"model.{key}", model[key], 0, 1, hi_open=True, what="in [0, 1)")
    _choice(problems, "model.dtype", model.dtype, DTYPES)
    _choice(problems, "model.fused", model.get("fused", "auto"), tuple(FUSED))
    _int(problems, "model.unroll", model.get("unroll", 1), 1)
    if model.bidirectional and _causal(task_name):
        problems.append(f"model.bidirectional=True is not possible for task {task_name!r}: its "
                        "targets are the next inputs or its state is carried across batches")
    multiple = model.get("width_multiple", 1)
    _int(problems, "model.width_multiple", multiple, 1)
    if isinstance(model.cell, str) and _is_int(model.hidden_size) and model.hidden_size >= 1:
        from lstm_research import cells
        try:
            cells.get(model.cell, model.hidden_size)
        except (ValueError, TypeError) as e:
            problems.append(f"model.cell={model.cell!r}: {e}")
        else:
            why_not = _is_int(multiple) and multiple > 1 and width.unpaddable(model)
            if why_not:
                problems.append(f"model.width_multiple={multiple} (padded units): {why_not}; "
                                "set model.width_multiple=1")
            elif model.get("tie_embeddings") and _is_int(multiple) and multiple >= 1 and \
                    _is_int(model.embedding_size):
                problems += _tied_sizes(model)
    elif not isinstance(model.cell, str):
        problems.append(f"model.cell={model.cell!r} must be a cell string such as 'lstm'")
    if not problems:  # the stack's own checks of its knobs together (parallel, fused, ...)
        try:
            make_stack(width.padded(model))
        except (UserError, ValueError) as e:
            problems.append(f"model: {e}")
    return problems


def _tied_sizes(model) -> list[str]:
    """A tied softmax reads the top layer's outputs with the embedding matrix: their sizes."""
    from lstm_research import cells
    padded = width.padded(model)
    out = cells.get(padded.cell, padded.hidden_size).output_size
    emb = padded.embedding_size or padded.hidden_size
    if emb == out:
        return []
    return [f"model.tie_embeddings=True needs the embedding size ({emb}: model.embedding_size, "
            f"else the hidden size{', padded' if padded.hidden_size != model.hidden_size else ''})"
            f" to equal the top layer's output size ({out}); set model.embedding_size={out} or "
            "model.tie_embeddings=False"]


def check_train(train, task_name=None) -> list[str]:
    problems: list[str] = []
    _choice(problems, "train.optimizer", train.optimizer, OPTIMIZERS)
    _choice(problems, "train.schedule", train.schedule, SCHEDULES)
    _choice(problems, "train.init", train.init, INITS)
    _num(problems, "train.lr", train.lr, 0, lo_open=True)
    _num(problems, "train.momentum", train.momentum, 0, 1, hi_open=True, what="in [0, 1)")
    _num(problems, "train.weight_decay", train.weight_decay, 0)
    _num(problems, "train.clip_norm", train.clip_norm, 0, what=">= 0 (0 = off)")
    _int(problems, "train.epochs", train.epochs, 0)
    if train.epochs == 0:
        _int(problems, "train.steps", train.steps, 1, what=">= 1 (or set train.epochs)")
    elif _is_int(train.epochs) and task_name is not None and not _has_epochs(task_name):
        problems.append(f"train.epochs is set but task {task_name!r} has no epochs; use "
                        "train.steps")
    if train.schedule == "zaremba" and task_name is not None and not _has_epochs(task_name):
        problems.append("train.schedule='zaremba' needs an epoch-based task (ptb, jsb)")
    _int(problems, "train.decay_after_epochs", train.decay_after_epochs, 0)
    _num(problems, "train.decay_factor", train.decay_factor, 1)
    if train.schedule in ("zaremba", "plateau") and train.decay_factor == 1:
        problems.append(f"train.schedule={train.schedule!r} with train.decay_factor=1 never "
                        "changes the learning rate; set train.decay_factor > 1 (the lr is "
                        "divided by it), or train.schedule='constant'")
    _int(problems, "train.plateau_patience", train.plateau_patience, 1)
    _num(problems, "train.init_scale", train.init_scale, 0, lo_open=True)
    _num(problems, "train.input_noise", train.input_noise, 0)
    if _token_inputs(task_name) and _is_num(train.input_noise) and train.input_noise > 0:
        problems.append(f"train.input_noise={train.input_noise} has no effect on task "
                        f"{task_name!r}: its inputs are tokens (embedded), not values; set it "
                        "to 0")
    _int(problems, "train.eval_every", train.eval_every, 0, what=">= 0 (0 = once per epoch)")
    _int(problems, "train.log_every", train.log_every, 1)
    _int(problems, "train.patience", train.patience, 0, what=">= 0 (0 = off)")
    _int(problems, "train.checkpoint_every", train.checkpoint_every, 0)
    _num(problems, "train.checkpoint_secs", train.checkpoint_secs, 0)
    _int(problems, "train.steps_per_call", train.get("steps_per_call", 1), 1)
    if train.target is not None:
        _num(problems, "train.target", train.target)
    return problems


def check_parallel(par) -> list[str]:
    problems: list[str] = []
    _int(problems, "parallel.batch_per_device", par.batch_per_device, 0, what=">= 0 (0 = off)")
    _int(problems, "parallel.num_processes", par.num_processes, 1)
    _int(problems, "parallel.model_axis", par.model_axis, 1)
    if _is_int(par.num_processes):
        _int(problems, "parallel.process_id", par.process_id, 0, max(par.num_processes - 1, 0))
        if par.num_processes > 1 and not par.coordinator_address:
            problems.append("parallel.num_processes > 1 needs parallel.coordinator_address")
        if par.coordinator_address == "auto" and (par.num_processes != 1 or par.process_id != 0):
            problems.append("parallel.coordinator_address='auto' takes the process count and id "
                            "from the cluster (Slurm, Open MPI); leave parallel.num_processes and "
                            "parallel.process_id unset")
    _int(problems, "parallel.timeout_s", par.timeout_s, 1)
    addr = par.coordinator_address
    if addr and addr != "auto" and (not isinstance(addr, str) or ":" not in addr
                                    or not addr.rsplit(":", 1)[1].isdigit()):
        problems.append(f"parallel.coordinator_address={addr!r} must be host:port (process 0's "
                        "host and a free port) or 'auto'")
    return problems


def check_data(config) -> list[str]:
    """Build the task and draw its first batches: catches data sizes that do not fit the split
    (a PTB batch larger than the data) and raises the data errors (missing/corrupt files)."""
    from lstm_research import tasks
    try:
        task = tasks.build(config.task, config.seed)
    except UserError:
        raise
    except ValueError as e:
        return [f"task: {e}"]
    problems = []
    spe = task.steps_per_epoch
    if spe is not None and spe < 1:
        problems.append(f"task {task.name}: the training split gives no batch of "
                        f"task.batch_size={config.task.get('batch_size')}"
                        + (f" x task.bptt={config.task.bptt}" if "bptt" in config.task else "")
                        + "; make them smaller")
    for split in ("valid", "test"):
        try:
            next(iter(task.eval_batches(split)))
        except StopIteration:
            problems.append(f"task {task.name}: the {split} split gives no batch of "
                            f"task.eval_batch_size={config.task.get('eval_batch_size')}"
                            + (f" x task.bptt={config.task.bptt}" if "bptt" in config.task else "")
                            + "; make them smaller")
        except ValueError as e:
            problems.append(f"task {task.name} ({split}): {e}")
    return problems


def check_devices(config) -> list[str]:
    """The mesh and the global batch against this machine's devices (single-process runs only:
    a multi-process run must not touch the devices before ``jax.distributed.initialize``)."""
    if config.parallel.num_processes > 1 or config.parallel.coordinator_address:
        return []
    from lstm_research.training import parallel
    try:
        mesh = parallel.make_mesh(config.parallel.model_axis)
        if "batch_size" in config.task:
            parallel.global_batch_size(config.task.batch_size, config.parallel, mesh)
    except ValueError as e:
        return [str(e)]
    return []


def validate_config(config, check_data_sizes: bool = False) -> None:
    """Raise one UserError listing every problem of ``config`` (all sections at once).

    ``check_data_sizes``: also check the mesh and global batch against the devices, and build
    the task and draw a batch of each split (loads the data)."""
    problems: list[str] = []
    if not _is_int(config.get("seed")) or config.seed < 0:
        problems.append(f"seed={config.get('seed')!r} must be an integer >= 0")
    task_problems = check_task(config.task)
    problems += task_problems
    task_name = config.task.get("name")
    problems += check_model(config.model, task_name)
    problems += check_train(config.train, task_name)
    problems += check_parallel(config.parallel)
    if config.train.get("gate_stats") and width.multiple(config.model) != 1:
        problems.append(f"train.gate_stats=True with model.width_multiple="
                        f"{config.model.width_multiple}: the statistics would count the padded "
                        "units; set model.width_multiple=1")
    if not problems and check_data_sizes:
        problems += check_devices(config) + check_data(config)
    if problems:
        n = len(problems)
        raise UserError(f"{n} problem{'s' if n > 1 else ''} in the config: "
                        + "; ".join(problems))


def validate_workdir(workdir) -> None:
    """A workdir must be a folder (or not exist yet) under a writable parent."""
    path = Path(workdir)
    if path.exists() and not path.is_dir():
        raise UserError(f"--workdir={workdir} is a file, not a folder; pass a folder path")
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise UserError(f"--workdir={workdir}: {probe} is a file, not a folder")
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"--workdir={workdir}: {probe} is not writable; pass another --workdir")


# --- the command line ---------------------------------------------------------------------
def _config_module(path: str):
    """The module of config file ``path``; one-line UserError for a missing file, a syntax
    error or a module without ``get_config``."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file {path} not found" + (" (it is a folder)" if p.is_dir() else "")
                        + "; pass --config=configs/<name>.py[:variant]")
    root = str(Path(__file__).resolve().parents[2])
    if root not in sys.path:  # configs import each other as ``configs.papers...``
        sys.path.insert(0, root)
    try:
        source = p.read_text()
        compile(source, str(p), "exec")
    except SyntaxError as e:
        raise UserError(f"config file {path}: syntax error at line {e.lineno}: {e.msg}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"config file {path} cannot be read: {e}") from None
    mod_spec = importlib.util.spec_from_file_location(f"_lstm_research_config_{p.stem}", p)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)  # an error here is a bug in the config: traceback
    if not callable(getattr(module, "get_config", None)):
        raise UserError(f"config file {path} has no get_config() function")
    return module


def _variant_params(get_config) -> list:
    return [q for q in inspect.signature(get_config).parameters.values()
            if q.kind in (q.POSITIONAL_ONLY, q.POSITIONAL_OR_KEYWORD)]


def config_info(path: str) -> tuple[list[str] | None, str | None, str]:
    """``(variants, default variant, docstring)`` of config file ``path``: its ``VARIANTS``
    (None when it has none), the default of ``get_config``'s variant argument (None when it
    takes none) and the module docstring ("" without one); for ``run.py --help`` and the
    default workdir."""
    module = _config_module(path)
    params = _variant_params(module.get_config)
    default = params[0].default if params and params[0].default is not params[0].empty else None
    variants = getattr(module, "VARIANTS", None)
    return (list(variants) if variants is not None else None), default, module.__doc__ or ""


def load_config_file(spec: str):
    """The ConfigDict of ``path[:variant]``; one-line UserError for a missing file, a syntax
    error, a config without ``get_config``, an unknown variant, or a variant on a config
    without variants."""
    path, _, variant = spec.partition(":")
    module = _config_module(path)
    get_config = module.get_config
    variants = getattr(module, "VARIANTS", None)
    if variant:
        if not _variant_params(get_config):
            raise UserError(f"config file {path} has no variants; drop ':{variant}'")
        if variants is not None and variant not in variants:
            raise UserError(f"unknown variant {variant!r} of {path}; valid: "
                            f"{', '.join(variants)}" + did_you_mean(variant, list(variants)))
        try:
            return get_config(variant)
        except ValueError as e:  # configs raise ValueError on an unknown variant
            raise UserError(f"config file {path}:{variant}: {e}") from None
    return get_config()


def flatten_keys(config, prefix="") -> list[str]:
    out = []
    for k, v in config.items():
        out.append(prefix + k)
        if hasattr(v, "items"):
            out += flatten_keys(v, f"{prefix}{k}.")
    return out


def check_override_keys(config, keys) -> None:
    """Every ``--config.<key>`` must name a field of ``config``; otherwise one UserError naming
    the valid keys at that level and the closest match."""
    valid = flatten_keys(config)
    bad = []
    for key in keys:
        if key in valid:
            continue
        parent = key.rpartition(".")[0]
        siblings = [k for k in valid if k.rpartition(".")[0] == parent] if parent in valid or \
            not parent else []
        level = siblings or [k for k in valid if "." not in k]
        bad.append(f"unknown config key {key!r}" + did_you_mean(key, valid)
                   + f"; valid keys{' under ' + parent if siblings and parent else ''}: "
                   + ", ".join(level))
    if bad:
        raise UserError("; ".join(bad) + " (every field and its default is in "
                        "lstm_research/training/config.py)")
