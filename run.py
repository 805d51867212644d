"""Run one experiment: ``python run.py --config=configs/<experiment>.py[:variant]
[--config.<key>=<value> ...] [--workdir=DIR]``.

Without arguments it trains an LSTM on the adding problem (T = 100), which needs no download.
Running the same command again resumes from the workdir's latest checkpoint; running it with a
larger ``--config.train.epochs`` (or ``train.steps``) extends a finished run. ``--print_config``
prints the resolved config and exits. The default workdir is ``runs/<config name>[_<variant>]``.
``python run.py --pack=PACK_JSON`` trains the trials listed in a pack file (written by
``experiments/sweep.py --pack K``) in one vmapped program (lstm_research/training/pack.py).

Exit status: 0 done; 2 a user error (bad command line, config, workdir or data; one line
``error: ...`` on stderr, nothing written to the workdir); 3 the loss or parameters became
NaN/inf (the last good checkpoint is kept); 4 a multi-process run lost another process (it died
or stopped answering; one line ``error: ...``; rerun every process to resume); 143 stopped by
SIGTERM after saving; anything else is a bug and prints its traceback.
"""
from __future__ import annotations

import glob
import json
import os
import sys

from absl import flags, logging

from lstm_research.errors import UserError
from lstm_research.training import validate

DEFAULT_CONFIG = "configs/adding.py"
EXIT_USER_ERROR, EXIT_NON_FINITE, EXIT_PEER_LOST, EXIT_SIGTERM = 2, 3, 4, 143


def _default_config() -> str:
    """``configs/adding.py``, relative to the current folder as ``--config`` is, or next to this
    file when run from elsewhere."""
    if os.path.isfile(DEFAULT_CONFIG):
        return DEFAULT_CONFIG
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), DEFAULT_CONFIG)


def _config_first(argv):
    """``argv`` with ``--config[=]VALUE`` moved before the ``--config.<key>`` overrides (absl's
    config flags refuse an override that comes first; the order should not matter)."""
    args = list(argv[1:])
    for i, a in enumerate(args):
        if a == "--":
            break
        if a.lstrip("-").partition("=")[0] == "config" and a.startswith("-"):
            n = 1 if "=" in a or i + 1 >= len(args) or args[i + 1].startswith("-") else 2
            return [argv[0], *args[i:i + n], *args[:i], *args[i + n:]]
    return list(argv)


def _config_args(argv):
    """(the --config value, the keys of --config.<key> overrides) as absl would read them."""
    spec, keys, args = _default_config(), [], list(argv[1:])
    for i, a in enumerate(args):
        if a == "--":
            break
        name = a.lstrip("-").partition("=")[0]
        if not a.startswith("-"):
            continue
        if name == "config":
            if "=" in a:
                spec = a.partition("=")[2]
            elif i + 1 < len(args) and not args[i + 1].startswith("-"):
                spec = args[i + 1]
            else:
                raise UserError("--config needs a value: --config=configs/<name>.py[:variant]")
        elif name.startswith("config."):
            keys.append(name[len("config."):])
        elif name.startswith("noconfig."):
            keys.append(name[len("noconfig."):])
    return spec, keys


def parse_command_line(argv):
    """(FlagValues, config) of ``argv``; UserError for anything wrong with it."""
    argv = _config_first(argv)
    if any(a in ("-h", "--help", "-help", "--helpfull") for a in argv[1:]):
        print(__doc__)
        print(config_listing())
        print()
        print(_flags(argv[:1]).get_help())
        raise SystemExit(0)
    spec, keys = _config_args(argv)
    config = validate.load_config_file(spec)
    validate.check_override_keys(config, keys)  # (before absl reads them: its errors are raw)
    fv = _flags(argv)
    try:
        rest = fv(list(argv))
        config = fv.config
    except flags.Error as e:
        raise UserError(str(e).strip().splitlines()[0] + "; see python run.py --help") from None
    if len(rest) > 1:
        raise UserError(f"unexpected arguments: {' '.join(rest[1:])}; options are --name=value")
    return fv, config


def _flags(argv) -> flags.FlagValues:
    """run.py's flags, the config's overrides read from ``argv``."""
    from ml_collections import config_flags
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", _default_config(), "Experiment config file.",
                                    flag_values=fv, lock_config=True, sys_argv=list(argv))
    flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and results go "
                        "(default: runs/<config name>).", flag_values=fv)
    flags.DEFINE_bool("overwrite", False, "Discard a run of a different config in --workdir.",
                      flag_values=fv)
    flags.DEFINE_bool("progress", sys.stderr.isatty(), "Show a progress bar (default: when "
                      "stderr is a terminal; otherwise validation results and a heartbeat line "
                      "every $LSTM_RESEARCH_HEARTBEAT_SECS (60) seconds are printed).",
                      flag_values=fv)
    flags.DEFINE_bool("print_config", False, "Print the resolved config (after the "
                      "--config.<key> overrides) as JSON and exit; writes nothing.",
                      flag_values=fv)
    return fv


