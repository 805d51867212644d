"""lstm_research: LSTM variants as pure functions over params pytrees, in JAX.

Importing the package sets one XLA:CPU option, before JAX creates its CPU client (see
:data:`SMALL_WHILE_LOOP_BYTES`).
"""

import importlib.metadata
import importlib.util
import os

#: XLA:CPU compiles a while loop whose body touches fewer bytes than this into one kernel (its
#: ``SmallWhileLoopHoistingPass``) instead of dispatching each of the body's operations at every
#: step; XLA's default is 1 kB, which no recurrent layer's loop fits. On the 2-core CPU
#: (2026-12-02; README "Speed") FGR's batch-1 training step then ran 1.5-1.9x faster at widths
#: 20-63, batch-32 steps as fast as before, and a Greff JSB run gave the same bits.
#: ``XLA_FLAGS=--xla_backend_extra_options=xla_cpu_small_while_loop_byte_threshold=0`` keeps
#: XLA's default (vmapped packs of trials ran slower with it). Set only when ``XLA_FLAGS`` does
#: not already pass ``--xla_backend_extra_options`` and no GPU or TPU plugin is installed (XLA
#: hands backend options it does not know to LLVM, which ends the process on an unknown one, as
#: seen on the CPU with another key; whether the GPU backends know this one is untested); it
#: applies only if JAX's CPU client has not been created yet.
SMALL_WHILE_LOOP_BYTES = 1_000_000_000


def _accelerator_plugin_installed() -> bool:
    """libtpu, or a PJRT plugin where JAX looks for them: the ``jax_plugins`` namespace package
    (``xla_cuda12``, ``xla_rocm``, ...) or the ``jax_plugins`` entry points."""
    if importlib.util.find_spec("libtpu") is not None:
        return True
    plugins = importlib.util.find_spec("jax_plugins")
    if plugins is not None and any(not e.name.startswith(("_", "."))
                                   for p in plugins.submodule_search_locations or ()
                                   if os.path.isdir(p) for e in os.scandir(p)):
        return True
    return bool(importlib.metadata.entry_points(group="jax_plugins"))


def _set_xla_cpu_flags() -> None:
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_backend_extra_options" in flags or _accelerator_plugin_installed():
        return
    os.environ["XLA_FLAGS"] = (f"{flags} --xla_backend_extra_options="
                               f"xla_cpu_small_while_loop_byte_threshold={SMALL_WHILE_LOOP_BYTES}").strip()


_set_xla_cpu_flags()
