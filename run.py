"""Run one experiment: ``python run.py --config=configs/<experiment>.py[:variant]
[--config.<key>=<value> ...] [--workdir=DIR]``.

Without arguments it trains an LSTM on the adding problem (T = 100), which needs no download.
Running the same command again resumes from the workdir's latest checkpoint.

Exit status: 0 done; 2 a user error (bad command line, config, workdir or data; one line
``error: ...`` on stderr, nothing written to the workdir); 3 the loss or parameters became
NaN/inf (the last good checkpoint is kept); 4 a multi-process run lost another process (it died
or stopped answering; one line ``error: ...``; rerun every process to resume); 143 stopped by
SIGTERM after saving; anything else is a bug and prints its traceback.
"""
from __future__ import annotations

import os
import sys

from absl import flags, logging

from lstm_research.errors import UserError
from lstm_research.training import validate

DEFAULT_CONFIG = "configs/adding.py"
EXIT_USER_ERROR, EXIT_NON_FINITE, EXIT_PEER_LOST, EXIT_SIGTERM = 2, 3, 4, 143


def _config_args(argv):
    """(the --config value, the keys of --config.<key> overrides) as absl would read them."""
    spec, keys, args = DEFAULT_CONFIG, [], list(argv[1:])
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
    spec, keys = _config_args(argv)
    config = validate.load_config_file(spec)
    validate.check_override_keys(config, keys)

    from ml_collections import config_flags
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "Experiment config file.",
                                    flag_values=fv, lock_config=True, sys_argv=list(argv))
    flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and results go "
                        "(default: runs/<config name>).", flag_values=fv)
    flags.DEFINE_bool("overwrite", False, "Discard a run of a different config in --workdir.",
                      flag_values=fv)
    flags.DEFINE_bool("progress", sys.stderr.isatty(), "Show a progress bar (default: when "
                      "stderr is a terminal; otherwise validation results are printed as lines).",
                      flag_values=fv)
    if any(a in ("-h", "--help", "-help", "--helpfull") for a in argv[1:]):
        print(__doc__)
        print(fv.get_help())
        raise SystemExit(0)
    try:
        rest = fv(list(argv))
        config = fv.config
    except flags.Error as e:
        raise UserError(str(e).strip().splitlines()[0] + "; see python run.py --help") from None
    if len(rest) > 1:
        raise UserError(f"unexpected arguments: {' '.join(rest[1:])}; options are --name=value")
    return fv, config


def _default_workdir(fv):
    path = getattr(fv["config"], "config_filename", None) or DEFAULT_CONFIG
    name = os.path.splitext(os.path.basename(path.partition(":")[0]))[0]
    return os.path.join("runs", name)


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


def main(argv) -> int:
    logging.set_verbosity(logging.ERROR)  # TFDS warns about its cache; our errors are one line
    try:
        fv, config = parse_command_line(argv)
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