def config_listing(root: str = os.path.dirname(os.path.abspath(__file__))) -> str:
    """The config files under ``configs/`` and ``configs/papers/`` with their variants (the
    default first) and the first line of their docstring, for ``--help``."""
    lines = ["Configs (--config=PATH[:variant]):"]
    for path in sorted(glob.glob(os.path.join(root, "configs", "*.py"))) + \
            sorted(glob.glob(os.path.join(root, "configs", "papers", "*.py"))):
        rel = os.path.relpath(path)  # as --config takes it: relative to the current folder
        try:
            variants, default, doc = validate.config_info(path)
            doc = " ".join(doc.strip().split("\n\n")[0].split())
        except Exception as e:  # noqa: BLE001 - a broken config must not break --help
            lines.append(f"  {rel}  (cannot be loaded: {' '.join(str(e).split())[:80]})")
            continue
        if variants is not None:
            names = sorted(variants, key=lambda v: v != default)
            what = "variants: " + ", ".join(f"{v} (default)" if v == default else v
                                            for v in names)
        elif default is not None:
            what = f"variant argument, default {default!r} (see its docstring)"
        else:
            what = "no variants"
        lines.append(f"  {rel}  [{what}]")
        if doc:
            lines.append("      " + (doc if len(doc) <= 96 else doc[:95] + "..."))
    return "\n".join(lines)


def _default_workdir(fv) -> str:
    """``runs/<config file name>``, plus ``_<variant>`` for a config with variants (the default
    variant when none is given), so that the variants of one config do not share a workdir."""
    spec = getattr(fv["config"], "config_filename", None) or _default_config()
    path, _, variant = spec.partition(":")
    name = os.path.splitext(os.path.basename(path))[0]
    if not variant:
        variant = validate.config_info(path)[1] or ""
    return os.path.join("runs", f"{name}_{variant}" if variant else name)


def user_error(e: BaseException) -> int:
    print("error: " + " ".join(str(e).split()), file=sys.stderr, flush=True)
    return EXIT_USER_ERROR


def peer_lost(e: BaseException) -> None:
    """In a multi-process run, a failed collective means another process died or stopped
    answering: say so in one line and end this process at once (``os._exit``: JAX's shutdown
    at exit would wait ``parallel.timeout_s`` for the lost process and then abort)."""
    import jax
    if jax.process_count() == 1 or not isinstance(e, jax.errors.JaxRuntimeError):
        return
    first = next((ln for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
    print(f"error: process {jax.process_index()} of {jax.process_count()}: another process of "
          f"this job died or stopped answering ({first.strip()[:200]}); rerun every process "
          "with the same command to resume from the last checkpoint", file=sys.stderr, flush=True)
    os._exit(EXIT_PEER_LOST)


def run_pack(path: str) -> int:
    """``run.py --pack=PACK_JSON``: each member's arguments parsed and checked as a run of its
    own, then all of them trained as one pack. Exit status as for one run; 3 when a member
    diverged (the others finished; its workdir holds pack_failure.json)."""
    try:
        try:
            argvs = json.loads(open(path).read())["argv"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UserError(f"--pack={path}: not a readable pack file ({e}); experiments/sweep.py "
                            "--pack K writes them") from None
        configs, workdirs = [], []
        for argv in argvs:
            fv, config = parse_command_line(argv)
            workdir = fv.workdir or _default_workdir(fv)
            validate.validate_workdir(workdir)
            validate.validate_config(config, check_data_sizes=True)
            configs.append(config)
            workdirs.append(workdir)
        from lstm_research.training.pack import PackTrainer
        results = PackTrainer(configs, workdirs, os.path.dirname(os.path.abspath(path))).run()
    except UserError as e:
        return user_error(e)
    if not results:
        return EXIT_SIGTERM
    return 0 if all(results) else EXIT_NON_FINITE


def main(argv) -> int:
    logging.set_verbosity(logging.ERROR)  # TFDS warns about its cache; our errors are one line
    pack = [a for a in argv[1:] if a.startswith("--pack=")]
    if pack:
        if len(argv) != 2:
            return user_error(UserError("--pack=PACK_JSON takes no other arguments (each "
                                        "trial's arguments are in the pack file)"))
        return run_pack(pack[0].partition("=")[2])
    try:
        fv, config = parse_command_line(argv)
        if fv.print_config:
            validate.validate_config(config)
            print(json.dumps(json.loads(config.to_json_best_effort()), indent=2, sort_keys=True))
            return 0
        workdir = fv.workdir or _default_workdir(fv)
        validate.validate_workdir(workdir)
        validate.validate_config(config, check_data_sizes=True)
    except UserError as e:
        return user_error(e)

    from lstm_research.training.loop import NonFiniteLoss, train_and_evaluate
    try:
        result = train_and_evaluate(config, workdir, overwrite=fv.overwrite,
                                    progress=fv.progress)
    except UserError as e:
        return user_error(e)
    except NonFiniteLoss as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr, flush=True)
        return EXIT_NON_FINITE
    except Exception as e:
        peer_lost(e)
        raise
    if result.get("status") == "interrupted":
        return EXIT_SIGTERM
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
