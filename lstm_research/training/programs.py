"""Compiled programs, kept in this process and stored on disk for the next one.

A sweep worker runs trial after trial, and the trials that share a model's shapes share its
programs (``training.loop._steps_key``). It keeps the most recently used in memory (a loaded
train-steps executable holds about 10 MB); one it dropped, or one that another worker or an
earlier process compiled, JAX would trace and lower again to look it up in its persistent
compilation cache. Here each executable compiled is also serialized into :func:`store_dir` (the
persistent cache's directory, ``executables/``), keyed by what it is traced from, its arguments'
types and :func:`fingerprint` (this package's source, JAX's version, the backend, the CPU, XLA's
flags), and a process that needs it again loads it without tracing (0.1 s for the 0.8 MB of a
width-80 train-steps program, 0.03 s for its evaluation step): such a Greff JSB trial costs
0.4-0.6 s besides its epochs instead of 0.9-2.2 s (one core, 2026-12-03;
``experiments/results/SWEEP_THROUGHPUT.md``). The executable is the one compiled, so its results
are the same bits. The store keeps the executables of the last :data:`KEEP_VERSIONS` code
versions used (``executables/<fingerprint[:16]>/``) and deletes older ones, with their entries
in JAX's cache.

Without a persistent cache directory (a plain ``run.py``), or for a job of several devices or
processes, nothing is stored: programs are compiled as ``jax.jit`` would compile them.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import pickle
import platform
import re
import shutil
import time
import zlib
from pathlib import Path

import jax
import jax.numpy as jnp
from jax.experimental import serialize_executable

__all__ = ["Program", "compiled", "fingerprint", "single_device", "store_dir"]

#: store files end with this (each one ``(executable bytes, in_tree, out_tree)``, pickled and
#: compressed: a width-80 Greff train-steps program 0.8 MB, 0.17 MB compressed in 6 ms)
SUFFIX = ".exe"
#: counts of this process's executables by where they came from ("compiled", "loaded"); tests
#: and benchmarks read them
COUNTS = {"compiled": 0, "loaded": 0}
#: code versions (fingerprints) a store keeps executables of: this process's and the most
#: recently used others. Each version has a folder of its own; an edit of this package's source
#: starts a new one. A 36-trial Greff JSB sweep stored 67 files, 6.7 MB, and JAX's own cache
#: took 5 MB more (2026-12-03): the full study's 198 programs would be about 60 + 45 MB a version
KEEP_VERSIONS = 3


def store_dir() -> Path | None:
    """Where executables are stored: ``executables/`` in JAX's persistent compilation cache
    directory (``JAX_COMPILATION_CACHE_DIR``; a sweep's workers share ``SWEEP/.jax_cache``), or
    None when there is none."""
    cache = jax.config.jax_compilation_cache_dir
    return Path(cache) / "executables" if cache else None


def fingerprint() -> str:
    """What, besides a program's own key, decides the executable compiled from it: the source of
    this package as this process imported it (a changed line changes what is traced), the
    versions of the libraries whose code is traced too (JAX, jaxlib, Flax, optax, NumPy), JAX's
    flags (but the caches' own; read at each call, so a flag changed in between counts), the
    backend and its devices, XLA's flags, and the CPU (its features decide the code XLA:CPU
    emits)."""
    flags = sorted((k, repr(v)) for k, v in jax.config.values.items() if "cache" not in k)
    devices = [(d.platform, d.device_kind) for d in jax.devices()]
    text = repr((_SOURCE_DIGEST, jax.__version__, jax.lib.__version__, _traced_libraries(),
                 flags, devices, os.environ.get("XLA_FLAGS", ""), platform.machine(),
                 _cpu_flags()))
    return hashlib.sha256(text.encode()).hexdigest()


def _source_digest() -> str:
    h = hashlib.sha256()
    package = Path(__file__).resolve().parents[1]
    for path in sorted(package.rglob("*.py")):
        h.update(str(path.relative_to(package)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


# taken at import, with the package's modules: a file edited between this process's imports and
# its first compile would otherwise store old code's executable under the new code's digest
_SOURCE_DIGEST = _source_digest()


@functools.cache
def _traced_libraries() -> tuple:
    """The versions of the libraries besides JAX whose Python code is traced into programs (an
    upgrade of optax changes the optimizer's program without changing this package)."""
    from importlib import metadata
    out = []
    for name in ("flax", "optax", "numpy"):
        try:
            out.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            out.append((name, None))
    return tuple(out)


@functools.cache
def _cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    return next((line for line in text.splitlines() if line.startswith("flags")), "")


def _leaf_type(x):
    sharding = getattr(x, "sharding", None) if isinstance(x, jax.Array) else None
    return jax.typeof(x), sharding


def signature(args) -> tuple:
    """What a compiled executable needs of its arguments: their tree and each leaf's type (shape,
    dtype, weak type) and, for JAX arrays, sharding."""
    leaves, tree = jax.tree.flatten(args)
    return tree, tuple(_leaf_type(x) for x in leaves)


def single_device() -> bool:
    """Whether this process is the whole job on one device, where programs are stored (across
    devices or processes a jitted step also places host arguments on the mesh, which an
    executable called directly does not)."""
    return jax.process_count() == 1 and jax.device_count() == 1


def _store_path(name: str, traced_from: str, sig, donate_argnums, options) -> Path | None:
    root = store_dir()
    if root is None or not single_device():
        return None
    version = fingerprint()
    text = repr((version, name, traced_from, str(sig[0]), [repr(t) for t in sig[1]],
                 tuple(donate_argnums), sorted((options or {}).items())))
    folder = root / version[:16]
    _use_version(folder)
    return folder / (hashlib.sha256(text.encode()).hexdigest() + SUFFIX)


def _is_version(path: Path) -> bool:
    return path.is_dir() and bool(re.fullmatch(r"[0-9a-f]{16}", path.name))


@functools.cache
def _use_version(folder: Path) -> None:
    """Mark ``folder``, the store's folder of this code version, as used now (its time of
    modification), once per process, and delete the folders of versions beyond
    :data:`KEEP_VERSIONS` least recently used, each with its programs in JAX's cache (the files
    named after them, ``jit_<program>_<store key[:16]>...``), and the files of the store's layout
    before versions had folders. Nothing else there is touched; an error leaves things as
    they are (a process whose folder vanished compiles and stores again)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        os.utime(folder)
        versions = sorted((p for p in folder.parent.iterdir() if _is_version(p) and p != folder),
                          key=lambda p: p.stat().st_mtime, reverse=True)
        old = [f for v in versions[KEEP_VERSIONS - 1:] for f in v.glob("*" + SUFFIX)]
        old += [f for f in folder.parent.glob("*" + SUFFIX) if f.is_file()]
        cache = folder.parent.parent
        for f in old:
            for entry in cache.glob(f"*_{f.stem[:16]}[-_]*"):
                entry.unlink(missing_ok=True)
            f.unlink(missing_ok=True)
        for v in versions[KEEP_VERSIONS - 1:]:
            shutil.rmtree(v, ignore_errors=True)
    except OSError:
        pass


def _count_hits(event, **kwargs) -> None:
    if event == "/jax/compilation_cache/cache_hits":
        _HITS[0] += 1


_HITS = [0]  # JAX persistent-cache hits in this process
jax.monitoring.register_event_listener(_count_hits)


@functools.cache
def _ready_to_load() -> None:
    """Make this process ready to run loaded executables: XLA:CPU's LAPACK calls (a QR in the
    orthogonal init) go through function pointers that jaxlib fills in when it first lowers one;
    an executable loaded before that crashed the process (SIGSEGV; jaxlib 0.10.2)."""
    if jax.default_backend() == "cpu":
        jax.jit(jnp.linalg.qr).lower(jax.ShapeDtypeStruct((2, 2), jnp.float32))


def _storable(lowered) -> bool:
    """Whether an executable of ``lowered`` may be stored: its custom calls are all LAPACK's
    (which :func:`_ready_to_load` readies). Others (host callbacks, other libraries' kernels)
    may hold this process's pointers."""
    targets = re.findall(r"custom_call @(\w+)", lowered.as_text())
    return all(t.startswith("lapack_") for t in targets)


def _named(fn, name: str):
    def program(*args):
        return fn(*args)
    program.__name__ = program.__qualname__ = name
    return program


def _compile(fn, name: str, args, donate_argnums, options):
    """``(executable, lowered, cached)``: ``fn`` lowered and compiled for ``args`` as the program
    ``name``; ``cached`` when JAX's persistent cache served it."""
    hits = _HITS[0]
    lowered = jax.jit(_named(fn, name), donate_argnums=donate_argnums).lower(*args)
    return lowered.compile(compiler_options=options), lowered, _HITS[0] != hits


def compiled(name: str, traced_from: str, fn, args, *, donate_argnums=(), compiler_options=None):
    """``jax.jit(fn, donate_argnums=donate_argnums)`` compiled for ``args``: loaded from the
    store when it holds the executable of ``(name, traced_from)`` -- which must name everything
    that ``fn`` is traced from, besides this package's source -- for these arguments' types and
    donated arguments, else compiled and stored.

    A stored program is compiled under its own name (``name`` and its store key), so that JAX's
    persistent cache serves no other program's executable for it: an executable that XLA loaded
    from bytes cannot be serialized again (its kernels are missing from the bytes; jaxlib
    0.10.2). Where JAX's cache served it all the same (the store file was deleted, or could not
    be read: a disk filled up while it was written; files are renamed into place whole), it is
    compiled once more under a name of this process's and stored."""
    path = _store_path(name, traced_from, signature(args), donate_argnums, compiler_options)
    if path is None:
        COUNTS["compiled"] += 1
        return _compile(fn, name, args, donate_argnums, compiler_options)[0]
    if path.exists():
        try:
            _ready_to_load()
            executable, in_tree, out_tree = pickle.loads(zlib.decompress(path.read_bytes()))
            program = serialize_executable.deserialize_and_load(executable, in_tree, out_tree)
        except Exception:  # noqa: BLE001 - any unreadable file is compiled again
            pass
        else:
            COUNTS["loaded"] += 1
            return program
    own = f"{name}_{path.stem[:16]}"
    program, lowered, cached = _compile(fn, own, args, donate_argnums, compiler_options)
    COUNTS["compiled"] += 1
    if not _storable(lowered):
        return program
    if cached:
        program = _compile(fn, f"{own}_{os.getpid()}_{time.time_ns()}", args, donate_argnums,
                           compiler_options)[0]
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        blob = zlib.compress(pickle.dumps(serialize_executable.serialize(program)), 1)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(blob)
        os.replace(tmp, path)
    except (OSError, ValueError):  # a full disk or an unserializable program: not stored
        with contextlib.suppress(OSError):
            tmp.unlink()  # (a partial file would keep taking the space)
    return program


class Program:
    """``fn`` called through one executable per argument signature (:func:`signature`), each
    from :func:`compiled`: what ``jax.jit(fn, donate_argnums=donate_argnums)`` computes, but a
    process loads from the store what an earlier one compiled. ``traced_from`` must name
    everything ``fn`` is traced from (see :func:`compiled`)."""

    def __init__(self, name: str, traced_from: str, fn, donate_argnums=()):
        self.name, self.traced_from, self.fn = name, traced_from, fn
        self.donate_argnums = donate_argnums
        self.executables: dict = {}
        # several devices or processes: the jitted function itself, nothing stored
        self.jitted = None if single_device() else jax.jit(fn, donate_argnums=donate_argnums)

    def __call__(self, *args):
        if self.jitted is not None:
            return self.jitted(*args)
        # each call's key must be cheap: a Greff JSB epoch makes about 22 calls, and the full
        # types (signature: jax.typeof, shardings) of a train-steps call's 36 leaves took
        # 0.1 ms to build and more to hash, 10% of a width-20 epoch (one core, 2026-12-03)
        leaves, tree = jax.tree.flatten(args)
        key = tree, tuple((getattr(x, "shape", None), getattr(x, "dtype", type(x)),
                           getattr(x, "weak_type", False)) for x in leaves)
        executable = self.executables.get(key)
        if executable is None:
            executable = self.executables[key] = compiled(
                self.name, self.traced_from, self.fn, args, donate_argnums=self.donate_argnums)
        return executable(*args)
